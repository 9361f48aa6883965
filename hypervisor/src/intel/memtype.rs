//! Memory types: MTRRs (fixed and variable ranges, default type), the PAT, and
//! how they combine into the EPT memory type (SDM Vol. 3A 12.11-12.12, 3C 29.3.7).
//!
//! Under EPT the processor ignores the guest's MTRRs: the EPT leaf's memory type
//! takes the MTRR's role and combines with the guest PAT (unless "ignore PAT").
//! So each EPT leaf carries the type the host MTRRs give that range, and a guest
//! sees exactly the caching it would see on bare metal.

/// A memory type as the MTRRs and EPT encode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MemoryType {
    Uncacheable = 0,
    WriteCombining = 1,
    WriteThrough = 4,
    WriteProtected = 5,
    WriteBack = 6,
}

impl MemoryType {
    pub const fn from_bits(v: u8) -> Option<Self> {
        Some(match v {
            0 => MemoryType::Uncacheable,
            1 => MemoryType::WriteCombining,
            4 => MemoryType::WriteThrough,
            5 => MemoryType::WriteProtected,
            6 => MemoryType::WriteBack,
            _ => return None,
        })
    }

    pub const fn short(self) -> &'static str {
        match self {
            MemoryType::Uncacheable => "UC",
            MemoryType::WriteCombining => "WC",
            MemoryType::WriteThrough => "WT",
            MemoryType::WriteProtected => "WP",
            MemoryType::WriteBack => "WB",
        }
    }
}

/// A PAT entry type: the MTRR types plus UC- (7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatType {
    Type(MemoryType),
    UncachedMinus,
}

/// IA32_PAT (MSR 0x277): eight 3-bit types, one per byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pat(pub u64);

pub const MSR_PAT: u32 = 0x277;

impl Pat {
    /// The power-up value: WB, WT, UC-, UC, WB, WT, UC-, UC.
    pub const POWER_ON: Pat = Pat(0x0007_0406_0007_0406);

    /// Entry `index` (0..8); reserved encodings read as UC, the safe choice.
    pub fn entry(self, index: usize) -> PatType {
        let v = (self.0 >> ((index & 7) * 8)) as u8 & 0x7;
        match v {
            7 => PatType::UncachedMinus,
            _ => PatType::Type(MemoryType::from_bits(v).unwrap_or(MemoryType::Uncacheable)),
        }
    }

    /// PAT index selected by a page-table entry's PAT, PCD and PWT bits.
    pub const fn index(pat: bool, pcd: bool, pwt: bool) -> usize {
        ((pat as usize) << 2) | ((pcd as usize) << 1) | pwt as usize
    }
}

/// Effective memory type from an MTRR-role type and a PAT type (SDM Table 12-7,
/// formerly 11-7). Combinations the SDM leaves implementation-defined resolve to UC.
pub fn combine(mtrr: MemoryType, pat: PatType) -> MemoryType {
    use MemoryType::*;
    match (mtrr, pat) {
        (_, PatType::Type(Uncacheable)) => Uncacheable,
        (_, PatType::Type(WriteCombining)) => WriteCombining,
        (WriteCombining, PatType::UncachedMinus) => WriteCombining,
        (WriteProtected, PatType::UncachedMinus) => WriteCombining,
        (_, PatType::UncachedMinus) => Uncacheable,
        (Uncacheable, _) => Uncacheable,
        (WriteCombining, PatType::Type(WriteBack)) => WriteCombining,
        (WriteCombining, _) => Uncacheable,
        (WriteThrough, PatType::Type(WriteThrough | WriteBack)) => WriteThrough,
        (WriteThrough, PatType::Type(WriteProtected)) => WriteProtected,
        (WriteBack, PatType::Type(t)) => t,
        (WriteProtected, PatType::Type(WriteThrough)) => WriteThrough,
        (WriteProtected, PatType::Type(_)) => WriteProtected,
    }
}

/// The memory type a guest access gets through an EPT leaf (SDM 29.3.7.2).
pub fn ept_effective(ept_type: MemoryType, ignore_pat: bool, guest_pat: PatType) -> MemoryType {
    if ignore_pat {
        ept_type
    } else {
        combine(ept_type, guest_pat)
    }
}

