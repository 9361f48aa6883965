//! The initial state of a test guest: identity page tables and a stack,
//! placed at the top of the partition's first region.
//!
//! Layout of the first region (low to high):
//! `[image ...][free][stack (STACK_SIZE), grows down][PML4][PDPT][PD x4]`.
//! The tables identity-map guest-virtual 0..4 GiB with 2 MiB pages, so a
//! guest pointer to another partition's (or the hypervisor's) memory is a
//! valid virtual address whose access reaches the nested page table and is
//! stopped there, not by a guest page fault.

use super::PartitionConfig;
use crate::mem::{PhysMem, PAGE_SIZE};

/// Pages of page tables: PML4, PDPT, four page directories.
pub const TABLE_PAGES: u64 = 6;
/// Bytes of stack below the tables.
pub const STACK_SIZE: u64 = 64 * 1024;
/// Virtual space identity-mapped for the guest.
pub const MAPPED_BYTES: u64 = 4 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestStart {
    pub cr3: u64,
    pub rsp: u64,
    pub rip: u64,
    /// The guest's own GDT and selectors (a managed partition's start); `None`: the
    /// hypervisor's flat defaults with no GDT (a test guest, which never reloads a segment).
    pub segments: Option<BootSegments>,
}

/// A GDT in the guest's memory and the selectors its CS and data segments hold; the
/// hidden parts are loaded flat (64-bit code, read/write data), as the guest's descriptors
/// must describe them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootSegments {
    pub gdt_base: u64,
    pub gdt_limit: u16,
    pub code: u16,
    pub data: u16,
}

impl GuestStart {
    /// The first CPU's state of a managed partition's run (`partition_start`; RSI is set
    /// on the vCPU afterwards).
    pub fn managed(s: &nexus_abi::manage::StartState) -> GuestStart {
        GuestStart {
            cr3: s.cr3,
            rsp: s.rsp,
            rip: s.rip,
            segments: Some(BootSegments {
                gdt_base: s.gdt_base,
                gdt_limit: s.gdt_limit,
                code: s.code_selector,
                data: s.data_selector,
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The partition has no region large enough for tables and stack.
    RegionTooSmall,
    /// The image reaches into the stack/table area at the top.
    ImageOverlapsStack { image_end: u64, stack_bottom: u64 },
}

/// Write the page tables and compute the entry state. `image_end` is the
/// end of the loaded image (exclusive), `entry` its entry point.
pub fn prepare(
    partition: &PartitionConfig,
    image_end: u64,
    entry: u64,
    mem: &mut impl PhysMem,
) -> Result<GuestStart, SetupError> {
    let region = partition
        .regions()
        .first()
        .copied()
        .ok_or(SetupError::RegionTooSmall)?;
    let top = region.end & !(PAGE_SIZE - 1);
    let need = TABLE_PAGES * PAGE_SIZE + STACK_SIZE;
    if top < region.start || top - region.start < need {
        return Err(SetupError::RegionTooSmall);
    }
    let tables = top - TABLE_PAGES * PAGE_SIZE;
    let stack_bottom = tables - STACK_SIZE;
    if region.contains(image_end.saturating_sub(1)) && image_end > stack_bottom {
        return Err(SetupError::ImageOverlapsStack {
            image_end,
            stack_bottom,
        });
    }
    let (pml4, pdpt, pd0) = (tables, tables + PAGE_SIZE, tables + 2 * PAGE_SIZE);
    const P_RW: u64 = 0b11;
    const PS: u64 = 1 << 7;
    let mut page = [0u64; 512];
    page[0] = pdpt | P_RW;
    write_page(mem, pml4, &page);
    page = [0; 512];
    for (i, e) in page.iter_mut().take(4).enumerate() {
        *e = (pd0 + i as u64 * PAGE_SIZE) | P_RW;
    }
    write_page(mem, pdpt, &page);
    for d in 0..4u64 {
        for (i, e) in page.iter_mut().enumerate() {
            *e = ((d * 512 + i as u64) << 21) | P_RW | PS;
        }
        write_page(mem, pd0 + d * PAGE_SIZE, &page);
    }
    Ok(GuestStart {
        cr3: pml4,
        // 16-byte aligned minus 8, as if `call` had pushed a return address.
        rsp: tables - 8,
        rip: entry,
        segments: None,
    })
}

fn write_page(mem: &mut impl PhysMem, pa: u64, entries: &[u64; 512]) {
    let mut bytes = [0u8; 4096];
    for (chunk, e) in bytes.chunks_exact_mut(8).zip(entries) {
        chunk.copy_from_slice(&e.to_le_bytes());
    }
    mem.write(pa, &bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::fake::FakeMem;
    use crate::mem::guest::{GuestMemory, Paging};
    use crate::npt::{Npt, NptOptions, Perm};
    use crate::partition::plan::tests::test_partition;

    #[test]
    fn tables_identity_map_4gib_from_the_region_top() {
        let p = test_partition(0x4100_0000, 0x100_0000);
        let mut mem = FakeMem::new(0x1_0000_0000);
        let s = prepare(&p, 0x4100_8000, 0x4100_0000, &mut mem).unwrap();
        assert_eq!(s.cr3, 0x4200_0000 - 6 * 4096);
        assert_eq!(s.rsp % 16, 8);
        assert!(p.owns(s.rsp - STACK_SIZE + 8, STACK_SIZE - 8));
        // Walk them as the hypervisor would.
        let mut npt = Npt::new(
            &mut mem,
            NptOptions {
                huge_pages: false,
                nx: true,
            },
        )
        .unwrap();
        npt.map_identity(&mut mem, 0x4100_0000, 0x100_0000, Perm::RWX)
            .unwrap();
        let mut g = GuestMemory {
            second_level: &npt,
            mem: &mut mem,
            paging: Paging::Long { cr3: s.cr3 },
        };
        for va in [0u64, 0x4000_0000, 0x4100_1234, 0xfee0_0000, 0xffff_f000] {
            assert_eq!(g.translate(va), Ok(va));
        }
        assert!(g.translate(MAPPED_BYTES).is_err());
    }

    #[test]
    fn refuses_small_regions_and_overlapping_images() {
        let small = test_partition(0x4100_0000, 0x10000);
        let mut mem = FakeMem::new(0x1_0000_0000);
        assert_eq!(
            prepare(&small, 0x4100_1000, 0x4100_0000, &mut mem),
            Err(SetupError::RegionTooSmall)
        );
        let p = test_partition(0x4100_0000, 0x100_0000);
        assert!(matches!(
            prepare(&p, 0x41ff_0000, 0x4100_0000, &mut mem),
            Err(SetupError::ImageOverlapsStack { .. })
        ));
    }
}
