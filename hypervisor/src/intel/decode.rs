//! VMX exit information → the backend-neutral [`VmExit`].
//!
//! Pure: the backend reads the VMCS fields into [`RawExit`] and this module
//! decides what they mean, so the mapping is tested on the host.

use super::exit_reason::{BasicExit, EptViolation, ExitReason as VmxReason, IoQualification};
use crate::exit::{Access, ExitReason, IoAccess, IoDir, VmExit};

/// The VMCS exit fields a decode needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawExit {
    /// VMCS 0x4402.
    pub reason: u32,
    /// VMCS 0x6400.
    pub qualification: u64,
    /// VMCS 0x440C (valid for instruction exits).
    pub insn_len: u32,
    /// VMCS 0x2400 (valid for EPT violations and misconfigurations).
    pub guest_physical: u64,
    /// VMCS 0x4404.
    pub interruption_info: u32,
    /// VMCS 0x4406.
    pub interruption_error: u32,
    /// VMCS 0x4408: the event being delivered when the exit happened.
    pub vectoring_info: u32,
    /// VMCS 0x440A.
    pub vectoring_error: u32,
}

/// `raw.reason` packed with the qualification for `Unknown`.
fn unknown(raw: &RawExit) -> ExitReason {
    ExitReason::Unknown {
        code: raw.reason as u64,
        info1: raw.qualification,
        info2: raw.guest_physical,
    }
}

