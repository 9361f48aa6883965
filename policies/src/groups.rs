//! Hypercall groups a partition may call, by name.
//!
//! Stand-in until `nexus_abi::Group`/`GroupSet` exist (hypervisor/abi is being
//! written in parallel); the names and bit numbers here are what the compiled
//! policy stores.

use core::fmt;

/// One group of hypercalls (see docs/abi.md for the numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "kebab-case"))]
pub enum Group {
    /// Partition management (start/stop partitions, partition info).
    Management,
    /// 400–449: model load/unload/list/info.
    Models,
    /// 450–499: GPU memory and kernel launches.
    Gpu,
    /// 500–549: tensors.
    Tensors,
    /// 550–599: containers.
    Containers,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Management,
        Group::Models,
        Group::Gpu,
        Group::Tensors,
        Group::Containers,
    ];

    pub const fn bit(self) -> u32 {
        1 << (self as u32)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Group::Management => "management",
            Group::Models => "models",
            Group::Gpu => "gpu",
            Group::Tensors => "tensors",
            Group::Containers => "containers",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Group::ALL.into_iter().find(|g| g.name() == name)
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of groups, stored as a bit mask (bit n = `Group::ALL[n]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GroupSet(u32);

impl GroupSet {
    pub const EMPTY: GroupSet = GroupSet(0);
    /// Every bit that names a group; other bits are invalid in a compiled policy.
    pub const VALID_BITS: u32 = (1 << Group::ALL.len()) - 1;

    pub const fn bits(self) -> u32 {
        self.0
    }

    /// `None` when `bits` holds a bit that names no group.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        if bits & !Self::VALID_BITS == 0 {
            Some(GroupSet(bits))
        } else {
            None
        }
    }

    pub const fn with(self, group: Group) -> Self {
        GroupSet(self.0 | group.bit())
    }

    pub const fn contains(self, group: Group) -> bool {
        self.0 & group.bit() != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Group> {
        Group::ALL.into_iter().filter(move |g| self.contains(*g))
    }
}

impl FromIterator<Group> for GroupSet {
    fn from_iter<I: IntoIterator<Item = Group>>(iter: I) -> Self {
        iter.into_iter().fold(GroupSet::EMPTY, GroupSet::with)
    }
}

impl fmt::Display for GroupSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, g) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(g.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bits() {
        for g in Group::ALL {
            assert_eq!(Group::from_name(g.name()), Some(g));
        }
        assert_eq!(Group::from_name("gpus"), None);
        let set: GroupSet = [Group::Gpu, Group::Models].into_iter().collect();
        assert!(set.contains(Group::Gpu) && !set.contains(Group::Tensors));
        assert_eq!(GroupSet::from_bits(set.bits()), Some(set));
        assert_eq!(GroupSet::from_bits(1 << 5), None);
        assert_eq!(
            set.iter().collect::<std::vec::Vec<_>>(),
            [Group::Models, Group::Gpu]
        );
    }
}
