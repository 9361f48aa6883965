//! The VMCS guest state that INIT and a start-up IPI give a vCPU.
//!
//! Pure: field lists the backend writes with VMWRITE, checked here against the
//! VM-entry rules for a real-mode guest under "unrestricted guest" (SDM vol.
//! 3C, 26.3.1.2), so a mistake shows up as a failed host test instead of a
//! VM-entry failure in the emulator.

use super::vcpu::{
    Segment, SegmentFields, SEG_CS, SEG_DS, SEG_ES, SEG_FS, SEG_GS, SEG_LDTR, SEG_SS, SEG_TR,
};
use super::vmcs::{ctrln, guest32, guest64, guestn, AR_UNUSABLE};
use crate::vcpu::{init_state, sipi_cs};

/// Guest activity state "wait-for-SIPI" (SDM 24.4.2).
pub const ACTIVITY_WAIT_FOR_SIPI: u64 = 3;
pub const ACTIVITY_ACTIVE: u64 = 0;
/// IA32_VMX_MISC bit 8: wait-for-SIPI is a supported activity state.
pub const MISC_WAIT_FOR_SIPI: u64 = 1 << 8;

/// Present, S=1, DPL 0, execute/read code, accessed.
pub const AR_REAL_CODE: u32 = 0x9b;
/// Present, S=1, DPL 0, read/write data, accessed.
pub const AR_REAL_DATA: u32 = 0x93;
/// Present, 32-bit busy TSS (VM entry requires a usable TR).
pub const AR_BUSY_TSS: u32 = 0x8b;

/// Segment registers after INIT: CS = F000 with base FFFF_0000, the others 0,
/// every limit 64 KiB, no LDT.
pub fn init_segments() -> [(SegmentFields, Segment); 8] {
    let data = Segment {
        selector: 0,
        base: 0,
        limit: init_state::SEGMENT_LIMIT,
        ar: AR_REAL_DATA,
    };
    [
        (
            SEG_CS,
            Segment {
                selector: init_state::CS_SELECTOR,
                base: init_state::CS_BASE,
                limit: init_state::SEGMENT_LIMIT,
                ar: AR_REAL_CODE,
            },
        ),
        (SEG_SS, data),
        (SEG_DS, data),
        (SEG_ES, data),
        (SEG_FS, data),
        (SEG_GS, data),
        (
            SEG_TR,
            Segment {
                ar: AR_BUSY_TSS,
                ..data
            },
        ),
        (
            SEG_LDTR,
            Segment {
                ar: AR_UNUSABLE,
                limit: 0,
                ..data
            },
        ),
    ]
}

/// Plain fields after INIT. `cr0_hw`/`cr4_hw` are [`init_state::CR0`] and 0 with
/// the VMX-fixed bits applied (the guest reads the unfixed values through the
/// read shadows). `wait_in_hardware`: enter the guest in wait-for-SIPI, so a
/// hardware start-up IPI ends the wait with a SIPI exit.
pub fn init_fields(cr0_hw: u64, cr4_hw: u64, wait_in_hardware: bool) -> [(u32, u64); 18] {
    [
        (guestn::CR0, cr0_hw),
        (ctrln::CR0_READ_SHADOW, init_state::CR0),
        (guestn::CR3, 0),
        (guestn::CR4, cr4_hw),
        (ctrln::CR4_READ_SHADOW, 0),
        (guestn::RIP, init_state::RIP),
        (guestn::RSP, 0),
        (guestn::RFLAGS, init_state::RFLAGS),
        (guest64::EFER, 0),
        (guestn::GDTR_BASE, 0),
        (guest32::GDTR_LIMIT, init_state::SEGMENT_LIMIT as u64),
        (guestn::IDTR_BASE, 0),
        (guest32::IDTR_LIMIT, init_state::SEGMENT_LIMIT as u64),
        (guestn::DR7, init_state::DR7),
        (guest32::INTERRUPTIBILITY, 0),
        (guestn::PENDING_DEBUG, 0),
        (guest32::SYSENTER_CS, 0),
        (
            guest32::ACTIVITY_STATE,
            if wait_in_hardware {
                ACTIVITY_WAIT_FOR_SIPI
            } else {
                ACTIVITY_ACTIVE
            },
        ),
    ]
}

