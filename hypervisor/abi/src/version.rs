//! ABI versioning.
//!
//! A major version change breaks compatibility; a minor version only adds
//! (new calls, new feature bits, new status codes). A guest built for `a.b`
//! works with a hypervisor of version `a.c` for any `c`, using only what `b`
//! and `c` both define.

use core::fmt;

/// An ABI version, packed as `major << 16 | minor` in registers and CPUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AbiVersion {
    pub major: u16,
    pub minor: u16,
}

/// The version this crate implements.
///
/// 1.1: with transport VMCALL or VMMCALL, a non-zero CPUID leaf B + 2 is an
/// MMIO doorbell that privileged guest user space may ring (`docs/abi.md`).
/// 1.2 added `partition_stats`. 1.3 added `gpu_free`, `gpu_status`,
/// `tensor_free`, `tensor_op`, `tensor_fill` and the statuses `ShapeMismatch`
/// and `DTypeMismatch`. 1.4 split the `console` group (bit 5: `console_write`,
/// `partition_info`, `partition_stats`) from `management`. 1.5 added the management calls
/// `partition_describe`, `partition_load`, `partition_start`, `partition_stop` and
/// `partition_state`.
pub const ABI_VERSION: AbiVersion = AbiVersion { major: 1, minor: 5 };

impl AbiVersion {
    pub const fn new(major: u16, minor: u16) -> AbiVersion {
        AbiVersion { major, minor }
    }

    pub const fn packed(self) -> u32 {
        (self.major as u32) << 16 | self.minor as u32
    }

    pub const fn from_packed(packed: u32) -> AbiVersion {
        AbiVersion {
            major: (packed >> 16) as u16,
            minor: packed as u16,
        }
    }

    /// Whether a peer speaking `other` can talk to one speaking `self`.
    pub const fn compatible_with(self, other: AbiVersion) -> bool {
        self.major == other.major
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        let v = AbiVersion::new(3, 0xfffe);
        assert_eq!(v.packed(), 0x0003_fffe);
        assert_eq!(AbiVersion::from_packed(v.packed()), v);
        assert_eq!(ABI_VERSION.to_string(), "1.5");
    }

    #[test]
    fn compatibility_is_by_major() {
        assert!(ABI_VERSION.compatible_with(AbiVersion::new(1, 7)));
        assert!(!ABI_VERSION.compatible_with(AbiVersion::new(2, 0)));
        assert!(!ABI_VERSION.compatible_with(AbiVersion::new(0, 0)));
    }
}
