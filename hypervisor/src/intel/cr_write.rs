//! MOV to CR0/CR4 (and LMSW) as the processor would execute them, for the
//! writes VMX makes exit (bits in the guest/host masks: the VMX-fixed bits,
//! PE/PG, and every CR4 bit the CPU cannot set under VMX). Review L2: the
//! emulation used to drop reserved bits silently and to accept combinations
//! the processor refuses, so the next VM entry failed instead of the guest
//! getting #GP; clearing CR0.PG in compatibility mode left "IA-32e mode guest"
//! set. Pure: [`cr0_write`] and [`cr4_write`] take the guest-visible state
//! and answer the new value and EFER (LMA follows PG), or the #GP.
//!
//! Rules (SDM vol. 2B "MOV—Move to/from Control Registers", vol. 3A 2.5,
//! 4.10.1, 10.8.5):
//! - CR0: bits 63:32 reserved; PG without PE; NW without CD; clearing PG in
//!   64-bit mode or with CR4.PCIDE; setting PG with EFER.LME but without
//!   CR4.PAE, or from a code segment with L set. PG 0→1 with LME sets LMA,
//!   PG 1→0 clears it (leaving IA-32e mode from compatibility mode).
//! - CR4: bits the CPU does not allow; clearing PAE or changing LA57 in IA-32e
//!   mode; PCIDE 0→1 outside IA-32e mode or with CR3[11:0] ≠ 0.

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_NW: u64 = 1 << 29;
pub const CR0_CD: u64 = 1 << 30;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_LA57: u64 = 1 << 12;
pub const CR4_VMXE: u64 = 1 << 13;
pub const CR4_PCIDE: u64 = 1 << 17;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// The guest state a control-register write depends on, as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// CS.L: 64-bit code (with EFER.LMA), not compatibility mode.
    pub cs_l: bool,
}

/// The outcome of an accepted write: the new guest-visible register value and
/// EFER (with LMA as the processor would leave it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrWrite {
    pub value: u64,
    pub efer: u64,
}

/// Why the processor would raise #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrFault {
    /// Reserved (or, for CR4, not supported by this CPU) bits set.
    Reserved { bits: u64 },
    /// CR0.PG = 1 with CR0.PE = 0.
    PagingWithoutProtection,
    /// CR0.NW = 1 with CR0.CD = 0.
    NotWriteThroughWithoutCacheDisable,
    /// CR0.PG cleared in 64-bit mode.
    PagingOffIn64BitMode,
    /// CR0.PG cleared with CR4.PCIDE set.
    PagingOffWithPcid,
    /// CR0.PG set with EFER.LME but CR4.PAE clear.
    LongModeWithoutPae,
    /// IA-32e mode activated from a code segment with L set.
    LongModeFrom64BitCode,
    /// CR4.PAE cleared in IA-32e mode.
    PaeOffInLongMode,
    /// CR4.LA57 changed in IA-32e mode.
    La57InLongMode,
    /// CR4.PCIDE set outside IA-32e mode or with CR3[11:0] ≠ 0.
    PcidNotAllowed,
}

/// MOV to CR0 of `new`.
pub fn cr0_write(s: &CrState, new: u64) -> Result<CrWrite, CrFault> {
    if new >> 32 != 0 {
        return Err(CrFault::Reserved {
            bits: new & !0xffff_ffff,
        });
    }
    if new & CR0_PG != 0 && new & CR0_PE == 0 {
        return Err(CrFault::PagingWithoutProtection);
    }
    if new & CR0_NW != 0 && new & CR0_CD == 0 {
        return Err(CrFault::NotWriteThroughWithoutCacheDisable);
    }
    let lma = s.efer & EFER_LMA != 0;
    let mut efer = s.efer;
    match (s.cr0 & CR0_PG != 0, new & CR0_PG != 0) {
        (true, false) => {
            if lma && s.cs_l {
                return Err(CrFault::PagingOffIn64BitMode);
            }
            if s.cr4 & CR4_PCIDE != 0 {
                return Err(CrFault::PagingOffWithPcid);
            }
            efer &= !EFER_LMA;
        }
        (false, true) if s.efer & EFER_LME != 0 => {
            if s.cr4 & CR4_PAE == 0 {
                return Err(CrFault::LongModeWithoutPae);
            }
            if s.cs_l {
                return Err(CrFault::LongModeFrom64BitCode);
            }
            efer |= EFER_LMA;
        }
        _ => {}
    }
    Ok(CrWrite { value: new, efer })
}

