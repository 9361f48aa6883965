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

    let mut alloc = |n: usize| host.alloc_pages(n).map_err(|_| "out of hypervisor pages");
    let vmcb_pa = alloc(1)?;
    let run_pa = alloc(1)?;
    let hsave_pa = alloc(1)?;
    let host_vmcb_pa = alloc(1)?;
    let msrpm_pa = alloc(MSRPM_SIZE / 4096)?;
    let iopm_pa = alloc(IOPM_SIZE / 4096)?;
    // Test partitions get no MSR and no port: everything exits, and the
    // generic handler allows EFER, the emulated COM1, and nothing else.
    // SAFETY: freshly allocated, identity-mapped hypervisor pages.
    unsafe {
        core::ptr::write_bytes(msrpm_pa as *mut u8, 0xff, MSRPM_SIZE);
        core::ptr::write_bytes(iopm_pa as *mut u8, 0xff, IOPM_SIZE);
    }
    // SAFETY: as above; the VMCB page is ours alone.
    let vmcb = unsafe { &mut *(vmcb_pa as *mut [u8; 4096]) };
    let mut v = crate::amd::vmcb::Vmcb(vmcb);
    init_controls(
        &mut v,
        &Controls {
            asid: config.asid(),
            ncr3: npt.root(),
            iopm_pa,
            msrpm_pa,
            intercept_hlt: true,
        },
    );
    init_test_guest_state(&mut v, &start);
    // SAFETY: the run page is ours alone; RunPage fits in one page.
    let rp = unsafe { &mut *(run_pa as *mut RunPage) };
    rp.guest_fx = FxArea::initial();
    rp.host_fx = FxArea::initial();
    rp.state.guest_vmcb_pa = vmcb_pa;
    rp.state.host_vmcb_pa = host_vmcb_pa;
    rp.state.guest_fx = &mut rp.guest_fx;
    rp.state.host_fx = &mut rp.host_fx;
    rp.state.gprs.0 = [0; 16];
    rp.state.gprs.0[4] = start.rsp;

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
    Ok(SvmPartition {
        config: config.clone(),
        host_cpu,
        npt,
        features,
        vmcb_pa,
        run_pa,
        hsave_pa,
        state: AtomicU8::new(PENDING),
        stop: UnsafeCell::new(None),
        stats: UnsafeCell::new(Stats::new()),
    })
}
