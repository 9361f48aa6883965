//! SVM exit codes (APM vol. 2, appendix C) decoded into the neutral
//! [`ExitReason`]. Pure: the backend passes EXITCODE, EXITINFO1 and
//! EXITINFO2 from the VMCB.

use crate::exit::{Access, ExitReason, IoAccess, IoDir};

pub mod code {
    pub const EXCEPTION_BASE: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    pub const MC: u64 = 0x52;
    pub const RDPMC: u64 = 0x6f;
    pub const CPUID: u64 = 0x72;
    pub const INVD: u64 = 0x76;
    pub const HLT: u64 = 0x78;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8a;
    pub const MWAIT: u64 = 0x8b;
    pub const MWAIT_CONDITIONAL: u64 = 0x8c;
    pub const XSETBV: u64 = 0x8d;
    pub const NPF: u64 = 0x400;
    pub const INVALID: u64 = u64::MAX;
    /// VMEXIT_INVALID as QEMU 7.2 TCG writes it (zero-extended from 32 bits).
    pub const INVALID_32: u64 = u32::MAX as u64;
}

/// Vectors that push an error code.
fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

pub fn decode(exitcode: u64, info1: u64, info2: u64) -> ExitReason {
    match exitcode {
        code::MC => ExitReason::MachineCheck,
        0x40..=0x5f => {
            let vector = (exitcode - code::EXCEPTION_BASE) as u8;
            ExitReason::Exception {
                vector,
                error_code: has_error_code(vector).then_some(info1 as u32),
            }
        }
        code::INTR | code::SMI => ExitReason::Interrupt,
        code::NMI => ExitReason::Nmi,
        code::CPUID => ExitReason::Cpuid,
        code::INVD => ExitReason::Invd,
        code::WBINVD => ExitReason::Wbinvd,
        code::RDPMC => ExitReason::Rdpmc,
        code::MONITOR => ExitReason::Monitor,
        code::MWAIT | code::MWAIT_CONDITIONAL => ExitReason::Mwait,
        code::HLT => ExitReason::Hlt,
        code::IOIO => ExitReason::Io(decode_io(info1)),
        code::MSR => ExitReason::Msr {
            write: info1 & 1 != 0,
        },
        code::SHUTDOWN => ExitReason::Shutdown,
        code::VMMCALL => ExitReason::Hypercall,
        code::XSETBV => ExitReason::Xsetbv,
        code::NPF => ExitReason::NestedPageFault {
            gpa: info2,
            access: Access {
                write: info1 & (1 << 1) != 0,
                exec: info1 & (1 << 4) != 0,
            },
        },
        // QEMU 7.2 TCG stores VMEXIT_INVALID (-1) as a 32-bit value.
        code::INVALID | code::INVALID_32 => ExitReason::EntryFailed { code: exitcode },
        _ => ExitReason::Unknown {
            code: exitcode,
            info1,
            info2,
        },
    }
}

/// IOIO EXITINFO1: bit 0 IN, bit 2 string, bit 3 REP, bits 4..6 operand
/// size (one-hot 8/16/32), bits 16..31 port.
pub fn decode_io(info1: u64) -> IoAccess {
    let size = if info1 & (1 << 6) != 0 {
        4
    } else if info1 & (1 << 5) != 0 {
        2
    } else {
        1
    };
    IoAccess {
        port: (info1 >> 16) as u16,
        size,
        dir: if info1 & 1 != 0 {
            IoDir::In
        } else {
            IoDir::Out
        },
        string: info1 & (1 << 2) != 0,
        rep: info1 & (1 << 3) != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_seen_under_qemu() {
        // The values the issue recorded from QEMU TCG.
        assert_eq!(decode(0x81, 0, 0), ExitReason::Hypercall);
        assert_eq!(decode(0x78, 0, 0), ExitReason::Hlt);
        assert_eq!(
            decode(0x400, 0x1_0000_0014, 0x4000_0000),
            ExitReason::NestedPageFault {
                gpa: 0x4000_0000,
                access: Access::EXEC
            }
        );
        assert_eq!(
            decode(0x400, 0x1_0000_0006, 0x1234_5000),
            ExitReason::NestedPageFault {
                gpa: 0x1234_5000,
                access: Access::WRITE
            }
        );
        assert_eq!(
            decode(0x400, 0x1_0000_0004, 0x10),
            ExitReason::NestedPageFault {
                gpa: 0x10,
                access: Access::READ
            }
        );
    }

    #[test]
    fn other_codes() {
        assert_eq!(decode(0x72, 0, 0), ExitReason::Cpuid);
        assert_eq!(decode(0x7c, 0, 0), ExitReason::Msr { write: false });
        assert_eq!(decode(0x7c, 1, 0), ExitReason::Msr { write: true });
        assert_eq!(decode(0x7f, 0, 0), ExitReason::Shutdown);
        assert_eq!(decode(0x8d, 0, 0), ExitReason::Xsetbv);
        assert_eq!(decode(0x76, 0, 0), ExitReason::Invd);
        assert_eq!(decode(0x89, 0, 0), ExitReason::Wbinvd);
        assert_eq!(decode(0x6f, 0, 0), ExitReason::Rdpmc);
        assert_eq!(decode(0x8a, 0, 0), ExitReason::Monitor);
        assert_eq!(decode(0x8b, 0, 0), ExitReason::Mwait);
        assert_eq!(decode(0x8c, 0, 0), ExitReason::Mwait);
        // #MC (exception 18): its own reason, not a generic exception.
        assert_eq!(decode(0x52, 0, 0), ExitReason::MachineCheck);
        assert_eq!(decode(0x60, 0, 0), ExitReason::Interrupt);
        assert_eq!(
            decode(0x4d, 0x18, 0),
            ExitReason::Exception {
                vector: 13,
                error_code: Some(0x18)
            }
        );
        assert_eq!(
            decode(0x46, 5, 0),
            ExitReason::Exception {
                vector: 6,
                error_code: None
            }
        );
        assert_eq!(
            decode(u64::MAX, 0, 0),
            ExitReason::EntryFailed { code: u64::MAX }
        );
        assert_eq!(
            decode(0xffff_ffff, 0, 0),
            ExitReason::EntryFailed { code: 0xffff_ffff }
        );
        assert_eq!(
            decode(0x80, 1, 2),
            ExitReason::Unknown {
                code: 0x80,
                info1: 1,
                info2: 2
            }
        );
    }

    #[test]
    fn ioio_exit_info() {
        // out dx, al to 0x3f8: OUT, SZ8, A16.. port in 31:16
        let out = decode(0x7b, (0x3f8 << 16) | (1 << 4) | (1 << 7), 0);
        assert_eq!(
            out,
            ExitReason::Io(IoAccess {
                port: 0x3f8,
                size: 1,
                dir: IoDir::Out,
                string: false,
                rep: false
            })
        );
        // rep insw from 0x1f0
        let ins = decode_io((0x1f0 << 16) | (1 << 5) | (1 << 3) | (1 << 2) | 1);
        assert_eq!(
            ins,
            IoAccess {
                port: 0x1f0,
                size: 2,
                dir: IoDir::In,
                string: true,
                rep: true
            }
        );
        assert_eq!(decode_io((0xf4 << 16) | (1 << 6)).size, 4);
    }
}