/// LMSW with `source`: loads CR0[3:0] (PE, MP, EM, TS) but never clears PE.
pub fn lmsw(s: &CrState, source: u16) -> Result<CrWrite, CrFault> {
    let low = source as u64 & 0xf;
    cr0_write(s, (s.cr0 & !0xe) | low | (s.cr0 & CR0_PE))
}

/// MOV to CR4 of `new`; `allowed` holds the bits this CPU lets a guest set
/// (IA32_VMX_CR4_FIXED1 without VMXE: guests are told there is no VMX).
pub fn cr4_write(s: &CrState, new: u64, allowed: u64) -> Result<CrWrite, CrFault> {
    let reserved = new & !(allowed & !CR4_VMXE);
    if reserved != 0 {
        return Err(CrFault::Reserved { bits: reserved });
    }
    let lma = s.efer & EFER_LMA != 0;
    if lma && new & CR4_PAE == 0 {
        return Err(CrFault::PaeOffInLongMode);
    }
    if lma && (s.cr4 ^ new) & CR4_LA57 != 0 {
        return Err(CrFault::La57InLongMode);
    }
    if s.cr4 & CR4_PCIDE == 0 && new & CR4_PCIDE != 0 && (!lma || s.cr3 & 0xfff != 0) {
        return Err(CrFault::PcidNotAllowed);
    }
    Ok(CrWrite {
        value: new,
        efer: s.efer,
    })
}

