//! Hiding CPUs from the primary partition's OS by removing them from the MADT.
//!
//! The primary OS enumerates processors from the MADT; a CPU that runs another partition
//! must not be started by it. An entry marked disabled is not enough: Linux counts disabled
//! entries as hot-pluggable CPUs ("Allowing 5 CPUs, 3 hotplug CPUs") and sizes its per-CPU
//! data for them. So the table is compacted in place: the Local APIC / Local x2APIC entries
//! of those CPUs and the local NMI entries naming their processor UIDs are removed, the
//! freed tail is zeroed, and the length and checksum are fixed. The OS sees a machine that
//! never had those CPUs.

use super::bytes::{u32_at, u8_at};
use alloc::vec::Vec;

/// First interrupt-controller structure of the MADT.
const FIRST_ENTRY: usize = 44;
const LOCAL_APIC: u8 = 0;
const LOCAL_APIC_NMI: u8 = 4;
const LOCAL_X2APIC: u8 = 9;
const LOCAL_X2APIC_NMI: u8 = 0xA;
/// The processor UID a local NMI entry uses for "all processors" (8- and 32-bit forms).
const ALL_PROCESSORS_8: u32 = 0xFF;
const ALL_PROCESSORS_32: u32 = 0xFFFF_FFFF;

/// One interrupt-controller structure of the MADT: where it is and what it says about CPUs.
enum Entry {
    /// A processor: its UID and APIC ID.
    Cpu {
        uid: u32,
        apic_id: u32,
    },
    /// A local NMI source for processor `uid` (or all of them).
    Nmi {
        uid: u32,
    },
    Other,
}

fn decode(body: &[u8]) -> Entry {
    match body[0] {
        LOCAL_APIC if body.len() >= 8 => match (u8_at(body, 2), u8_at(body, 3)) {
            (Some(uid), Some(id)) => Entry::Cpu {
                uid: uid.into(),
                apic_id: id.into(),
            },
            _ => Entry::Other,
        },
        LOCAL_X2APIC if body.len() >= 16 => match (u32_at(body, 12), u32_at(body, 4)) {
            (Some(uid), Some(apic_id)) => Entry::Cpu { uid, apic_id },
            _ => Entry::Other,
        },
        LOCAL_APIC_NMI if body.len() >= 6 => match u8_at(body, 2) {
            Some(uid) if u32::from(uid) != ALL_PROCESSORS_8 => Entry::Nmi { uid: uid.into() },
            _ => Entry::Other,
        },
        LOCAL_X2APIC_NMI if body.len() >= 12 => match u32_at(body, 4) {
            Some(uid) if uid != ALL_PROCESSORS_32 => Entry::Nmi { uid },
            _ => Entry::Other,
        },
        _ => Entry::Other,
    }
}

/// The well-formed entries of the MADT as (offset, length); the walk stops at the first
/// entry whose length is impossible (nothing after it is trusted).
fn entries(table: &[u8], len: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // MADT entries: 8-bit type, 8-bit length (unlike DMAR/IVRS).
    let mut off = FIRST_ENTRY;
    while off + 2 <= len {
        let entry_len = usize::from(table[off + 1]);
        if entry_len < 2 || off + entry_len > len {
            break;
        }
        out.push((off, entry_len));
        off += entry_len;
    }
    out
}

