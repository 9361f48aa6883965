//! Running test partitions on SVM: per-partition set-up on the BSP (memory,
//! image, page tables, VMCB, permission maps), the VMRUN loop on each
//! partition's AP, and the wait for all of them.

use super::bitmaps::{IOPM_SIZE, MSRPM_SIZE};
use super::features::SvmFeatures;
use super::guest_vmcb::{init_controls, init_test_guest_state, Controls};
use super::run_state::{FxArea, RunPage};
use super::svm;
use super::vcpu::SvmVcpu;
use crate::exit::{handle_exit, ExitContext, ExitHost, Flow};
use crate::hv_println;
use crate::launch::summary::{self, Result as PartResult};
use crate::launch::{LaunchHost, Verdict};
use crate::mem::identity::IdentityMem;
use crate::npt::{Npt, NptOptions, Perm};
use crate::partition::plan::Plan;
use crate::partition::{elf, guest_setup, Kind, PartitionConfig, StopReason};
use crate::platform::console::LineBuffer;
use crate::platform::instructions;
use crate::platform::log::CONSOLE;
use crate::stats::Stats;
use crate::vcpu::Vcpu;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicU8, Ordering};
use nexus_abi::cpuid::{CpuidResult, Transport};

/// Page-table frames reserved per test partition's NPT.
const NPT_POOL_PAGES: u64 = 64;
/// How long the BSP waits for the test partitions.
const WAIT_LIMIT_MS: u64 = 60_000;

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

/// One test partition, shared between the BSP (set-up, summary) and its AP
/// (the run). The AP writes `stop` and `stats` before it stores DONE with
/// release ordering; the BSP reads them only after loading DONE.
struct SvmPartition {
    config: PartitionConfig,
    npt: Npt,
    features: SvmFeatures,
    vmcb_pa: u64,
    run_pa: u64,
    hsave_pa: u64,
    state: AtomicU8,
    stop: UnsafeCell<Option<StopReason>>,
    stats: UnsafeCell<Stats>,
}

// SAFETY: the UnsafeCells are handed over through `state` (see above).
unsafe impl Sync for SvmPartition {}

fn svm_features() -> SvmFeatures {
    let r = core::arch::x86_64::__cpuid(0x8000_000a);
    SvmFeatures::from_cpuid(r.ebx, r.edx)
}

/// Set up every test partition, start each on its CPU, wait, judge.
pub fn run(host: &mut impl LaunchHost, plan: &Plan) -> Verdict {
    let features = svm_features();
    hv_println!(
        "svm: {} ASIDs, npt={}, nrip-save={}, vmcb-clean={}, flush-by-asid={}, decode-assists={}{}",
        features.asids,
        features.npt,
        features.nrip_save,
        features.vmcb_clean,
        features.flush_by_asid,
        features.decode_assists,
        if features.nrip_save {
            ""
        } else {
            " (instruction lengths decoded by the hypervisor)"
        }
    );
    if !features.npt {
        return Verdict::fail(format_args!("SVM without nested paging is not supported"));
    }
    // SAFETY: reading EFER at CPL 0.
    let nx = unsafe { instructions::rdmsr(svm::MSR_EFER) } & (1 << 11) != 0;
    let mut parts: Vec<&'static SvmPartition> = Vec::new();
    let mut failed_setup: Vec<(&PartitionConfig, StopReason)> = Vec::new();
    for config in plan.iter() {
        match config.kind {
            Kind::Test => {}
            Kind::Primary => {
                hv_println!(
                    "partition {}: primary, stays with the firmware on the boot CPU",
                    config.name
                );
                continue;
            }
            Kind::Deferred => {
                hv_println!(
                    "partition {}: started later through management calls (not by this version)",
                    config.name
                );
                continue;
            }
        }
        if config.asid() >= features.asids {
            hv_println!(
                "partition {}: no ASID left ({} available)",
                config.name,
                features.asids
            );
            failed_setup.push((config, StopReason::SetupFailed));
            continue;
        }
        match setup(host, config, features, nx) {
            Ok(p) => parts.push(Box::leak(Box::new(p))),
            Err(why) => {
                hv_println!("partition {}: not started: {why}", config.name);
                failed_setup.push((config, StopReason::SetupFailed));
            }
        }
    }
    for p in &parts {
        let apic = p.config.apic_ids()[0];
        p.state.store(RUNNING, Ordering::Release);
        let arg = *p as *const SvmPartition as *mut c_void;
        if let Err(e) = host.start_on_cpu(apic, ap_entry, arg) {
            hv_println!("partition {}: cannot start CPU {apic}: {e}", p.config.name);
            // SAFETY: the AP never started, so the BSP is the only user.
            unsafe { *p.stop.get() = Some(StopReason::SetupFailed) };
            p.state.store(DONE, Ordering::Release);
        }
    }
    let mut waited = 0;
    while parts
        .iter()
        .any(|p| p.state.load(Ordering::Acquire) != DONE)
        && waited < WAIT_LIMIT_MS
    {
        host.stall_us(1000);
        waited += 1;
    }
    let empty = Stats::new();
    let mut results: Vec<PartResult<'_>> = Vec::new();
    for p in &parts {
        let done = p.state.load(Ordering::Acquire) == DONE;
        results.push(PartResult {
            config: &p.config,
            // SAFETY: DONE was loaded with acquire ordering: the AP is finished with these.
            stop: if done { unsafe { *p.stop.get() } } else { None },
            stats: if done {
                unsafe { &*p.stats.get() }
            } else {
                &empty
            },
        });
    }
    for (config, stop) in &failed_setup {
        results.push(PartResult {
            config,
            stop: Some(*stop),
            stats: &empty,
        });
    }
    summary::summarize(&results, |line| hv_println!("{line}"))
}

