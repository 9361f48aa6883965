//! Instruction-length decoder for the instructions that cause VM exits.
//!
//! SVM reports the next RIP only with the nrip-save feature, which QEMU TCG
//! lacks; then the hypervisor reads the guest's instruction bytes and decodes
//! their length here. Only the instructions the hypervisor intercepts are
//! recognised (VMMCALL/VMCALL, CPUID, RDMSR/WRMSR, IN/OUT/INS/OUTS in every
//! form, HLT, XSETBV, INVD, WBINVD/WBNOINVD, RDPMC, MONITOR, MWAIT); anything
//! else is an error, never a guess.
//!
//! Pure and total: any byte slice gives a result, nothing panics.
//!
//! [`mmio`] decodes the stores to trapped MMIO pages (local APIC, doorbell).

pub mod mmio;

/// What was decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Vmmcall,
    Vmcall,
    Cpuid,
    Rdmsr,
    Wrmsr,
    Hlt,
    Xsetbv,
    Invd,
    /// WBINVD, or WBNOINVD (F3 prefix).
    Wbinvd,
    Rdpmc,
    Monitor,
    Mwait,
    /// IN/OUT with an immediate port or DX, or INS/OUTS.
    Io {
        string: bool,
    },
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub kind: Kind,
    /// Total length in bytes, prefixes included.
    pub len: u8,
}

/// Why no length could be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does.
    Truncated,
    /// More than 15 bytes: the CPU would raise #GP.
    TooLong,
    /// Not one of the intercepted instructions (first opcode byte given).
    Unsupported(u8),
}

/// Architectural maximum instruction length.
pub const MAX_LEN: usize = 15;

