//! Running test partitions on SVM: per-partition set-up on the BSP (memory,
//! image, page tables, VMCB, permission maps), the VMRUN loop on each
//! partition's AP, and the wait for all of them.

use super::bitmaps::{MsrBitmap, IOPM_SIZE, MSRPM_SIZE};
use super::features::SvmFeatures;
use super::guest_vmcb::{init_controls, init_test_guest_state, Controls};
use super::run_state::{FxArea, RunPage};
use super::svm;
use super::vcpu::SvmVcpu;
use crate::exit::{handle_exit, ExitContext, ExitHost, Flow};
use crate::hv_println;
use crate::launch::summary::{self, Result as PartResult};
use crate::launch::{ApEntry, HostError, LaunchHost, Verdict};
use crate::mem::identity::IdentityMem;
use crate::mem::Range;
use crate::npt::{Npt, NptOptions, Perm};
use crate::partition::plan::{self, Plan};
use crate::partition::{elf, guest_setup, Kind, PartitionConfig, StopReason};
use crate::platform::console::LineBuffer;
use crate::platform::host_cpu::{HostCpu, PAGES_PER_CPU};
use crate::platform::instructions;
use crate::platform::log::CONSOLE;
use crate::platform::sync::SpinLock;
use crate::stats::Stats;
use crate::vcpu::Vcpu;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use nexus_abi::cpuid::{CpuidResult, Transport};
use nexus_abi::{Hypercall, HypercallArgs};

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
    /// The platform's host GDT/TSS/IDT/page tables for the partition's CPU
    /// (`None` if the host environment is unavailable: the firmware's are used).
    host_cpu: Option<HostCpu>,
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

/// Records every page range handed to the hypervisor, so that the primary
/// partition's NPT can leave them out.
struct Tracked<'h, H: LaunchHost> {
    host: &'h mut H,
    ranges: Vec<Range>,
}

impl<H: LaunchHost> LaunchHost for Tracked<'_, H> {
    fn alloc_pages(&mut self, pages: usize) -> Result<u64, HostError> {
        let pa = self.host.alloc_pages(pages)?;
        self.ranges.push(Range::new(pa, pages as u64 * 4096));
        Ok(pa)
    }
    fn reserve_at(&mut self, base: u64, size: u64) -> Result<(), HostError> {
        self.host.reserve_at(base, size)
    }
    fn image(&self, name: &str) -> Option<&'static [u8]> {
        self.host.image(name)
    }
    fn start_on_cpu(
        &mut self,
        apic_id: u32,
        entry: ApEntry,
        arg: *mut c_void,
    ) -> Result<(), HostError> {
        self.host.start_on_cpu(apic_id, entry, arg)
    }
    fn stall_us(&mut self, us: u64) {
        self.host.stall_us(us)
    }
    fn hypervisor_ranges(&self, out: &mut dyn FnMut(u64, u64)) {
        self.host.hypervisor_ranges(out)
    }
}

/// Set up every test partition, start each on its CPU, virtualize the boot
/// CPU as the primary partition, wait for the test partitions, judge.
pub fn run(host: &mut impl LaunchHost, plan: &Plan) -> Verdict {
    let mut host = Tracked {
        host,
        ranges: Vec::new(),
    };
    let host = &mut host;
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
            // Set up last (its NPT leaves out everything allocated before).
            Kind::Primary => continue,
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
    // The primary's NPT must leave out everything allocated so far and
    // what it allocates itself, so it is set up after the test partitions.
    let primary = plan.iter().find(|c| c.kind == Kind::Primary).and_then(|c| {
        match setup_primary(host, c, plan, features, nx) {
            Ok(p) => Some(p),
            Err(why) => {
                hv_println!(
                    "partition {}: the boot CPU stays unvirtualized: {why}",
                    c.name
                );
                None
            }
        }
    });
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
    let failed: Vec<(PartitionConfig, StopReason)> = failed_setup
        .iter()
        .map(|(c, s)| ((*c).clone(), *s))
        .collect();
    let finish: &'static Finish = Box::leak(Box::new(Finish { parts, failed }));
    if let Some(p) = primary {
        // SAFETY: written once before the boot CPU turns into a guest.
        unsafe { *p.finish.get() = Some(finish) };
        // Free nothing on the heap from guest mode (the heap may be left out
        // of the primary's NPT): these two are small and live for good.
        core::mem::forget(failed_setup);
        core::mem::forget(core::mem::take(&mut host.ranges));
        if bluepill(p) {
            return wait_as_guest(host);
        }
    }
    let mut waited = 0;
    while !finish.all_done() && waited < WAIT_LIMIT_MS {
        host.stall_us(1000);
        waited += 1;
    }
    finish.summarize()
}

