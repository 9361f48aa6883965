//! AMD nested page tables (the ordinary x86-64 4-level format). The shared
//! code reads them through [`SecondLevel`], which the VMX backend's EPT
//! implements too.
//!
//! One table per partition, built from the policy before the partition runs:
//! each range is identity mapped with the largest page that fits (1 GiB when
//! allowed, 2 MiB, else 4 KiB). Nothing else is mapped, so any guest access
//! outside its ranges ends in a nested page fault.
//!
//! NPT walks are user-mode accesses: every entry carries the U bit.

use crate::mem::second_level::{in_gpa_space, SecondLevel};
pub use crate::mem::second_level::{Mapping, Perm};
use crate::mem::{PhysMem, HUGE_PAGE_SIZE, LARGE_PAGE_SIZE, PAGE_SIZE};

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NptError {
    /// Out of page-table frames.
    NoMemory,
    /// Address or size not 4 KiB aligned.
    Unaligned { addr: u64 },
    /// The range (partly) maps an address that is already mapped.
    Overlap { addr: u64 },
    /// Above the 48-bit guest-physical space.
    TooHigh { addr: u64 },
}

/// Options fixed per table.
#[derive(Clone, Copy, Debug)]
pub struct NptOptions {
    /// Use 1 GiB leaves where they fit (needs PDPE1GB on the host).
    pub huge_pages: bool,
    /// Set NX on non-executable mappings (needs host EFER.NXE; without it NX
    /// is a reserved bit and every walk would fault).
    pub nx: bool,
}

/// A nested page table under construction or in use.
#[derive(Debug)]
pub struct Npt {
    root: u64,
    opts: NptOptions,
    /// Number of leaf entries by size: [4 KiB, 2 MiB, 1 GiB].
    pub leaves: [u64; 3],
}

impl Npt {
    pub fn new(mem: &mut impl PhysMem, opts: NptOptions) -> Result<Self, NptError> {
        let root = mem.alloc_frame().ok_or(NptError::NoMemory)?;
        Ok(Npt {
            root,
            opts,
            leaves: [0; 3],
        })
    }

    /// Physical address of the PML4 (the nCR3 value).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Identity map `[start, start+size)`.
    pub fn map_identity(
        &mut self,
        mem: &mut impl PhysMem,
        start: u64,
        size: u64,
        perm: Perm,
    ) -> Result<(), NptError> {
        self.map(mem, start, start, size, perm)
    }

    /// Map guest-physical `[gpa, gpa+size)` to host-physical `hpa..`.
    pub fn map(
        &mut self,
        mem: &mut impl PhysMem,
        gpa: u64,
        hpa: u64,
        size: u64,
        perm: Perm,
    ) -> Result<(), NptError> {
        for a in [gpa, hpa, size] {
            if a % PAGE_SIZE != 0 {
                return Err(NptError::Unaligned { addr: a });
            }
        }
        let end = gpa
            .checked_add(size)
            .ok_or(NptError::TooHigh { addr: gpa })?;
        if end > 1 << 48 || hpa.checked_add(size).is_none_or(|e| e > 1 << 52) {
            return Err(NptError::TooHigh { addr: gpa });
        }
        let mut off = 0;
        while off < size {
            let (g, h, left) = (gpa + off, hpa + off, size - off);
            let fits = |s: u64| g % s == 0 && h % s == 0 && left >= s;
            let (level, page) = if self.opts.huge_pages && fits(HUGE_PAGE_SIZE) {
                (2, HUGE_PAGE_SIZE)
            } else if fits(LARGE_PAGE_SIZE) {
                (1, LARGE_PAGE_SIZE)
            } else {
                (0, PAGE_SIZE)
            };
            self.map_one(mem, g, h, level, perm)?;
            self.leaves[level] += 1;
            off += page;
        }
        Ok(())
    }

    /// Add one leaf to a table in use (`level` 0 = 4 KiB, 1 = 2 MiB), taking any new table
    /// frame from `mem`; the caller serialises writers. Entries are written with single
    /// aligned stores, so concurrent walks see the old or the new entry.
    pub fn add_leaf(
        &self,
        mem: &mut impl PhysMem,
        gpa: u64,
        hpa: u64,
        level: usize,
        perm: Perm,
    ) -> Result<(), NptError> {
        let size = PAGE_SIZE << (9 * level);
        if level > 1 || !gpa.is_multiple_of(size) || !hpa.is_multiple_of(size) {
            return Err(NptError::Unaligned { addr: gpa });
        }
        if gpa >= 1 << 48 {
            return Err(NptError::TooHigh { addr: gpa });
        }
        self.map_one(mem, gpa, hpa, level, perm)
    }

