//! Extended page tables: entries, EPTP, and a per-partition builder that
//! identity-maps the partition's regions and nothing else (SDM Vol. 3C 29.3).

use super::memtype::{MemoryType, Mtrrs};
use crate::mem::second_level::{Mapping, Perm, SecondLevel};
use crate::mem::PhysMem;
use core::fmt;

pub const PAGE_4K: u64 = 0x1000;
pub const PAGE_2M: u64 = 0x20_0000;
pub const PAGE_1G: u64 = 0x4000_0000;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Access rights of an EPT mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptPerms(u8);

impl EptPerms {
    pub const NONE: EptPerms = EptPerms(0);
    pub const READ: EptPerms = EptPerms(1);
    pub const WRITE: EptPerms = EptPerms(2);
    pub const EXEC: EptPerms = EptPerms(4);
    pub const RW: EptPerms = EptPerms(3);
    pub const RX: EptPerms = EptPerms(5);
    pub const RWX: EptPerms = EptPerms(7);

    pub const fn bits(self) -> u8 {
        self.0
    }
    pub const fn from_bits(v: u8) -> Self {
        EptPerms(v & 7)
    }
    pub const fn union(self, o: EptPerms) -> Self {
        EptPerms(self.0 | o.0)
    }
    pub const fn contains(self, o: EptPerms) -> bool {
        self.0 & o.0 == o.0
    }
    pub const fn readable(self) -> bool {
        self.0 & 1 != 0
    }
    pub const fn writable(self) -> bool {
        self.0 & 2 != 0
    }
    pub const fn executable(self) -> bool {
        self.0 & 4 != 0
    }
}

impl From<Perm> for EptPerms {
    /// The shared planning type: read is implied by presence.
    fn from(p: Perm) -> Self {
        let mut v = EptPerms::READ;
        if p.write {
            v = v.union(EptPerms::WRITE);
        }
        if p.exec {
            v = v.union(EptPerms::EXEC);
        }
        v
    }
}

/// One EPT paging-structure entry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EptEntry(pub u64);

impl EptEntry {
    const LARGE: u64 = 1 << 7;
    const IGNORE_PAT: u64 = 1 << 6;

    /// A non-leaf entry pointing at the next table; full rights so leaves decide.
    pub const fn table(next: u64) -> Self {
        EptEntry((next & ADDR_MASK) | EptPerms::RWX.0 as u64)
    }

    /// A leaf mapping `hpa`; `large` for 2 MiB / 1 GiB pages.
    pub const fn leaf(hpa: u64, perms: EptPerms, mt: MemoryType, large: bool) -> Self {
        let mut v = (hpa & ADDR_MASK) | perms.0 as u64 | ((mt as u64) << 3);
        if large {
            v |= Self::LARGE;
        }
        EptEntry(v)
    }

    /// Present means any of R/W/X is set (EPT has no present bit).
    pub const fn is_present(self) -> bool {
        self.0 & 7 != 0
    }
    pub const fn is_large(self) -> bool {
        self.0 & Self::LARGE != 0
    }
    pub const fn addr(self) -> u64 {
        self.0 & ADDR_MASK
    }
    pub const fn perms(self) -> EptPerms {
        EptPerms((self.0 & 7) as u8)
    }
    pub fn memory_type(self) -> Option<MemoryType> {
        MemoryType::from_bits(((self.0 >> 3) & 7) as u8)
    }
    pub const fn ignores_pat(self) -> bool {
        self.0 & Self::IGNORE_PAT != 0
    }

    /// Would this leaf cause an EPT misconfiguration? (SDM 29.3.3.1): write
    /// without read, execute-only without the capability, reserved memory type.
    pub fn misconfigured(self, exec_only_ok: bool) -> bool {
        let p = self.perms();
        (p.writable() && !p.readable())
            || (p.executable() && !p.readable() && !exec_only_ok)
            || (p.0 != 0 && self.memory_type().is_none())
    }
}

impl fmt::Debug for EptEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EptEntry({:#x} perms={} large={})",
            self.addr(),
            self.perms().0,
            self.is_large()
        )
    }
}

