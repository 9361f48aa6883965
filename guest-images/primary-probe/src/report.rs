//! What the probe's start-up code leaves behind, and how each round is judged (pure, so the
//! rules are tested on the host).
//!
//! The start-up code (`trampoline.rs`) runs in real mode from a page below 1 MiB. On every
//! CPU that runs it, it asks CPUID leaf 0x4000_0000 for the NexusOS signature, reads its
//! APIC ID (CPUID leaf 1, EBX bits 31:24) and records itself in that page: one 32-bit slot
//! per APIC ID at [`SLOTS`] (magic in bits 31:16, flags in 15:8, runs in 7:0) and a total
//! at [`TOTAL`]. Then it halts with interrupts off.

use crate::cpus::CpuSet;
use core::fmt;

/// Offset of the slot table in the start-up page (256 slots of 4 bytes).
pub const SLOTS: usize = 0x400;
/// Offset of the total number of runs.
pub const TOTAL: usize = 0x3fc;
/// Where the code must end.
pub const CODE_MAX: usize = TOTAL;
/// Bits 31:16 of a slot that was written ("RP").
pub const MAGIC: u32 = 0x5052;
/// Flag: CPUID 0x4000_0000 answered with the NexusOS signature (the code ran as a guest of
/// the hypervisor, not natively).
pub const FLAG_NEXUS: u32 = 1;

/// One CPU's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Never,
    Ran {
        runs: u8,
        under_nexus: bool,
    },
    /// Not a value the code writes.
    Garbage(u32),
}

impl Slot {
    pub fn decode(word: u32) -> Slot {
        match (word >> 16, (word >> 8) & 0xff, word & 0xff) {
            (0, 0, 0) => Slot::Never,
            (MAGIC, flags, runs) if runs > 0 && flags & !FLAG_NEXUS == 0 => Slot::Ran {
                runs: runs as u8,
                under_nexus: flags & FLAG_NEXUS != 0,
            },
            _ => Slot::Garbage(word),
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Never => f.write_str("never ran"),
            Slot::Ran { runs, under_nexus } => write!(
                f,
                "ran {runs} time(s), {}",
                if *under_nexus {
                    "in guest mode (CPUID showed NexusOS)"
                } else {
                    "NATIVELY (no NexusOS in CPUID)"
                }
            ),
            Slot::Garbage(w) => write!(f, "slot holds {w:#010x}, which the code never writes"),
        }
    }
}

/// A snapshot of a start-up page's slots, by APIC ID.
pub struct Slots(pub [u32; 256]);

impl Slots {
    pub fn get(&self, apic: u32) -> Slot {
        self.0
            .get(apic as usize)
            .map_or(Slot::Never, |&w| Slot::decode(w))
    }

    /// CPUs whose slot is not [`Slot::Never`], in APIC ID order.
    pub fn touched(&self) -> CpuSet {
        let mut s = CpuSet::new();
        for (id, &w) in self.0.iter().enumerate() {
            if w != 0 {
                s.insert(id as u32);
            }
        }
        s
    }
}

/// Why a round failed: a CPU and what its slot shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Problem {
    pub apic: u32,
    pub slot: Slot,
    pub expected: &'static str,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "APIC {} {} (expected: {})",
            self.apic, self.slot, self.expected
        )
    }
}

const ONCE_AS_GUEST: &str = "ran once, in guest mode";

/// Every CPU of `who` ran the code exactly once, as a guest of the hypervisor, and no other
/// CPU ran it.
pub fn ran_once_each(slots: &Slots, who: &CpuSet) -> Result<(), Problem> {
    for &apic in who.as_slice() {
        match slots.get(apic) {
            Slot::Ran {
                runs: 1,
                under_nexus: true,
            } => {}
            slot => {
                return Err(Problem {
                    apic,
                    slot,
                    expected: ONCE_AS_GUEST,
                })
            }
        }
    }
    nobody_else(slots, who)
}

/// No CPU but those of `allowed` ran the code.
pub fn nobody_else(slots: &Slots, allowed: &CpuSet) -> Result<(), Problem> {
    match slots
        .touched()
        .as_slice()
        .iter()
        .find(|a| !allowed.contains(**a))
    {
        Some(&apic) => Err(Problem {
            apic,
            slot: slots.get(apic),
            expected: "never ran",
        }),
        None => Ok(()),
    }
}

/// The CPUs of `who` whose slot is still [`Slot::Never`] (still waited for).
pub fn missing(slots: &Slots, who: &CpuSet) -> CpuSet {
    let mut s = CpuSet::new();
    for &apic in who.as_slice() {
        if slots.get(apic) == Slot::Never {
            s.insert(apic);
        }
    }
    s
}

/// A round of NMIs sent to the probe's own CPU, one after another (each sent once the
/// previous one was counted, so none can merge with a pending one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NmiRound {
    pub sent: u32,
    /// Counted by the probe's NMI handler by the end of the round.
    pub counted: u32,
    /// NMIs not counted within the short wait, which arrived only after the probe made an
    /// exit (CPUID): the hypervisor held them until the vCPU's next exit.
    pub late: u32,
    /// NMIs not counted even after that.
    pub lost: u32,
}

impl NmiRound {
    pub fn judge(&self) -> Result<(), &'static str> {
        if self.counted != self.sent || self.lost != 0 {
            return Err("not every NMI reached the handler exactly once");
        }
        if self.late != 0 {
            return Err("some NMIs waited for an unrelated exit before delivery");
        }
        Ok(())
    }
}

impl fmt::Display for NmiRound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sent, {} counted, {} late, {} lost",
            self.sent, self.counted, self.late, self.lost
        )
    }
}