    /// Install one leaf at `level` (0 = 4 KiB PTE, 1 = 2 MiB PDE, 2 = 1 GiB PDPTE).
    fn map_one(
        &self,
        mem: &mut impl PhysMem,
        gpa: u64,
        hpa: u64,
        level: usize,
        perm: Perm,
    ) -> Result<(), NptError> {
        let mut table = self.root;
        // Walk from the PML4 (level 3) down to the leaf's level.
        for l in (level + 1..=3).rev() {
            let idx = index(gpa, l);
            let e = mem.table(table)[idx];
            if e & P == 0 {
                let next = mem.alloc_frame().ok_or(NptError::NoMemory)?;
                // Non-leaf entries grant everything; the leaf decides.
                mem.table(table)[idx] = next | P | RW | US;
                table = next;
            } else if e & PS != 0 {
                return Err(NptError::Overlap { addr: gpa });
            } else {
                table = e & ADDR_MASK;
            }
        }
        let idx = index(gpa, level);
        if mem.table(table)[idx] & P != 0 {
            return Err(NptError::Overlap { addr: gpa });
        }
        let mut e = hpa | P | US;
        if perm.write {
            e |= RW;
        }
        if !perm.exec && self.opts.nx {
            e |= NX;
        }
        if level > 0 {
            e |= PS;
        }
        mem.table(table)[idx] = e;
        Ok(())
    }

    /// Walk the table for `gpa`; `None` for an address beyond the 48 bits
    /// the table translates (never aliased onto the low bits).
    pub fn translate(&self, mem: &mut impl PhysMem, gpa: u64) -> Option<Mapping> {
        if !in_gpa_space(gpa) {
            return None;
        }
        let mut table = self.root;
        for l in (0..=3).rev() {
            let e = mem.table(table)[index(gpa, l)];
            if e & P == 0 {
                return None;
            }
            let leaf = l == 0 || (l <= 2 && e & PS != 0);
            if leaf {
                let size = PAGE_SIZE << (9 * l);
                return Some(Mapping {
                    hpa: (e & ADDR_MASK & !(size - 1)) + (gpa & (size - 1)),
                    perm: Perm {
                        write: e & RW != 0,
                        exec: e & NX == 0,
                    },
                    page_size: size,
                });
            }
            table = e & ADDR_MASK;
        }
        None
    }
}

impl<M: PhysMem> SecondLevel<M> for Npt {
    fn translate_gpa(&self, mem: &mut M, gpa: u64) -> Option<Mapping> {
        self.translate(mem, gpa)
    }
}

