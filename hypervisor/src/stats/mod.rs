//! Per-vCPU counters: VM exits by reason and hypercalls by number, printed at
//! the end of a run and on request (like `jailhouse cell stats`).
//!
//! Each vCPU's counters are written only by the CPU running it, but may be read
//! at any time from another CPU (the summary, the primary's counters while its
//! OS runs), so they are relaxed atomics: a reader sees a recent, possibly
//! slightly stale, value of each counter.

use crate::exit::ExitReason;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use nexus_abi::Hypercall;

/// Exit reasons in print order (names from [`ExitReason::name`]).
pub const EXIT_NAMES: [&str; 22] = [
    "hypercall",
    "cpuid",
    "rdmsr",
    "wrmsr",
    "io",
    "npf",
    "hlt",
    "xsetbv",
    "invd",
    "wbinvd",
    "rdpmc",
    "monitor",
    "mwait",
    "shutdown",
    "exception",
    "machine-check",
    "interrupt",
    "nmi",
    "init",
    "sipi",
    "entry-failed",
    "unknown",
];

#[derive(Debug, Default)]
pub struct Stats {
    exits: [AtomicU64; EXIT_NAMES.len()],
    /// One counter per [`Hypercall::ALL`] entry.
    calls: [AtomicU64; Hypercall::ALL.len()],
    /// Hypercalls with an unassigned number.
    invalid_calls: AtomicU64,
}

impl Stats {
    pub const fn new() -> Self {
        Stats {
            exits: [const { AtomicU64::new(0) }; EXIT_NAMES.len()],
            calls: [const { AtomicU64::new(0) }; Hypercall::ALL.len()],
            invalid_calls: AtomicU64::new(0),
        }
    }

    pub fn count_exit(&self, reason: &ExitReason) {
        let name = reason.name();
        if let Some(i) = EXIT_NAMES.iter().position(|n| *n == name) {
            self.exits[i].fetch_add(1, Relaxed);
        }
    }

    pub fn count_call(&self, number: u64) {
        match Hypercall::ALL.iter().position(|c| c.number() == number) {
            Some(i) => self.calls[i].fetch_add(1, Relaxed),
            None => self.invalid_calls.fetch_add(1, Relaxed),
        };
    }

    pub fn exits_named(&self, name: &str) -> u64 {
        EXIT_NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.exits[i].load(Relaxed))
    }

    pub fn total_exits(&self) -> u64 {
        self.exits.iter().map(|e| e.load(Relaxed)).sum()
    }

    pub fn invalid_calls(&self) -> u64 {
        self.invalid_calls.load(Relaxed)
    }

    /// The exit counters that are not zero, in [`EXIT_NAMES`] order.
    pub fn exit_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        EXIT_NAMES
            .iter()
            .zip(&self.exits)
            .map(|(name, n)| (*name, n.load(Relaxed)))
            .filter(|(_, n)| *n != 0)
    }

    /// The hypercall counters that are not zero, in number order.
    pub fn call_counts(&self) -> impl Iterator<Item = (Hypercall, u64)> + '_ {
        Hypercall::ALL
            .iter()
            .zip(&self.calls)
            .map(|(call, n)| (*call, n.load(Relaxed)))
            .filter(|(_, n)| *n != 0)
    }

    /// Add every counter of `other` (several vCPUs of one partition).
    pub fn add(&self, other: &Stats) {
        for (a, b) in self.exits.iter().zip(&other.exits) {
            a.fetch_add(b.load(Relaxed), Relaxed);
        }
        for (a, b) in self.calls.iter().zip(&other.calls) {
            a.fetch_add(b.load(Relaxed), Relaxed);
        }
        self.invalid_calls
            .fetch_add(other.invalid_calls.load(Relaxed), Relaxed);
    }

    /// Two lines: non-zero exit counters, then non-zero hypercall counters,
    /// e.g. `exits: total=41 hypercall=30 cpuid=3 npf=1` and
    /// `hypercalls: console_write=9 ai_model_load=2 invalid=1`.
    pub fn write_to(&self, out: &mut impl Write) -> fmt::Result {
        write!(out, "exits: total={}", self.total_exits())?;
        for (name, n) in self.exit_counts() {
            write!(out, " {name}={n}")?;
        }
        out.write_str("\nhypercalls:")?;
        let mut any = false;
        for (call, n) in self.call_counts() {
            write!(out, " {}={n}", call.name())?;
            any = true;
        }
        let invalid = self.invalid_calls();
        if invalid != 0 {
            write!(out, " invalid={invalid}")?;
            any = true;
        }
        if !any {
            out.write_str(" none")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{Access, IoAccess, IoDir};

    #[test]
    fn every_exit_reason_has_a_counter() {
        let reasons = [
            ExitReason::Hypercall,
            ExitReason::Cpuid,
            ExitReason::Msr { write: false },
            ExitReason::Msr { write: true },
            ExitReason::Io(IoAccess {
                port: 1,
                size: 1,
                dir: IoDir::In,
                string: false,
                rep: false,
            }),
            ExitReason::NestedPageFault {
                gpa: 0,
                access: Access::READ,
            },
            ExitReason::Hlt,
            ExitReason::Xsetbv,
            ExitReason::Invd,
            ExitReason::Wbinvd,
            ExitReason::Rdpmc,
            ExitReason::Monitor,
            ExitReason::Mwait,
            ExitReason::Shutdown,
            ExitReason::Exception {
                vector: 6,
                error_code: None,
            },
            ExitReason::MachineCheck,
            ExitReason::Interrupt,
            ExitReason::Nmi,
            ExitReason::Init,
            ExitReason::Sipi { vector: 0x20 },
            ExitReason::EntryFailed { code: 0 },
            ExitReason::Unknown {
                code: 9,
                info1: 0,
                info2: 0,
            },
        ];
        let s = Stats::new();
        for r in &reasons {
            s.count_exit(r);
        }
        for name in EXIT_NAMES {
            assert_eq!(s.exits_named(name), 1, "{name}");
        }
        let sum = Stats::new();
        sum.add(&s);
        sum.add(&s);
        assert_eq!(sum.total_exits(), 2 * EXIT_NAMES.len() as u64);
    }

    #[test]
    fn prints_non_zero_counters() {
        let s = Stats::new();
        s.count_exit(&ExitReason::Hypercall);
        s.count_exit(&ExitReason::Hypercall);
        s.count_exit(&ExitReason::Cpuid);
        s.count_call(Hypercall::ConsoleWrite.number());
        s.count_call(Hypercall::AiModelLoad.number());
        s.count_call(Hypercall::AiModelLoad.number());
        s.count_call(9999);
        let mut out = std::string::String::new();
        s.write_to(&mut out).unwrap();
        assert_eq!(
            out,
            "exits: total=3 hypercall=2 cpuid=1\nhypercalls: console_write=1 ai_model_load=2 invalid=1"
        );
        let mut out = std::string::String::new();
        Stats::new().write_to(&mut out).unwrap();
        assert_eq!(out, "exits: total=0\nhypercalls: none");
    }
}
