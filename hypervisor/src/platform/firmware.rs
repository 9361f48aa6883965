//! Reading machine facts from the firmware (UEFI target only).

use super::cpu_info::CpuSummary;
use super::instructions;
use super::memory_map::MapEntry;
use alloc::vec::Vec;
use uefi::mem::memory_map::{MemoryMap, MemoryType};

/// IA32_VMX_PROCBASED_CTLS: allowed-1 bit 63 = "activate secondary controls" may be set.
const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
/// IA32_VMX_PROCBASED_CTLS2: allowed-1 bit 33 = "enable EPT" may be set.
const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;

/// CPUID summary of the running CPU, with EPT probed from the VMX MSRs when VMX exists.
pub fn cpu_summary() -> CpuSummary {
    let mut s = CpuSummary::from_reader(raw_cpuid::CpuIdReaderNative);
    if s.vmx {
        // SAFETY: CPUID reported VMX, so the VMX capability MSRs exist; we run at CPL 0.
        let ctls = unsafe { instructions::rdmsr(IA32_VMX_PROCBASED_CTLS) };
        let secondary = ctls & (1 << 63) != 0;
        s.ept = Some(
            // SAFETY: CTLS2 exists when the secondary-controls bit may be set; CPL 0.
            secondary && unsafe { instructions::rdmsr(IA32_VMX_PROCBASED_CTLS2) } & (1 << 33) != 0,
        );
    }
    s
}

/// The current UEFI memory map as plain records.
pub fn memory_map() -> uefi::Result<Vec<MapEntry>> {
    let map = uefi::boot::memory_map(MemoryType::LOADER_DATA)?;
    Ok(map
        .entries()
        .map(|d| MapEntry::new(d.ty.0, d.phys_start, d.page_count))
        .collect())
}

/// Physical address of the ACPI RSDP from the UEFI configuration table (ACPI 2.0+ entry
/// preferred, the ACPI 1.0 one otherwise); 0 when the firmware publishes none.
pub fn rsdp_address() -> usize {
    use uefi::table::cfg::ConfigTableEntry;
    uefi::system::with_config_table(|entries| {
        let find = |guid| {
            entries
                .iter()
                .find(|e| e.guid == guid)
                .map(|e| e.address as usize)
        };
        find(ConfigTableEntry::ACPI2_GUID)
            .or_else(|| find(ConfigTableEntry::ACPI_GUID))
            .unwrap_or(0)
    })
}

/// ACPI discovery on this machine.
pub fn acpi() -> Result<super::acpi::AcpiSummary, super::acpi::AcpiFailure> {
    let rsdp = rsdp_address();
    // SAFETY: `rsdp` comes from the firmware's configuration table (or is 0, which `discover`
    // rejects), and UEFI identity-maps all memory, which `IdentityMapped` relies on.
    unsafe { super::acpi::discover(super::acpi::IdentityMapped, rsdp) }
}

/// Remove `apic_ids` from the firmware's MADT (compacted in place, length and checksum fixed)
/// so the OS booted in the primary partition never sees those CPUs; returns the IDs removed.
///
/// # Safety
/// `madt_at` must be the physical address and length of the MADT as discovery found it;
/// ACPI tables are identity mapped and writable in the UEFI environment, and nothing else
/// may be reading the table concurrently (BSP, before the OS boots).
pub unsafe fn hide_cpus_in_madt(madt_at: (u64, usize), apic_ids: &[u32]) -> Vec<u32> {
    if madt_at.0 == 0 || madt_at.1 == 0 || apic_ids.is_empty() {
        return Vec::new();
    }
    // SAFETY: the caller vouches for the address, length and exclusive access.
    let table = unsafe { core::slice::from_raw_parts_mut(madt_at.0 as *mut u8, madt_at.1) };
    super::acpi::madt_hide::hide_cpus(table, apic_ids)
}