/// The EPT pointer written to the VMCS (4-level walk, WB paging structures).
pub const fn eptp(pml4: u64, accessed_dirty: bool) -> u64 {
    (pml4 & ADDR_MASK) | (MemoryType::WriteBack as u64) | (3 << 3) | ((accessed_dirty as u64) << 6)
}

/// EPT/VPID capability bits (IA32_VMX_EPT_VPID_CAP) the builder and INVEPT use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptCaps(pub u64);

impl EptCaps {
    pub const fn execute_only(self) -> bool {
        self.0 & 1 != 0
    }
    pub const fn walk_length_4(self) -> bool {
        self.0 & (1 << 6) != 0
    }
    pub const fn wb_paging_structures(self) -> bool {
        self.0 & (1 << 14) != 0
    }
    pub const fn pages_2m(self) -> bool {
        self.0 & (1 << 16) != 0
    }
    pub const fn pages_1g(self) -> bool {
        self.0 & (1 << 17) != 0
    }
    pub const fn invept(self) -> bool {
        self.0 & (1 << 20) != 0
    }
    pub const fn invept_single(self) -> bool {
        self.0 & (1 << 25) != 0
    }
    pub const fn invept_all(self) -> bool {
        self.0 & (1 << 26) != 0
    }
    pub const fn invvpid(self) -> bool {
        self.0 & (1 << 32) != 0
    }
    pub const fn invvpid_single(self) -> bool {
        self.0 & (1 << 41) != 0
    }
    pub const fn invvpid_all(self) -> bool {
        self.0 & (1 << 42) != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EptError {
    OutOfMemory,
    /// Region start or size not 4 KiB aligned.
    Unaligned {
        base: u64,
        size: u64,
    },
    /// Region overlaps one mapped before (policy validation should prevent it).
    Overlap {
        gpa: u64,
    },
    /// Address beyond the 48-bit guest-physical space of a 4-level EPT.
    TooHigh {
        gpa: u64,
    },
}

impl fmt::Display for EptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EptError::OutOfMemory => f.write_str("out of memory for EPT tables"),
            EptError::Unaligned { base, size } => {
                write!(f, "region {base:#x}+{size:#x} is not 4 KiB aligned")
            }
            EptError::Overlap { gpa } => write!(f, "guest-physical {gpa:#x} is already mapped"),
            EptError::TooHigh { gpa } => write!(f, "guest-physical {gpa:#x} is above 2^48"),
        }
    }
}

/// A translation found by [`Ept::translate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub hpa: u64,
    pub perms: EptPerms,
    pub memory_type: Option<MemoryType>,
    pub page_size: u64,
}

/// Mapping statistics, for the boot log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EptStats {
    pub pages_4k: u64,
    pub pages_2m: u64,
    pub pages_1g: u64,
    pub tables: u64,
}

/// One partition's EPT hierarchy.
pub struct Ept {
    pml4: u64,
    caps: EptCaps,
    pub stats: EptStats,
}

impl Ept {
    pub fn new(alloc: &mut impl PhysMem, caps: EptCaps) -> Result<Self, EptError> {
        let pml4 = alloc.alloc_frame().ok_or(EptError::OutOfMemory)?;
        Ok(Ept {
            pml4,
            caps,
            stats: EptStats {
                tables: 1,
                ..EptStats::default()
            },
        })
    }

    pub const fn pml4(&self) -> u64 {
        self.pml4
    }

    pub const fn eptp(&self) -> u64 {
        eptp(self.pml4, false)
    }

