//! Decoding a guest's store to a trapped MMIO page (the primary's local APIC registers, the
//! hypercall doorbell), where the processor reports only the guest-physical address: QEMU's
//! SVM has no decode assists, and VMX gives no instruction length for EPT violations.
//!
//! The stores compilers and firmware use for device registers are recognised: `MOV r/m, r`
//! (88, 89), `MOV r/m, imm` (C6 /0, C7 /0) and `XCHG r/m, r` (86, 87; Linux's APIC write on
//! CPUs with an erratum), with any legacy prefix, REX in 64-bit mode, and every ModRM/SIB
//! addressing form of 16-, 32- and 64-bit code. The address itself is not needed (the fault
//! gave it); what matters is the length, the operand size and where the value comes from.
//! Anything else is an error, never a guess. Pure and total, like [`super::decode`].

use super::{DecodeError, MAX_LEN};

/// Default operand and address size of the code segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeSize {
    /// 64-bit mode (REX prefixes exist).
    Bits64,
    /// 32-bit code segment (CS.D = 1).
    Bits32,
    /// Real mode, virtual-8086 or a 16-bit code segment.
    Bits16,
}

/// Where the stored value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A general-purpose register in encoding order (`crate::vcpu::Gpr`); `high8` means
    /// bits 15:8 of it (AH, CH, DH, BH).
    Reg { gpr: u8, high8: bool },
    /// An immediate, already sign-extended to the operand size.
    Imm(u64),
}

/// A decoded store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Store {
    /// Total length in bytes, prefixes included.
    pub len: u8,
    /// Operand size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    pub source: Source,
    /// XCHG: the source register also receives the old value.
    pub exchange: bool,
}

impl Store {
    /// The value stored, given the source register's content; cut to the operand size.
    pub fn value(&self, reg: u64) -> u64 {
        let v = match self.source {
            Source::Reg { high8: true, .. } => reg >> 8,
            Source::Reg { .. } => reg,
            Source::Imm(v) => v,
        };
        match self.size {
            1 => v & 0xff,
            2 => v & 0xffff,
            4 => v & 0xffff_ffff,
            _ => v,
        }
    }
}

