//! Hypercall groups a partition may call: the ABI's own [`Group`] and
//! [`GroupSet`] (bit n = `Group::ALL[n]`), so the policy and the hypervisor's
//! permission check can never disagree on names or bits.

use core::fmt;

pub use nexus_abi::numbers::{Group, GroupSet};

/// Comma-separated group names ("models,gpu"), `-` for the empty set.
pub struct GroupNames(pub GroupSet);

impl fmt::Display for GroupNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, g) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(g.name())?;
        }
        Ok(())
    }
}

/// One group name in a policy file; unknown names are errors that list the
/// valid ones.
#[cfg(feature = "std")]
pub(crate) struct GroupName(pub Group);

#[cfg(feature = "std")]
impl<'de> serde::Deserialize<'de> for GroupName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::string::String::deserialize(d)?;
        Group::from_name(&name).map(GroupName).ok_or_else(|| {
            serde::de::Error::custom(format_args!(
                "unknown group `{name}`, expected one of `console`, `management`, `models`, \
                 `gpu`, `tensors`, `containers`"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn names_print_in_bit_order() {
        let set: GroupSet = [Group::Gpu, Group::Models].into_iter().collect();
        assert_eq!(GroupNames(set).to_string(), "models,gpu");
        assert_eq!(GroupNames(GroupSet::EMPTY).to_string(), "-");
    }
}
