//! Which CPUs the probe starts and which it attacks.
//!
//! The primary's own CPUs are the ones its MADT lists (the hypervisor removes every other
//! partition's CPUs from it, and CPUs no partition owns); the firmware's MP services still
//! know every CPU of the machine, since they counted them at power-on. So the probe's own
//! APs are the MADT's CPUs but itself, and the CPUs it must not be able to reach are the
//! firmware's minus the MADT's.

use core::fmt;

/// Most CPUs a set holds (more are ignored and counted).
pub const MAX: usize = 64;

/// A small set of APIC IDs, in insertion order.
#[derive(Clone, Copy)]
pub struct CpuSet {
    ids: [u32; MAX],
    len: usize,
    /// IDs that did not fit.
    pub dropped: usize,
}

impl CpuSet {
    pub const fn new() -> Self {
        CpuSet {
            ids: [0; MAX],
            len: 0,
            dropped: 0,
        }
    }

    pub fn insert(&mut self, id: u32) {
        if self.contains(id) {
            return;
        }
        if self.len == MAX {
            self.dropped += 1;
            return;
        }
        self.ids[self.len] = id;
        self.len += 1;
    }

    pub fn contains(&self, id: u32) -> bool {
        self.as_slice().contains(&id)
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.ids[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for CpuSet {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> From<[u32; N]> for CpuSet {
    fn from(ids: [u32; N]) -> Self {
        let mut s = CpuSet::new();
        ids.into_iter().for_each(|i| s.insert(i));
        s
    }
}

/// The same members, in any order.
impl PartialEq for CpuSet {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.as_slice().iter().all(|&id| other.contains(id))
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `[0, 1, 4]`.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, id) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}")?;
        }
        f.write_str("]")
    }
}

const MADT_HEADER: usize = 44;
const LOCAL_APIC: u8 = 0;
const LOCAL_X2APIC: u8 = 9;
const ENABLED: u32 = 1;

/// The enabled processors of a MADT (`APIC` table bytes, header included): Local APIC and
/// Local x2APIC entries with the enabled flag. A truncated or malformed entry ends the walk.
pub fn madt_cpus(madt: &[u8]) -> CpuSet {
    let mut set = CpuSet::new();
    let len = u32_at(madt, 4).map_or(0, |l| l as usize).min(madt.len());
    let mut at = MADT_HEADER;
    while at + 2 <= len {
        let (kind, size) = (madt[at], madt[at + 1] as usize);
        if size < 2 || at + size > len {
            break;
        }
        let entry = &madt[at..at + size];
        let cpu = match kind {
            LOCAL_APIC if size >= 8 => u32_at(entry, 4).map(|flags| (entry[3] as u32, flags)),
            LOCAL_X2APIC if size >= 16 => u32_at(entry, 4).zip(u32_at(entry, 8)),
            _ => None,
        };
        if let Some((id, flags)) = cpu {
            if flags & ENABLED != 0 {
                set.insert(id);
            }
        }
        at += size;
    }
    set
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The probe's two lists.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Targets {
    /// The primary's other CPUs: started through the emulated INIT/SIPI.
    pub own_aps: CpuSet,
    /// CPUs the firmware knows that the primary does not own: nothing sent to them may
    /// reach them.
    pub foreign: CpuSet,
}

