//! The primary's MADT, found the way an OS finds it: the ACPI 2.0 RSDP from the UEFI
//! configuration table, its XSDT, the table signed `APIC`. The parsing is `cpus::madt_cpus`.

use crate::cpus::{self, CpuSet};
use uefi::table::cfg::ConfigTableEntry;

/// Tables longer than this are not believed.
const MAX_TABLE: usize = 1 << 16;

/// The bytes of the ACPI table at `at` (its length from its header).
///
/// # Safety
/// `at` is the physical (identity-mapped) address of an ACPI table header.
unsafe fn table(at: u64) -> Option<&'static [u8]> {
    if at == 0 {
        return None;
    }
    // SAFETY: the caller's contract: a header of at least 8 bytes (signature, length).
    let len = unsafe { core::ptr::read_unaligned((at + 4) as *const u32) } as usize;
    if !(36..=MAX_TABLE).contains(&len) {
        return None;
    }
    // SAFETY: the firmware's table of `len` bytes, never freed while boot services run.
    Some(unsafe { core::slice::from_raw_parts(at as *const u8, len) })
}

/// The enabled CPUs of the MADT; `None` without ACPI 2.0 tables or a MADT.
pub fn madt_cpus() -> Option<CpuSet> {
    let rsdp = uefi::system::with_config_table(|t: &[ConfigTableEntry]| {
        t.iter()
            .find(|e| e.guid == ConfigTableEntry::ACPI2_GUID)
            .map(|e| e.address as u64)
    })?;
    // SAFETY: an ACPI 2.0 RSDP is 36 bytes; the XSDT address is the u64 at offset 24.
    let xsdt_at = unsafe { core::ptr::read_unaligned((rsdp + 24) as *const u64) };
    // SAFETY: the RSDP names the XSDT.
    let xsdt = unsafe { table(xsdt_at) }?;
    if &xsdt[..4] != b"XSDT" {
        return None;
    }
    xsdt[36..].chunks_exact(8).find_map(|entry| {
        let at = u64::from_le_bytes(entry.try_into().ok()?);
        // SAFETY: the XSDT lists the addresses of table headers.
        let t = unsafe { table(at) }?;
        (&t[..4] == b"APIC").then(|| cpus::madt_cpus(t))
    })
}