pub const MSR_MTRRCAP: u32 = 0xFE;
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2FF;
pub const MSR_MTRR_PHYSBASE0: u32 = 0x200;
/// Fixed-range MSRs in address order: 64K x8 at 0, 16K x8 at 0x80000 and 0xA0000,
/// 4K x8 from 0xC0000 to 0xFFFFF.
pub const FIXED_MSRS: [u32; 11] = [
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F,
];
pub const MAX_VARIABLE: usize = 16;
const ONE_MIB: u64 = 0x10_0000;
const PAGE: u64 = 0x1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VariableRange {
    pub base: u64,
    pub mask: u64,
}

/// A snapshot of the MTRRs of the boot CPU (firmware programs all CPUs alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mtrrs {
    pub enabled: bool,
    pub fixed_enabled: bool,
    pub default_type: MemoryType,
    pub fixed: [u64; 11],
    pub variable: [VariableRange; MAX_VARIABLE],
    pub variable_count: usize,
    /// Mask of implemented physical-address bits above 4 KiB (from MAXPHYADDR).
    pub addr_mask: u64,
}

impl Mtrrs {
    /// No MTRRs at all (e.g. a CPU without them): everything is WB, as if a
    /// firmware had set a WB default. Only for processors that lack MTRRs.
    pub fn all_write_back(phys_bits: u8) -> Self {
        Mtrrs {
            enabled: true,
            fixed_enabled: false,
            default_type: MemoryType::WriteBack,
            fixed: [0; 11],
            variable: [VariableRange::default(); MAX_VARIABLE],
            variable_count: 0,
            addr_mask: addr_mask(phys_bits),
        }
    }

    /// Read the MTRRs with `rdmsr`; `phys_bits` is CPUID 0x80000008 EAX[7:0].
    pub fn read(mut rdmsr: impl FnMut(u32) -> u64, phys_bits: u8) -> Self {
        let cap = rdmsr(MSR_MTRRCAP);
        let def = rdmsr(MSR_MTRR_DEF_TYPE);
        let has_fixed = cap & (1 << 8) != 0;
        let count = ((cap & 0xff) as usize).min(MAX_VARIABLE);
        let mut fixed = [0u64; 11];
        if has_fixed {
            for (slot, msr) in fixed.iter_mut().zip(FIXED_MSRS) {
                *slot = rdmsr(msr);
            }
        }
        let mut variable = [VariableRange::default(); MAX_VARIABLE];
        for (i, v) in variable.iter_mut().enumerate().take(count) {
            let msr = MSR_MTRR_PHYSBASE0 + 2 * i as u32;
            *v = VariableRange {
                base: rdmsr(msr),
                mask: rdmsr(msr + 1),
            };
        }
        Mtrrs {
            enabled: def & (1 << 11) != 0,
            fixed_enabled: has_fixed && def & (1 << 10) != 0,
            default_type: MemoryType::from_bits(def as u8).unwrap_or(MemoryType::Uncacheable),
            fixed,
            variable,
            variable_count: count,
            addr_mask: addr_mask(phys_bits),
        }
    }

    fn fixed_type(&self, addr: u64) -> MemoryType {
        let (msr_index, byte) = if addr < 0x8_0000 {
            (0, addr / 0x1_0000)
        } else if addr < 0xC_0000 {
            let off = addr - 0x8_0000;
            (1 + (off / 0x2_0000) as usize, (off % 0x2_0000) / 0x4000)
        } else {
            let off = addr - 0xC_0000;
            (3 + (off / 0x8000) as usize, (off % 0x8000) / 0x1000)
        };
        let v = (self.fixed[msr_index] >> (byte * 8)) as u8;
        MemoryType::from_bits(v).unwrap_or(MemoryType::Uncacheable)
    }

