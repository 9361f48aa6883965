//! Why a compiled policy was refused.

use core::fmt;

use super::format::SECTION_NAMES;

/// A rejected compiled policy. `section` values index
/// [`SECTION_NAMES`](super::format::SECTION_NAMES).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the fixed header or than the length the header states.
    Truncated {
        needed: usize,
        actual: usize,
    },
    /// Longer than the length the header states.
    TrailingBytes {
        stated: usize,
        actual: usize,
    },
    BadMagic,
    UnsupportedVersion {
        major: u16,
        minor: u16,
    },
    BadChecksum {
        stored: u32,
        computed: u32,
    },
    TooFewSections {
        count: usize,
    },
    /// A section lies (partly) outside the blob or inside the header.
    SectionOutOfBounds {
        section: usize,
    },
    /// A section's records are smaller than this decoder's version needs.
    RecordTooSmall {
        section: usize,
        size: usize,
    },
    /// The machine section must hold exactly one record.
    MachineCount {
        count: usize,
    },
    /// A string reference points outside the string section or is not UTF-8.
    BadString {
        section: usize,
        index: usize,
    },
    /// A required string is absent.
    MissingString {
        section: usize,
        index: usize,
    },
    /// An enum code (role, class, memory type, CPU entry kind) is unknown.
    BadCode {
        section: usize,
        index: usize,
    },
    /// Unknown flag or group bits.
    BadFlags {
        section: usize,
        index: usize,
    },
    /// A first/count range or partition index points outside its section.
    IndexOutOfRange {
        section: usize,
        index: usize,
    },
    /// More partitions than the hypervisor's tables hold.
    TooManyPartitions {
        count: usize,
    },
    /// Memory region `index` is empty, not 4 KiB aligned or past the
    /// physical address space.
    BadRegion {
        index: usize,
    },
    /// Memory regions `first` and `second` overlap (isolation depends on
    /// this, so the decoder re-checks what validation promised).
    Overlap {
        first: usize,
        second: usize,
    },
    /// The machine's `hypervisor_memory` is not 2 MiB aligned or past the physical
    /// address space.
    BadHypervisorMemory,
    /// The machine's `hypervisor_memory` overlaps memory region `index`.
    HypervisorMemoryOverlap {
        index: usize,
    },
    /// Partition `index` has a `boot` path but is not the primary, or the path breaks
    /// [`crate::boot::check_boot_path`].
    BadBoot {
        index: usize,
    },
}

fn name(section: usize) -> &'static str {
    SECTION_NAMES.get(section).copied().unwrap_or("?")
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeError::*;
        match *self {
            Truncated { needed, actual } => {
                write!(f, "compiled policy truncated: {actual} bytes, need {needed}")
            }
            TrailingBytes { stated, actual } => {
                write!(f, "compiled policy is {actual} bytes but its header says {stated}")
            }
            BadMagic => f.write_str("not a compiled NexusOS policy (bad magic)"),
            UnsupportedVersion { major, minor } => {
                write!(f, "compiled policy version {major}.{minor} is not supported (need 1.x)")
            }
            BadChecksum { stored, computed } => write!(
                f,
                "compiled policy checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            TooFewSections { count } => write!(f, "compiled policy has only {count} sections"),
            SectionOutOfBounds { section } => {
                write!(f, "compiled policy section \"{}\" lies outside the blob", name(section))
            }
            RecordTooSmall { section, size } => write!(
                f,
                "compiled policy section \"{}\" has {size}-byte records, too small",
                name(section)
            ),
            MachineCount { count } => {
                write!(f, "compiled policy has {count} machine records, need exactly 1")
            }
            BadString { section, index } => {
                write!(f, "compiled policy {}[{index}]: bad string reference", name(section))
            }
            MissingString { section, index } => {
                write!(f, "compiled policy {}[{index}]: required string missing", name(section))
            }
            BadCode { section, index } => {
                write!(f, "compiled policy {}[{index}]: unknown enum code", name(section))
            }
            BadFlags { section, index } => {
                write!(f, "compiled policy {}[{index}]: unknown flag bits", name(section))
            }
            IndexOutOfRange { section, index } => {
                write!(f, "compiled policy {}[{index}]: index out of range", name(section))
            }
            TooManyPartitions { count } => write!(
                f,
                "compiled policy has {count} partitions, at most {} are supported",
                crate::limits::MAX_PARTITIONS
            ),
            BadRegion { index } => write!(
                f,
                "compiled policy memory[{index}]: empty, not 4KiB aligned or past the \
                 physical address space"
            ),
            Overlap { first, second } => {
                write!(f, "compiled policy memory[{second}] overlaps memory[{first}]")
            }
            BadHypervisorMemory => f.write_str(
                "compiled policy machine: hypervisor_memory not 2MiB aligned or past the \
                 physical address space",
            ),
            HypervisorMemoryOverlap { index } => write!(
                f,
                "compiled policy machine: hypervisor_memory overlaps memory[{index}]"
            ),
            BadBoot { index } => write!(
                f,
                "compiled policy partitions[{index}]: boot path on a partition that is not \
                 the primary, or not a valid path"
            ),
        }
    }
}
