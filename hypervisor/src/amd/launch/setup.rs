//! Setting up one test partition on the BSP.

use super::*;

/// Memory, image, page tables and VMCB of one test partition (BSP).
pub(super) fn setup(
    host: &mut Tracked<'_, impl LaunchHost>,
    config: &PartitionConfig,
    features: SvmFeatures,
    nx: bool,
) -> Result<SvmPartition, &'static str> {
    let (loaded, start) = load_guest(host, config)?;

    let pool = host
        .alloc_pages(NPT_POOL_PAGES as usize)
        .map_err(|_| "out of memory for its nested page table")?;
    // SAFETY: the pool was just allocated for this NPT alone.
    let mut pool_mem = unsafe { IdentityMem::new(pool, NPT_POOL_PAGES) };
    let opts = NptOptions {
        huge_pages: false,
        nx,
    };
    let mut npt = Npt::new(&mut pool_mem, opts).map_err(|_| "out of NPT frames")?;
    for r in config.regions() {
        npt.map_identity(&mut pool_mem, r.start, r.size(), Perm::RWX)
            .map_err(|_| "cannot map its region in the NPT")?;
    }

    let pages = ControlPages::alloc(host)?;
    // Test partitions get no MSR and no port: everything exits, and the
    // generic handler allows EFER, the emulated COM1, and nothing else.
    // SAFETY: freshly allocated, identity-mapped hypervisor pages.
    unsafe {
        core::ptr::write_bytes(pages.msrpm_pa as *mut u8, 0xff, MSRPM_SIZE);
        core::ptr::write_bytes(pages.iopm_pa as *mut u8, 0xff, IOPM_SIZE);
    }
    pages.init(config.asid(), npt.root(), true, Some(start.rsp), |v| {
        init_test_guest_state(v, &start)
    });

    hv_println!(
        "partition {}: image {} at {:#x}..{:#x} (entry {:#x}, {} relocations), \
         NPT {:#x} maps {} region(s) ({} x 4 KiB, {} x 2 MiB), ASID {}, CPU {}",
        config.name,
        config.image,
        loaded.start,
        loaded.end,
        loaded.entry,
        loaded.relocations,
        npt.root(),
        config.region_count,
        npt.leaves[0],
        npt.leaves[1],
        config.asid(),
        config.apic_ids()[0]
    );
    let host_cpu = host.host_env(config.apic_ids()[0]);
    Ok(pages.partition(config, host_cpu, npt, features))
}