/// VM-entry interruption information and error code that deliver exception
/// `vector`: type 3 (hardware exception), valid, and "deliver error code" only
/// in protected mode. Review L3: in real mode (CR0.PE = 0, unrestricted guest)
/// no error code is pushed, and an entry asking for one fails (SDM vol. 3C
/// 27.2.1.3).
pub fn exception_event(vector: u8, error_code: Option<u32>, protected: bool) -> (u32, u32) {
    let mut info = vector as u32 | (3 << 8) | (1 << 31);
    match error_code {
        Some(code) if protected => {
            info |= 1 << 11;
            (info, code)
        }
        _ => (info, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bochs `tigerlake`'s IA32_VMX_CR4_FIXED1 (as the VMX tests use).
    const ALLOWED: u64 = 0x0037_27ff;
    const LONG: CrState = CrState {
        cr0: 0x8000_0031,
        cr3: 0x1000,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
        cs_l: true,
    };
    /// Compatibility mode: IA-32e active, 32-bit code.
    const COMPAT: CrState = CrState {
        cs_l: false,
        ..LONG
    };
    const PROTECTED: CrState = CrState {
        cr0: 0x11,
        cr3: 0,
        cr4: 0,
        efer: 0,
        cs_l: false,
    };

    #[test]
    fn cr0_reserved_bits_and_invalid_combinations() {
        assert_eq!(
            cr0_write(&LONG, LONG.cr0 | 1 << 32),
            Err(CrFault::Reserved { bits: 1 << 32 })
        );
        assert_eq!(
            cr0_write(&PROTECTED, CR0_PG | 0x10),
            Err(CrFault::PagingWithoutProtection)
        );
        assert_eq!(
            cr0_write(&PROTECTED, 0x11 | CR0_NW),
            Err(CrFault::NotWriteThroughWithoutCacheDisable)
        );
        assert_eq!(
            cr0_write(&PROTECTED, 0x11 | CR0_NW | CR0_CD).map(|w| w.value),
            Ok(0x6000_0011)
        );
    }

    #[test]
    fn paging_off_only_outside_64_bit_code() {
        assert_eq!(
            cr0_write(&LONG, LONG.cr0 & !CR0_PG),
            Err(CrFault::PagingOffIn64BitMode)
        );
        // Compatibility mode (a reboot or kexec path): allowed, and IA-32e mode ends.
        let off = cr0_write(&COMPAT, COMPAT.cr0 & !CR0_PG).unwrap();
        assert_eq!(off.value, 0x31);
        assert_eq!(off.efer, EFER_LME, "LMA clears with PG");
        let pcid = CrState {
            cr4: CR4_PAE | CR4_PCIDE,
            ..COMPAT
        };
        assert_eq!(cr0_write(&pcid, 0x31), Err(CrFault::PagingOffWithPcid));
    }

    #[test]
    fn paging_on_with_lme_activates_long_mode() {
        let ready = CrState {
            cr0: 0x11,
            cr4: CR4_PAE,
            efer: EFER_LME,
            ..PROTECTED
        };
        let on = cr0_write(&ready, 0x8000_0011).unwrap();
        assert_eq!(on.efer, EFER_LME | EFER_LMA);
        let no_pae = CrState { cr4: 0, ..ready };
        assert_eq!(
            cr0_write(&no_pae, 0x8000_0011),
            Err(CrFault::LongModeWithoutPae)
        );
        let l_code = CrState {
            cs_l: true,
            ..ready
        };
        assert_eq!(
            cr0_write(&l_code, 0x8000_0011),
            Err(CrFault::LongModeFrom64BitCode)
        );
        // Without LME, paging turns on in 32-bit mode: EFER unchanged.
        let legacy = CrState { efer: 0, ..ready };
        assert_eq!(cr0_write(&legacy, 0x8000_0011).unwrap().efer, 0);
    }

    #[test]
    fn lmsw_sets_but_never_clears_pe() {
        let real = CrState {
            cr0: 0x10,
            ..PROTECTED
        };
        assert_eq!(lmsw(&real, 0x1).unwrap().value, 0x11);
        assert_eq!(lmsw(&PROTECTED, 0x0).unwrap().value, 0x11, "PE stays");
        assert_eq!(lmsw(&PROTECTED, 0xfff8).unwrap().value, 0x19, "only 3:0");
    }

    #[test]
    fn cr4_reserved_and_long_mode_rules() {
        assert_eq!(
            cr4_write(&LONG, CR4_PAE | 1 << 22, ALLOWED),
            Err(CrFault::Reserved { bits: 1 << 22 })
        );
        assert_eq!(
            cr4_write(&LONG, CR4_PAE | CR4_VMXE, ALLOWED),
            Err(CrFault::Reserved { bits: CR4_VMXE }),
            "VMX is hidden from guests"
        );
        assert_eq!(cr4_write(&LONG, 0, ALLOWED), Err(CrFault::PaeOffInLongMode));
        assert_eq!(
            cr4_write(&LONG, CR4_PAE | CR4_LA57, ALLOWED | CR4_LA57),
            Err(CrFault::La57InLongMode)
        );
        let osxsave = CR4_PAE | 1 << 18;
        assert_eq!(
            cr4_write(&LONG, osxsave, ALLOWED),
            Ok(CrWrite {
                value: osxsave,
                efer: LONG.efer
            })
        );
        // PAE may go outside IA-32e mode.
        assert_eq!(cr4_write(&PROTECTED, 0, ALLOWED).map(|w| w.value), Ok(0));
    }

    #[test]
    fn pcide_needs_long_mode_and_a_clean_cr3() {
        let pcid = CR4_PAE | CR4_PCIDE;
        assert_eq!(cr4_write(&LONG, pcid, ALLOWED).map(|w| w.value), Ok(pcid));
        let dirty = CrState {
            cr3: 0x1005,
            ..LONG
        };
        assert_eq!(
            cr4_write(&dirty, pcid, ALLOWED),
            Err(CrFault::PcidNotAllowed)
        );
        assert_eq!(
            cr4_write(&PROTECTED, CR4_PCIDE, ALLOWED),
            Err(CrFault::PcidNotAllowed)
        );
    }

    #[test]
    fn no_error_code_in_real_mode() {
        assert_eq!(
            exception_event(13, Some(0x18), true),
            ((1 << 31) | (1 << 11) | (3 << 8) | 13, 0x18)
        );
        assert_eq!(
            exception_event(13, Some(0x18), false),
            ((1 << 31) | (3 << 8) | 13, 0)
        );
        assert_eq!(
            exception_event(6, None, true),
            ((1 << 31) | (3 << 8) | 6, 0)
        );
    }
}
