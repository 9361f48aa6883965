//! VM exits: the neutral exit type every backend decodes into, and the
//! generic handling written once for all backends.
//!
//! - [`VmExit`]/[`ExitReason`]: what a backend's [`Vcpu::run`](crate::vcpu::Vcpu::run)
//!   returns (see [`crate::vcpu`] for how a backend plugs in);
//! - [`handler`]: the generic handling of each reason (CPUID leaves,
//!   MSRs, port I/O, hypercalls, faults) and the decision to continue or stop
//!   the partition.

pub mod efer;
pub mod handler;
mod mmio;

pub use handler::{handle_exit, ExitContext, ExitHost, Flow};
/// One VM exit, decoded by the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmExit {
    pub reason: ExitReason,
    /// Length in bytes of the instruction that exited, for instruction
    /// exits ([`ExitReason::is_instruction`]); 0 when unknown or not an
    /// instruction exit. The generic handler adds it to RIP after emulation.
    pub insn_len: u8,
}

impl VmExit {
    pub const fn new(reason: ExitReason, insn_len: u8) -> Self {
        VmExit { reason, insn_len }
    }
}

/// Why the guest exited, independent of SVM/VMX encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// VMMCALL / VMCALL: a NexusOS hypercall (number in RAX).
    Hypercall,
    /// CPUID (leaf in EAX, subleaf in ECX).
    Cpuid,
    /// RDMSR / WRMSR (index in ECX, value in EDX:EAX).
    Msr { write: bool },
    /// IN/OUT/INS/OUTS.
    Io(IoAccess),
    /// Second-level (NPT/EPT) translation fault at a guest-physical address.
    NestedPageFault { gpa: u64, access: Access },
    /// HLT.
    Hlt,
    /// XSETBV (XCR index in ECX, value in EDX:EAX).
    Xsetbv,
    /// INVD: invalidate caches without writing them back.
    Invd,
    /// WBINVD (or WBNOINVD): write back and invalidate caches.
    Wbinvd,
    /// RDPMC (counter in ECX).
    Rdpmc,
    /// MONITOR (address in RAX).
    Monitor,
    /// MWAIT.
    Mwait,
    /// A machine check (#MC) arrived while the guest ran (or during its entry).
    MachineCheck,
    /// The guest shut down (triple fault).
    Shutdown,
    /// An intercepted exception.
    Exception { vector: u8, error_code: Option<u32> },
    /// A physical interrupt made the guest exit (intercepted for test partitions); the run
    /// loop acknowledges it in host mode.
    Interrupt,
    /// An NMI made the guest exit: a kick from another CPU, or an NMI for the guest that the
    /// run loop re-injects (the backend has recorded it in `platform::nmi`).
    Nmi,
    /// An INIT signal reached the vCPU (VMX exit 3): it resets and waits for a SIPI.
    Init,
    /// A start-up IPI reached the vCPU while it waited for one (VMX exit 4).
    Sipi { vector: u8 },
    /// The entry itself failed (invalid guest state); `code` is the
    /// backend's raw value.
    EntryFailed { code: u64 },
    /// Any other exit; raw backend code and qualification for the log.
    Unknown { code: u64, info1: u64, info2: u64 },
}

/// Direction of a port access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDir {
    In,
    Out,
}

/// A decoded port-I/O exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAccess {
    pub port: u16,
    /// Operand size in bytes: 1, 2 or 4.
    pub size: u8,
    pub dir: IoDir,
    /// INS/OUTS (data through memory at RSI/RDI).
    pub string: bool,
    /// REP prefix.
    pub rep: bool,
}

/// The kind of access that faulted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    pub exec: bool,
}

impl Access {
    pub const READ: Access = Access {
        write: false,
        exec: false,
    };
    pub const WRITE: Access = Access {
        write: true,
        exec: false,
    };
    pub const EXEC: Access = Access {
        write: false,
        exec: true,
    };

    pub const fn name(self) -> &'static str {
        if self.write {
            "write"
        } else if self.exec {
            "execute"
        } else {
            "read"
        }
    }
}

impl ExitReason {
    /// Whether the exit is an instruction the handler emulates and steps over,
    /// so the backend must say how long it was (`VmExit::insn_len`).
    pub const fn is_instruction(&self) -> bool {
        matches!(
            self,
            ExitReason::Hypercall
                | ExitReason::Cpuid
                | ExitReason::Msr { .. }
                | ExitReason::Io(_)
                | ExitReason::Hlt
                | ExitReason::Xsetbv
                | ExitReason::Invd
                | ExitReason::Wbinvd
                | ExitReason::Rdpmc
                | ExitReason::Monitor
                | ExitReason::Mwait
        )
    }

    /// Short stable name, used as the statistics key and in logs.
    pub const fn name(&self) -> &'static str {
        match self {
            ExitReason::Hypercall => "hypercall",
            ExitReason::Cpuid => "cpuid",
            ExitReason::Msr { write: false } => "rdmsr",
            ExitReason::Msr { write: true } => "wrmsr",
            ExitReason::Io(_) => "io",
            ExitReason::NestedPageFault { .. } => "npf",
            ExitReason::Hlt => "hlt",
            ExitReason::Xsetbv => "xsetbv",
            ExitReason::Invd => "invd",
            ExitReason::Wbinvd => "wbinvd",
            ExitReason::Rdpmc => "rdpmc",
            ExitReason::Monitor => "monitor",
            ExitReason::Mwait => "mwait",
            ExitReason::MachineCheck => "machine-check",
            ExitReason::Shutdown => "shutdown",
            ExitReason::Exception { .. } => "exception",
            ExitReason::Interrupt => "interrupt",
            ExitReason::Nmi => "nmi",
            ExitReason::Init => "init",
            ExitReason::Sipi { .. } => "sipi",
            ExitReason::EntryFailed { .. } => "entry-failed",
            ExitReason::Unknown { .. } => "unknown",
        }
    }
}