fn index(addr: u64, level: usize) -> usize {
    ((addr >> (12 + 9 * level)) & 0x1ff) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::fake::FakeMem;

    const OPTS: NptOptions = NptOptions {
        huge_pages: false,
        nx: true,
    };

    #[test]
    fn maps_exactly_the_range_with_large_pages_where_aligned() {
        let mut mem = FakeMem::new(0x1_0000_0000);
        let mut npt = Npt::new(&mut mem, OPTS).unwrap();
        // 4 KiB head, two 2 MiB pages, 4 KiB tail.
        let start = 0x3ff000;
        let size = 0x1000 + 2 * LARGE_PAGE_SIZE + 0x3000;
        npt.map_identity(&mut mem, start, size, Perm::RWX).unwrap();
        assert_eq!(npt.leaves, [4, 2, 0]);
        for a in (start..start + size).step_by(0x800) {
            let m = npt.translate(&mut mem, a).expect("mapped");
            assert_eq!(m.hpa, a);
            assert_eq!(m.perm, Perm::RWX);
        }
        assert_eq!(
            npt.translate(&mut mem, 0x400000).unwrap().page_size,
            LARGE_PAGE_SIZE
        );
        assert_eq!(
            npt.translate(&mut mem, 0x3ff000).unwrap().page_size,
            PAGE_SIZE
        );
        // nothing around it
        assert_eq!(npt.translate(&mut mem, start - 1), None);
        assert_eq!(npt.translate(&mut mem, start + size), None);
        assert_eq!(npt.translate(&mut mem, 0), None);
        assert_eq!(npt.translate(&mut mem, 0xfee0_0000), None);
        // bits 48 and up are not dropped: no alias of the mapped range
        for high in [1u64 << 48, 1 << 51, 1 << 63] {
            assert_eq!(npt.translate(&mut mem, high | 0x400000), None);
        }
    }

    #[test]
    fn permissions_and_user_bit() {
        let mut mem = FakeMem::new(0x1_0000_0000);
        let mut npt = Npt::new(&mut mem, OPTS).unwrap();
        npt.map_identity(&mut mem, 0x10_0000, 0x1000, Perm::RO)
            .unwrap();
        npt.map_identity(&mut mem, 0x20_0000, LARGE_PAGE_SIZE, Perm::RW)
            .unwrap();
        npt.map_identity(&mut mem, 0x40_0000, 0x1000, Perm::RX)
            .unwrap();
        assert_eq!(npt.translate(&mut mem, 0x10_0000).unwrap().perm, Perm::RO);
        assert_eq!(npt.translate(&mut mem, 0x20_1234).unwrap().perm, Perm::RW);
        assert_eq!(npt.translate(&mut mem, 0x40_0fff).unwrap().perm, Perm::RX);
        // Every present entry on the walk carries U (NPT walks are user accesses).
        let root = npt.root();
        let pml4e = mem.table(root)[0];
        assert_eq!(pml4e & (P | US), P | US);
        let pdpte = mem.table(pml4e & ADDR_MASK)[0];
        let pde = mem.table(pdpte & ADDR_MASK)[1];
        assert_eq!(pde & (P | US | PS | RW | NX), P | US | PS | RW | NX);
    }

    #[test]
    fn nx_left_out_when_host_lacks_it() {
        let mut mem = FakeMem::new(0x1_0000_0000);
        let opts = NptOptions {
            huge_pages: false,
            nx: false,
        };
        let mut npt = Npt::new(&mut mem, opts).unwrap();
        npt.map_identity(&mut mem, 0x10_0000, 0x1000, Perm::RW)
            .unwrap();
        assert!(npt.translate(&mut mem, 0x10_0000).unwrap().perm.exec);
    }

    #[test]
    fn huge_pages_when_allowed_and_remapping() {
        let mut mem = FakeMem::new(0x10_0000_0000);
        let opts = NptOptions {
            huge_pages: true,
            nx: true,
        };
        let mut npt = Npt::new(&mut mem, opts).unwrap();
        npt.map_identity(&mut mem, 0, 4 * HUGE_PAGE_SIZE, Perm::RWX)
            .unwrap();
        assert_eq!(npt.leaves, [0, 0, 4]);
        assert_eq!(
            npt.translate(&mut mem, 0xfee0_0000).unwrap().hpa,
            0xfee0_0000
        );
        assert_eq!(npt.translate(&mut mem, 4 * HUGE_PAGE_SIZE), None);
        // non-identity mapping keeps the offset
        npt.map(&mut mem, 0x1_2000_0000, 0x8000_0000, 0x2000, Perm::RO)
            .unwrap();
        assert_eq!(
            npt.translate(&mut mem, 0x1_2000_1abc).unwrap().hpa,
            0x8000_1abc
        );
    }

    #[test]
    fn rejects_overlap_unaligned_and_exhaustion() {
        let mut mem = FakeMem::new(0x1_0000_0000);
        let mut npt = Npt::new(&mut mem, OPTS).unwrap();
        npt.map_identity(&mut mem, 0x20_0000, LARGE_PAGE_SIZE, Perm::RW)
            .unwrap();
        assert_eq!(
            npt.map_identity(&mut mem, 0x20_1000, 0x1000, Perm::RW),
            Err(NptError::Overlap { addr: 0x20_1000 })
        );
        assert_eq!(
            npt.map_identity(&mut mem, 0x20_0000, LARGE_PAGE_SIZE, Perm::RW),
            Err(NptError::Overlap { addr: 0x20_0000 })
        );
        assert_eq!(
            npt.map_identity(&mut mem, 0x123, 0x1000, Perm::RW),
            Err(NptError::Unaligned { addr: 0x123 })
        );
        assert!(matches!(
            npt.map_identity(&mut mem, u64::MAX - 0xfff, 0x1000, Perm::RW),
            Err(NptError::TooHigh { .. })
        ));
        mem.frame_limit = mem.frames_allocated;
        assert_eq!(
            npt.map_identity(&mut mem, 0x80_0000_0000, 0x1000, Perm::RW),
            Err(NptError::NoMemory)
        );
    }
}
