//! The hypervisor's own page tables: an identity map of physical memory for host mode.
//!
//! Host mode cannot keep using the firmware's page tables: they live in boot-services memory
//! that the OS booted in the primary partition reclaims. The map covers `[0, top)` with 1 GiB
//! pages when the CPU has them (2 pages of tables for 512 GiB), else 2 MiB pages. Entries are
//! supervisor, writable and executable; caching follows the firmware's MTRRs (PAT index 0,
//! write-back, combined with MTRR uncacheable for MMIO gives uncacheable).

use crate::mem::{PhysMem, HUGE_PAGE_SIZE, LARGE_PAGE_SIZE};

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const PS: u64 = 1 << 7;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// Most memory one PML4 entry covers; the host map never needs more here.
pub const MAX_TOP: u64 = 512 * HUGE_PAGE_SIZE;

/// Leaf size of the identity map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafSize {
    Huge1G,
    Large2M,
}

/// Why the map could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMapError {
    /// The frame source ran out.
    OutOfFrames,
    /// `top` is zero or above [`MAX_TOP`].
    BadTop(u64),
}

/// How much to map: the end of the highest firmware descriptor, at least 4 GiB (the local
/// APIC, I/O APIC and firmware flash live just below 4 GiB), rounded up to 1 GiB, at most
/// 512 GiB; with 1 GiB pages the whole 512 GiB costs nothing extra, so it is all mapped.
pub fn map_top(map_top: u64, leaf: LeafSize) -> u64 {
    match leaf {
        LeafSize::Huge1G => MAX_TOP,
        LeafSize::Large2M => map_top
            .max(4 * HUGE_PAGE_SIZE)
            .next_multiple_of(HUGE_PAGE_SIZE)
            .min(MAX_TOP),
    }
}

/// Build the identity map of `[0, top)`; returns the PML4's physical address (the CR3 value).
pub fn build<M: PhysMem>(mem: &mut M, top: u64, leaf: LeafSize) -> Result<u64, HostMapError> {
    if top == 0 || top > MAX_TOP {
        return Err(HostMapError::BadTop(top));
    }
    let pml4 = mem.alloc_frame().ok_or(HostMapError::OutOfFrames)?;
    let pdpt = mem.alloc_frame().ok_or(HostMapError::OutOfFrames)?;
    mem.table(pml4)[0] = pdpt | P | RW;
    let gibs = top.div_ceil(HUGE_PAGE_SIZE) as usize;
    for g in 0..gibs {
        let base = g as u64 * HUGE_PAGE_SIZE;
        match leaf {
            LeafSize::Huge1G => mem.table(pdpt)[g] = base | P | RW | PS,
            LeafSize::Large2M => {
                let pd = mem.alloc_frame().ok_or(HostMapError::OutOfFrames)?;
                mem.table(pdpt)[g] = pd | P | RW;
                let t = mem.table(pd);
                for (i, e) in t.iter_mut().enumerate() {
                    *e = (base + i as u64 * LARGE_PAGE_SIZE) | P | RW | PS;
                }
            }
        }
    }
    Ok(pml4)
}

/// Walk the map like the CPU does: the physical address `va` translates to, if mapped.
pub fn translate<M: PhysMem>(mem: &mut M, cr3: u64, va: u64) -> Option<u64> {
    let idx = |level: u32| ((va >> (12 + 9 * level)) & 0x1ff) as usize;
    let e4 = mem.table(cr3 & ADDR)[idx(3)];
    if e4 & P == 0 {
        return None;
    }
    let e3 = mem.table(e4 & ADDR)[idx(2)];
    if e3 & P == 0 {
        return None;
    }
    if e3 & PS != 0 {
        return Some((e3 & ADDR & !(HUGE_PAGE_SIZE - 1)) | (va & (HUGE_PAGE_SIZE - 1)));
    }
    let e2 = mem.table(e3 & ADDR)[idx(1)];
    if e2 & P == 0 {
        return None;
    }
    if e2 & PS != 0 {
        return Some((e2 & ADDR & !(LARGE_PAGE_SIZE - 1)) | (va & (LARGE_PAGE_SIZE - 1)));
    }
    let e1 = mem.table(e2 & ADDR)[idx(0)];
    (e1 & P != 0).then_some((e1 & ADDR) | (va & 0xfff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::fake::FakeMem;

    #[test]
    fn one_gib_pages_map_512_gib_with_two_tables() {
        let mut m = FakeMem::new(0x10_0000);
        let cr3 = build(&mut m, map_top(3 << 30, LeafSize::Huge1G), LeafSize::Huge1G).unwrap();
        assert_eq!(m.frames_allocated, 2);
        for va in [0u64, 0xfee0_0000, 0x1_2345_6789, MAX_TOP - 1] {
            assert_eq!(translate(&mut m, cr3, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&mut m, cr3, MAX_TOP), None);
        // Supervisor-only, writable, executable (no NX bit).
        let pdpt = m.table(cr3)[0] & ADDR;
        let e = m.table(pdpt)[5];
        assert_eq!(e & (1 << 2), 0, "no user bit");
        assert_eq!(e & (1 << 63), 0, "executable");
        assert_eq!(e & RW, RW);
    }

    #[test]
    fn two_mib_pages_cover_the_rounded_top() {
        let mut m = FakeMem::new(0x10_0000);
        // 2 GiB of RAM: still map the first 4 GiB (APIC, flash below 4 GiB).
        let top = map_top(0x8000_0000, LeafSize::Large2M);
        assert_eq!(top, 4 << 30);
        let cr3 = build(&mut m, top, LeafSize::Large2M).unwrap();
        assert_eq!(m.frames_allocated, 2 + 4);
        assert_eq!(translate(&mut m, cr3, 0xfec0_0000), Some(0xfec0_0000));
        assert_eq!(translate(&mut m, cr3, 0xffff_ffff), Some(0xffff_ffff));
        assert_eq!(translate(&mut m, cr3, 4 << 30), None);
        // 66.5 GiB map top (the reference machine) rounds up to 67 GiB.
        assert_eq!(
            map_top(66 * (1 << 30) + (1 << 29), LeafSize::Large2M),
            67 << 30
        );
    }

    #[test]
    fn errors() {
        let mut m = FakeMem::new(0x10_0000);
        assert_eq!(
            build(&mut m, 0, LeafSize::Huge1G),
            Err(HostMapError::BadTop(0))
        );
        assert_eq!(
            build(&mut m, MAX_TOP + 1, LeafSize::Huge1G),
            Err(HostMapError::BadTop(MAX_TOP + 1))
        );
        m.frame_limit = m.frames_allocated + 3;
        assert_eq!(
            build(&mut m, 4 << 30, LeafSize::Large2M),
            Err(HostMapError::OutOfFrames)
        );
    }
}