/// A fixed-capacity text (no allocator in the probe).
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    pub const fn new() -> Self {
        Text {
            buf: [0; N],
            len: 0,
        }
    }

    pub fn as_str(&self) -> &str {
        // Only whole `str`s are appended, cut at a character boundary.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut n = s.len().min(N - self.len);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The checks of a run and the summary line's verdict.
#[derive(Default)]
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    /// `<check>: <why>` of the first failure.
    first: Text<200>,
}

impl Tally {
    pub fn pass(&mut self) {
        self.passed += 1;
    }

    pub fn skip(&mut self) {
        self.skipped += 1;
    }

    pub fn fail(&mut self, check: &str, why: fmt::Arguments<'_>) {
        if self.failed == 0 {
            let _ = fmt::write(&mut self.first, format_args!("{check}: {why}"));
        }
        self.failed += 1;
    }

    /// `PASS (7 checks, 1 skipped)` or `FAIL (<first failure>; 2 more)`.
    pub fn verdict(&self) -> Verdict<'_> {
        Verdict(self)
    }
}

pub struct Verdict<'a>(&'a Tally);

impl fmt::Display for Verdict<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        if t.failed == 0 && t.passed > 0 {
            return write!(f, "PASS ({} checks, {} skipped)", t.passed, t.skipped);
        }
        if t.failed == 0 {
            return f.write_str("FAIL (no check ran)");
        }
        write!(f, "FAIL ({}", t.first.as_str())?;
        if t.failed > 1 {
            write!(f, "; {} more", t.failed - 1)?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(runs: u32, nexus: bool) -> u32 {
        MAGIC << 16 | (u32::from(nexus) * FLAG_NEXUS) << 8 | runs
    }

    fn page(entries: &[(u32, u32)]) -> Slots {
        let mut s = [0; 256];
        for &(apic, w) in entries {
            s[apic as usize] = w;
        }
        Slots(s)
    }

    #[test]
    fn slots_decode_what_the_code_writes_and_nothing_else() {
        assert_eq!(Slot::decode(0), Slot::Never);
        assert_eq!(
            Slot::decode(slot(1, true)),
            Slot::Ran {
                runs: 1,
                under_nexus: true
            }
        );
        assert_eq!(
            Slot::decode(slot(3, false)),
            Slot::Ran {
                runs: 3,
                under_nexus: false
            }
        );
        for w in [0x5052_0100, 0x1234_0001, 0x5052_0401, 0x0000_0001] {
            assert_eq!(Slot::decode(w), Slot::Garbage(w), "{w:#x}");
        }
        assert!(Slot::decode(slot(1, false))
            .to_string()
            .contains("NATIVELY"));
    }

    #[test]
    fn an_ap_start_needs_one_guest_run_on_exactly_that_cpu() {
        let who = CpuSet::from([1]);
        assert_eq!(ran_once_each(&page(&[(1, slot(1, true))]), &who), Ok(()));
        let e = ran_once_each(&page(&[]), &who).unwrap_err();
        assert_eq!((e.apic, e.slot), (1, Slot::Never));
        let e = ran_once_each(&page(&[(1, slot(2, true))]), &who).unwrap_err();
        assert!(e.to_string().contains("ran 2 time(s)"), "{e}");
        let e = ran_once_each(&page(&[(1, slot(1, false))]), &who).unwrap_err();
        assert!(e.to_string().contains("NATIVELY"), "{e}");
        // another CPU ran it too
        let e = ran_once_each(&page(&[(1, slot(1, true)), (3, slot(1, true))]), &who).unwrap_err();
        assert_eq!(e.apic, 3);
        assert_eq!(e.expected, "never ran");
    }

    #[test]
    fn untouched_pages_and_who_is_missing() {
        assert_eq!(nobody_else(&page(&[]), &CpuSet::new()), Ok(()));
        let p = page(&[(4, slot(1, true))]);
        assert_eq!(nobody_else(&p, &CpuSet::new()).unwrap_err().apic, 4);
        assert_eq!(missing(&p, &CpuSet::from([1, 4, 2])), CpuSet::from([1, 2]));
        assert_eq!(p.touched(), CpuSet::from([4]));
    }

    #[test]
    fn nmi_rounds() {
        let ok = NmiRound {
            sent: 10,
            counted: 10,
            ..Default::default()
        };
        assert_eq!(ok.judge(), Ok(()));
        assert_eq!(ok.to_string(), "10 sent, 10 counted, 0 late, 0 lost");
        for bad in [
            NmiRound { counted: 9, ..ok },
            NmiRound { counted: 11, ..ok },
            NmiRound { lost: 1, ..ok },
            NmiRound { late: 1, ..ok },
        ] {
            assert!(bad.judge().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_verdict_names_the_first_failure() {
        let mut t = Tally::default();
        assert_eq!(t.verdict().to_string(), "FAIL (no check ran)");
        t.pass();
        t.skip();
        assert_eq!(t.verdict().to_string(), "PASS (1 checks, 1 skipped)");
        t.fail("c2 xapic", format_args!("APIC {} ran", 4));
        t.fail("h1", format_args!("lost"));
        assert_eq!(
            t.verdict().to_string(),
            "FAIL (c2 xapic: APIC 4 ran; 1 more)"
        );
    }

    #[test]
    fn text_cuts_at_its_capacity_on_a_character_boundary() {
        use core::fmt::Write;
        let mut t = Text::<5>::new();
        write!(t, "ab€cd").unwrap();
        assert_eq!(t.as_str(), "ab€");
        write!(t, "more").unwrap();
        assert_eq!(t.as_str(), "ab€");
    }
}
