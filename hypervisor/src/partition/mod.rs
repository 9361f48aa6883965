//! Partitions: what the policy says about each one ([`PartitionConfig`]),
//! how it ended ([`StopReason`]) and whether that is what the test expected
//! ([`Expectation`]).
//!
//! - [`plan`]: policy → partition configurations and NPT ranges;
//! - [`elf`]: loading a guest image into its partition's memory;
//! - [`guest_setup`]: the initial 64-bit state of a test guest (its page tables).

pub mod elf;
pub mod guest_setup;
pub mod lifecycle;
pub mod plan;

use crate::exit::Access;
use crate::mem::Range;
use core::fmt;
use nexus_abi::GroupSet;

/// Most memory regions one partition may have.
pub const MAX_REGIONS: usize = 8;
/// Most partitions in one policy.
pub const MAX_PARTITIONS: usize = 8;
/// Most CPUs one partition may have.
pub const MAX_CPUS: usize = 64;

/// A short string stored inline (no allocator in host mode after boot).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FixedStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> FixedStr<N> {
    pub const EMPTY: Self = FixedStr {
        buf: [0; N],
        len: 0,
    };

    /// `s` cut to `N` bytes at a character boundary.
    pub fn new(s: &str) -> Self {
        let mut cut = s.len().min(N);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut buf = [0; N];
        buf[..cut].copy_from_slice(&s.as_bytes()[..cut]);
        FixedStr { buf, len: cut }
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl<const N: usize> fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for FixedStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the hypervisor runs a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The firmware / primary OS, virtualized in place (blue-pill).
    Primary,
    /// A `no_std` test guest loaded and started by the hypervisor.
    Test,
    /// AI / container partitions: set aside at boot, loaded, started and stopped by a
    /// manager through the management calls (`hypercall::manage`, `lifecycle`).
    Deferred,
}

/// What a test partition is expected to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// Report success through `partition_exit(0)`.
    ExitZero,
    /// Be stopped by a nested page fault outside its memory (an isolation
    /// test): that stop is the partition's pass.
    Contained,
    /// Be stopped by a triple fault (fault-containment tests).
    TripleFault,
    /// Be stopped for touching a port it may not use.
    PortDenied,
    /// Be stopped for halting without `partition_exit`.
    Halted,
}

impl Expectation {
    /// From the partition's command line: an explicit `expect=<what>` word
    /// (`exit0`, `contained`, `triple-fault`, `port-denied`, `halted`) wins;
    /// otherwise a command line starting with `isolation` expects to be
    /// contained, and anything else to exit with 0. An unknown `expect=`
    /// value expects exit 0, so a typo cannot turn a failure into a pass.
    pub fn from_cmdline(cmdline: &str) -> Expectation {
        let mut words = cmdline.split_whitespace();
        if let Some(what) = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("expect="))
        {
            return match what {
                "contained" => Expectation::Contained,
                "triple-fault" => Expectation::TripleFault,
                "port-denied" => Expectation::PortDenied,
                "halted" => Expectation::Halted,
                _ => Expectation::ExitZero,
            };
        }
        match words.next() {
            Some("isolation") => Expectation::Contained,
            _ => Expectation::ExitZero,
        }
    }

    /// For the summary, e.g. "expected to be contained".
    pub const fn describe(self) -> &'static str {
        match self {
            Expectation::ExitZero => "expected exit 0",
            Expectation::Contained => "expected to be contained",
            Expectation::TripleFault => "expected a contained triple fault",
            Expectation::PortDenied => "expected a denied port",
            Expectation::Halted => "expected a stop on HLT",
        }
    }
}

/// One partition as the policy describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionConfig {
    /// Index in the policy (0-based); the ASID is `id + 1`.
    pub id: u8,
    pub name: FixedStr<32>,
    pub kind: Kind,
    pub image: FixedStr<32>,
    pub cmdline: FixedStr<256>,
    pub groups: GroupSet,
    pub regions: [Range; MAX_REGIONS],
    pub region_count: usize,
    pub apic_ids: [u32; MAX_CPUS],
    pub cpu_count: usize,
    pub expect: Expectation,
}

impl PartitionConfig {
    pub fn regions(&self) -> &[Range] {
        &self.regions[..self.region_count]
    }

    pub fn apic_ids(&self) -> &[u32] {
        &self.apic_ids[..self.cpu_count]
    }

    /// Whether `[addr, addr+len)` lies inside one of the partition's regions.
    pub fn owns(&self, addr: u64, len: u64) -> bool {
        self.regions().iter().any(|r| r.contains_span(addr, len))
    }

    pub fn asid(&self) -> u32 {
        self.id as u32 + 1
    }
}

/// Why a partition stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `partition_exit(code)`.
    Exited { code: u32 },
    /// Access outside the partition's memory.
    Isolation { gpa: u64, access: Access },
    /// Triple fault.
    TripleFault,
    /// HLT with nothing to wake it (test guests must call `partition_exit`).
    Halted,
    /// A port the partition may not use.
    PortDenied { port: u16 },
    /// An MSR the partition may not use, with #GP injection impossible.
    ExitNotHandled { code: u64 },
    /// The hardware refused to enter the guest.
    EntryFailed { code: u64 },
    /// The instruction that exited could not be decoded.
    Undecodable { rip: u64 },
    /// An exception the hypervisor intercepted.
    Exception { vector: u8 },
    /// The hypervisor could not set the partition up.
    SetupFailed,
    /// Reset by INIT, waiting for a start-up IPI that only another CPU of the
    /// partition can send (the vCPU is the partition's first, or has no mailbox).
    WaitsForSipi,
    /// The vCPU could not be put into the INIT state (VMX without unrestricted
    /// guest, or a backend that does not emulate INIT).
    InitNotEmulated,
    /// An AP's vCPU ended because its partition ended.
    PartitionEnded,
    /// It ran past its deadline (a guest that never exits, or never stops).
    Runaway { seconds: u32 },
    /// A machine check (#MC) arrived while the partition's guest ran: the
    /// hardware reported an error, the partition is not trusted to handle it.
    MachineCheck,
}

