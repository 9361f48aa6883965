//! Byte layout of the compiled policy, version 1 (docs/policy.md has the
//! tables). Everything is little-endian; records are fixed-size and may grow
//! in later minor versions (each section states its record size), so a v1
//! decoder reads the fields it knows and skips the rest.

pub const MAGIC: [u8; 8] = *b"NXPOLICY";
/// Incompatible layout changes bump the major version; decoders refuse others.
pub const VERSION_MAJOR: u16 = 1;
/// Compatible additions (new sections at the end, longer records).
/// 1.1: the machine record grows to 64 bytes with `hypervisor_memory` (base, size).
/// 1.2: the partition record grows to 72 bytes with `boot` (the primary's OS loader).
/// 1.3: partition flag [`PF_SHARE_SMT_CORE`] and group bit 5 (`console`, ABI 1.4) in
/// `groups`; records keep their 1.2 sizes.
pub const VERSION_MINOR: u16 = 3;

// Header.
pub const HDR_MAGIC: usize = 0;
pub const HDR_MAJOR: usize = 8;
pub const HDR_MINOR: usize = 10;
pub const HDR_TOTAL_LEN: usize = 12;
pub const HDR_CRC: usize = 16;
pub const HDR_SECTION_COUNT: usize = 20;
pub const HEADER_LEN: usize = 24;
/// Each section table entry: offset u32, count u32, record size u32.
pub const SECTION_ENTRY_LEN: usize = 12;

// Sections, in section-table order.
pub const SEC_MACHINE: usize = 0;
pub const SEC_MACHINE_CPUS: usize = 1;
pub const SEC_MACHINE_PCI: usize = 2;
pub const SEC_PARTITIONS: usize = 3;
pub const SEC_CPUS: usize = 4;
pub const SEC_MEMORY: usize = 5;
pub const SEC_SHARED_WITH: usize = 6;
pub const SEC_VRAM: usize = 7;
pub const SEC_PCI: usize = 8;
pub const SEC_STRINGS: usize = 9;
pub const SECTION_COUNT: usize = 10;

/// Minimum (v1.0) record size of each section: what a decoder needs.
pub const RECORD_SIZE: [usize; SECTION_COUNT] = [48, 8, 12, 64, 8, 32, 2, 32, 4, 1];
/// Record size of each section as this version (1.3) writes it.
pub const WRITTEN_RECORD_SIZE: [usize; SECTION_COUNT] = [64, 8, 12, 72, 8, 32, 2, 32, 4, 1];

pub const SECTION_NAMES: [&str; SECTION_COUNT] = [
    "machine",
    "machine cpus",
    "machine pci",
    "partitions",
    "cpus",
    "memory",
    "shared_with",
    "vram",
    "pci",
    "strings",
];

/// A string reference is offset u32 + length u32 into the string section;
/// an absent optional string has this offset and length 0.
pub const STR_ABSENT: u32 = u32::MAX;
pub const STR_REF_LEN: usize = 8;

// Machine record.
pub const M_NAME: usize = 0;
pub const M_MEMORY: usize = 8;
pub const M_GPU_VRAM: usize = 16;
pub const M_GPU_NAME: usize = 24;
pub const M_GPU_BDF: usize = 32;
pub const M_COUNT_P: usize = 36;
pub const M_COUNT_E: usize = 40;
pub const M_FLAGS: usize = 44;
/// Since 1.1 (absent in 1.0 records): the hypervisor's own memory; size 0 = not given.
pub const M_HV_BASE: usize = 48;
pub const M_HV_SIZE: usize = 56;
pub const MF_GPU: u32 = 1 << 0;
pub const MF_CPU_COUNTS: u32 = 1 << 1;
pub const MF_GPU_BDF: u32 = 1 << 2;
pub const MF_ALL: u32 = MF_GPU | MF_CPU_COUNTS | MF_GPU_BDF;

// Machine CPU record.
pub const MC_APIC_ID: usize = 0;
pub const MC_CLASS: usize = 4;

// Machine PCI record.
pub const MP_BDF: usize = 0;
pub const MP_NAME: usize = 4;

// Partition record.
pub const P_NAME: usize = 0;
pub const P_IMAGE: usize = 8;
pub const P_CMDLINE: usize = 16;
pub const P_ROLE: usize = 24;
pub const P_FLAGS: usize = 25;
pub const P_GROUPS: usize = 28;
pub const P_CPUS: usize = 32;
pub const P_MEMORY: usize = 40;
pub const P_PCI: usize = 48;
/// Since 1.2 (absent in shorter records): `boot str?`, the primary's OS loader path.
pub const P_BOOT: usize = 64;
pub const PF_LOW_LATENCY: u8 = 1 << 0;
pub const PF_MEMORY_REMAINDER: u8 = 1 << 1;
/// Since 1.3: the partition may share SMT cores with another partition that allows it.
pub const PF_SHARE_SMT_CORE: u8 = 1 << 2;
pub const PF_ALL: u8 = PF_LOW_LATENCY | PF_MEMORY_REMAINDER | PF_SHARE_SMT_CORE;

// CPU entry record.
pub const C_KIND: usize = 0;
pub const C_CLASS: usize = 1;
pub const C_VALUE: usize = 4;
pub const CPU_KIND_APIC_ID: u8 = 0;
pub const CPU_KIND_CLASS_COUNT: u8 = 1;

// Memory region record.
pub const R_BASE: usize = 0;
pub const R_SIZE: usize = 8;
pub const R_TYPE: usize = 16;
pub const R_SHARED: usize = 20;

// VRAM region record.
pub const V_NAME: usize = 0;
pub const V_OFFSET: usize = 8;
pub const V_SIZE: usize = 16;
pub const V_OWNER: usize = 24;