/// Decode the instruction at the start of `bytes`. `long_mode` is true for
/// a 64-bit code segment (REX prefixes exist only there).
pub fn decode(bytes: &[u8], long_mode: bool) -> Result<Insn, DecodeError> {
    let mut i = 0;
    // Legacy prefixes, any order, then at most one REX directly before the opcode.
    loop {
        let b = *bytes.get(i).ok_or(DecodeError::Truncated)?;
        let is_legacy = matches!(
            b,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3
        );
        let is_rex = long_mode && (0x40..=0x4f).contains(&b);
        if !(is_legacy || is_rex) {
            break;
        }
        i += 1;
        if i >= MAX_LEN {
            return Err(DecodeError::TooLong);
        }
    }
    let op = bytes[i];
    let (kind, rest) = match op {
        0xf4 => (Kind::Hlt, 1),
        // IN AL/eAX, imm8 ; OUT imm8, AL/eAX
        0xe4..=0xe7 => (Kind::Io { string: false }, 2),
        // IN AL/eAX, DX ; OUT DX, AL/eAX
        0xec..=0xef => (Kind::Io { string: false }, 1),
        // INS / OUTS
        0x6c..=0x6f => (Kind::Io { string: true }, 1),
        0x0f => {
            let op2 = *bytes.get(i + 1).ok_or(DecodeError::Truncated)?;
            match op2 {
                0xa2 => (Kind::Cpuid, 2),
                0x32 => (Kind::Rdmsr, 2),
                0x30 => (Kind::Wrmsr, 2),
                0x08 => (Kind::Invd, 2),
                0x09 => (Kind::Wbinvd, 2),
                0x33 => (Kind::Rdpmc, 2),
                0x01 => match *bytes.get(i + 2).ok_or(DecodeError::Truncated)? {
                    0xd9 => (Kind::Vmmcall, 3),
                    0xc1 => (Kind::Vmcall, 3),
                    0xd1 => (Kind::Xsetbv, 3),
                    0xc8 => (Kind::Monitor, 3),
                    0xc9 => (Kind::Mwait, 3),
                    _ => return Err(DecodeError::Unsupported(op)),
                },
                _ => return Err(DecodeError::Unsupported(op)),
            }
        }
        _ => return Err(DecodeError::Unsupported(op)),
    };
    let len = i + rest;
    if len > MAX_LEN {
        return Err(DecodeError::TooLong);
    }
    if len > bytes.len() {
        return Err(DecodeError::Truncated);
    }
    Ok(Insn {
        kind,
        len: len as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len(bytes: &[u8]) -> u8 {
        decode(bytes, true).unwrap().len
    }

    #[test]
    fn plain_instructions() {
        assert_eq!(
            decode(&[0x0f, 0x01, 0xd9], true).unwrap().kind,
            Kind::Vmmcall
        );
        assert_eq!(len(&[0x0f, 0x01, 0xd9, 0x90]), 3);
        assert_eq!(
            decode(&[0x0f, 0x01, 0xc1], true).unwrap().kind,
            Kind::Vmcall
        );
        assert_eq!(
            decode(&[0x0f, 0xa2], true).unwrap(),
            Insn {
                kind: Kind::Cpuid,
                len: 2
            }
        );
        assert_eq!(decode(&[0x0f, 0x32], true).unwrap().kind, Kind::Rdmsr);
        assert_eq!(decode(&[0x0f, 0x30], true).unwrap().kind, Kind::Wrmsr);
        // xsetbv, also outside long mode; a REX prefix counts in 64-bit mode
        for long in [true, false] {
            assert_eq!(
                decode(&[0x0f, 0x01, 0xd1, 0x90], long).unwrap(),
                Insn {
                    kind: Kind::Xsetbv,
                    len: 3
                }
            );
        }
        assert_eq!(len(&[0x48, 0x0f, 0x01, 0xd1]), 4);
        assert_eq!(
            decode(&[0xf4], true).unwrap(),
            Insn {
                kind: Kind::Hlt,
                len: 1
            }
        );
    }

    #[test]
    fn cache_counter_and_monitor_instructions() {
        for (bytes, kind) in [
            (&[0x0f, 0x08][..], Kind::Invd),
            (&[0x0f, 0x09], Kind::Wbinvd),
            (&[0xf3, 0x0f, 0x09], Kind::Wbinvd), // WBNOINVD
            (&[0x0f, 0x33], Kind::Rdpmc),
            (&[0x0f, 0x01, 0xc8], Kind::Monitor),
            (&[0x0f, 0x01, 0xc9], Kind::Mwait),
        ] {
            assert_eq!(
                decode(bytes, true),
                Ok(Insn {
                    kind,
                    len: bytes.len() as u8
                }),
                "{bytes:x?}"
            );
        }
        assert_eq!(
            len(&[0x67, 0x0f, 0x01, 0xc8]),
            4,
            "MONITOR with 32-bit address"
        );
    }

    #[test]
    fn every_port_io_form() {
        // in al,imm8 / in eax,imm8 / out imm8,al / out imm8,eax
        for op in 0xe4..=0xe7 {
            assert_eq!(len(&[op, 0xf4]), 2, "{op:#x}");
        }
        // in al,dx / in eax,dx / out dx,al / out dx,eax
        for op in 0xec..=0xef {
            assert_eq!(len(&[op]), 1, "{op:#x}");
        }
        // insb/insd/outsb/outsd
        for op in 0x6c..=0x6f {
            assert_eq!(
                decode(&[op], true).unwrap(),
                Insn {
                    kind: Kind::Io { string: true },
                    len: 1
                }
            );
        }
        // 16-bit forms: operand-size prefix
        assert_eq!(len(&[0x66, 0xed]), 2);
        assert_eq!(len(&[0x66, 0xe7, 0x80]), 3);
        // rep outsb, rep insw with address-size override and a segment override
        assert_eq!(len(&[0xf3, 0x6e]), 2);
        assert_eq!(len(&[0x67, 0x66, 0xf3, 0x6d]), 4);
        assert_eq!(len(&[0x2e, 0xf3, 0x6f]), 3);
    }

    #[test]
    fn rex_only_in_long_mode() {
        // rex.w in eax,dx is legal (REX.W ignored) in 64-bit mode
        assert_eq!(len(&[0x48, 0xed]), 2);
        assert_eq!(len(&[0x66, 0x41, 0x0f, 0xa2]), 4);
        // 0x48 is `dec eax` outside long mode: not an intercepted instruction
        assert_eq!(
            decode(&[0x48, 0xed], false),
            Err(DecodeError::Unsupported(0x48))
        );
        assert_eq!(decode(&[0x66, 0xed], false).unwrap().len, 2);
    }

    #[test]
    fn truncated_overlong_and_unknown() {
        assert_eq!(decode(&[], true), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x0f], true), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x0f, 0x01], true), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0xe4], true), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x66, 0x66], true), Err(DecodeError::Truncated));
        let mut long = [0x66u8; 16];
        long[15] = 0xf4;
        assert_eq!(decode(&long, true), Err(DecodeError::TooLong));
        let mut fourteen = [0x66u8; 15];
        fourteen[14] = 0xf4;
        assert_eq!(len(&fourteen), 15);
        // 14 prefixes + a 2-byte opcode is 16 bytes: too long
        let mut cpuid = [0x66u8; 16];
        cpuid[14] = 0x0f;
        cpuid[15] = 0xa2;
        assert_eq!(decode(&cpuid, true), Err(DecodeError::TooLong));
        assert_eq!(decode(&[0x90], true), Err(DecodeError::Unsupported(0x90)));
        assert_eq!(
            decode(&[0x0f, 0x05], true),
            Err(DecodeError::Unsupported(0x0f))
        );
        assert_eq!(
            decode(&[0x0f, 0x01, 0xd8], true),
            Err(DecodeError::Unsupported(0x0f))
        );
    }
}
