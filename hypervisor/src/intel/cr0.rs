//! A guest's MOV to CR0 that exits (it changes a bit VMX fixes: PE, NE, PG), emulated: what
//! the processor gets, and EFER after it, or #GP (SDM vol. 2, MOV to control registers;
//! vol. 3, 10.8.5 "Initializing IA-32e Mode").
//!
//! With unrestricted guest, PE and PG are the guest's, but the CR0 guest/host mask still
//! covers them, so turning paging on or off exits. The processor would set EFER.LMA itself
//! when paging turns on with EFER.LME set (and clear it when paging turns off); since the
//! write exits, the hypervisor does, and the "IA-32e mode guest" entry control follows LMA
//! at the next entry. Without this, an AP that enters long mode (the firmware's AP code, an
//! OS's trampoline) fails VM entry with invalid guest state (CR0.PG and EFER.LME set,
//! LMA clear).

const PE: u64 = 1 << 0;
const NW: u64 = 1 << 29;
const CD: u64 = 1 << 30;
const PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// The emulated write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cr0Write {
    /// CR0 for the processor (the guest's value with the VMX-fixed bits forced).
    pub hw: u64,
    /// EFER after the write (LMA follows paging when LME is set).
    pub efer: u64,
}

/// The write takes #GP(0) and changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gp;

/// The guest writes `value` to CR0 with `efer` and `cr4` (the processor's CR4) current,
/// `cs_l` when it runs 64-bit code; `fixed0`/`fixed1` are the bits VMX forces on and
/// allows (PE and PG not forced under unrestricted guest).
pub fn cr0_write(
    value: u64,
    efer: u64,
    cr4: u64,
    cs_l: bool,
    fixed0: u64,
    fixed1: u64,
) -> Result<Cr0Write, Gp> {
    let paging = value & PG != 0;
    if value >> 32 != 0 || (paging && value & PE == 0) || (value & NW != 0 && value & CD == 0) {
        return Err(Gp);
    }
    let efer = if efer & EFER_LME != 0 {
        if paging && cr4 & CR4_PAE == 0 {
            return Err(Gp);
        }
        // Paging off leaves IA-32e mode, but not from 64-bit code.
        if !paging && efer & EFER_LMA != 0 && cs_l {
            return Err(Gp);
        }
        if paging {
            efer | EFER_LMA
        } else {
            efer & !EFER_LMA
        }
    } else {
        efer & !EFER_LMA
    };
    Ok(Cr0Write {
        hw: (value | fixed0) & fixed1,
        efer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unrestricted guest on a CPU that fixes NE only (PE and PG released).
    const FIXED0: u64 = 1 << 5;
    const FIXED1: u64 = 0xffff_ffff;
    const NXE: u64 = 1 << 11;

    fn write(value: u64, efer: u64, cr4: u64, cs_l: bool) -> Result<Cr0Write, Gp> {
        cr0_write(value, efer, cr4, cs_l, FIXED0, FIXED1)
    }

    #[test]
    fn paging_on_with_lme_enters_ia32e_mode() {
        // the firmware's AP code: protected mode, PAE on, LME on, then PG
        let w = write(0x8000_0011, EFER_LME | NXE, CR4_PAE, false).unwrap();
        assert_eq!(w.efer, EFER_LME | EFER_LMA | NXE);
        assert_eq!(w.hw, 0x8000_0031, "NE forced");
        // without LME: 32-bit paging, no LMA
        let w = write(0x8000_0011, NXE, 0, false).unwrap();
        assert_eq!(w.efer, NXE);
        // PE alone (real -> protected) changes nothing in EFER
        let w = write(0x11, EFER_LME, CR4_PAE, false).unwrap();
        assert_eq!(w.efer, EFER_LME);
    }

    #[test]
    fn paging_off_leaves_ia32e_mode_from_compatibility_mode_only() {
        let long = EFER_LME | EFER_LMA;
        let w = write(0x11, long, CR4_PAE, false).unwrap();
        assert_eq!(w.efer, EFER_LME);
        assert_eq!(write(0x11, long, CR4_PAE, true), Err(Gp));
        // staying in long mode (another bit changes): LMA stays
        let w = write(0x8005_0033, long, CR4_PAE, true).unwrap();
        assert_eq!(w.efer, long);
    }

    #[test]
    fn invalid_values_take_gp() {
        assert_eq!(write(0x8000_0010, 0, 0, false), Err(Gp), "PG without PE");
        assert_eq!(write(0x2000_0011, 0, 0, false), Err(Gp), "NW without CD");
        assert_eq!(write(1 << 32 | 0x11, 0, 0, false), Err(Gp), "reserved");
        assert_eq!(
            write(0x8000_0011, EFER_LME, 0, false),
            Err(Gp),
            "long mode needs CR4.PAE"
        );
        assert!(
            write(0x6000_0011, 0, 0, false).is_ok(),
            "CD and NW together"
        );
        assert!(write(0x10, 0, 0, false).is_ok(), "real mode");
    }

    #[test]
    fn without_unrestricted_guest_pe_and_pg_are_forced() {
        let w = cr0_write(0x10, 0, 0, false, 0x8000_0021, FIXED1).unwrap();
        assert_eq!(w.hw, 0x8000_0031);
    }
}
