//! The primary partition: its VMCB and NPT, the blue-pill of the boot CPU,
//! the boot CPU's host side, and the guest-side wait for the verdict.

use super::ap::vm_loop;
use super::*;

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
pub(super) fn wait_as_guest(host: &mut impl LaunchHost) -> Verdict {
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
/// The primary partition's NPT covers this much physical address space
/// (minus the holes); 1 GiB pages keep it small.
const PRIMARY_LIMIT_HUGE: u64 = 512 << 30;
const PRIMARY_LIMIT: u64 = 64 << 30;
/// Frames for the primary's NPT (holes need 4 KiB tables at their edges).
const PRIMARY_NPT_PAGES: u64 = 512;
/// Host stack of the boot CPU once it runs the primary as a guest.
const HOST_STACK_PAGES: usize = 16;

pub(super) struct Primary {
    part: SvmPartition,
    host_stack_top: u64,
    /// The test partitions; set just before the blue-pill.
    pub(super) finish: UnsafeCell<Option<&'static Finish>>,
}

/// VMCB, maps and NPT of the primary partition (the firmware on the boot
/// CPU). Its NPT maps everything except other partitions' regions and the
/// hypervisor's pages.
pub(super) fn setup_primary(
    host: &mut Tracked<'_, impl LaunchHost>,
    config: &PartitionConfig,
    plan: &Plan,
    features: SvmFeatures,
    nx: bool,
) -> Result<&'static Primary, &'static str> {
    let pages = ControlPages::alloc(host)?;
    let mut alloc = |n: usize| host.alloc_pages(n).map_err(|_| "out of hypervisor pages");
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
        core::ptr::copy_nonoverlapping(msrs.0.as_ptr(), pages.msrpm_pa as *mut u8, MSRPM_SIZE);
        core::ptr::write_bytes(pages.iopm_pa as *mut u8, 0, IOPM_SIZE);
    }

    // The boot CPU's host tables, allocated before the exclusion list is made.
    let host_cpu = host.host_env(boot_apic_id());
    let huge = core::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 26) != 0;
    let limit = if huge {
        PRIMARY_LIMIT_HUGE
    } else {
        PRIMARY_LIMIT
    };
    let map = host.primary_map(config, plan, limit)?;
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
    for r in &map.ranges {
        npt.map_identity(&mut pool_mem, r.start, r.size(), Perm::RWX)
            .map_err(|_| "cannot build the primary NPT (out of frames?)")?;
    }
    hv_println!(
        "partition {}: NPT {:#x} maps {} range(s) below {} GiB ({} x 4 KiB, {} x 2 MiB, {} x 1 GiB), \
         leaving out {} hypervisor and partition range(s); ASID {}, CPU {}",
        config.name,
        npt.root(),
        map.ranges.len(),
        limit >> 30,
        npt.leaves[0],
        npt.leaves[1],
        npt.leaves[2],
        map.holes,
        config.asid(),
        boot_apic_id()
    );

    // The guest state is the boot CPU's own, captured at the blue-pill.
    pages.init(config.asid(), npt.root(), false, None, |_| {});
    Ok(Box::leak(Box::new(Primary {
        part: pages.partition(config, host_cpu, npt, features),
        host_stack_top: stack + (HOST_STACK_PAGES as u64) * 4096,
        finish: UnsafeCell::new(None),
    })))
}

/// Virtualize the boot CPU: from here on this code runs in guest mode as
/// the primary partition.
pub(super) fn bluepill(p: &'static Primary) -> bool {
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
        crate::amd::bluepill::capture(
            &mut crate::amd::vmcb::Vmcb(vmcb),
            part.vmcb_pa,
            &mut rp.guest_fx.0,
        );
        crate::amd::bluepill::enter(
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
    unsafe { p.part.outcome.finish(stop) };
    hv_println!("partition {}: boot CPU halted", p.part.config.name);
    // SAFETY: nothing can continue on this CPU.
    unsafe { instructions::halt_forever() }
}

/// APIC ID of the CPU this runs on (the boot CPU during set-up).
fn boot_apic_id() -> u32 {
    core::arch::x86_64::__cpuid(1).ebx >> 24
}
