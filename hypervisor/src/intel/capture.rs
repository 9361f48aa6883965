//! The firmware's CPU state as VMCS guest state, for virtualizing the boot
//! CPU in place (the primary partition's blue-pill): segments from the
//! firmware's GDT, FS/GS bases, descriptor tables, CR3, EFER, PAT, SYSENTER
//! MSRs. RSP, RIP and RFLAGS are written by the entry assembly at the switch.

use super::vcpu::{
    Segment, SegmentFields, SEG_CS, SEG_DS, SEG_ES, SEG_FS, SEG_GS, SEG_LDTR, SEG_SS, SEG_TR,
};
use super::vmcs::{
    access_rights_from_descriptor, base_from_descriptor, guest32, guest64, guestn,
    limit_from_descriptor, AR_UNUSABLE,
};
use crate::platform::host_cpu::FirmwareContext;

/// Captured guest state: plain fields and the eight segment registers
/// (CS and SS first).
pub struct Captured {
    pub fields: [(u32, u64); 12],
    pub segments: [(SegmentFields, Segment); 8],
    pub cr3: u64,
    pub efer: u64,
}

/// A segment register's VMCS image from its selector and the GDT. Null or
/// out-of-range selectors are "unusable"; code/data segments are marked
/// accessed (VM entry requires it, and the CPU sets it on load anyway).
pub fn segment_from_gdt(gdt: &[u64], selector: u16, system: bool) -> Segment {
    let index = (selector >> 3) as usize;
    let unusable = Segment {
        selector,
        base: 0,
        limit: 0,
        ar: AR_UNUSABLE,
    };
    if selector & 4 != 0 || index == 0 || index >= gdt.len() {
        return unusable;
    }
    let low = gdt[index];
    let mut ar = access_rights_from_descriptor(low);
    if ar == AR_UNUSABLE {
        return unusable;
    }
    let mut base = base_from_descriptor(low);
    if system {
        // 16-byte system descriptor: bits 63:32 of the base follow.
        base |= (gdt.get(index + 1).copied().unwrap_or(0) & 0xffff_ffff) << 32;
    } else {
        ar |= 1;
    }
    Segment {
        selector,
        base,
        limit: limit_from_descriptor(low),
        ar,
    }
}

/// The firmware's state, as captured by the platform before it loaded the
/// host environment on this CPU, as VMCS guest state. FS/GS bases are the
/// values read before that switch (loading host selectors clears them).
/// Firmware without a task register gets a busy TSS descriptor at base 0 (a
/// 64-bit guest needs a usable TR) that a CPL-0 guest without IST gates never
/// reads (an OS loads its own TR).
///
/// # Safety
/// The firmware's GDT must still be identity mapped and readable up to its limit.
pub unsafe fn firmware_guest_state(fw: &FirmwareContext) -> Captured {
    let m = fw.msrs;
    // SAFETY: a read of the firmware's GDT (caller's contract).
    unsafe {
        let gdt = core::slice::from_raw_parts(
            fw.gdtr.base as *const u64,
            (fw.gdtr.limit as usize + 1) / 8,
        );
        let [cs, ss, ds, es, fs, gs] = fw.selectors;
        let mut fs_seg = segment_from_gdt(gdt, fs, false);
        let mut gs_seg = segment_from_gdt(gdt, gs, false);
        // In 64-bit mode the FS/GS bases live in MSRs, not in the GDT.
        fs_seg.base = m.fs_base;
        gs_seg.base = m.gs_base;
        let tr = if fw.tr == 0 {
            Segment {
                selector: 0,
                base: 0,
                limit: 0x67,
                ar: 0x8b,
            }
        } else {
            segment_from_gdt(gdt, fw.tr, true)
        };
        let mut ldtr = segment_from_gdt(gdt, fw.ldtr, true);
        if fw.ldtr == 0 {
            ldtr.ar = AR_UNUSABLE;
        }
        let (gdtr, idtr) = (fw.gdtr, fw.idtr);
        Captured {
            fields: [
                (guestn::CR3, fw.cr3),
                (guestn::GDTR_BASE, gdtr.base),
                (guest32::GDTR_LIMIT, gdtr.limit as u64),
                (guestn::IDTR_BASE, idtr.base),
                (guest32::IDTR_LIMIT, idtr.limit as u64),
                (guest64::EFER, fw.efer),
                (guest64::PAT, m.pat),
                (guest64::DEBUGCTL, m.debugctl),
                (guest32::SYSENTER_CS, m.sysenter_cs),
                (guestn::SYSENTER_ESP, m.sysenter_esp),
                (guestn::SYSENTER_EIP, m.sysenter_eip),
                (guestn::DR7, m.dr7),
            ],
            segments: [
                (SEG_CS, segment_from_gdt(gdt, cs, false)),
                (SEG_SS, segment_from_gdt(gdt, ss, false)),
                (SEG_DS, segment_from_gdt(gdt, ds, false)),
                (SEG_ES, segment_from_gdt(gdt, es, false)),
                (SEG_FS, fs_seg),
                (SEG_GS, gs_seg),
                (SEG_TR, tr),
                (SEG_LDTR, ldtr),
            ],
            cr3: fw.cr3,
            efer: fw.efer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OVMF-like GDT: null, 64-bit code at 0x38, data at 0x30, a busy TSS at 0x40.
    fn gdt() -> [u64; 10] {
        let mut g = [0u64; 10];
        g[6] = 0x00cf_9300_0000_ffff; // data (not yet accessed: type 3 has A set already)
        g[7] = 0x00af_9a00_0000_ffff; // 64-bit code, type 0xa (not accessed)
        g[8] = 0x0000_8b12_3456_0067; // busy TSS, base 0x123456
        g[9] = 0x0000_0000_ffff_8000; // base bits 63:32
        g
    }

    #[test]
    fn code_and_data_segments() {
        let g = gdt();
        let cs = segment_from_gdt(&g, 0x38, false);
        assert_eq!(
            cs,
            Segment {
                selector: 0x38,
                base: 0,
                limit: 0xffff_ffff,
                ar: 0xa09b
            }
        );
        let ds = segment_from_gdt(&g, 0x30, false);
        assert_eq!(ds.ar, 0xc093);
    }

    #[test]
    fn tss_uses_the_16_byte_descriptor() {
        let g = gdt();
        let tr = segment_from_gdt(&g, 0x40, true);
        assert_eq!(tr.base, 0xffff_8000_0012_3456);
        assert_eq!(tr.limit, 0x67);
        assert_eq!(tr.ar, 0x8b, "busy 64-bit TSS, not marked accessed");
    }

    #[test]
    fn null_ldt_and_out_of_range_selectors_are_unusable() {
        let g = gdt();
        for (sel, system) in [(0u16, true), (0x100, false), (0x34, false)] {
            assert_eq!(
                segment_from_gdt(&g, sel, system).ar,
                AR_UNUSABLE,
                "{sel:#x}"
            );
        }
    }
}