    fn valid_ranges(&self) -> impl Iterator<Item = &VariableRange> + '_ {
        self.variable[..self.variable_count]
            .iter()
            .filter(|v| v.mask & (1 << 11) != 0)
    }

    /// The MTRR memory type of the byte at `addr` (SDM 12.11.4.1 precedence).
    pub fn type_of(&self, addr: u64) -> MemoryType {
        if !self.enabled {
            return MemoryType::Uncacheable;
        }
        if self.fixed_enabled && addr < ONE_MIB {
            return self.fixed_type(addr);
        }
        let mut found: Option<MemoryType> = None;
        for v in self.valid_ranges() {
            let mask = v.mask & self.addr_mask;
            if (addr ^ v.base) & mask != 0 {
                continue;
            }
            let t = MemoryType::from_bits(v.base as u8).unwrap_or(MemoryType::Uncacheable);
            found = Some(match (found, t) {
                (None, t) => t,
                (Some(a), b) if a == b => a,
                (Some(MemoryType::Uncacheable), _) | (_, MemoryType::Uncacheable) => {
                    MemoryType::Uncacheable
                }
                (Some(MemoryType::WriteThrough), MemoryType::WriteBack)
                | (Some(MemoryType::WriteBack), MemoryType::WriteThrough) => {
                    MemoryType::WriteThrough
                }
                // Architecturally undefined overlap: uncacheable is the safe answer.
                _ => MemoryType::Uncacheable,
            });
        }
        found.unwrap_or(self.default_type)
    }

    /// The single memory type of `[start, start+len)`, or None when the range
    /// mixes types (the caller then maps it with smaller pages).
    pub fn uniform_type(&self, start: u64, len: u64) -> Option<MemoryType> {
        if len == 0 {
            return None;
        }
        // Smallest block any variable range distinguishes.
        let mut step = len;
        if self.enabled {
            for v in self.valid_ranges() {
                let mask = v.mask & self.addr_mask;
                if mask != 0 {
                    step = step.min(1 << mask.trailing_zeros());
                }
            }
            if self.fixed_enabled && start < ONE_MIB {
                step = step.min(PAGE);
            }
        }
        let step = step.max(PAGE);
        if len / step > 512 {
            return None;
        }
        let first = self.type_of(start);
        // Types only change on step boundaries: check each one in the range.
        let mut addr = (start / step + 1) * step;
        while addr < start + len {
            if self.type_of(addr) != first {
                return None;
            }
            addr += step;
        }
        Some(first)
    }
}

