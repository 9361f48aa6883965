//! The VMCB (AMD APM vol. 2, appendix B): one 4 KiB page per vCPU, control
//! area at 0x000, state-save area at 0x400. Accessed by offset through
//! [`Vmcb`], a typed view over the page (so the layout is written down once
//! here and checked by tests).

/// Control-area offsets.
pub mod ctrl {
    pub const INTERCEPT_CR: usize = 0x000;
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    pub const INTERCEPT_MISC1: usize = 0x00c;
    pub const INTERCEPT_MISC2: usize = 0x010;
    pub const IOPM_BASE_PA: usize = 0x040;
    pub const MSRPM_BASE_PA: usize = 0x048;
    pub const TSC_OFFSET: usize = 0x050;
    pub const GUEST_ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05c;
    pub const VINTR: usize = 0x060;
    pub const INTERRUPT_SHADOW: usize = 0x068;
    pub const EXITCODE: usize = 0x070;
    pub const EXITINFO1: usize = 0x078;
    pub const EXITINFO2: usize = 0x080;
    pub const EXITINTINFO: usize = 0x088;
    pub const NP_ENABLE: usize = 0x090;
    pub const EVENTINJ: usize = 0x0a8;
    pub const N_CR3: usize = 0x0b0;
    pub const CLEAN_BITS: usize = 0x0c0;
    pub const NRIP: usize = 0x0c8;
}

/// State-save-area offsets (from the start of the VMCB).
pub mod save {
    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const FS: usize = 0x440;
    pub const GS: usize = 0x450;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    pub const CPL: usize = 0x4cb;
    pub const EFER: usize = 0x4d0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5d8;
    pub const RAX: usize = 0x5f8;
    pub const STAR: usize = 0x600;
    pub const LSTAR: usize = 0x608;
    pub const CSTAR: usize = 0x610;
    pub const SFMASK: usize = 0x618;
    pub const KERNEL_GS_BASE: usize = 0x620;
    pub const SYSENTER_CS: usize = 0x628;
    pub const SYSENTER_ESP: usize = 0x630;
    pub const SYSENTER_EIP: usize = 0x638;
    pub const CR2: usize = 0x640;
    pub const G_PAT: usize = 0x668;
}

/// Intercept bits in `INTERCEPT_MISC1`.
pub mod misc1 {
    pub const INTR: u32 = 1 << 0;
    pub const NMI: u32 = 1 << 1;
    pub const RDPMC: u32 = 1 << 15;
    pub const CPUID: u32 = 1 << 18;
    pub const INVD: u32 = 1 << 22;
    pub const HLT: u32 = 1 << 24;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept bits in `INTERCEPT_MISC2`.
pub mod misc2 {
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    /// WBINVD and WBNOINVD (exit code 0x89).
    pub const WBINVD: u32 = 1 << 9;
    /// MONITOR/MONITORX (0x8A).
    pub const MONITOR: u32 = 1 << 10;
    /// MWAIT/MWAITX, unconditionally (0x8B).
    pub const MWAIT: u32 = 1 << 11;
    /// XSETBV (APM vol. 2 15.9; exit code 0x8D): XCR0 is switched per guest.
    pub const XSETBV: u32 = 1 << 13;
    /// Every SVM instruction: guests get no nested virtualization.
    pub const ALL_SVM: u32 = VMRUN | VMMCALL | VMLOAD | VMSAVE | STGI | CLGI | SKINIT;
}

/// `TLB_CONTROL` values.
pub mod tlb {
    pub const NOTHING: u8 = 0;
    pub const FLUSH_ALL: u8 = 1;
    pub const FLUSH_GUEST: u8 = 3;
}

/// A segment register in VMCB format (attributes packed as descriptor bits
/// 40..47 in 0..7 and 52..55 in 8..11).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

impl Segment {
    /// 64-bit ring-0 code: present, execute/read, L=1.
    pub const CODE64: Segment = Segment {
        selector: 0x08,
        attrib: 0x29b,
        limit: 0xffff_ffff,
        base: 0,
    };
    /// Ring-0 data: present, read/write, D/B=1, G=1.
    pub const DATA: Segment = Segment {
        selector: 0x10,
        attrib: 0xc93,
        limit: 0xffff_ffff,
        base: 0,
    };
    /// A busy 64-bit TSS (required to be valid; test guests never switch).
    pub const TSS64: Segment = Segment {
        selector: 0x18,
        attrib: 0x8b,
        limit: 0x67,
        base: 0,
    };