/// Fields a start-up IPI with `vector` changes: CS selector and base, IP 0, active.
pub fn sipi_fields(vector: u8) -> [(u32, u64); 4] {
    let (selector, base) = sipi_cs(vector);
    [
        (SEG_CS.0, selector as u64),
        (SEG_CS.3, base),
        (guestn::RIP, 0),
        (guest32::ACTIVITY_STATE, ACTIVITY_ACTIVE),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ar_type(ar: u32) -> u32 {
        ar & 0xf
    }
    fn dpl(ar: u32) -> u32 {
        (ar >> 5) & 3
    }
    fn present(ar: u32) -> bool {
        ar & 0x80 != 0
    }
    fn unusable(ar: u32) -> bool {
        ar & AR_UNUSABLE != 0
    }
    /// Reserved access-rights bits 11:8 and 31:17 are 0.
    fn reserved_clear(ar: u32) -> bool {
        ar & 0xf00 == 0 && ar & 0xfffe_0000 == 0
    }
    /// G must be 1 if limit bits 31:20 are set, 0 if bits 11:0 are not all set.
    fn granularity_fits(s: &Segment) -> bool {
        let g = s.ar & (1 << 15) != 0;
        (s.limit & 0xfff == 0xfff || !g) && (s.limit & 0xfff0_0000 == 0 || g)
    }

    /// SDM 26.3.1.2 for a guest with CR0.PE = 0 under unrestricted guest,
    /// not in IA-32e mode, not virtual-8086.
    fn entry_checks(segs: &[(SegmentFields, Segment); 8]) -> Result<(), &'static str> {
        let find = |f: SegmentFields| segs.iter().find(|(x, _)| *x == f).unwrap().1;
        let cs = find(SEG_CS);
        let ss = find(SEG_SS);
        if !matches!(ar_type(cs.ar), 3 | 9 | 11 | 13 | 15) {
            return Err("CS type");
        }
        if cs.ar & 0x10 == 0 || !present(cs.ar) || !reserved_clear(cs.ar) {
            return Err("CS S/P/reserved");
        }
        if matches!(ar_type(cs.ar), 9 | 11) && dpl(cs.ar) != dpl(ss.ar) {
            return Err("non-conforming CS DPL != SS DPL");
        }
        if cs.base >> 32 != 0 {
            return Err("CS base above 4 GiB");
        }
        if !unusable(ss.ar) && (!matches!(ar_type(ss.ar), 3 | 7) || dpl(ss.ar) != 0) {
            return Err("SS type or DPL (PE = 0 needs DPL 0)");
        }
        for f in [SEG_SS, SEG_DS, SEG_ES, SEG_FS, SEG_GS] {
            let s = find(f);
            if unusable(s.ar) {
                continue;
            }
            if s.ar & 1 == 0 || s.ar & 0x10 == 0 || !present(s.ar) || !reserved_clear(s.ar) {
                return Err("data segment not accessed/S/present/reserved");
            }
            if !granularity_fits(&s) {
                return Err("data segment granularity");
            }
        }
        let tr = find(SEG_TR);
        if unusable(tr.ar) || !matches!(ar_type(tr.ar), 3 | 11) || tr.ar & 0x10 != 0 {
            return Err("TR must be a usable busy TSS");
        }
        if !present(tr.ar) || !granularity_fits(&tr) || tr.selector & 4 != 0 {
            return Err("TR present/granularity/TI");
        }
        let ldtr = find(SEG_LDTR);
        if !unusable(ldtr.ar) && (ar_type(ldtr.ar) != 2 || ldtr.ar & 0x10 != 0) {
            return Err("LDTR type");
        }
        if !granularity_fits(&cs) {
            return Err("CS granularity");
        }
        Ok(())
    }

    #[test]
    fn init_segments_pass_the_real_mode_entry_checks() {
        let segs = init_segments();
        assert_eq!(entry_checks(&segs), Ok(()));
        let cs = segs[0].1;
        assert_eq!(
            (cs.selector, cs.base, cs.limit),
            (0xf000, 0xffff_0000, 0xffff)
        );
        // The checker is not blind: a 64-bit code segment, a DPL 3 stack or an
        // unusable TR are refused.
        let mut bad = segs;
        bad[0].1.ar = 0xa09b | (3 << 5);
        assert!(entry_checks(&bad).is_err());
        let mut bad = segs;
        bad[1].1.ar = AR_REAL_DATA | (3 << 5);
        assert!(entry_checks(&bad).is_err());
        let mut bad = segs;
        bad[6].1.ar = AR_UNUSABLE;
        assert!(entry_checks(&bad).is_err());
        let mut bad = segs;
        bad[2].1.ar = 0x92; // not accessed
        assert!(entry_checks(&bad).is_err());
    }

    #[test]
    fn init_fields_follow_table_10_1() {
        let fixed_cr0 = 0x6000_0030; // NE forced by VMX
        let f = init_fields(fixed_cr0, 0x2000, true);
        let get = |field: u32| f.iter().find(|(x, _)| *x == field).unwrap().1;
        assert_eq!(get(guestn::CR0), fixed_cr0);
        assert_eq!(
            get(ctrln::CR0_READ_SHADOW),
            0x6000_0010,
            "guest reads CD|NW|ET"
        );
        assert_eq!(get(guestn::RIP), 0xfff0);
        assert_eq!(get(guestn::RFLAGS), 2);
        assert_eq!(get(guest64::EFER), 0);
        assert_eq!(get(guest32::ACTIVITY_STATE), ACTIVITY_WAIT_FOR_SIPI);
        let sw = init_fields(fixed_cr0, 0x2000, false);
        assert_eq!(
            sw.iter()
                .find(|(x, _)| *x == guest32::ACTIVITY_STATE)
                .unwrap()
                .1,
            ACTIVITY_ACTIVE,
            "a software wait never enters the guest before the SIPI"
        );
        // No field is written twice.
        for (i, (a, _)) in f.iter().enumerate() {
            assert!(f[i + 1..].iter().all(|(b, _)| b != a), "{a:#x} twice");
        }
    }

    #[test]
    fn sipi_loads_cs_from_the_vector_and_runs() {
        let f = sipi_fields(0x20);
        assert_eq!(
            f,
            [
                (SEG_CS.0, 0x2000),
                (SEG_CS.3, 0x2_0000),
                (guestn::RIP, 0),
                (guest32::ACTIVITY_STATE, ACTIVITY_ACTIVE)
            ]
        );
    }
}
