//! The second-level translation of a partition (AMD NPT or Intel EPT) as
//! the backend-neutral code sees it.
//!
//! Hypercall buffers and instruction bytes are checked against the very
//! tables the processor walks for the partition, whatever their format, so
//! a backend keeps one second-level view per partition and nothing beside it.

use super::PhysMem;
use crate::exit::Access;

/// Guest-physical bits a 4-level NPT or EPT translates. A guest-physical
/// address with a bit at or above this is no address at all for the
/// partition: lookups refuse it instead of letting the 9-bit table indices
/// drop the high bits (which would alias it onto low memory).
pub const GPA_BITS: u32 = 48;

/// Whether `gpa` fits the guest-physical space of a 4-level table.
pub const fn in_gpa_space(gpa: u64) -> bool {
    gpa >> GPA_BITS == 0
}

/// Whether all of `[gpa, gpa+len)` lies below `1 << phys_bits` (the CPU's
/// MAXPHYADDR, CPUID 0x8000_0008 EAX[7:0]) and below [`GPA_BITS`]: a guest
/// buffer beyond either does not exist, whatever the tables say.
pub const fn within_phys_width(gpa: u64, len: u64, phys_bits: u32) -> bool {
    let bits = if phys_bits < GPA_BITS {
        phys_bits
    } else {
        GPA_BITS
    };
    match gpa.checked_add(len) {
        Some(end) => end <= 1 << bits,
        None => false,
    }
}

/// Access rights of a mapping (read is implied by presence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub write: bool,
    pub exec: bool,
}

impl Perm {
    pub const RWX: Perm = Perm {
        write: true,
        exec: true,
    };
    pub const RW: Perm = Perm {
        write: true,
        exec: false,
    };
    pub const RX: Perm = Perm {
        write: false,
        exec: true,
    };
    pub const RO: Perm = Perm {
        write: false,
        exec: false,
    };

    /// Whether an access of this kind is allowed.
    pub const fn allows(self, access: Access) -> bool {
        (!access.write || self.write) && (!access.exec || self.exec)
    }
}

/// The leaf that maps one guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Host-physical address of that guest-physical byte.
    pub hpa: u64,
    pub perm: Perm,
    /// Size of the leaf (4 KiB, 2 MiB or 1 GiB).
    pub page_size: u64,
}

/// A guest-physical range, or part of it, that the partition may not access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The first refused guest-physical address.
    pub gpa: u64,
}

/// A partition's guest-physical → host-physical translation.
///
/// Generic over the memory the tables live in (not over the method), so it
/// can be used as `&dyn SecondLevel<M>` by code shared between backends.
pub trait SecondLevel<M: PhysMem + ?Sized> {
    /// The mapping of `gpa`, as the processor's walk would find it; `None`
    /// when nothing maps it.
    fn translate_gpa(&self, mem: &mut M, gpa: u64) -> Option<Mapping>;

    /// Host-physical address of `gpa` for an access of kind `access`.
    fn host_address(&self, mem: &mut M, gpa: u64, access: Access) -> Result<u64, Denied> {
        match self.translate_gpa(mem, gpa) {
            Some(m) if m.perm.allows(access) => Ok(m.hpa),
            _ => Err(Denied { gpa }),
        }
    }

    /// Check `[gpa, gpa+len)` page by page and hand each accessible piece to
    /// `f(hpa, offset, n)`; nothing is handed over unless the whole range is
    /// accessible. A range that wraps the address space is refused.
    fn for_each_page(
        &self,
        mem: &mut M,
        gpa: u64,
        len: u64,
        access: Access,
        f: &mut dyn FnMut(&mut M, u64, u64, u64),
    ) -> Result<(), Denied> {
        if gpa.checked_add(len).is_none() {
            return Err(Denied { gpa });
        }
        for pass in 0..2 {
            let mut off = 0;
            while off < len {
                let at = gpa + off;
                let n = (super::PAGE_SIZE - at % super::PAGE_SIZE).min(len - off);
                let hpa = self.host_address(mem, at, access)?;
                if pass == 1 {
                    f(mem, hpa, off, n);
                }
                off += n;
            }
        }
        Ok(())
    }

    /// Whether all of `[gpa, gpa+len)` allows `access`.
    fn check_range(&self, mem: &mut M, gpa: u64, len: u64, access: Access) -> Result<(), Denied> {
        self.for_each_page(mem, gpa, len, access, &mut |_, _, _, _| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_physical_width_bounds_every_byte_of_a_buffer() {
        assert!(within_phys_width(0, 1 << 39, 39));
        assert!(!within_phys_width(0, (1 << 39) + 1, 39));
        assert!(
            !within_phys_width((1 << 39) - 4, 8, 39),
            "runs past the width"
        );
        assert!(
            !within_phys_width(1 << 48 | 0x4000_0000, 8, 52),
            "above the table bits"
        );
        assert!(within_phys_width((1 << 48) - 8, 8, 52));
        assert!(!within_phys_width(u64::MAX - 2, 8, 52), "wraps");
        assert!(in_gpa_space((1 << 48) - 1) && !in_gpa_space(1 << 48));
    }
}
