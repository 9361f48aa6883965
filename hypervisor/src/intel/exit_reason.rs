//! VM-exit reasons and exit qualifications (SDM Vol. 3D appendix C, Vol. 3C 28.2.1).

/// Basic exit reasons NexusOS distinguishes; every other value is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicExit {
    ExceptionOrNmi,
    ExternalInterrupt,
    TripleFault,
    Init,
    Sipi,
    InterruptWindow,
    Cpuid,
    Getsec,
    Hlt,
    Invd,
    Rdpmc,
    Vmcall,
    /// Any VMX instruction other than VMCALL executed by the guest.
    VmxInstruction(u16),
    CrAccess,
    DrAccess,
    Io,
    Rdmsr,
    Wrmsr,
    InvalidGuestState,
    MsrLoading,
    Mwait,
    Monitor,
    MachineCheck,
    EptViolation,
    EptMisconfig,
    PreemptionTimer,
    Wbinvd,
    Xsetbv,
    Other(u16),
}

impl BasicExit {
    pub const fn from_basic(n: u16) -> Self {
        match n {
            0 => BasicExit::ExceptionOrNmi,
            1 => BasicExit::ExternalInterrupt,
            2 => BasicExit::TripleFault,
            3 => BasicExit::Init,
            4 => BasicExit::Sipi,
            7 => BasicExit::InterruptWindow,
            10 => BasicExit::Cpuid,
            11 => BasicExit::Getsec,
            12 => BasicExit::Hlt,
            13 => BasicExit::Invd,
            15 => BasicExit::Rdpmc,
            18 => BasicExit::Vmcall,
            19..=27 | 50 | 53 => BasicExit::VmxInstruction(n),
            28 => BasicExit::CrAccess,
            29 => BasicExit::DrAccess,
            30 => BasicExit::Io,
            31 => BasicExit::Rdmsr,
            32 => BasicExit::Wrmsr,
            33 => BasicExit::InvalidGuestState,
            34 => BasicExit::MsrLoading,
            36 => BasicExit::Mwait,
            39 => BasicExit::Monitor,
            41 => BasicExit::MachineCheck,
            48 => BasicExit::EptViolation,
            49 => BasicExit::EptMisconfig,
            52 => BasicExit::PreemptionTimer,
            54 => BasicExit::Wbinvd,
            55 => BasicExit::Xsetbv,
            _ => BasicExit::Other(n),
        }
    }
}

/// SDM name of a basic exit reason, for logs and counters.
pub const fn name(basic: u16) -> &'static str {
    match basic {
        0 => "exception or NMI",
        1 => "external interrupt",
        2 => "triple fault",
        3 => "INIT signal",
        4 => "start-up IPI",
        5 => "I/O SMI",
        6 => "other SMI",
        7 => "interrupt window",
        8 => "NMI window",
        9 => "task switch",
        10 => "CPUID",
        11 => "GETSEC",
        12 => "HLT",
        13 => "INVD",
        14 => "INVLPG",
        15 => "RDPMC",
        16 => "RDTSC",
        17 => "RSM",
        18 => "VMCALL",
        19 => "VMCLEAR",
        20 => "VMLAUNCH",
        21 => "VMPTRLD",
        22 => "VMPTRST",
        23 => "VMREAD",
        24 => "VMRESUME",
        25 => "VMWRITE",
        26 => "VMXOFF",
        27 => "VMXON",
        28 => "control-register access",
        29 => "MOV DR",
        30 => "I/O instruction",
        31 => "RDMSR",
        32 => "WRMSR",
        33 => "VM-entry failure: invalid guest state",
        34 => "VM-entry failure: MSR loading",
        36 => "MWAIT",
        37 => "monitor trap flag",
        39 => "MONITOR",
        40 => "PAUSE",
        41 => "VM-entry failure: machine-check event",
        43 => "TPR below threshold",
        44 => "APIC access",
        45 => "virtualized EOI",
        46 => "access to GDTR or IDTR",
        47 => "access to LDTR or TR",
        48 => "EPT violation",
        49 => "EPT misconfiguration",
        50 => "INVEPT",
        51 => "RDTSCP",
        52 => "VMX-preemption timer expired",
        53 => "INVVPID",
        54 => "WBINVD or WBNOINVD",
        55 => "XSETBV",
        56 => "APIC write",
        57 => "RDRAND",
        58 => "INVPCID",
        59 => "VMFUNC",
        60 => "ENCLS",
        61 => "RDSEED",
        62 => "page-modification log full",
        63 => "XSAVES",
        64 => "XRSTORS",
        66 => "SPP-related event",
        67 => "UMWAIT",
        68 => "TPAUSE",
        69 => "LOADIWKEY",
        _ => "unknown exit reason",
    }
}

/// The 32-bit exit-reason field split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitReason {
    pub basic: u16,
    /// Bit 31: the VM entry failed (reasons 33, 34, 41).
    pub entry_failure: bool,
}

impl ExitReason {
    pub const fn from_raw(raw: u32) -> Self {
        ExitReason {
            basic: raw as u16,
            entry_failure: raw & (1 << 31) != 0,
        }
    }
    pub const fn kind(self) -> BasicExit {
        BasicExit::from_basic(self.basic)
    }
    pub const fn name(self) -> &'static str {
        name(self.basic)
    }
}

/// Exit qualification of an I/O instruction exit (SDM Table 28-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoQualification {
    pub port: u16,
    /// 1, 2 or 4.
    pub size: u8,
    pub is_in: bool,
    pub string: bool,
    pub rep: bool,
}

impl IoQualification {
    pub const fn decode(q: u64) -> Self {
        IoQualification {
            port: (q >> 16) as u16,
            size: ((q & 7) + 1) as u8,
            is_in: q & (1 << 3) != 0,
            string: q & (1 << 4) != 0,
            rep: q & (1 << 5) != 0,
        }
    }
}