impl StopReason {
    /// Whether this ending counts as the partition passing.
    pub fn passes(&self, expect: Expectation) -> bool {
        matches!(
            (expect, self),
            (Expectation::ExitZero, StopReason::Exited { code: 0 })
                | (Expectation::Contained, StopReason::Isolation { .. })
                | (Expectation::TripleFault, StopReason::TripleFault)
                | (Expectation::PortDenied, StopReason::PortDenied { .. })
                | (Expectation::Halted, StopReason::Halted)
        )
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StopReason::Exited { code } => write!(f, "exited with code {code}"),
            StopReason::Isolation { gpa, access } => write!(
                f,
                "stopped by isolation: nested page fault on {} of {gpa:#x}",
                access.name()
            ),
            StopReason::TripleFault => f.write_str("stopped: triple fault"),
            StopReason::Halted => f.write_str("stopped: HLT without partition_exit"),
            StopReason::PortDenied { port } => write!(f, "stopped: I/O port {port:#x} denied"),
            StopReason::ExitNotHandled { code } => write!(f, "stopped: unhandled exit {code:#x}"),
            StopReason::EntryFailed { code } => write!(f, "stopped: VM entry failed ({code:#x})"),
            StopReason::Undecodable { rip } => {
                write!(f, "stopped: cannot decode the instruction at {rip:#x}")
            }
            StopReason::Exception { vector } => write!(f, "stopped: exception {vector}"),
            StopReason::SetupFailed => f.write_str("not started: setup failed"),
            StopReason::WaitsForSipi => {
                f.write_str("stopped: reset by INIT, no CPU left to send it a start-up IPI")
            }
            StopReason::InitNotEmulated => {
                f.write_str("stopped: INIT received, but this CPU cannot emulate the INIT state")
            }
            StopReason::PartitionEnded => f.write_str("stopped with its partition"),
            StopReason::Runaway { seconds } => {
                write!(f, "stopped: still running after its {seconds} s deadline")
            }
            StopReason::MachineCheck => {
                f.write_str("stopped: machine check (#MC) while the guest ran")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_follow_the_cmdline() {
        assert_eq!(
            Expectation::from_cmdline("isolation"),
            Expectation::Contained
        );
        assert_eq!(
            Expectation::from_cmdline(" isolation extra"),
            Expectation::Contained
        );
        assert_eq!(
            Expectation::from_cmdline("hypercalls"),
            Expectation::ExitZero
        );
        assert_eq!(
            Expectation::from_cmdline("isolationx"),
            Expectation::ExitZero
        );
        assert_eq!(Expectation::from_cmdline(""), Expectation::ExitZero);
        assert_eq!(
            Expectation::from_cmdline("triple-fault expect=triple-fault"),
            Expectation::TripleFault
        );
        assert_eq!(
            Expectation::from_cmdline("port expect=port-denied"),
            Expectation::PortDenied
        );
        assert_eq!(
            Expectation::from_cmdline("hlt expect=halted"),
            Expectation::Halted
        );
        assert_eq!(
            Expectation::from_cmdline("isolation expect=exit0"),
            Expectation::ExitZero
        );
        assert_eq!(
            Expectation::from_cmdline("x expect=typo"),
            Expectation::ExitZero
        );
    }

    #[test]
    fn verdicts() {
        let npf = StopReason::Isolation {
            gpa: 0x4000_0000,
            access: Access::READ,
        };
        assert!(npf.passes(Expectation::Contained));
        assert!(!npf.passes(Expectation::ExitZero));
        assert!(StopReason::Exited { code: 0 }.passes(Expectation::ExitZero));
        assert!(!StopReason::Exited { code: 1 }.passes(Expectation::ExitZero));
        // an isolation test that exits cleanly was not contained: fail
        assert!(!StopReason::Exited { code: 0 }.passes(Expectation::Contained));
        assert!(!StopReason::TripleFault.passes(Expectation::Contained));
        assert!(StopReason::TripleFault.passes(Expectation::TripleFault));
        assert!(!StopReason::Exited { code: 0 }.passes(Expectation::TripleFault));
        assert!(StopReason::PortDenied { port: 0x60 }.passes(Expectation::PortDenied));
        assert!(!StopReason::Halted.passes(Expectation::PortDenied));
        assert!(StopReason::Halted.passes(Expectation::Halted));
        assert_eq!(
            std::format!("{npf}"),
            "stopped by isolation: nested page fault on read of 0x40000000"
        );
    }

    #[test]
    fn fixed_str_cuts_at_char_boundary() {
        assert_eq!(FixedStr::<4>::new("abcdef").as_str(), "abcd");
        assert_eq!(FixedStr::<4>::new("abcé").as_str(), "abc");
        assert_eq!(FixedStr::<8>::new("x").as_str(), "x");
    }
}