/// Decode one exit. The instruction length is taken from the VMCS field for
/// instruction exits only (it is undefined for other exits).
pub fn decode(raw: &RawExit) -> VmExit {
    let r = VmxReason::from_raw(raw.reason);
    // Exit 41 ("VM-entry failure due to machine-check event") has the entry
    // failure bit set, but it is a machine check, not a bad guest state.
    if r.kind() == BasicExit::MachineCheck {
        return VmExit::new(ExitReason::MachineCheck, 0);
    }
    if r.entry_failure {
        return VmExit::new(
            ExitReason::EntryFailed {
                code: raw.reason as u64,
            },
            0,
        );
    }
    let len = raw.insn_len.min(15) as u8;
    let (reason, insn) = match r.kind() {
        BasicExit::Vmcall => (ExitReason::Hypercall, true),
        BasicExit::Cpuid => (ExitReason::Cpuid, true),
        BasicExit::Hlt => (ExitReason::Hlt, true),
        BasicExit::Xsetbv => (ExitReason::Xsetbv, true),
        BasicExit::Invd => (ExitReason::Invd, true),
        BasicExit::Wbinvd => (ExitReason::Wbinvd, true),
        BasicExit::Rdpmc => (ExitReason::Rdpmc, true),
        BasicExit::Monitor => (ExitReason::Monitor, true),
        BasicExit::Mwait => (ExitReason::Mwait, true),
        BasicExit::Rdmsr => (ExitReason::Msr { write: false }, true),
        BasicExit::Wrmsr => (ExitReason::Msr { write: true }, true),
        BasicExit::Io => {
            let q = IoQualification::decode(raw.qualification);
            let io = IoAccess {
                port: q.port,
                size: q.size,
                dir: if q.is_in { IoDir::In } else { IoDir::Out },
                string: q.string,
                rep: q.rep,
            };
            (ExitReason::Io(io), true)
        }
        BasicExit::EptViolation => {
            let v = EptViolation::decode(raw.qualification);
            let access = if v.write {
                Access::WRITE
            } else if v.fetch {
                Access::EXEC
            } else {
                Access::READ
            };
            (
                ExitReason::NestedPageFault {
                    gpa: raw.guest_physical,
                    access,
                },
                false,
            )
        }
        BasicExit::TripleFault => (ExitReason::Shutdown, false),
        BasicExit::Init => (ExitReason::Init, false),
        // The qualification's low byte is the SIPI vector (SDM 27.2.1).
        BasicExit::Sipi => (
            ExitReason::Sipi {
                vector: raw.qualification as u8,
            },
            false,
        ),
        BasicExit::ExternalInterrupt => (ExitReason::Interrupt, false),
        BasicExit::ExceptionOrNmi => {
            let info = raw.interruption_info;
            let valid = info & (1 << 31) != 0;
            let kind = (info >> 8) & 7;
            if !valid {
                (ExitReason::Interrupt, false)
            } else if kind == 2 {
                // Type 2: an NMI (NMI exiting), consumed by the exit.
                (ExitReason::Nmi, false)
            } else if info as u8 == crate::vcpu::vector::MC {
                (ExitReason::MachineCheck, false)
            } else {
                let error_code = (info & (1 << 11) != 0).then_some(raw.interruption_error);
                (
                    ExitReason::Exception {
                        vector: info as u8,
                        error_code,
                    },
                    false,
                )
            }
        }
        // EPT misconfiguration, CR access and everything else
        // the generic handler does not know: reported with the raw code.
        _ => (unknown(raw), false),
    };
    VmExit::new(reason, if insn { len } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(reason: u32) -> RawExit {
        RawExit {
            reason,
            insn_len: 3,
            ..RawExit::default()
        }
    }

    #[test]
    fn init_and_sipi_are_shared_exits() {
        assert_eq!(decode(&raw(3)), VmExit::new(ExitReason::Init, 0));
        let sipi = RawExit {
            qualification: 0x9a,
            ..raw(4)
        };
        assert_eq!(
            decode(&sipi),
            VmExit::new(ExitReason::Sipi { vector: 0x9a }, 0),
            "vector from the qualification, no instruction length"
        );
    }

    #[test]
    fn instruction_exits_carry_the_vmcs_length() {
        assert_eq!(decode(&raw(18)), VmExit::new(ExitReason::Hypercall, 3));
        assert_eq!(
            decode(&RawExit {
                insn_len: 2,
                ..raw(10)
            }),
            VmExit::new(ExitReason::Cpuid, 2)
        );
        assert_eq!(
            decode(&RawExit {
                insn_len: 1,
                ..raw(12)
            })
            .insn_len,
            1
        );
        assert_eq!(decode(&raw(31)).reason, ExitReason::Msr { write: false });
        assert_eq!(decode(&raw(55)), VmExit::new(ExitReason::Xsetbv, 3));
        assert_eq!(decode(&raw(32)).reason, ExitReason::Msr { write: true });
    }

    /// Review M2 and L9: cache, counter and monitor instructions are instruction exits with
    /// the VMCS length; #MC (exception exit with vector 18, or exit 41 during entry) is its
    /// own reason.
    #[test]
    fn cache_counter_monitor_and_machine_check_exits() {
        for (reason, want) in [
            (13, ExitReason::Invd),
            (54, ExitReason::Wbinvd),
            (15, ExitReason::Rdpmc),
            (39, ExitReason::Monitor),
            (36, ExitReason::Mwait),
        ] {
            assert_eq!(decode(&raw(reason)), VmExit::new(want, 3), "{reason}");
        }
        let mc = RawExit {
            interruption_info: (1 << 31) | (3 << 8) | 18,
            ..raw(0)
        };
        assert_eq!(decode(&mc), VmExit::new(ExitReason::MachineCheck, 0));
        assert_eq!(
            decode(&raw(0x8000_0029)),
            VmExit::new(ExitReason::MachineCheck, 0),
            "exit 41 with the entry-failure bit"
        );
    }

    #[test]
    fn io_exit() {
        let e = decode(&RawExit {
            qualification: 0x03f8_0000,
            insn_len: 1,
            ..raw(30)
        });
        assert_eq!(
            e.reason,
            ExitReason::Io(IoAccess {
                port: 0x3f8,
                size: 1,
                dir: IoDir::Out,
                string: false,
                rep: false
            })
        );
        assert_eq!(e.insn_len, 1);
    }

    #[test]
    fn ept_violation_is_a_nested_fault_without_length() {
        let e = decode(&RawExit {
            qualification: 0x2 | (1 << 7),
            guest_physical: 0x1234_5000,
            ..raw(48)
        });
        assert_eq!(
            e,
            VmExit::new(
                ExitReason::NestedPageFault {
                    gpa: 0x1234_5000,
                    access: Access::WRITE
                },
                0
            )
        );
        let fetch = decode(&RawExit {
            qualification: 0x4,
            ..raw(48)
        });
        assert!(matches!(
            fetch.reason,
            ExitReason::NestedPageFault {
                access: Access::EXEC,
                ..
            }
        ));
    }

    #[test]
    fn failures_and_faults() {
        assert_eq!(
            decode(&raw(0x8000_0021)).reason,
            ExitReason::EntryFailed { code: 0x8000_0021 }
        );
        assert_eq!(decode(&raw(2)).reason, ExitReason::Shutdown);
        assert_eq!(decode(&raw(1)).reason, ExitReason::Interrupt);
        // #GP (vector 13, hardware exception type 3, error code valid).
        let gp = RawExit {
            interruption_info: (1 << 31) | (1 << 11) | (3 << 8) | 13,
            interruption_error: 0x10,
            ..raw(0)
        };
        assert_eq!(
            decode(&gp).reason,
            ExitReason::Exception {
                vector: 13,
                error_code: Some(0x10)
            }
        );
        // NMI.
        let nmi = RawExit {
            interruption_info: (1 << 31) | (2 << 8) | 2,
            ..raw(0)
        };
        assert_eq!(decode(&nmi).reason, ExitReason::Nmi);
    }

    #[test]
    fn unknown_exits_keep_raw_code() {
        let e = decode(&RawExit {
            qualification: 7,
            guest_physical: 0x99,
            ..raw(49)
        });
        assert_eq!(
            e.reason,
            ExitReason::Unknown {
                code: 49,
                info1: 7,
                info2: 0x99
            }
        );
        assert_eq!(e.insn_len, 0);
        assert!(matches!(
            decode(&raw(60000)).reason,
            ExitReason::Unknown { code: 60000, .. }
        ));
    }
}
