//! The second-level translation of a partition (AMD NPT or Intel EPT) as
//! the backend-neutral code sees it.
//!
//! Hypercall buffers and instruction bytes are checked against the very
//! tables the processor walks for the partition, whatever their format, so
//! a backend keeps one second-level view per partition and nothing beside it.

use super::PhysMem;
use crate::exit::Access;

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