/// Remove the processors whose APIC ID is in `apic_ids` (and the local NMI entries naming
/// their UIDs) from the MADT, compacting the table in place and fixing its length and
/// checksum. `table` is the whole MADT, header included. Returns the APIC IDs removed (each
/// once, in table order); a table that is not a well-formed MADT is left unchanged.
pub fn hide_cpus(table: &mut [u8], apic_ids: &[u32]) -> Vec<u32> {
    let mut hidden = Vec::new();
    if table.len() < FIRST_ENTRY || &table[..4] != b"APIC" {
        return hidden;
    }
    // Length from the header, never past the slice.
    let len = u32_at(table, 4).map_or(0, |l| l as usize).min(table.len());
    let all = entries(table, len);
    let mut uids = Vec::new();
    for &(off, n) in &all {
        if let Entry::Cpu { uid, apic_id } = decode(&table[off..off + n]) {
            if apic_ids.contains(&apic_id) && !hidden.contains(&apic_id) {
                hidden.push(apic_id);
                uids.push(uid);
            }
        }
    }
    if hidden.is_empty() {
        return hidden;
    }
    let remove = |body: &[u8]| match decode(body) {
        Entry::Cpu { apic_id, .. } => apic_ids.contains(&apic_id),
        Entry::Nmi { uid } => uids.contains(&uid),
        Entry::Other => false,
    };
    // Compact: entries move only towards the start, so copying forward is safe. Whatever
    // follows the last trusted entry (a malformed one) moves along unchanged.
    let mut to = FIRST_ENTRY;
    let trusted_end = all.last().map_or(FIRST_ENTRY, |&(o, n)| o + n);
    for &(off, n) in &all {
        if !remove(&table[off..off + n]) {
            table.copy_within(off..off + n, to);
            to += n;
        }
    }
    table.copy_within(trusted_end..len, to);
    let new_len = to + (len - trusted_end);
    table[new_len..len].fill(0);
    table[4..8].copy_from_slice(&(new_len as u32).to_le_bytes());
    table[9] = 0;
    let sum = table[..new_len].iter().fold(0u8, |a, &b| a.wrapping_add(b));
    table[9] = 0u8.wrapping_sub(sum);
    hidden
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::discover;
    use super::super::fixture::*;
    use super::*;
    use std::vec;

    fn checksum(t: &[u8]) -> u8 {
        let len = u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize;
        t[..len].iter().fold(0u8, |a, &b| a.wrapping_add(b))
    }

    fn lapic_nmi(uid: u8) -> Vec<u8> {
        vec![LOCAL_APIC_NMI, 6, uid, 0, 0, 1]
    }

    #[test]
    fn hidden_cpus_are_gone_from_a_valid_table() {
        let mut t = madt(&[
            lapic(0, 0, 1),
            lapic(1, 1, 1),
            lapic(2, 2, 1),
            x2apic(3, 300, 1),
            ioapic(0, 0xFEC0_0000, 0),
            lapic_nmi(0xFF),
            lapic_nmi(2),
            lapic_nmi(1),
        ]);
        let before = t.len();
        let hidden = hide_cpus(&mut t, &[2, 300, 7]);
        assert_eq!(hidden, vec![2, 300], "APIC ID 7 is not in the table");
        assert_eq!(checksum(&t), 0, "checksum");
        let new_len = u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize;
        assert_eq!(
            new_len,
            before - 8 - 16 - 6,
            "two CPUs and one NMI entry removed"
        );
        assert!(t[new_len..].iter().all(|&b| b == 0), "freed tail zeroed");
        // The acpi crate accepts the compacted table and sees only the kept CPUs.
        let (h, rsdp) = FakePhys::new(&[t[..new_len].to_vec()]);
        // SAFETY: the fake handler maps only its own buffer.
        let s = unsafe { discover(h, rsdp) }.unwrap();
        let ids: Vec<u32> = s.cpus.iter().map(|c| c.apic_id).collect();
        assert_eq!(ids, vec![0, 1]);
        assert!(s.cpus.iter().all(|c| c.enabled));
        assert_eq!(s.io_apics.len(), 1, "other entries kept");
        // The NMI entries for all CPUs and for UID 1 stay; UID 2's is gone.
        let kept: Vec<u8> = entries(&t, new_len)
            .iter()
            .filter(|&&(o, _)| t[o] == LOCAL_APIC_NMI)
            .map(|&(o, _)| t[o + 2])
            .collect();
        assert_eq!(kept, vec![0xFF, 1]);
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
    fn malformed_entries_stop_the_walk_and_stay_in_place() {
        let mut broken = lapic(1, 1, 1);
        broken[1] = 2; // length shorter than the entry header allows
        let mut t = madt(&[lapic(0, 0, 1), broken.clone(), lapic(2, 2, 1)]);
        let before = t.len();
        assert_eq!(
            hide_cpus(&mut t, &[0, 2]),
            vec![0],
            "entries after the bad one are not trusted"
        );
        assert_eq!(checksum(&t), 0);
        let new_len = u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize;
        assert_eq!(new_len, before - 8);
        // The untrusted rest moved up unchanged, right after the header.
        assert_eq!(&t[FIRST_ENTRY..FIRST_ENTRY + 2], &broken[..2]);
    }

    #[test]
    fn a_length_past_the_buffer_is_clamped() {
        let mut t = madt(&[lapic(0, 0, 1), lapic(1, 1, 1)]);
        let real = t.len() as u32;
        t[4..8].copy_from_slice(&(real + 100).to_le_bytes());
        assert_eq!(hide_cpus(&mut t, &[1]), vec![1]);
        assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), real - 8);
        assert_eq!(checksum(&t), 0);
    }
}