const fn addr_mask(phys_bits: u8) -> u64 {
    let bits = if phys_bits == 0 || phys_bits > 52 {
        36
    } else {
        phys_bits
    };
    ((1u64 << bits) - 1) & !0xfff
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemoryType::*;

    /// An OVMF-like layout: fixed ranges (WB RAM below 640K, UC VGA hole, WP ROM),
    /// default UC, variable: 0-2G WB, then a UC hole 0xC0000000-0xFFFFFFFF, plus a
    /// WC framebuffer window of 16 MiB at 0x80000000 inside the WB range's upper half.
    fn sample() -> Mtrrs {
        let mut regs = std::collections::HashMap::new();
        regs.insert(MSR_MTRRCAP, 0x0000_0000_0000_0d0a); // 10 variable, FIX, WC
        regs.insert(MSR_MTRR_DEF_TYPE, 0xc00); // E | FE, default UC
        regs.insert(0x250, 0x0606_0606_0606_0606);
        regs.insert(0x258, 0x0606_0606_0606_0606);
        regs.insert(0x259, 0); // A0000-BFFFF UC
        for i in 0..8 {
            regs.insert(0x268 + i, 0x0505_0505_0505_0505);
        }
        // 0 - 4 GiB WB
        regs.insert(0x200, 0x6);
        regs.insert(0x201, 0xf_0000_0000 | 0x800);
        // 0xC0000000 - 0xFFFFFFFF UC (1 GiB)
        regs.insert(0x202, 0xc000_0000);
        regs.insert(0x203, 0xf_c000_0000 | 0x800);
        // 0x80000000 + 16 MiB WC (overlaps WB: undefined combination -> UC)
        regs.insert(0x204, 0x8000_0000 | 1);
        regs.insert(0x205, 0xf_ff00_0000 | 0x800);
        // 0x90000000 + 2 MiB WT (overlaps WB: WT wins)
        regs.insert(0x206, 0x9000_0000 | 4);
        regs.insert(0x207, 0xf_ffe0_0000 | 0x800);
        // An invalid (V=0) entry must be ignored.
        regs.insert(0x208, 0x0);
        regs.insert(0x209, 0xf_ffff_f000);
        Mtrrs::read(|m| regs.get(&m).copied().unwrap_or(0), 36)
    }

    #[test]
    fn fixed_ranges_below_1mib() {
        let m = sample();
        assert_eq!(m.type_of(0), WriteBack);
        assert_eq!(m.type_of(0x9_f000), WriteBack);
        assert_eq!(m.type_of(0xA_0000), Uncacheable);
        assert_eq!(m.type_of(0xB_8000), Uncacheable);
        assert_eq!(m.type_of(0xC_0000), WriteProtected);
        assert_eq!(m.type_of(0xF_F000), WriteProtected);
    }

    #[test]
    fn variable_ranges_and_precedence() {
        let m = sample();
        assert_eq!(m.type_of(0x10_0000), WriteBack);
        assert_eq!(m.type_of(0x7fff_f000), WriteBack);
        assert_eq!(m.type_of(0xc000_0000), Uncacheable, "UC wins over WB");
        assert_eq!(m.type_of(0xfee0_0000), Uncacheable);
        assert_eq!(m.type_of(0x9000_0000), WriteThrough, "WT wins over WB");
        assert_eq!(
            m.type_of(0x8000_0000),
            Uncacheable,
            "WC+WB overlap is undefined -> UC"
        );
        assert_eq!(
            m.type_of(0x1_0000_0000),
            Uncacheable,
            "default type above 4G"
        );
    }

    #[test]
    fn disabled_mtrrs_mean_uc() {
        let mut m = sample();
        m.enabled = false;
        assert_eq!(m.type_of(0x10_0000), Uncacheable);
        m.enabled = true;
        m.fixed_enabled = false;
        assert_eq!(
            m.type_of(0xA_0000),
            WriteBack,
            "variable ranges cover <1M when FE=0"
        );
    }

    #[test]
    fn uniform_ranges_for_large_pages() {
        let m = sample();
        assert_eq!(m.uniform_type(0x20_0000, 0x20_0000), Some(WriteBack));
        assert_eq!(
            m.uniform_type(0, 0x20_0000),
            None,
            "first 2M mixes fixed types"
        );
        assert_eq!(m.uniform_type(0x9000_0000, 0x20_0000), Some(WriteThrough));
        assert_eq!(m.uniform_type(0x8fe0_0000, 0x40_0000), None);
        assert_eq!(m.uniform_type(0x4000_0000, 0x4000_0000), Some(WriteBack));
        assert_eq!(m.uniform_type(0x8000_0000, 0x4000_0000), None);
        assert_eq!(
            m.uniform_type(0x1000, 0x4000_0000),
            None,
            "unaligned and mixed"
        );
        assert_eq!(m.uniform_type(0x1000, 0x1000), Some(WriteBack));
    }

    #[test]
    fn pat_power_on_entries_and_index() {
        let p = Pat::POWER_ON;
        assert_eq!(p.entry(0), PatType::Type(WriteBack));
        assert_eq!(p.entry(1), PatType::Type(WriteThrough));
        assert_eq!(p.entry(2), PatType::UncachedMinus);
        assert_eq!(p.entry(3), PatType::Type(Uncacheable));
        assert_eq!(Pat::index(false, true, true), 3);
        assert_eq!(Pat::index(true, false, true), 5);
    }

    #[test]
    fn mtrr_pat_combination_table() {
        let wb = PatType::Type(WriteBack);
        let ucm = PatType::UncachedMinus;
        let wc = PatType::Type(WriteCombining);
        let wp = PatType::Type(WriteProtected);
        let wt = PatType::Type(WriteThrough);
        assert_eq!(combine(WriteBack, wb), WriteBack);
        assert_eq!(combine(WriteBack, wt), WriteThrough);
        assert_eq!(combine(WriteBack, ucm), Uncacheable);
        assert_eq!(combine(Uncacheable, wb), Uncacheable);
        assert_eq!(combine(Uncacheable, wc), WriteCombining);
        assert_eq!(combine(WriteCombining, ucm), WriteCombining);
        assert_eq!(combine(WriteCombining, wb), WriteCombining);
        assert_eq!(combine(WriteCombining, wt), Uncacheable);
        assert_eq!(combine(WriteThrough, wp), WriteProtected);
        assert_eq!(combine(WriteThrough, wb), WriteThrough);
        assert_eq!(combine(WriteProtected, wb), WriteProtected);
        assert_eq!(combine(WriteProtected, ucm), WriteCombining);
        assert_eq!(combine(WriteProtected, wt), WriteThrough);
    }

    #[test]
    fn ept_ignore_pat() {
        let uc = PatType::Type(Uncacheable);
        assert_eq!(ept_effective(WriteBack, true, uc), WriteBack);
        assert_eq!(ept_effective(WriteBack, false, uc), Uncacheable);
    }
}
