//! Host GDT, TSS and IDT contents (pure encoding; `host_cpu` installs them).
//!
//! Per-CPU GDT: null, 64-bit code (0x08), data (0x10), 64-bit TSS (0x18, 16 bytes).
//! One shared IDT: 256 interrupt gates into the stubs of `host_entry.S`; #NMI, #DF and #MC
//! run on their own IST stacks so a broken RSP still gets the fault reported.

/// Host code segment selector.
pub const HOST_CS: u16 = 0x08;
/// Host data/stack segment selector.
pub const HOST_DS: u16 = 0x10;
/// Host task register selector.
pub const HOST_TR: u16 = 0x18;
/// Entries (8 bytes each) in the host GDT.
pub const GDT_ENTRIES: usize = 5;

/// IST slot (1-based) used by each special vector.
pub const IST_NMI: u8 = 1;
pub const IST_DOUBLE_FAULT: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;
/// Number of IST stacks each CPU has.
pub const IST_STACKS: usize = 3;

/// 64-bit code: present, DPL 0, execute/read, L=1.
pub const CODE64: u64 = 0x00af_9a00_0000_ffff;
/// Data: present, DPL 0, read/write, 4 GiB limit (ignored in 64-bit mode).
pub const DATA: u64 = 0x00cf_9200_0000_ffff;

/// The 64-bit task-state segment (Intel SDM Vol. 3 §8.7, AMD APM Vol. 2 §12.2.5).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, packed(4))]
pub struct Tss {
    _reserved0: u32,
    /// Stacks for privilege changes (unused: the host has no ring 3).
    pub rsp: [u64; 3],
    _reserved1: u64,
    /// Interrupt stack table; `ist[0]` is IST1.
    pub ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    /// Offset of the I/O permission bitmap; past the limit means "none".
    pub iomap_base: u16,
}

/// Size of the TSS in bytes.
pub const TSS_SIZE: usize = core::mem::size_of::<Tss>();
const _: () = assert!(TSS_SIZE == 104);

impl Tss {
    /// A TSS with the given IST stack tops and no I/O bitmap.
    pub fn with_ist(ist_tops: [u64; IST_STACKS]) -> Self {
        let mut ist = [0u64; 7];
        ist[..IST_STACKS].copy_from_slice(&ist_tops);
        // Whole-field writes: the packed layout leaves the arrays unaligned.
        Tss {
            ist,
            iomap_base: TSS_SIZE as u16,
            ..Default::default()
        }
    }
}

/// The two GDT words of an available 64-bit TSS descriptor for a TSS at `base`.
pub fn tss_descriptor(base: u64) -> [u64; 2] {
    let limit = (TSS_SIZE - 1) as u64;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40) // present, DPL 0, type 9 = available 64-bit TSS
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    [low, base >> 32]
}

/// The host GDT for a CPU whose TSS is at `tss_base`.
pub fn gdt(tss_base: u64) -> [u64; GDT_ENTRIES] {
    let [lo, hi] = tss_descriptor(tss_base);
    [0, CODE64, DATA, lo, hi]
}

/// One 16-byte IDT gate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Gate {
    pub offset_low: u16,
    pub selector: u16,
    /// Bits 0..3: IST index (0 = none).
    pub ist: u8,
    /// 0x8E: present, DPL 0, 64-bit interrupt gate (IF cleared on entry).
    pub type_attr: u8,
    pub offset_mid: u16,
    pub offset_high: u32,
    _reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Gate>() == 16);

impl Gate {
    /// An interrupt gate to `handler` in the host code segment.
    pub fn interrupt(handler: u64, ist: u8) -> Self {
        Gate {
            offset_low: handler as u16,
            selector: HOST_CS,
            ist: ist & 7,
            type_attr: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            _reserved: 0,
        }
    }

    /// Where the gate jumps.
    pub fn handler(&self) -> u64 {
        u64::from(self.offset_low)
            | (u64::from(self.offset_mid) << 16)
            | (u64::from(self.offset_high) << 32)
    }
}

/// IST slot for a vector (0 = the current stack).
pub fn ist_for(vector: usize) -> u8 {
    match vector {
        2 => IST_NMI,
        8 => IST_DOUBLE_FAULT,
        18 => IST_MACHINE_CHECK,
        _ => 0,
    }
}

/// The whole host IDT, given each vector's stub address.
pub fn idt(stubs: &[u64; 256]) -> [Gate; 256] {
    let mut t = [Gate::default(); 256];
    for (v, g) in t.iter_mut().enumerate() {
        *g = Gate::interrupt(stubs[v], ist_for(v));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_descriptor_encodes_base_limit_and_type() {
        let base = 0x1234_5678_9abc_d000u64;
        let [lo, hi] = tss_descriptor(base);
        assert_eq!(lo & 0xffff, 103, "limit");
        assert_eq!((lo >> 16) & 0xff_ffff, 0xbc_d000, "base 23:0");
        assert_eq!((lo >> 56) & 0xff, 0x9a, "base 31:24");
        assert_eq!(hi, 0x1234_5678, "base 63:32");
        assert_eq!((lo >> 40) & 0xff, 0x89, "present, available 64-bit TSS");
    }

    #[test]
    fn gdt_has_long_mode_code_and_data() {
        let g = gdt(0x1000);
        assert_eq!(g[0], 0);
        assert_eq!(g[(HOST_CS / 8) as usize] >> 53 & 1, 1, "L bit");
        assert_eq!(g[(HOST_CS / 8) as usize] >> 47 & 1, 1, "present");
        assert_eq!(g[(HOST_DS / 8) as usize] >> 41 & 1, 1, "writable");
        assert_eq!(g[(HOST_TR / 8) as usize], tss_descriptor(0x1000)[0]);
    }

    #[test]
    fn tss_ist_slots_and_no_io_bitmap() {
        let t = Tss::with_ist([0xa000, 0xb000, 0xc000]);
        let ist = t.ist;
        assert_eq!(&ist[..3], &[0xa000, 0xb000, 0xc000]);
        assert_eq!(ist[3], 0);
        let iomap = t.iomap_base;
        assert_eq!(iomap, 104);
    }

    #[test]
    fn idt_gates_point_at_stubs_with_ist_for_nmi_df_mc() {
        let mut stubs = [0u64; 256];
        for (i, s) in stubs.iter_mut().enumerate() {
            *s = 0xffff_8000_0010_0000 + i as u64 * 16;
        }
        let t = idt(&stubs);
        assert_eq!(t[14].handler(), stubs[14]);
        assert_eq!(t[255].handler(), stubs[255]);
        assert_eq!(t[14].selector, HOST_CS);
        assert_eq!(t[14].type_attr, 0x8e);
        assert_eq!(
            (t[2].ist, t[8].ist, t[18].ist, t[13].ist),
            (IST_NMI, IST_DOUBLE_FAULT, IST_MACHINE_CHECK, 0)
        );
    }
}