    /// Identity-map `[base, base+size)` with `perms`; memory types come from the
    /// MTRRs; the largest page whose range has one memory type is used.
    pub fn map_identity(
        &mut self,
        alloc: &mut impl PhysMem,
        base: u64,
        size: u64,
        perms: EptPerms,
        mtrrs: &Mtrrs,
    ) -> Result<(), EptError> {
        if !base.is_multiple_of(PAGE_4K) || !size.is_multiple_of(PAGE_4K) {
            return Err(EptError::Unaligned { base, size });
        }
        let end = base
            .checked_add(size)
            .ok_or(EptError::TooHigh { gpa: base })?;
        if end > 1 << 48 {
            return Err(EptError::TooHigh { gpa: end - 1 });
        }
        let mut gpa = base;
        while gpa < end {
            let left = end - gpa;
            let mut done = false;
            for (page, level, allowed) in [
                (PAGE_1G, 2, self.caps.pages_1g()),
                (PAGE_2M, 1, self.caps.pages_2m()),
            ] {
                if allowed && gpa.is_multiple_of(page) && left >= page {
                    if let Some(mt) = mtrrs.uniform_type(gpa, page) {
                        self.set_leaf(alloc, gpa, level, EptEntry::leaf(gpa, perms, mt, true))?;
                        if level == 2 {
                            self.stats.pages_1g += 1;
                        } else {
                            self.stats.pages_2m += 1;
                        }
                        gpa += page;
                        done = true;
                        break;
                    }
                }
            }
            if !done {
                let mt = mtrrs.type_of(gpa);
                self.set_leaf(alloc, gpa, 0, EptEntry::leaf(gpa, perms, mt, false))?;
                self.stats.pages_4k += 1;
                gpa += PAGE_4K;
            }
        }
        Ok(())
    }

    /// Add one write-back leaf to a table in use (`level` 0 = 4 KiB, 1 = 2 MiB), taking any
    /// new table frame from `alloc`; the caller serialises writers and invalidates cached
    /// translations where the processor may hold them (a not-present entry is never
    /// cached). Entries are written with single aligned stores.
    pub fn add_leaf(
        &self,
        alloc: &mut impl PhysMem,
        gpa: u64,
        hpa: u64,
        level: u32,
        perms: EptPerms,
    ) -> Result<(), EptError> {
        let size = PAGE_4K << (9 * level);
        if level > 1 || !gpa.is_multiple_of(size) || !hpa.is_multiple_of(size) {
            return Err(EptError::Unaligned { base: gpa, size });
        }
        if gpa >= 1 << 48 {
            return Err(EptError::TooHigh { gpa });
        }
        let mut table = self.pml4;
        for l in (level + 1..=3).rev() {
            let idx = index(gpa, l);
            let e = EptEntry(alloc.table(table)[idx]);
            table = if !e.is_present() {
                let next = alloc.alloc_frame().ok_or(EptError::OutOfMemory)?;
                alloc.table(table)[idx] = EptEntry::table(next).0;
                next
            } else if e.is_large() {
                return Err(EptError::Overlap { gpa });
            } else {
                e.addr()
            };
        }
        let slot = &mut alloc.table(table)[index(gpa, level)];
        if EptEntry(*slot).is_present() {
            return Err(EptError::Overlap { gpa });
        }
        *slot = EptEntry::leaf(hpa, perms, MemoryType::WriteBack, level > 0).0;
        Ok(())
    }

    /// Install `leaf` for `gpa` at `level` (0 = PT, 1 = PD, 2 = PDPT).
    fn set_leaf(
        &mut self,
        alloc: &mut impl PhysMem,
        gpa: u64,
        level: u32,
        leaf: EptEntry,
    ) -> Result<(), EptError> {
        let mut table = self.pml4;
        for l in (level + 1..=3).rev() {
            let idx = index(gpa, l);
            let e = EptEntry(alloc.table(table)[idx]);
            table = if !e.is_present() {
                let next = alloc.alloc_frame().ok_or(EptError::OutOfMemory)?;
                self.stats.tables += 1;
                alloc.table(table)[idx] = EptEntry::table(next).0;
                next
            } else if e.is_large() {
                return Err(EptError::Overlap { gpa });
            } else {
                e.addr()
            };
        }
        let slot = &mut alloc.table(table)[index(gpa, level)];
        if EptEntry(*slot).is_present() {
            return Err(EptError::Overlap { gpa });
        }
        *slot = leaf.0;
        Ok(())
    }

    /// Walk the tables as the processor would.
    pub fn translate(&self, alloc: &mut impl PhysMem, gpa: u64) -> Option<Translation> {
        // A 4-level EPT translates 48 bits; higher ones are not dropped.
        if !crate::mem::second_level::in_gpa_space(gpa) {
            return None;
        }
        let mut table = self.pml4;
        for level in (0..=3).rev() {
            let e = EptEntry(alloc.table(table)[index(gpa, level)]);
            if !e.is_present() {
                return None;
            }
            if level == 0 || e.is_large() {
                let page_size = 1u64 << (12 + 9 * level);
                return Some(Translation {
                    hpa: e.addr() & !(page_size - 1) | (gpa & (page_size - 1)),
                    perms: e.perms(),
                    memory_type: e.memory_type(),
                    page_size,
                });
            }
            table = e.addr();
        }
        None
    }
}