/// Split the machine's CPUs (`firmware`) into the probe's APs and the foreign ones, given
/// the primary's (`madt`) and the probe's own APIC ID.
pub fn targets(me: u32, madt: &CpuSet, firmware: &CpuSet) -> Targets {
    let mut t = Targets {
        own_aps: CpuSet::new(),
        foreign: CpuSet::new(),
    };
    for &id in madt.as_slice() {
        if id != me {
            t.own_aps.insert(id);
        }
    }
    for &id in firmware.as_slice() {
        if !madt.contains(id) && id != me {
            t.foreign.insert(id);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MADT with the given entries after the 44-byte header (LAPIC address and flags
    /// included in the header; contents other than the length do not matter here).
    fn madt(entries: &[&[u8]]) -> Vec<u8> {
        let mut t = vec![0u8; MADT_HEADER];
        t[..4].copy_from_slice(b"APIC");
        for e in entries {
            t.extend_from_slice(e);
        }
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t
    }

    fn lapic(uid: u8, id: u8, flags: u32) -> Vec<u8> {
        let mut e = vec![LOCAL_APIC, 8, uid, id];
        e.extend_from_slice(&flags.to_le_bytes());
        e
    }

    fn x2apic(id: u32, flags: u32, uid: u32) -> Vec<u8> {
        let mut e = vec![LOCAL_X2APIC, 16, 0, 0];
        e.extend_from_slice(&id.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&uid.to_le_bytes());
        e
    }

    #[test]
    fn enabled_local_apics_and_x2apics_are_the_cpus() {
        let ioapic = [1u8, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0];
        let nmi = [4u8, 6, 0xff, 5, 0, 1];
        let t = madt(&[
            &lapic(0, 0, 1),
            &lapic(1, 1, 1),
            &lapic(2, 7, 0), // disabled (not online capable either)
            &ioapic,
            &nmi,
            &x2apic(300, 1, 9),
            &x2apic(301, 0, 10),
        ]);
        assert_eq!(madt_cpus(&t), CpuSet::from([0, 1, 300]));
    }

    #[test]
    fn malformed_tables_end_the_walk_without_panicking() {
        let mut t = madt(&[&lapic(0, 0, 1), &lapic(1, 1, 1)]);
        // a zero-length entry would loop forever: the walk stops there
        t[MADT_HEADER + 1] = 0;
        assert!(madt_cpus(&t).is_empty());
        // the header claims more than there is
        let mut t = madt(&[&lapic(0, 3, 1)]);
        t[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(madt_cpus(&t), CpuSet::from([3]));
        // an entry that runs past the end, short entries, no table at all
        let t = madt(&[&lapic(0, 3, 1), &[LOCAL_APIC, 8, 0]]);
        assert_eq!(madt_cpus(&t), CpuSet::from([3]));
        assert!(madt_cpus(&madt(&[&[LOCAL_APIC, 4, 0, 5]])).is_empty());
        assert!(madt_cpus(&[]).is_empty());
        assert!(madt_cpus(b"APIC").is_empty());
    }

    #[test]
    fn own_aps_and_foreign_cpus() {
        let madt = CpuSet::from([0, 1]);
        let firmware = CpuSet::from([0, 1, 2, 3, 4]);
        let t = targets(0, &madt, &firmware);
        assert_eq!(t.own_aps, CpuSet::from([1]));
        assert_eq!(t.foreign, CpuSet::from([2, 3, 4]));
        // the probe on an AP of its own partition, a single-CPU primary
        let t = targets(1, &madt, &firmware);
        assert_eq!(t.own_aps, CpuSet::from([0]));
        let t = targets(0, &CpuSet::from([0]), &CpuSet::from([0]));
        assert!(t.own_aps.is_empty() && t.foreign.is_empty());
    }

    #[test]
    fn sets_keep_order_ignore_repeats_and_count_overflow() {
        let mut s = CpuSet::from([4, 2, 4, 9]);
        assert_eq!(s.as_slice(), [4, 2, 9]);
        assert_eq!(s, CpuSet::from([9, 4, 2]));
        assert_ne!(s, CpuSet::from([9, 4]));
        assert_ne!(s, CpuSet::from([9, 4, 2, 1]));
        assert_eq!(s.to_string(), "[4, 2, 9]");
        for id in 100..200 {
            s.insert(id);
        }
        assert_eq!(s.as_slice().len(), MAX);
        assert_eq!(s.dropped, 100 + 3 - MAX);
        assert_eq!(CpuSet::new().to_string(), "[]");
    }
}
