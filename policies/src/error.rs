//! Errors of loading, parsing and validating a policy. Every validation error
//! names the partition (or VRAM region), the field and the conflict.

use std::fmt;
use std::path::PathBuf;
use std::string::String;
use std::vec::Vec;

use crate::boot::BootPathError;
use crate::types::{Bdf, CoreClass, Role};
use crate::units::{Addr, Size};

/// A `base+size` pair printed as `0x1_0000_0000+4GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub base: u64,
    pub size: u64,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", Addr(self.base), Size(self.size))
    }
}

/// One broken rule. Field paths are relative to the partition
/// (`memory[1]`, `cpus[0].count`, `apic_ids[2]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidationError {
    // --- machine ---
    /// `[machine]` gives neither `cpus` nor `cpu_counts`, or both.
    MachineCpuSource {
        both: bool,
    },
    /// `[machine] cpus` lists an APIC ID twice.
    MachineCpuTwice {
        field: String,
        apic_id: u32,
    },
    /// A machine quantity that must be non-zero is zero.
    MachineZero {
        field: &'static str,
    },
    /// `[machine] pci` lists a function twice.
    MachinePciTwice {
        field: String,
        bdf: Bdf,
    },
    /// `hypervisor_memory.base` or `.size` (the `field`) is not a multiple of 2 MiB.
    HypervisorMemoryMisaligned {
        field: &'static str,
        value: u64,
    },
    HypervisorMemoryBeyondAddressSpace {
        region: Span,
    },
    /// The hypervisor's memory overlaps a partition's region.
    HypervisorMemoryOverlap {
        region: Span,
        partition: String,
        field: String,
        other_region: Span,
    },

    // --- partition identity ---
    DuplicatePartition {
        name: String,
        first: usize,
        second: usize,
    },
    BadPartitionName {
        index: usize,
        name: String,
        reason: &'static str,
    },
    MissingPrimary,
    MultiplePrimary {
        first: String,
        second: String,
    },
    TooManyPartitions {
        count: usize,
        max: usize,
    },

    // --- CPUs ---
    NoCpus {
        partition: String,
    },
    CpusAndApicIds {
        partition: String,
    },
    ZeroCount {
        partition: String,
        field: String,
    },
    /// `apic_ids` on a machine that only gives `cpu_counts`.
    ApicIdsOnCountMachine {
        partition: String,
        field: String,
    },
    UnknownApicId {
        partition: String,
        field: String,
        apic_id: u32,
    },
    CpuTwice {
        partition: String,
        field: String,
        apic_id: u32,
        other_partition: String,
        other_field: String,
    },
    /// The running total of `class` CPUs passes what the machine has.
    TooManyCpus {
        partition: String,
        field: String,
        class: CoreClass,
        requested: u32,
        available: u32,
    },

    // --- memory ---
    NoMemory {
        partition: String,
    },
    RemainderNotPrimary {
        partition: String,
    },
    RemainderWithRegions {
        partition: String,
    },
    ZeroSize {
        partition: String,
        field: String,
    },
    Misaligned {
        partition: String,
        field: String,
        value: u64,
    },
    BeyondAddressSpace {
        partition: String,
        field: String,
        region: Span,
    },
    MemoryOverlap {
        partition: String,
        field: String,
        region: Span,
        other_partition: String,
        other_field: String,
        other_region: Span,
    },
    /// The running total of all partitions' regions passes the machine's RAM.
    TooMuchMemory {
        partition: String,
        field: String,
        total: u64,
        machine: u64,
    },
    SharedWithNotShared {
        partition: String,
        field: String,
    },
    SharedWithoutPartners {
        partition: String,
        field: String,
    },
    SharedWithUnknown {
        partition: String,
        field: String,
        name: String,
    },

    // --- VRAM ---
    VramWithoutGpu {
        region: String,
    },
    VramZeroSize {
        region: String,
        owner: String,
    },
    DuplicateVramName {
        region: String,
    },
    UnknownVramOwner {
        region: String,
        owner: String,
    },
    VramRegionTooLarge {
        region: String,
        owner: String,
        size: u64,
        card: u64,
    },
    VramExceedsCard {
        region: String,
        owner: String,
        total: u64,
        card: u64,
    },

    // --- PCI ---
    PciAssignedTwice {
        partition: String,
        field: String,
        bdf: Bdf,
        other_partition: String,
    },
    UnknownPciDevice {
        partition: String,
        field: String,
        bdf: Bdf,
    },

    // --- image / cmdline ---
    MissingImage {
        partition: String,
    },
    BadImageName {
        partition: String,
        image: String,
        reason: &'static str,
    },
    BadCmdline {
        partition: String,
        reason: &'static str,
    },
    /// `boot` on a partition other than the primary.
    BootNotPrimary {
        partition: String,
        role: Role,
    },
    BadBootPath {
        partition: String,
        path: String,
        reason: BootPathError,
    },
}