/// The shared code's view: what the guest may read is what it may access at
/// all (EPT entries without read permission are never built; one would count
/// as unmapped here).
impl<M: PhysMem> SecondLevel<M> for Ept {
    fn translate_gpa(&self, mem: &mut M, gpa: u64) -> Option<Mapping> {
        let t = self.translate(mem, gpa).filter(|t| t.perms.readable())?;
        Some(Mapping {
            hpa: t.hpa,
            perm: Perm {
                write: t.perms.writable(),
                exec: t.perms.executable(),
            },
            page_size: t.page_size,
        })
    }
}

const fn index(gpa: u64, level: u32) -> usize {
    ((gpa >> (12 + 9 * level)) & 0x1ff) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::mem::fake::FakeMem;

    fn mem() -> FakeMem {
        FakeMem::new(0x7000_0000)
    }

    const CAPS: EptCaps = EptCaps(0x0f01_0633_4141 | (1 << 16));

    fn wb() -> Mtrrs {
        Mtrrs::all_write_back(39)
    }

    #[test]
    fn leaf_and_table_entries() {
        let e = EptEntry::leaf(0x20_0000, EptPerms::RW, MemoryType::WriteBack, true);
        assert_eq!(e.0, 0x20_0000 | 0b011 | (6 << 3) | (1 << 7));
        assert!(e.is_large());
        assert_eq!(e.perms(), EptPerms::RW);
        assert_eq!(e.memory_type(), Some(MemoryType::WriteBack));
        assert!(!e.ignores_pat());
        let t = EptEntry::table(0x1234_5000);
        assert_eq!(t.0, 0x1234_5007);
        assert!(!EptEntry(0).is_present());
    }

    #[test]
    fn misconfiguration_rules() {
        let w_only = EptEntry::leaf(0, EptPerms::WRITE, MemoryType::WriteBack, false);
        assert!(w_only.misconfigured(true));
        let x_only = EptEntry::leaf(0, EptPerms::EXEC, MemoryType::WriteBack, false);
        assert!(x_only.misconfigured(false));
        assert!(!x_only.misconfigured(true));
        let bad_type = EptEntry(0x1000 | 7 | (2 << 3));
        assert!(bad_type.misconfigured(true));
        let good = EptEntry::leaf(0, EptPerms::RWX, MemoryType::Uncacheable, false);
        assert!(!good.misconfigured(false));
    }

    #[test]
    fn eptp_encoding() {
        assert_eq!(eptp(0x5000, false), 0x5000 | 6 | (3 << 3));
        assert_eq!(eptp(0x5000, true), 0x5000 | 6 | (3 << 3) | (1 << 6));
    }

    #[test]
    fn identity_map_uses_2m_pages_where_aligned() {
        let mut a = mem();
        let mut ept = Ept::new(&mut a, CAPS).unwrap();
        // 0x1ff000 .. 0x601000: one 4K head, two 2M pages, one 4K tail.
        ept.map_identity(&mut a, 0x1f_f000, 0x40_2000, EptPerms::RWX, &wb())
            .unwrap();
        assert_eq!(ept.stats.pages_4k, 2);
        assert_eq!(ept.stats.pages_2m, 2);
        let t = ept.translate(&mut a, 0x30_0123).unwrap();
        assert_eq!(t.hpa, 0x30_0123);
        assert_eq!(t.page_size, PAGE_2M);
        assert_eq!(t.perms, EptPerms::RWX);
        assert_eq!(t.memory_type, Some(MemoryType::WriteBack));
        let head = ept.translate(&mut a, 0x1f_f800).unwrap();
        assert_eq!((head.hpa, head.page_size), (0x1f_f800, PAGE_4K));
        assert_eq!(ept.translate(&mut a, 0x60_0fff).unwrap().page_size, PAGE_4K);
        // Bits 48 and up are not dropped by the 9-bit indices: no alias.
        for high in [1u64 << 48, 1 << 51, 1 << 63] {
            assert!(ept.translate(&mut a, high | 0x30_0123).is_none());
        }
    }

    #[test]
    fn nothing_outside_regions_is_mapped() {
        let mut a = mem();
        let mut ept = Ept::new(&mut a, CAPS).unwrap();
        ept.map_identity(&mut a, 0x100_0000, 0x20_0000, EptPerms::RWX, &wb())
            .unwrap();
        ept.map_identity(&mut a, 0x400_0000, 0x1000, EptPerms::READ, &wb())
            .unwrap();
        for gpa in [
            0u64,
            0xfff_f000,
            0x120_0000,
            0x3ff_f000,
            0x400_1000,
            0xfee0_0000,
            1 << 40,
        ] {
            assert_eq!(
                ept.translate(&mut a, gpa),
                None,
                "{gpa:#x} must be unmapped"
            );
        }
        assert_eq!(
            ept.translate(&mut a, 0x400_0000).unwrap().perms,
            EptPerms::READ
        );
    }

    #[test]
    fn mixed_memory_types_split_into_4k_pages() {
        let mut a = mem();
        let mut ept = Ept::new(&mut a, CAPS).unwrap();
        let mut m = wb();
        m.fixed_enabled = true;
        // Fixed MTRR: A0000-BFFFF UC, the rest WB.
        m.fixed = [0x0606_0606_0606_0606; 11];
        m.fixed[2] = 0;
        ept.map_identity(&mut a, 0, 0x20_0000, EptPerms::RWX, &m)
            .unwrap();
        assert_eq!(ept.stats.pages_2m, 0);
        assert_eq!(ept.stats.pages_4k, 512);
        let vga = ept.translate(&mut a, 0xA_0000).unwrap();
        assert_eq!(vga.memory_type, Some(MemoryType::Uncacheable));
        let ram = ept.translate(&mut a, 0x9_0000).unwrap();
        assert_eq!(ram.memory_type, Some(MemoryType::WriteBack));
    }

    #[test]
    fn no_large_pages_without_capability() {
        let mut a = mem();
        let mut ept = Ept::new(&mut a, EptCaps(0)).unwrap();
        ept.map_identity(&mut a, 0x20_0000, 0x20_0000, EptPerms::RWX, &wb())
            .unwrap();
        assert_eq!(ept.stats.pages_2m, 0);
        assert_eq!(ept.stats.pages_4k, 512);
    }

    #[test]
    fn one_gig_pages_when_supported() {
        let mut a = mem();
        let mut ept = Ept::new(&mut a, EptCaps(CAPS.0 | (1 << 17))).unwrap();
        ept.map_identity(&mut a, 0, 2 * PAGE_1G, EptPerms::RWX, &wb())
            .unwrap();
        assert_eq!(ept.stats.pages_1g, 2);
        assert_eq!(
            ept.translate(&mut a, PAGE_1G + 5).unwrap().page_size,
            PAGE_1G
        );
    }

    #[test]
    fn errors() {
        let mut a = mem();
        let mut ept = Ept::new(&mut a, CAPS).unwrap();
        assert_eq!(
            ept.map_identity(&mut a, 0x1001, 0x1000, EptPerms::RWX, &wb()),
            Err(EptError::Unaligned {
                base: 0x1001,
                size: 0x1000
            })
        );
        ept.map_identity(&mut a, 0x20_0000, 0x20_0000, EptPerms::RWX, &wb())
            .unwrap();
        assert_eq!(
            ept.map_identity(&mut a, 0x30_0000, 0x1000, EptPerms::RWX, &wb()),
            Err(EptError::Overlap { gpa: 0x30_0000 })
        );
        assert!(matches!(
            ept.map_identity(&mut a, 1 << 48, 0x1000, EptPerms::RWX, &wb()),
            Err(EptError::TooHigh { .. })
        ));
        let mut small = mem();
        small.frame_limit = 2;
        let mut ept = Ept::new(&mut small, CAPS).unwrap();
        assert_eq!(
            ept.map_identity(&mut small, 0, 0x1000, EptPerms::RWX, &wb()),
            Err(EptError::OutOfMemory)
        );
        assert!(format!("{}", EptError::Overlap { gpa: 0x1000 }).contains("0x1000"));
    }
}
