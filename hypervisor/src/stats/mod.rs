//! Per-partition counters: VM exits by reason and hypercalls by number,
//! printed at the end of a run (like `jailhouse cell stats`).
//!
//! Each partition's counters are written only by the CPU running it, and read
//! by the summary after that CPU has finished, so plain integers suffice.

use crate::exit::ExitReason;
use core::fmt::{self, Write};
use nexus_abi::Hypercall;

/// Exit reasons in print order (names from [`ExitReason::name`]).
pub const EXIT_NAMES: [&str; 21] = [
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
    "init",
    "sipi",
    "entry-failed",
    "unknown",
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub exits: [u64; EXIT_NAMES.len()],
    /// One counter per [`Hypercall::ALL`] entry.
    pub calls: [u64; Hypercall::ALL.len()],
    /// Hypercalls with an unassigned number.
    pub invalid_calls: u64,
}

impl Stats {
    pub const fn new() -> Self {
        Stats {
            exits: [0; EXIT_NAMES.len()],
            calls: [0; Hypercall::ALL.len()],
            invalid_calls: 0,
        }
    }

    pub fn count_exit(&mut self, reason: &ExitReason) {
        let name = reason.name();
        if let Some(i) = EXIT_NAMES.iter().position(|n| *n == name) {
            self.exits[i] += 1;
        }
    }

    pub fn count_call(&mut self, number: u64) {
        match Hypercall::ALL.iter().position(|c| c.number() == number) {
            Some(i) => self.calls[i] += 1,
            None => self.invalid_calls += 1,
        }
    }

    pub fn exits_named(&self, name: &str) -> u64 {
        EXIT_NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.exits[i])
    }

    pub fn total_exits(&self) -> u64 {
        self.exits.iter().sum()
    }

    /// Two lines: non-zero exit counters, then non-zero hypercall counters,
    /// e.g. `exits: total=41 hypercall=30 cpuid=3 npf=1` and
    /// `hypercalls: console_write=9 ai_model_load=2 invalid=1`.
    pub fn write_to(&self, out: &mut impl Write) -> fmt::Result {
        write!(out, "exits: total={}", self.total_exits())?;
        for (name, n) in EXIT_NAMES.iter().zip(self.exits) {
            if n != 0 {
                write!(out, " {name}={n}")?;
            }
        }
        out.write_str("\nhypercalls:")?;
        let mut any = false;
        for (call, n) in Hypercall::ALL.iter().zip(self.calls) {
            if n != 0 {
                write!(out, " {}={n}", call.name())?;
                any = true;
            }
        }
        if self.invalid_calls != 0 {
            write!(out, " invalid={}", self.invalid_calls)?;
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
            ExitReason::Init,
            ExitReason::Sipi { vector: 0x20 },
            ExitReason::EntryFailed { code: 0 },
            ExitReason::Unknown {
                code: 9,
                info1: 0,
                info2: 0,
            },
        ];
        let mut s = Stats::new();
        for r in &reasons {
            s.count_exit(r);
        }
        assert_eq!(s.exits, [1; EXIT_NAMES.len()]);
    }

    #[test]
    fn prints_non_zero_counters() {
        let mut s = Stats::new();
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