/// Decode the store at the start of `bytes`.
pub fn decode_store(bytes: &[u8], code: CodeSize) -> Result<Store, DecodeError> {
    let at = |i: usize| bytes.get(i).copied().ok_or(DecodeError::Truncated);
    let mut i = 0;
    let mut opsize16 = false;
    let mut addr_override = false;
    let mut rex = 0u8;
    loop {
        if i >= MAX_LEN {
            return Err(DecodeError::TooLong);
        }
        let b = at(i)?;
        match b {
            0x66 => opsize16 = true,
            0x67 => addr_override = true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0xf0 | 0xf2 | 0xf3 => {}
            0x40..=0x4f if code == CodeSize::Bits64 => {
                // A REX prefix counts only directly before the opcode.
                let next = at(i + 1)?;
                if !(0x40..=0x4f).contains(&next) {
                    rex = b;
                }
            }
            _ => break,
        }
        // A legacy prefix after a REX cancels it.
        if !(0x40..=0x4f).contains(&b) {
            rex = 0;
        }
        i += 1;
    }
    let op = at(i)?;
    i += 1;
    let (byte_op, immediate, exchange) = match op {
        0x88 => (true, false, false),
        0x89 => (false, false, false),
        0xc6 => (true, true, false),
        0xc7 => (false, true, false),
        0x86 => (true, false, true),
        0x87 => (false, false, true),
        _ => return Err(DecodeError::Unsupported(op)),
    };
    let rex_w = rex & 0x8 != 0;
    let size: u8 = if byte_op {
        1
    } else if rex_w {
        8
    } else {
        let default16 = code == CodeSize::Bits16;
        if default16 != opsize16 {
            2
        } else {
            4
        }
    };
    let modrm = at(i)?;
    i += 1;
    let md = modrm >> 6;
    let reg = (modrm >> 3) & 7;
    let rm = modrm & 7;
    if md == 3 {
        // A register destination is not a store.
        return Err(DecodeError::Unsupported(op));
    }
    if immediate && reg != 0 {
        return Err(DecodeError::Unsupported(op));
    }
    let addr16 = match code {
        CodeSize::Bits64 => false,
        CodeSize::Bits32 => addr_override,
        CodeSize::Bits16 => !addr_override,
    };
    i += if addr16 {
        match (md, rm) {
            (0, 6) | (2, _) => 2,
            (1, _) => 1,
            _ => 0,
        }
    } else {
        let mut n = 0;
        let mut base = rm;
        if rm == 4 {
            base = at(i)? & 7;
            n += 1;
        }
        n + match (md, rm, base) {
            (0, 5, _) | (0, 4, 5) | (2, _, _) => 4,
            (1, _, _) => 1,
            _ => 0,
        }
    };
    let source = if immediate {
        let imm_len = if size == 1 {
            1
        } else if size == 2 {
            2
        } else {
            4
        };
        let mut raw = [0u8; 8];
        for (k, slot) in raw.iter_mut().enumerate().take(imm_len) {
            *slot = at(i + k)?;
        }
        i += imm_len;
        let v = u64::from_le_bytes(raw);
        // imm32 with REX.W is sign-extended to 64 bits.
        let v = if size == 8 {
            v as u32 as i32 as i64 as u64
        } else {
            v
        };
        Source::Imm(v)
    } else {
        let gpr = reg | if rex & 0x4 != 0 { 8 } else { 0 };
        // Without REX, byte registers 4-7 are AH, CH, DH, BH.
        let high8 = byte_op && rex == 0 && (4..8).contains(&reg);
        Source::Reg {
            gpr: if high8 { gpr - 4 } else { gpr },
            high8,
        }
    };
    if i > MAX_LEN {
        return Err(DecodeError::TooLong);
    }
    if i > bytes.len() {
        return Err(DecodeError::Truncated);
    }
    Ok(Store {
        len: i as u8,
        size,
        source,
        exchange,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(bytes: &[u8]) -> Store {
        decode_store(bytes, CodeSize::Bits64).unwrap()
    }

    const EAX: Source = Source::Reg {
        gpr: 0,
        high8: false,
    };

    #[test]
    fn linux_and_firmware_apic_writes() {
        // Linux native_apic_mem_write: mov %eax, 0xffffffffff5fc0b0 (SIB, no base, disp32)
        assert_eq!(
            store(&[0x89, 0x04, 0x25, 0xb0, 0xc0, 0x5f, 0xff]),
            Store {
                len: 7,
                size: 4,
                source: EAX,
                exchange: false
            }
        );
        // the same through xchg (X86_BUG_11AP)
        let x = store(&[0x87, 0x04, 0x25, 0xb0, 0xc0, 0x5f, 0xff]);
        assert!(x.exchange && x.len == 7 && x.size == 4);
        // mov dword [r11], eax: the hypercall doorbell
        assert_eq!(
            store(&[0x41, 0x89, 0x03]),
            Store {
                len: 3,
                size: 4,
                source: EAX,
                exchange: false
            }
        );
        // mov [rcx+0x300], edx ; mov [rax+rdx*1+0x10], r9d
        assert_eq!(store(&[0x89, 0x91, 0x00, 0x03, 0, 0]).len, 6);
        let r9 = store(&[0x44, 0x89, 0x4c, 0x10, 0x10]);
        assert_eq!(
            r9.source,
            Source::Reg {
                gpr: 9,
                high8: false
            }
        );
        assert_eq!(r9.len, 5);
        // mov dword [rip+disp32], 0x12345678
        let imm = store(&[0xc7, 0x05, 1, 2, 3, 4, 0x78, 0x56, 0x34, 0x12]);
        assert_eq!(imm.len, 10);
        assert_eq!(imm.source, Source::Imm(0x1234_5678));
        assert_eq!(imm.value(0), 0x1234_5678);
    }

    #[test]
    fn operand_sizes_and_immediates() {
        // mov byte [rdi], 0x80 ; mov word [rdi], 0x1234 ; mov qword [rdi], -1 (imm32 sign-extended)
        let b = store(&[0xc6, 0x07, 0x80]);
        assert_eq!((b.len, b.size, b.source), (3, 1, Source::Imm(0x80)));
        let w = store(&[0x66, 0xc7, 0x07, 0x34, 0x12]);
        assert_eq!((w.len, w.size, w.source), (5, 2, Source::Imm(0x1234)));
        let q = store(&[0x48, 0xc7, 0x07, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!((q.len, q.size), (7, 8));
        assert_eq!(q.value(0), u64::MAX);
        // mov [rdi], ah (no REX) vs mov [rdi], spl (REX)
        let ah = store(&[0x88, 0x27]);
        assert_eq!(
            ah.source,
            Source::Reg {
                gpr: 0,
                high8: true
            }
        );
        assert_eq!(ah.value(0x1234), 0x12);
        let spl = store(&[0x40, 0x88, 0x27]);
        assert_eq!(
            spl.source,
            Source::Reg {
                gpr: 4,
                high8: false
            }
        );
        // 64-bit store: mov [rdi], rax
        assert_eq!(store(&[0x48, 0x89, 0x07]).size, 8);
        assert_eq!(
            Store {
                size: 4,
                ..store(&[0x89, 0x07])
            }
            .value(0xffff_ffff_1234_5678),
            0x1234_5678
        );
    }

    #[test]
    fn addressing_forms() {
        // disp8, disp32, SIB with base, SIB without base (mod 0 base 5)
        assert_eq!(store(&[0x89, 0x47, 0x10]).len, 3);
        assert_eq!(store(&[0x89, 0x87, 0, 3, 0, 0]).len, 6);
        assert_eq!(store(&[0x89, 0x04, 0x24]).len, 3);
        assert_eq!(store(&[0x89, 0x44, 0x24, 0x08]).len, 4);
        assert_eq!(store(&[0x89, 0x84, 0x24, 0, 1, 0, 0]).len, 7);
        // segment override and lock/rep prefixes count
        assert_eq!(store(&[0x2e, 0x89, 0x07]).len, 3);
        // 32-bit code: mov [0xfee00300], eax (mod 0 rm 5 = disp32, no RIP-relative)
        let p = decode_store(&[0x89, 0x05, 0x00, 0x03, 0xe0, 0xfe], CodeSize::Bits32).unwrap();
        assert_eq!((p.len, p.size), (6, 4));
        // 16-bit code: mov [0x300], ax (disp16), and 66 for a 32-bit operand
        let r = decode_store(&[0x89, 0x06, 0x00, 0x03], CodeSize::Bits16).unwrap();
        assert_eq!((r.len, r.size), (4, 2));
        let r32 = decode_store(&[0x66, 0x89, 0x06, 0x00, 0x03], CodeSize::Bits16).unwrap();
        assert_eq!((r32.len, r32.size), (5, 4));
        // 16-bit code with a 32-bit address (67): mov [ebx+0x10], ax
        assert_eq!(
            decode_store(&[0x67, 0x89, 0x43, 0x10], CodeSize::Bits16)
                .unwrap()
                .len,
            4
        );
        // REX is an instruction (inc/dec) outside 64-bit mode
        assert_eq!(
            decode_store(&[0x41, 0x89, 0x03], CodeSize::Bits32),
            Err(DecodeError::Unsupported(0x41))
        );
    }

    #[test]
    fn everything_else_is_refused() {
        // loads, register destinations, other opcodes, C7 with reg != 0
        assert_eq!(
            decode_store(&[0x8b, 0x07], CodeSize::Bits64),
            Err(DecodeError::Unsupported(0x8b))
        );
        assert_eq!(
            decode_store(&[0x89, 0xc0], CodeSize::Bits64),
            Err(DecodeError::Unsupported(0x89))
        );
        assert_eq!(
            decode_store(&[0xc7, 0x0f, 0, 0, 0, 0], CodeSize::Bits64),
            Err(DecodeError::Unsupported(0xc7))
        );
        assert_eq!(
            decode_store(&[0x0f, 0x11, 0x07], CodeSize::Bits64),
            Err(DecodeError::Unsupported(0x0f))
        );
        assert_eq!(
            decode_store(&[], CodeSize::Bits64),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_store(&[0x89, 0x84, 0x24, 0, 1], CodeSize::Bits64),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_store(&[0xc7, 0x07, 1, 2], CodeSize::Bits64),
            Err(DecodeError::Truncated)
        );
        let mut long = [0x66u8; 16];
        long[14] = 0x89;
        long[15] = 0x07;
        assert_eq!(
            decode_store(&long, CodeSize::Bits64),
            Err(DecodeError::TooLong)
        );
    }

    #[test]
    fn never_panics_on_any_short_input() {
        let mut buf = [0u8; 4];
        for a in 0..=255u8 {
            for b in [0x00, 0x04, 0x05, 0x44, 0x84, 0xc0, 0xff] {
                buf[0] = a;
                buf[1] = b;
                for code in [CodeSize::Bits64, CodeSize::Bits32, CodeSize::Bits16] {
                    let _ = decode_store(&buf[..2], code);
                    let _ = decode_store(&buf, code);
                }
            }
        }
    }
}