/// Memory, image, page tables and VMCB of one test partition (BSP).
fn setup(
    host: &mut impl LaunchHost,
    config: &PartitionConfig,
    features: SvmFeatures,
    nx: bool,
) -> Result<SvmPartition, &'static str> {
    for r in config.regions() {
        host.reserve_at(r.start, r.size())
            .map_err(|_| "its memory region is not free (the firmware refused to reserve it)")?;
    }
    let image = host
        .image(config.image.as_str())
        .ok_or("its image was not loaded from the ESP")?;
    // SAFETY: an empty pool; used only to write the partition's own,
    // just reserved, identity-mapped memory.
    let mut mem = unsafe { IdentityMem::new(0, 0) };
    let loaded = elf::load(image, config, &mut mem).map_err(|e| {
        hv_println!("partition {}: image rejected: {e:?}", config.name);
        "its image does not fit the partition"
    })?;
    let start = guest_setup::prepare(config, loaded.end, loaded.entry, &mut mem)
        .map_err(|_| "no room for the guest's page tables and stack")?;

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

    let page =
        |host: &mut dyn FnMut(usize) -> Option<u64>, n| host(n).ok_or("out of hypervisor pages");
    let mut alloc = |n: usize| host.alloc_pages(n).ok();
    let vmcb_pa = page(&mut alloc, 1)?;
    let run_pa = page(&mut alloc, 1)?;
    let hsave_pa = page(&mut alloc, 1)?;
    let host_vmcb_pa = page(&mut alloc, 1)?;
    let msrpm_pa = page(&mut alloc, MSRPM_SIZE / 4096)?;
    let iopm_pa = page(&mut alloc, IOPM_SIZE / 4096 + 1)?;
    // Test partitions get no MSR and no port: everything exits, and the
    // generic handler allows EFER, the emulated COM1, and nothing else.
    // SAFETY: freshly allocated, identity-mapped hypervisor pages.
    unsafe {
        core::ptr::write_bytes(msrpm_pa as *mut u8, 0xff, MSRPM_SIZE);
        core::ptr::write_bytes(iopm_pa as *mut u8, 0xff, IOPM_SIZE);
    }
    // SAFETY: as above; the VMCB page is ours alone.
    let vmcb = unsafe { &mut *(vmcb_pa as *mut [u8; 4096]) };
    let mut v = super::vmcb::Vmcb(vmcb);
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
    Ok(SvmPartition {
        config: config.clone(),
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

/// The exit handler's view of the CPU it runs on.
struct ApHost {
    line: LineBuffer,
}

impl ExitHost for ApHost {
    fn console(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.line.push(&CONSOLE, b);
        }
    }

    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        CpuidResult {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        }
    }
}

/// Entry of a partition's AP (UEFI MP services procedure).
extern "efiapi" fn ap_entry(arg: *mut c_void) {
    // SAFETY: `run` passes a leaked (never freed) SvmPartition.
    let p = unsafe { &*(arg as *const SvmPartition) };
    let stop = run_partition(p);
    // SAFETY: only this AP touches `stop` until DONE is published.
    unsafe { *p.stop.get() = Some(stop) };
    p.state.store(DONE, Ordering::Release);
}

fn run_partition(p: &SvmPartition) -> StopReason {
    // SAFETY: CPL 0 on this AP; the host must not take interrupts between
    // VM exits (they stay pending for the guest).
    unsafe { instructions::cli() };
    // SAFETY: SVM was reported by CPUID; the host save page is this CPU's alone.
    if let Err(e) = unsafe { svm::enable(p.hsave_pa) } {
        hv_println!("partition {}: cannot enable SVM: {e:?}", p.config.name);
        return StopReason::SetupFailed;
    }
    // SAFETY: set up by `setup` for this partition; only this AP uses them now.
    let (rp, vmcb) = unsafe {
        (
            &mut *(p.run_pa as *mut RunPage),
            &mut *(p.vmcb_pa as *mut [u8; 4096]),
        )
    };
    // SAFETY: empty pools: reading and writing guest memory only, checked
    // through the partition's NPT by the callers.
    let (code_mem, mut mem) = unsafe { (IdentityMem::new(0, 0), IdentityMem::new(0, 0)) };
    // SAFETY: the run state and VMCB describe the guest set up by `setup`,
    // and SVM is enabled on this CPU.
    let mut vcpu = unsafe { SvmVcpu::new(&mut rp.state, vmcb, p.features, &p.npt, code_mem) };
    let mut host = ApHost {
        line: LineBuffer::new(p.config.name.as_str()),
    };
    // SAFETY: only this AP touches the stats until DONE is published.
    let stats = unsafe { &mut *p.stats.get() };
    let mut cx = ExitContext {
        partition: &p.config,
        npt: &p.npt,
        mem: &mut mem,
        host: &mut host,
        stats,
        transport: Transport::Vmmcall,
    };
    hv_println!(
        "partition {}: running on CPU {}",
        p.config.name,
        p.config.apic_ids()[0]
    );
    let stop = loop {
        let exit = vcpu.run();
        if let Flow::Stop(reason) = handle_exit(&mut vcpu, exit, &mut cx) {
            break reason;
        }
    };
    if host.line.pending() > 0 {
        host.line.flush(&CONSOLE);
    }
    hv_println!(
        "partition {} stopped at rip {:#x}: {stop}",
        p.config.name,
        vcpu.rip()
    );
    stop
}