impl ValidationError {
    /// The partition the error is about, if any.
    pub fn partition(&self) -> Option<&str> {
        use ValidationError::*;
        match self {
            NoCpus { partition }
            | CpusAndApicIds { partition }
            | ZeroCount { partition, .. }
            | ApicIdsOnCountMachine { partition, .. }
            | UnknownApicId { partition, .. }
            | CpuTwice { partition, .. }
            | TooManyCpus { partition, .. }
            | NoMemory { partition }
            | RemainderNotPrimary { partition }
            | RemainderWithRegions { partition }
            | ZeroSize { partition, .. }
            | Misaligned { partition, .. }
            | BeyondAddressSpace { partition, .. }
            | MemoryOverlap { partition, .. }
            | HypervisorMemoryOverlap { partition, .. }
            | TooMuchMemory { partition, .. }
            | SharedWithNotShared { partition, .. }
            | SharedWithoutPartners { partition, .. }
            | SharedWithUnknown { partition, .. }
            | PciAssignedTwice { partition, .. }
            | UnknownPciDevice { partition, .. }
            | MissingImage { partition }
            | BadImageName { partition, .. }
            | BadCmdline { partition, .. }
            | BootNotPrimary { partition, .. }
            | BadBootPath { partition, .. } => Some(partition),
            VramZeroSize { owner, .. }
            | UnknownVramOwner { owner, .. }
            | VramRegionTooLarge { owner, .. }
            | VramExceedsCard { owner, .. } => Some(owner),
            DuplicatePartition { name, .. } | BadPartitionName { name, .. } => Some(name),
            MultiplePrimary { second, .. } => Some(second),
            MachineCpuSource { .. }
            | MachineCpuTwice { .. }
            | MachineZero { .. }
            | MachinePciTwice { .. }
            | HypervisorMemoryMisaligned { .. }
            | HypervisorMemoryBeyondAddressSpace { .. }
            | MissingPrimary
            | TooManyPartitions { .. }
            | VramWithoutGpu { .. }
            | DuplicateVramName { .. } => None,
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ValidationError::*;
        match self {
            MachineCpuSource { both: true } => write!(
                f,
                "machine: give either `cpus` (APIC IDs) or `cpu_counts` (per class), not both"
            ),
            MachineCpuSource { both: false } => write!(
                f,
                "machine: no CPUs; give `cpus` (APIC IDs) or `cpu_counts` (per class)"
            ),
            MachineCpuTwice { field, apic_id } => {
                write!(f, "machine: {field} lists APIC ID {apic_id} a second time")
            }
            MachineZero { field } => write!(f, "machine: {field} must not be zero"),
            MachinePciTwice { field, bdf } => {
                write!(f, "machine: {field} lists PCI device {bdf} a second time")
            }
            HypervisorMemoryMisaligned { field, value } => write!(
                f,
                "machine: hypervisor_memory.{field} = {} is not a multiple of 2MiB",
                Addr(*value)
            ),
            HypervisorMemoryBeyondAddressSpace { region } => write!(
                f,
                "machine: hypervisor_memory {region} ends beyond the 52-bit physical address space"
            ),
            HypervisorMemoryOverlap { region, partition, field, other_region } => write!(
                f,
                "machine: hypervisor_memory {region} overlaps partition \"{partition}\" \
                 {field} {other_region}"
            ),
            DuplicatePartition { name, first, second } => write!(
                f,
                "partition \"{name}\": name used by partition[{first}] and partition[{second}]"
            ),
            BadPartitionName { index, name, reason } => {
                write!(f, "partition[{index}]: name {name:?} {reason}")
            }
            MissingPrimary => write!(f, "no partition has role = \"primary\" (exactly one must)"),
            MultiplePrimary { first, second } => write!(
                f,
                "partition \"{second}\": role = \"primary\" but partition \"{first}\" is already \
                 the primary (exactly one allowed)"
            ),
            TooManyPartitions { count, max } => {
                write!(f, "{count} partitions; at most {max} are supported")
            }
            NoCpus { partition } => write!(
                f,
                "partition \"{partition}\": no CPUs; give `cpus` (by class) or `apic_ids`"
            ),
            CpusAndApicIds { partition } => write!(
                f,
                "partition \"{partition}\": give either `cpus` (by class) or `apic_ids`, not both"
            ),
            ZeroCount { partition, field } => {
                write!(f, "partition \"{partition}\": {field} must not be zero")
            }
            ApicIdsOnCountMachine { partition, field } => write!(
                f,
                "partition \"{partition}\": {field}: the machine gives only `cpu_counts`, so \
                 CPUs must be requested by class"
            ),
            UnknownApicId { partition, field, apic_id } => write!(
                f,
                "partition \"{partition}\": {field} = {apic_id} is not a CPU of the machine"
            ),
            CpuTwice { partition, field, apic_id, other_partition, other_field } => write!(
                f,
                "partition \"{partition}\": {field} = APIC ID {apic_id} is already given to \
                 partition \"{other_partition}\" {other_field}"
            ),
            TooManyCpus { partition, field, class, requested, available } => write!(
                f,
                "partition \"{partition}\": {field} brings the {class}-core total to {requested} \
                 but the machine has {available}"
            ),
            NoMemory { partition } => write!(
                f,
                "partition \"{partition}\": no memory; add [[partition.memory]] regions"
            ),
            RemainderNotPrimary { partition } => write!(
                f,
                "partition \"{partition}\": memory_remainder is only allowed for the primary partition"
            ),
            RemainderWithRegions { partition } => write!(
                f,
                "partition \"{partition}\": memory_remainder and explicit memory regions are exclusive"
            ),
            ZeroSize { partition, field } => {
                write!(f, "partition \"{partition}\": {field} must not be zero")
            }
            Misaligned { partition, field, value } => write!(
                f,
                "partition \"{partition}\": {field} = {} is not a multiple of 4KiB",
                Addr(*value)
            ),
            BeyondAddressSpace { partition, field, region } => write!(
                f,
                "partition \"{partition}\": {field} {region} ends beyond the 52-bit physical \
                 address space"
            ),
            MemoryOverlap { partition, field, region, other_partition, other_field, other_region } => {
                write!(
                    f,
                    "partition \"{partition}\": {field} {region} overlaps partition \
                     \"{other_partition}\" {other_field} {other_region}"
                )
            }
            TooMuchMemory { partition, field, total, machine } => write!(
                f,
                "partition \"{partition}\": {field} brings the memory total to {} but the \
                 machine has {}",
                Size(*total),
                Size(*machine)
            ),
            SharedWithNotShared { partition, field } => write!(
                f,
                "partition \"{partition}\": {field}.shared_with needs type = \"shared\""
            ),
            SharedWithoutPartners { partition, field } => write!(
                f,
                "partition \"{partition}\": {field} has type = \"shared\" but an empty shared_with"
            ),
            SharedWithUnknown { partition, field, name } => write!(
                f,
                "partition \"{partition}\": {field}.shared_with names {name:?}, which is not \
                 another partition"
            ),
            VramWithoutGpu { region } => {
                write!(f, "vram \"{region}\": the machine has no [machine.gpu]")
            }
            VramZeroSize { region, owner } => {
                write!(f, "vram \"{region}\" (owner \"{owner}\"): size must not be zero")
            }
            DuplicateVramName { region } => write!(f, "vram \"{region}\": name used twice"),
            UnknownVramOwner { region, owner } => {
                write!(f, "vram \"{region}\": owner \"{owner}\" is not a partition")
            }
            VramRegionTooLarge { region, owner, size, card } => write!(
                f,
                "vram \"{region}\" (owner \"{owner}\"): size {} is larger than the GPU's {}",
                Size(*size),
                Size(*card)
            ),
            VramExceedsCard { region, owner, total, card } => write!(
                f,
                "vram \"{region}\" (owner \"{owner}\"): brings the VRAM total to {} but the \
                 GPU has {}",
                Size(*total),
                Size(*card)
            ),
            PciAssignedTwice { partition, field, bdf, other_partition } => write!(
                f,
                "partition \"{partition}\": {field} = {bdf} is already assigned to partition \
                 \"{other_partition}\""
            ),
            UnknownPciDevice { partition, field, bdf } => write!(
                f,
                "partition \"{partition}\": {field} = {bdf} is not listed in [machine] pci"
            ),
            MissingImage { partition } => write!(
                f,
                "partition \"{partition}\": role = \"test\" needs `image` (the guest to start)"
            ),
            BadImageName { partition, image, reason } => {
                write!(f, "partition \"{partition}\": image {image:?} {reason}")
            }
            BadCmdline { partition, reason } => {
                write!(f, "partition \"{partition}\": cmdline {reason}")
            }
            BootNotPrimary { partition, role } => write!(
                f,
                "partition \"{partition}\": `boot` (the OS loader the hypervisor chain-loads) \
                 is only for the primary partition, not role = \"{role}\""
            ),
            BadBootPath { partition, path, reason } => {
                write!(f, "partition \"{partition}\": boot {path:?} {reason}")
            }
        }
    }
}

/// Anything that stops a policy file from becoming a valid [`crate::Policy`].
#[derive(Debug)]
pub enum PolicyError {
    /// The file could not be read.
    Io {
        file: PathBuf,
        error: std::io::Error,
    },
    /// TOML syntax, unknown key, unknown role/group, bad size ... `path` is
    /// the key path (`partition[1].role`), `message` toml's located report.
    Parse {
        file: Option<PathBuf>,
        path: String,
        message: String,
    },
    /// Parsed, but breaks validation rules; all broken rules are listed.
    Invalid {
        file: Option<PathBuf>,
        errors: Vec<ValidationError>,
    },
}

impl PolicyError {
    /// The validation errors, empty for I/O and parse errors.
    pub fn validation_errors(&self) -> &[ValidationError] {
        match self {
            PolicyError::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }

    pub(crate) fn with_file(mut self, path: PathBuf) -> Self {
        match &mut self {
            PolicyError::Io { .. } => {}
            PolicyError::Parse { file, .. } | PolicyError::Invalid { file, .. } => {
                *file = Some(path)
            }
        }
        self
    }
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    match file {
        Some(path) => format!("{}: ", path.display()),
        None => String::new(),
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Io { file, error } => {
                write!(f, "{}: cannot read policy: {error}", file.display())
            }
            PolicyError::Parse {
                file,
                path,
                message,
            } => {
                let message = message.trim_end();
                if path.is_empty() || path == "." {
                    write!(f, "{}{message}", file_prefix(file))
                } else {
                    write!(f, "{}in `{path}`: {message}", file_prefix(file))
                }
            }
            PolicyError::Invalid { file, errors } => match errors.as_slice() {
                [one] => write!(f, "{}{one}", file_prefix(file)),
                many => {
                    write!(f, "{}{} policy errors:", file_prefix(file), many.len())?;
                    for e in many {
                        write!(f, "\n  - {e}")?;
                    }
                    Ok(())
                }
            },
        }
    }
}

impl std::error::Error for PolicyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PolicyError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}