/// Kind of a control-register access (SDM Table 28-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrAccessType {
    MovToCr,
    MovFromCr,
    Clts,
    Lmsw { source: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrAccess {
    pub cr: u8,
    pub access: CrAccessType,
    /// General-purpose register number (0 = RAX ... 15 = R15) for MOV.
    pub gpr: u8,
}

impl CrAccess {
    pub const fn decode(q: u64) -> Self {
        let access = match (q >> 4) & 3 {
            0 => CrAccessType::MovToCr,
            1 => CrAccessType::MovFromCr,
            2 => CrAccessType::Clts,
            _ => CrAccessType::Lmsw {
                source: (q >> 16) as u16,
            },
        };
        CrAccess {
            cr: (q & 0xf) as u8,
            access,
            gpr: ((q >> 8) & 0xf) as u8,
        }
    }
}

/// Exit qualification of an EPT violation (SDM Table 28-7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptViolation {
    pub read: bool,
    pub write: bool,
    pub fetch: bool,
    /// The rights the guest-physical address had (R/W/X bits 3-5).
    pub allowed: u8,
    /// Bit 7: the guest-linear address field is valid.
    pub linear_valid: bool,
    /// Bit 8 (when bit 7): the access was to the final translation, not a paging structure.
    pub final_translation: bool,
}

impl EptViolation {
    pub const fn decode(q: u64) -> Self {
        EptViolation {
            read: q & 1 != 0,
            write: q & 2 != 0,
            fetch: q & 4 != 0,
            allowed: ((q >> 3) & 7) as u8,
            linear_valid: q & (1 << 7) != 0,
            final_translation: q & (1 << 8) != 0,
        }
    }

    /// "read", "write" or "execute": what the guest tried.
    pub const fn access(&self) -> &'static str {
        if self.write {
            "write"
        } else if self.fetch {
            "execute"
        } else {
            "read"
        }
    }

    /// No rights at all: the address is outside the partition.
    pub const fn unmapped(&self) -> bool {
        self.allowed == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reason_split() {
        let r = ExitReason::from_raw(0x8000_0021);
        assert!(r.entry_failure);
        assert_eq!(r.basic, 33);
        assert_eq!(r.kind(), BasicExit::InvalidGuestState);
        assert_eq!(r.name(), "VM-entry failure: invalid guest state");
        let v = ExitReason::from_raw(18);
        assert!(!v.entry_failure);
        assert_eq!(v.kind(), BasicExit::Vmcall);
    }

    #[test]
    fn basic_reasons() {
        assert_eq!(BasicExit::from_basic(10), BasicExit::Cpuid);
        assert_eq!(BasicExit::from_basic(12), BasicExit::Hlt);
        assert_eq!(BasicExit::from_basic(30), BasicExit::Io);
        assert_eq!(BasicExit::from_basic(48), BasicExit::EptViolation);
        assert_eq!(BasicExit::from_basic(49), BasicExit::EptMisconfig);
        assert_eq!(BasicExit::from_basic(55), BasicExit::Xsetbv);
        assert_eq!(BasicExit::from_basic(24), BasicExit::VmxInstruction(24));
        assert_eq!(BasicExit::from_basic(500), BasicExit::Other(500));
        assert_eq!(name(500), "unknown exit reason");
        assert_eq!(name(2), "triple fault");
    }

    #[test]
    fn io_qualification() {
        // OUT DX, AL to port 0x3f8.
        let q = IoQualification::decode(0x03f8_0000);
        assert_eq!(
            q,
            IoQualification {
                port: 0x3f8,
                size: 1,
                is_in: false,
                string: false,
                rep: false
            }
        );
        // IN EAX, DX from 0xcfc.
        let q = IoQualification::decode(0x0cfc_0000 | 3 | 8);
        assert_eq!((q.port, q.size, q.is_in), (0xcfc, 4, true));
        // REP OUTSW to 0xe9.
        let q = IoQualification::decode(0x00e9_0000 | 1 | 0x10 | 0x20);
        assert_eq!((q.size, q.string, q.rep), (2, true, true));
    }

    #[test]
    fn cr_access_qualification() {
        // MOV CR3, RBX.
        let q = CrAccess::decode(3 | (3 << 8));
        assert_eq!(
            q,
            CrAccess {
                cr: 3,
                access: CrAccessType::MovToCr,
                gpr: 3
            }
        );
        // MOV R12, CR0 (from CR).
        let q = CrAccess::decode((1 << 4) | (12 << 8));
        assert_eq!((q.access, q.gpr), (CrAccessType::MovFromCr, 12));
        // LMSW with source 0x1.
        let q = CrAccess::decode((3 << 4) | (1 << 16));
        assert_eq!(q.access, CrAccessType::Lmsw { source: 1 });
        assert_eq!(CrAccess::decode(2 << 4).access, CrAccessType::Clts);
    }

    #[test]
    fn ept_violation_qualification() {
        // Write to an unmapped page with a valid linear address.
        let v = EptViolation::decode(2 | (1 << 7));
        assert!(v.write && !v.read && !v.fetch);
        assert!(v.unmapped());
        assert!(v.linear_valid && !v.final_translation);
        assert_eq!(v.access(), "write");
        // Read of a page that is executable only.
        let v = EptViolation::decode(1 | (4 << 3) | (1 << 7) | (1 << 8));
        assert_eq!(v.access(), "read");
        assert_eq!(v.allowed, 4);
        assert!(!v.unmapped());
        assert!(v.final_translation);
        assert_eq!(EptViolation::decode(4).access(), "execute");
    }
}
