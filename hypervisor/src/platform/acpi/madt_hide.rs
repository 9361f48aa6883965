//! Hiding CPUs from the primary partition's OS by marking them disabled in the MADT.
//!
//! The primary OS enumerates processors from the MADT; a CPU that runs another partition
//! must not be started by it (INIT/SIPI would tear the partition down). The table is patched
//! in place: the entry's "enabled" and "online capable" flags are cleared and the checksum
//! is fixed, so the OS sees the CPU as present but unusable.

use super::bytes::{u32_at, u8_at};
use alloc::vec::Vec;

/// First interrupt-controller structure of the MADT.
const FIRST_ENTRY: usize = 44;
const LOCAL_APIC: u8 = 0;
const LOCAL_X2APIC: u8 = 9;
/// Flags bit 0 (enabled) and bit 1 (online capable).
const USABLE: u32 = 0b11;

/// Clear the usable flags of the Local APIC / Local x2APIC entries whose APIC ID is in
/// `apic_ids`, then fix the checksum. `table` is the whole MADT, header included. Returns
/// the APIC IDs that were hidden (each at most once, in table order); a table that is not
/// a well-formed MADT is left unchanged.
pub fn hide_cpus(table: &mut [u8], apic_ids: &[u32]) -> Vec<u32> {
    let mut hidden = Vec::new();
    if table.len() < FIRST_ENTRY || &table[..4] != b"APIC" {
        return hidden;
    }
    // Length from the header, never past the slice.
    let len = u32_at(table, 4).map_or(0, |l| l as usize).min(table.len());
    let mut patches: Vec<usize> = Vec::new();
    // MADT entries: 8-bit type, 8-bit length (unlike DMAR/IVRS); stop at a bad length.
    let mut off = FIRST_ENTRY;
    while off + 2 <= len {
        let (ty, entry_len) = (table[off], usize::from(table[off + 1]));
        if entry_len < 2 || off + entry_len > len {
            break;
        }
        let body = &table[off..off + entry_len];
        let here = off;
        off += entry_len;
        let (id, flags_at) = match ty {
            LOCAL_APIC if body.len() >= 8 => (u8_at(body, 3).map(u32::from), 4),
            LOCAL_X2APIC if body.len() >= 16 => (u32_at(body, 4), 8),
            _ => continue,
        };
        if let Some(id) = id {
            if apic_ids.contains(&id) && !hidden.contains(&id) {
                hidden.push(id);
                patches.push(here + flags_at);
            }
        }
    }
    for at in patches {
        if let Some(flags) = u32_at(table, at) {
            table[at..at + 4].copy_from_slice(&(flags & !USABLE).to_le_bytes());
        }
    }
    if !hidden.is_empty() {
        table[9] = 0;
        let sum = table[..len].iter().fold(0u8, |a, &b| a.wrapping_add(b));
        table[9] = 0u8.wrapping_sub(sum);
    }
    hidden
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::fixture::*;
    use super::super::{discover, MadtCpu};
    use super::*;
    use std::vec;

    #[test]
    fn hidden_cpus_read_back_disabled_with_a_valid_checksum() {
        let mut t = madt(&[
            lapic(0, 0, 1),
            lapic(1, 1, 1),
            lapic(2, 2, 3),
            x2apic(3, 300, 1),
            ioapic(0, 0xFEC0_0000, 0),
        ]);
        let hidden = hide_cpus(&mut t, &[2, 300, 7]);
        assert_eq!(hidden, vec![2, 300], "APIC ID 7 is not in the table");
        assert_eq!(t.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0, "checksum");
        // The acpi crate accepts the patched table and sees the CPUs disabled.
        let (h, rsdp) = FakePhys::new(&[t]);
        // SAFETY: the fake handler maps only its own buffer.
        let s = unsafe { discover(h, rsdp) }.unwrap();
        let state = |id: u32| {
            s.cpus
                .iter()
                .find(|c| c.apic_id == id)
                .map(|c: &MadtCpu| (c.enabled, c.online_capable))
        };
        assert_eq!(state(0), Some((true, false)));
        assert_eq!(state(1), Some((true, false)));
        assert_eq!(state(2), Some((false, false)), "online-capable cleared too");
        assert_eq!(state(300), Some((false, false)));
        assert_eq!(s.io_apics.len(), 1, "other entries untouched");
    }

    #[test]
    fn nothing_to_hide_leaves_the_table_byte_for_byte() {
        let original = madt(&[lapic(0, 0, 1), lapic(1, 1, 1)]);
        let mut t = original.clone();
        assert!(hide_cpus(&mut t, &[5]).is_empty());
        assert_eq!(t, original);
        let mut not_madt = sdt(b"FACP", 3, &[0; 8]);
        let before = not_madt.clone();
        assert!(hide_cpus(&mut not_madt, &[0]).is_empty());
        assert_eq!(not_madt, before);
    }

    #[test]
    fn malformed_entries_stop_the_walk() {
        let mut broken = lapic(1, 1, 1);
        broken[1] = 2; // length shorter than the entry header allows
        let mut t = madt(&[lapic(0, 0, 1), broken, lapic(2, 2, 1)]);
        assert_eq!(
            hide_cpus(&mut t, &[0, 2]),
            vec![0],
            "entries after the bad one are not trusted"
        );
        assert_eq!(t.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
    }
}
