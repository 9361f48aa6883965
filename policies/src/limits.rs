//! Bounds shared by validation and the compiled form, so that anything that
//! validates also compiles and fits the hypervisor's fixed-size tables.

/// Partitions per policy (the hypervisor keeps per-partition bit masks in a u64).
pub const MAX_PARTITIONS: usize = 64;
/// Partition names prefix every serial line; keep them short.
pub const MAX_NAME_LEN: usize = 32;
/// Image names become ESP paths `NEXUS/<IMAGE>.ELF`.
pub const MAX_IMAGE_LEN: usize = 32;
/// The guest copies its cmdline into a fixed buffer through the partition-info call.
pub const MAX_CMDLINE_LEN: usize = 255;
/// The primary's cmdline also becomes its OS loader's load options (a Linux kernel command
/// line); the partition-info call carries up to 1024 bytes (docs/abi.md).
pub const MAX_PRIMARY_CMDLINE_LEN: usize = 1024;
/// The primary's `boot` path on the hypervisor's volume (`\NEXUS\VMLINUZ.EFI`).
pub const MAX_BOOT_PATH_LEN: usize = 255;
/// Highest host-physical address x86-64 can ever use (52-bit MAXPHYADDR).
pub const PHYS_ADDR_LIMIT: u64 = 1 << 52;
/// Granularity of second-level page tables (EPT/NPT): 4 KiB.
pub const PAGE_SIZE: u64 = 4096;
/// Alignment of the hypervisor's own memory (`[machine] hypervisor_memory`): 2 MiB, so
/// that second-level tables can leave it out with whole large pages.
pub const HV_MEMORY_ALIGN: u64 = 2 << 20;