/// The test partitions, for the summary.
struct Finish {
    parts: Vec<&'static SvmPartition>,
    failed: Vec<(PartitionConfig, StopReason)>,
}

impl Finish {
    fn all_done(&self) -> bool {
        self.parts
            .iter()
            .all(|p| p.state.load(Ordering::Acquire) == DONE)
    }

    /// Print the summary and judge (partitions not DONE count as timed out).
    fn summarize(&self) -> Verdict {
        let empty = Stats::new();
        let mut results: Vec<PartResult<'_>> = Vec::new();
        for p in &self.parts {
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
        for (config, stop) in &self.failed {
            results.push(PartResult {
                config,
                stop: Some(*stop),
                stats: &empty,
            });
        }
        summary::summarize(&results, |line| hv_println!("{line}"))
    }
}

/// Set by the boot CPU's host side once the summary is printed; the
/// verdict waits in `VERDICT`. Both live in the hypervisor image, which the
/// primary still maps (see docs/hypervisor.md).
static SUMMARY_DONE: AtomicBool = AtomicBool::new(false);
/// Set by the waiting guest when its patience runs out.
static WAIT_EXPIRED: AtomicBool = AtomicBool::new(false);
static VERDICT: SpinLock<Option<Verdict>> = SpinLock::new(None);

/// The boot CPU, now the primary partition's guest, waits for the host
/// side to finish the run: it yields (a hypercall, so the host side gets
/// to look) and stalls until the summary is done.
fn wait_as_guest(host: &mut impl LaunchHost) -> Verdict {
    let mut waited = 0;
    let yield_call = HypercallArgs {
        number: Hypercall::Yield.number(),
        args: [0; 6],
    };
    while !SUMMARY_DONE.load(Ordering::Acquire) {
        if waited >= WAIT_LIMIT_MS {
            WAIT_EXPIRED.store(true, Ordering::Release);
        }
        // SAFETY: this code runs as a guest of this hypervisor, whose
        // transport on SVM is VMMCALL; yield names no memory.
        unsafe { nexus_abi::guest::vmmcall(&yield_call) };
        if !SUMMARY_DONE.load(Ordering::Acquire) {
            host.stall_us(1000);
            waited += 1;
        }
    }
    VERDICT
        .lock()
        .take()
        .unwrap_or_else(|| Verdict::fail(format_args!("the summary left no verdict")))
}

/// The platform's host environment for the CPU with `apic_id`; its pages
/// are recorded so that the primary's NPT leaves them out.
fn host_env(host: &mut Tracked<'_, impl LaunchHost>, apic_id: u32) -> Option<HostCpu> {
    match HostCpu::new(apic_id) {
        Ok(h) => {
            host.ranges
                .push(Range::new(h.gdt & !0xfff, PAGES_PER_CPU as u64 * 4096));
            Some(h)
        }
        Err(e) => {
            hv_println!(
                "cpu {apic_id}: no host environment ({e}); host mode keeps the firmware's tables"
            );
            None
        }
    }
}

/// Memory, image, page tables and VMCB of one test partition (BSP).
fn setup(
    host: &mut Tracked<'_, impl LaunchHost>,
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
    let host_cpu = host_env(host, config.apic_ids()[0]);
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
    // Host mode runs on the hypervisor's own GDT, TSS, IDT and page tables,
    // so a fault in the host is reported, and the firmware's tables can change.
    // SAFETY: on this partition's CPU, CPL 0, interrupts off, after the
    // platform's host_cpu::init (HostCpu::new succeeded).
    let firmware = p.host_cpu.and_then(|h| unsafe { h.load() }.ok());
    // SAFETY: SVM was reported by CPUID; the host save page is this CPU's alone.
    let stop = match unsafe { svm::enable(p.hsave_pa) } {
        Ok(()) => vm_loop(p, firmware.is_some(), &mut |_| {}),
        Err(e) => {
            hv_println!("partition {}: cannot enable SVM: {e:?}", p.config.name);
            StopReason::SetupFailed
        }
    };
    if let Some(fw) = firmware {
        // The AP goes back to the firmware's MP loop: give it its tables back.
        // SAFETY: same CPU, interrupts off, the firmware's tables are still valid.
        unsafe { fw.restore() };
    }
    stop
}

/// Enter the guest, handle its exits, until it stops (SVM already enabled
/// on this CPU, interrupts off).
fn vm_loop(p: &SvmPartition, own_tables: bool, after_exit: &mut dyn FnMut(&Stats)) -> StopReason {
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
        "partition {}: running on CPU {} (host mode on {} tables)",
        p.config.name,
        p.config.apic_ids().first().copied().unwrap_or(0),
        if own_tables {
            "the hypervisor's"
        } else {
            "the firmware's"
        }
    );
    let stop = loop {
        let exit = vcpu.run();
        if let Flow::Stop(reason) = handle_exit(&mut vcpu, exit, &mut cx) {
            break reason;
        }
        after_exit(cx.stats);
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

/// The primary partition's NPT covers this much physical address space
/// (minus the holes); 1 GiB pages keep it small.
const PRIMARY_LIMIT_HUGE: u64 = 512 << 30;
const PRIMARY_LIMIT: u64 = 64 << 30;
/// Frames for the primary's NPT (holes need 4 KiB tables at their edges).
const PRIMARY_NPT_PAGES: u64 = 512;
/// Host stack of the boot CPU once it runs the primary as a guest.
const HOST_STACK_PAGES: usize = 16;

struct Primary {
    part: SvmPartition,
    host_stack_top: u64,
    /// The test partitions; set just before the blue-pill.
    finish: UnsafeCell<Option<&'static Finish>>,
}

/// VMCB, maps and NPT of the primary partition (the firmware on the boot
/// CPU). Its NPT maps everything except other partitions' regions and the
/// hypervisor's pages.
fn setup_primary(
    host: &mut Tracked<'_, impl LaunchHost>,
    config: &PartitionConfig,
    plan: &Plan,
    features: SvmFeatures,
    nx: bool,
) -> Result<&'static Primary, &'static str> {
    let mut alloc = |n: usize| host.alloc_pages(n).map_err(|_| "out of hypervisor pages");
    let vmcb_pa = alloc(1)?;
    let run_pa = alloc(1)?;
    let hsave_pa = alloc(1)?;
    let host_vmcb_pa = alloc(1)?;
    let msrpm_pa = alloc(MSRPM_SIZE / 4096)?;
    let iopm_pa = alloc(IOPM_SIZE / 4096 + 1)?;
    let stack = alloc(HOST_STACK_PAGES)?;
    let pool = alloc(PRIMARY_NPT_PAGES as usize)?;

    // The primary owns the machine's devices and MSRs; only what would let
    // it see or switch off the hypervisor exits.
    let mut msrs = MsrBitmap::pass_all();
    msrs.set(svm::MSR_EFER, false, true);
    msrs.set(svm::MSR_VM_CR, true, true);
    msrs.set(svm::MSR_VM_HSAVE_PA, true, true);
    // SAFETY: freshly allocated hypervisor pages of the right sizes.
    unsafe {
        core::ptr::copy_nonoverlapping(msrs.0.as_ptr(), msrpm_pa as *mut u8, MSRPM_SIZE);
        core::ptr::write_bytes(iopm_pa as *mut u8, 0, IOPM_SIZE);
    }

    // The boot CPU's host tables, allocated before the exclusion list is made.
    let host_cpu = host_env(host, config.apic_ids().first().copied().unwrap_or(0));
    let mut excluded: Vec<Range> = host.ranges.clone();
    host.hypervisor_ranges(&mut |base, bytes| excluded.push(Range::new(base, bytes)));
    for other in plan.iter().filter(|c| c.id != config.id) {
        excluded.extend_from_slice(other.regions());
    }
    let huge = core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 26) != 0;
    let limit = if huge {
        PRIMARY_LIMIT_HUGE
    } else {
        PRIMARY_LIMIT
    };
    let mut ranges = alloc::vec![Range::default(); excluded.len() + 1];
    let n = plan::complement(limit, &mut excluded, &mut ranges).map_err(|_| "too many holes")?;
    // SAFETY: the pool was just allocated for this NPT alone.
    let mut pool_mem = unsafe { IdentityMem::new(pool, PRIMARY_NPT_PAGES) };
    let mut npt = Npt::new(
        &mut pool_mem,
        NptOptions {
            huge_pages: huge,
            nx,
        },
    )
    .map_err(|_| "out of NPT frames")?;
    for r in &ranges[..n] {
        npt.map_identity(&mut pool_mem, r.start, r.size(), Perm::RWX)
            .map_err(|_| "cannot build the primary NPT (out of frames?)")?;
    }
    hv_println!(
        "partition {}: NPT {:#x} maps {} range(s) below {} GiB ({} x 4 KiB, {} x 2 MiB, {} x 1 GiB), \
         leaving out {} hypervisor and partition range(s); ASID {}, CPU {}",
        config.name,
        npt.root(),
        n,
        limit >> 30,
        npt.leaves[0],
        npt.leaves[1],
        npt.leaves[2],
        plan::normalize(&mut excluded),
        config.asid(),
        config.apic_ids().first().copied().unwrap_or(0)
    );

    // SAFETY: the VMCB page is ours alone.
    let vmcb = unsafe { &mut *(vmcb_pa as *mut [u8; 4096]) };
    init_controls(
        &mut super::vmcb::Vmcb(vmcb),
        &Controls {
            asid: config.asid(),
            ncr3: npt.root(),
            iopm_pa,
            msrpm_pa,
            intercept_hlt: false,
        },
    );
    // SAFETY: the run page is ours alone.
    let rp = unsafe { &mut *(run_pa as *mut RunPage) };
    rp.host_fx = FxArea::initial();
    rp.guest_fx = FxArea::initial();
    rp.state.guest_vmcb_pa = vmcb_pa;
    rp.state.host_vmcb_pa = host_vmcb_pa;
    rp.state.guest_fx = &mut rp.guest_fx;
    rp.state.host_fx = &mut rp.host_fx;
    let part = SvmPartition {
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
    };
    Ok(Box::leak(Box::new(Primary {
        part,
        host_stack_top: stack + (HOST_STACK_PAGES as u64) * 4096,
        finish: UnsafeCell::new(None),
    })))
}

/// Virtualize the boot CPU: from here on this code runs in guest mode as
/// the primary partition.
fn bluepill(p: &'static Primary) -> bool {
    let part = &p.part;
    // SAFETY: CPL 0 on the BSP; the host save page is the BSP's alone.
    if let Err(e) = unsafe { svm::enable(part.hsave_pa) } {
        hv_println!("partition {}: cannot enable SVM: {e:?}", part.config.name);
        return false;
    }
    // SAFETY: the run page and VMCB were set up by `setup_primary`; SVM is on.
    unsafe {
        let rp = &mut *(part.run_pa as *mut RunPage);
        let vmcb = &mut *(part.vmcb_pa as *mut [u8; 4096]);
        super::bluepill::capture(
            &mut super::vmcb::Vmcb(vmcb),
            part.vmcb_pa,
            &mut rp.guest_fx.0,
        );
        super::bluepill::enter(
            &mut rp.state,
            vmcb.as_mut_ptr(),
            p.host_stack_top,
            primary_host_loop,
            p as *const Primary as *mut c_void,
        );
    }
    // Guest mode now. CPUID is intercepted: the NexusOS leaf proves it.
    let r = core::arch::x86_64::__cpuid(nexus_abi::cpuid::BASE_LEAF);
    let found = nexus_abi::cpuid::parse_signature_leaf(
        nexus_abi::cpuid::BASE_LEAF,
        CpuidResult {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        },
    )
    .is_some();
    hv_println!(
        "partition {}: the boot CPU now runs in guest mode (CPUID 0x40000000 {} NexusOS)",
        part.config.name,
        if found { "answers" } else { "does NOT answer" }
    );
    true
}

/// The boot CPU's host side after the blue-pill, on its own stack.
extern "sysv64" fn primary_host_loop(ctx: *mut c_void) -> ! {
    // SAFETY: `bluepill` passes the leaked Primary.
    let p = unsafe { &*(ctx as *const Primary) };
    // SAFETY: CPL 0; the host takes no interrupts (they stay pending for the guest).
    unsafe { instructions::cli() };
    // The guest state was captured from the firmware's tables already; the
    // host side now moves to the hypervisor's own (never given back).
    let own_tables = match p.part.host_cpu {
        // SAFETY: on the boot CPU (whose HostCpu this is), CPL 0, interrupts off.
        Some(h) => match unsafe { h.load() } {
            Ok(_) => true,
            Err(e) => {
                hv_println!("boot CPU: host environment not loaded ({e})");
                false
            }
        },
        None => false,
    };
    // SAFETY: written before the blue-pill, read-only since.
    let finish = unsafe { *p.finish.get() };
    let name = p.part.config.name;
    let stop = vm_loop(&p.part, own_tables, &mut |stats| {
        let Some(f) = finish else { return };
        if SUMMARY_DONE.load(Ordering::Relaxed)
            || !(f.all_done() || WAIT_EXPIRED.load(Ordering::Acquire))
        {
            return;
        }
        // Host mode on the boot CPU, while its guest waits in `wait_as_guest`.
        let verdict = f.summarize();
        let mut text = crate::launch::summary::StrBuf::<512>::new();
        let _ = stats.write_to(&mut text);
        for l in text.as_str().lines() {
            hv_println!("stats {name}: {l}");
        }
        *VERDICT.lock() = Some(verdict);
        SUMMARY_DONE.store(true, Ordering::Release);
    });
    // SAFETY: the guest will not run again; this CPU is the only writer.
    unsafe { *p.part.stop.get() = Some(stop) };
    p.part.state.store(DONE, Ordering::Release);
    hv_println!("partition {}: boot CPU halted", p.part.config.name);
    // SAFETY: nothing can continue on this CPU.
    unsafe { instructions::halt_forever() }
}