    /// Convert a GDT descriptor (low 8 bytes, plus the high 8 bytes for
    /// system descriptors in long mode) to VMCB form.
    pub fn from_descriptor(selector: u16, low: u64, high: u64) -> Segment {
        let access = ((low >> 40) & 0xff) as u16;
        let flags = ((low >> 52) & 0xf) as u16;
        let mut limit = ((low & 0xffff) | ((low >> 32) & 0xf_0000)) as u32;
        if flags & 0x8 != 0 {
            limit = (limit << 12) | 0xfff;
        }
        let mut base = ((low >> 16) & 0xff_ffff) | (((low >> 56) & 0xff) << 24);
        let system = access & 0x10 == 0;
        if system {
            base |= (high & 0xffff_ffff) << 32;
        }
        Segment {
            selector,
            attrib: access | (flags << 8),
            limit,
            base,
        }
    }
}

/// A VMCB page, accessed by offset.
pub struct Vmcb<'a>(pub &'a mut [u8; 4096]);

impl Vmcb<'_> {
    pub fn read_u64(&self, off: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.0[off..off + 8]);
        u64::from_le_bytes(b)
    }

    pub fn write_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }

    pub fn read_u32(&self, off: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_le_bytes(b)
    }

    pub fn write_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    pub fn write_u8(&mut self, off: usize, v: u8) {
        self.0[off] = v;
    }

    pub fn read_u8(&self, off: usize) -> u8 {
        self.0[off]
    }

    pub fn set_segment(&mut self, off: usize, s: Segment) {
        self.0[off..off + 2].copy_from_slice(&s.selector.to_le_bytes());
        self.0[off + 2..off + 4].copy_from_slice(&s.attrib.to_le_bytes());
        self.write_u32(off + 4, s.limit);
        self.write_u64(off + 8, s.base);
    }

    pub fn segment(&self, off: usize) -> Segment {
        Segment {
            selector: u16::from_le_bytes([self.0[off], self.0[off + 1]]),
            attrib: u16::from_le_bytes([self.0[off + 2], self.0[off + 3]]),
            limit: self.read_u32(off + 4),
            base: self.read_u64(off + 8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_round_trip_and_layout() {
        let mut page = [0u8; 4096];
        let mut v = Vmcb(&mut page);
        v.set_segment(save::CS, Segment::CODE64);
        assert_eq!(v.segment(save::CS), Segment::CODE64);
        // selector at +0, attrib at +2, limit at +4, base at +8
        assert_eq!(&page[0x410..0x414], &[0x08, 0, 0x9b, 0x02]);
    }

    #[test]
    fn descriptors_convert_to_vmcb_attributes() {
        // OVMF's 64-bit code descriptor 0x00af9b000000ffff
        let cs = Segment::from_descriptor(0x38, 0x00af_9b00_0000_ffff, 0);
        assert_eq!(cs.attrib, 0xa9b);
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.base, 0);
        // flat data 0x00cf93000000ffff
        let ds = Segment::from_descriptor(0x30, 0x00cf_9300_0000_ffff, 0);
        assert_eq!((ds.attrib, ds.limit), (0xc93, 0xffff_ffff));
        // 64-bit TSS at 0x1234_5678_9abc_def0, limit 0x67, busy
        let low = 0x67u64 | (0xbc_def0 << 16) | (0x8b << 40) | (0x9a << 56);
        let tss = Segment::from_descriptor(0x40, low, 0x1234_5678);
        assert_eq!(tss.base, 0x1234_5678_9abc_def0);
        assert_eq!((tss.attrib, tss.limit), (0x8b, 0x67));
    }
}
