//! Running a policy's test partitions on VMX.
//!
//! Set-up happens on the boot CPU: each test partition gets its reserved
//! memory, its image, its own EPT (memory types from the MTRRs; the shared
//! hypercall code checks guest buffers through the same EPT), and a pool of
//! pages for the VMX structures of the CPU that will run it. Each partition
//! then runs on its own CPU (UEFI MP services), where that CPU enables VMX,
//! builds its VMCS from its own host state and runs the guest through the
//! shared exit handler. A partition whose CPU cannot be started runs on the
//! boot CPU instead, after the others were started, before the boot CPU
//! returns to the firmware.
//!
//! On any CPU the guest runs with host interrupts off (external interrupts
//! stay pending), with reset x87/SSE state, and VMX is switched off again
//! when the partition stops; the boot CPU's own x87/SSE state and interrupt
//! flag are restored. The primary partition is not virtualized on VMX yet.

use super::ept::{Ept, EptCaps, EptPerms};
use super::memtype::Mtrrs;
use super::run::run_to_stop;
use super::vcpu::{bluepill, Intercepts, Unusual, VcpuConfig, VmxCpu, VmxVcpu};
use super::{capture, controls, host, instructions as vmx};
use crate::exit::{CpuSignal, ExitHost, SignalError};
use crate::hv_println;
use crate::launch::ap_mailbox::{ApMailbox, ApState, InitResult, Mail, SipiResult};
use crate::launch::guest_load::load_guest;
use crate::launch::outcome::{self, Outcome};
use crate::launch::summary;
use crate::launch::tracked::Tracked;
use crate::launch::{set_up_primary, test_partitions, LaunchHost, Verdict};
use crate::mem::identity::IdentityMem;
use crate::partition::guest_setup::GuestStart;
use crate::partition::plan::Plan;
use crate::partition::{PartitionConfig, StopReason};
use crate::platform::console::LineBuffer;
use crate::platform::host_cpu::{self, HostCpu};
use crate::platform::instructions::{self, rdmsr};
use crate::platform::log::CONSOLE;
use crate::stats::Stats;
use crate::vcpu::Vcpu;
use crate::xcr0::HostXcr0;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, Ordering};
use nexus_abi::cpuid::{CpuidResult, Transport};
use nexus_drivers::apic::Icr;

/// Frames for one CPU's VMXON region, GDT/TSS copy, VMCS and bitmaps.
const VMX_POOL_PAGES: u64 = 16;
/// Frames for one partition's EPT.
const TABLE_POOL_PAGES: u64 = 64;
/// How long the boot CPU waits for the partitions on other CPUs.
const WAIT_LIMIT_MS: u64 = 120_000;

/// One test partition, shared between the boot CPU (set-up, summary) and the
/// CPU that runs it (the run, handed back through `outcome`).
struct VmxPartition {
    config: PartitionConfig,
    /// The tables the processor walks, also read by the shared buffer checks.
    ept: Ept,
    start: GuestStart,
    /// Identity-mapped pages for the running CPU's VMX structures.
    pool: u64,
    /// The platform's host environment (GDT/TSS, IDT, page tables) for that CPU.
    host_cpu: Option<HostCpu>,
    outcome: Outcome,
    /// The partition's other CPUs: they start reset, waiting for a start-up IPI.
    aps: Vec<VmxAp>,
}

/// One AP of a test partition: its CPU, VMX pages, mailbox and result.
struct VmxAp {
    apic: u32,
    pool: u64,
    host_cpu: Option<HostCpu>,
    mailbox: ApMailbox,
    outcome: Outcome,
}

/// The exit handler's view of the CPU it runs on.
struct CpuHost<'a> {
    line: LineBuffer,
    /// The APs of the running partition, which its vCPUs may INIT and SIPI.
    aps: &'a [VmxAp],
    /// The APIC ID of the CPU this runs on (it may not signal itself).
    apic: u32,
}

impl ExitHost for CpuHost<'_> {
    fn console(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.line.push(&CONSOLE, b);
        }
    }

    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        let [eax, ebx, ecx, edx] = vmx::cpuid(leaf, subleaf);
        CpuidResult { eax, ebx, ecx, edx }
    }

    fn take_init(&mut self) -> bool {
        let Some(me) = self.aps.iter().find(|a| a.apic == self.apic) else {
            return true;
        };
        let sent = me.mailbox.take_init();
        if !sent {
            hv_println!(
                "CPU {}: INIT exit with no INIT sent to it (a repeat): guest resumed",
                self.apic
            );
        }
        sent
    }

    fn signal_cpu(&mut self, apic_id: u32, signal: CpuSignal) -> Result<(), SignalError> {
        let ap = self
            .aps
            .iter()
            .find(|a| a.apic == apic_id && a.apic != self.apic)
            .ok_or(SignalError::NoSuchCpu)?;
        match signal {
            CpuSignal::Init => {
                let mut spins = 0u64;
                let r = ap.mailbox.post_init(
                    || kick(apic_id),
                    || {
                        spins += 1;
                        core::hint::spin_loop();
                        spins < INIT_SPINS
                    },
                );
                match r {
                    InitResult::AlreadyWaiting | InitResult::Reset => Ok(()),
                    InitResult::NoResponse => {
                        hv_println!("CPU {apic_id} did not take the INIT sent to it");
                        Err(SignalError::NotResponding)
                    }
                    InitResult::Gone => Err(SignalError::NoSuchCpu),
                }
            }
            CpuSignal::StartUp { vector } => match ap.mailbox.post_startup(vector) {
                // A SIPI to an AP that does not wait is dropped, as on hardware.
                SipiResult::Accepted | SipiResult::Ignored => Ok(()),
                SipiResult::Gone => Err(SignalError::NoSuchCpu),
            },
        }
    }
}

/// How long a sender waits for an AP to take an INIT (spin-loop iterations:
/// about a second on hardware, a few in Bochs).
const INIT_SPINS: u64 = 50_000_000;

/// Make the CPU with `apic_id`, which runs a vCPU, leave guest mode: a physical
/// INIT, which VMX turns into an INIT VM exit there.
fn kick(apic_id: u32) {
    // SAFETY: host mode on the hypervisor's tables; the target runs one of our vCPUs.
    if !unsafe { crate::platform::apic::send(Icr::init(apic_id)) } {
        hv_println!("INIT to CPU {apic_id}: the local APIC did not send it");
    }
}

/// Set up every test partition, start each on its CPU (or the boot CPU), wait, judge.
pub fn run(host: &mut impl LaunchHost, plan: &Plan) -> Verdict {
    let mut tracked = Tracked::new(host);
    let host = &mut tracked;
    let bsp_host = host.host_env(vmx::cpuid(1, 0)[1] >> 24);
    // The capability MSRs can be read before VMXON; every CPU of a machine
    // reports the same, so the boot CPU's answer plans all partitions.
    if vmx::cpuid(1, 0)[2] & (1 << 5) == 0 {
        return Verdict::fail(format_args!("vmx: the CPU reports neither SVM nor VMX"));
    }
    // SAFETY: CPUID reported VMX just above; `read` touches optional MSRs
    // only when the processor says they exist.
    let caps = controls::VmxCapabilities::read(|m| unsafe { rdmsr(m) });
    let ctl = match controls::nexus_controls(&caps) {
        Ok(c) => c,
        Err(e) => return Verdict::fail(format_args!("vmx: {e}")),
    };
    let ept_caps = EptCaps(caps.ept_vpid);
    hv_println!(
        "vmx: VMCS revision {:#x}, TRUE controls {}, EPT 2M={} 1G={} INVEPT={} INVVPID={}; \
         controls pin={:#x} proc={:#x} proc2={:#x} exit={:#x} entry={:#x}",
        caps.revision_id(),
        if caps.has_true_controls() {
            "yes"
        } else {
            "no"
        },
        ept_caps.pages_2m(),
        ept_caps.pages_1g(),
        ept_caps.invept(),
        ept_caps.invvpid(),
        ctl.pin,
        ctl.proc,
        ctl.proc2,
        ctl.exit,
        ctl.entry
    );
    let phys_bits = vmx::cpuid(0x8000_0008, 0)[0] as u8;
    // SAFETY: the MTRR MSRs exist on every CPU with VMX.
    let mtrrs = Mtrrs::read(|m| unsafe { rdmsr(m) }, phys_bits);
    hv_println!(
        "vmx: MTRRs {}, default type {}, {} variable range(s); EPT memory types follow them",
        if mtrrs.enabled { "enabled" } else { "disabled" },
        mtrrs.default_type.short(),
        mtrrs.variable_count
    );

    let mut parts: Vec<&'static VmxPartition> = Vec::new();
    let mut failed_setup: Vec<(&PartitionConfig, StopReason)> = Vec::new();
    for config in test_partitions(plan) {
        match setup(host, config, ept_caps, &mtrrs) {
            Ok(p) => parts.push(Box::leak(Box::new(p))),
            Err(why) => {
                hv_println!("partition {}: not started: {why}", config.name);
                failed_setup.push((config, StopReason::SetupFailed));
            }
        }
    }

    // APs first: they wait for start-up IPIs their partition's first CPU sends.
    for p in &parts {
        for (index, ap) in p.aps.iter().enumerate() {
            ap.outcome.start();
            let arg = Box::leak(Box::new((*p, index))) as *mut (&VmxPartition, usize);
            if let Err(e) = host.start_on_cpu(ap.apic, ap_vcpu_entry, arg as *mut c_void) {
                hv_println!(
                    "partition {}: CPU {} cannot be started ({e}); start-up IPIs to it fail",
                    p.config.name,
                    ap.apic
                );
                ap.mailbox.mark_absent();
                // SAFETY: the AP never ran; nothing borrows its counters.
                unsafe { ap.outcome.finish(StopReason::SetupFailed) };
            }
        }
    }
    let mut on_boot_cpu: Vec<&'static VmxPartition> = Vec::new();
    for p in &parts {
        let apic = p.config.apic_ids().first().copied().unwrap_or(u32::MAX);
        p.outcome.start();
        let arg = *p as *const VmxPartition as *mut c_void;
        if let Err(e) = host.start_on_cpu(apic, ap_entry, arg) {
            hv_println!(
                "partition {}: CPU {apic} cannot be started ({e}); running it on the boot CPU",
                p.config.name
            );
            on_boot_cpu.push(p);
        }
    }
    for p in on_boot_cpu {
        run_on_boot_cpu(p, bsp_host);
    }
    // The primary's EPT must leave out everything allocated so far and what it
    // allocates itself, so it is set up after the test partitions.
    let primary = set_up_primary(plan, |c| {
        setup_primary(host, c, plan, ept_caps, &mtrrs, bsp_host)
    });
    let primary = primary.filter(|p| bluepill_primary(p));
    let mut waited = 0;
    let busy =
        |p: &&VmxPartition| !p.outcome.is_done() || p.aps.iter().any(|a| !a.outcome.is_done());
    while parts.iter().any(busy) && waited < WAIT_LIMIT_MS {
        host.stall_us(1000);
        waited += 1;
    }

    let verdict = outcome::summarize(
        parts.iter().map(|p| (&p.config, &p.outcome)),
        failed_setup.iter().copied(),
    );
    if let Some(p) = primary {
        // SAFETY: the host loop is suspended while this (guest) code runs on the
        // same CPU; copy the counters rather than borrow them.
        let stats = unsafe { core::ptr::read_volatile(p.stats.get()) };
        let mut text = summary::StrBuf::<512>::new();
        let _ = stats.write_to(&mut text);
        for l in text.as_str().lines() {
            hv_println!("stats {}: {l}", p.config.name);
        }
    }
    verdict
}

/// Memory, image, page tables and the VMX page pool of one test partition (boot CPU).
fn setup(
    host: &mut Tracked<'_, impl LaunchHost>,
    config: &PartitionConfig,
    ept_caps: EptCaps,
    mtrrs: &Mtrrs,
) -> Result<VmxPartition, &'static str> {
    let (loaded, start) = load_guest(host, config)?;

    let tables_pa = host
        .alloc_pages(TABLE_POOL_PAGES as usize)
        .map_err(|_| "out of memory for its EPT")?;
    // SAFETY: the pool was just allocated for this partition's tables alone.
    let mut tables = unsafe { IdentityMem::new(tables_pa, TABLE_POOL_PAGES) };
    let mut ept = Ept::new(&mut tables, ept_caps).map_err(|_| "out of EPT frames")?;
    for r in config.regions() {
        ept.map_identity(&mut tables, r.start, r.size(), EptPerms::RWX, mtrrs)
            .map_err(|_| "cannot map its region in the EPT")?;
    }
    let pool = host
        .alloc_pages(VMX_POOL_PAGES as usize)
        .map_err(|_| "out of memory for its VMCS")?;
    let first = config.regions()[0];
    let mt = mtrrs
        .uniform_type(first.start, first.size())
        .map_or("mixed", |t| t.short());
    hv_println!(
        "partition {}: image {} at {:#x}..{:#x} (entry {:#x}), EPT {:#x} maps {} region(s) \
         ({} x 4 KiB, {} x 2 MiB, memory type {mt}), VPID {}, CPU {}",
        config.name,
        config.image,
        loaded.start,
        loaded.end,
        loaded.entry,
        ept.pml4(),
        config.region_count,
        ept.stats.pages_4k,
        ept.stats.pages_2m,
        vpid(config),
        config.apic_ids().first().copied().unwrap_or(0)
    );
    let host_cpu = host.host_env(config.apic_ids().first().copied().unwrap_or(0));
    let mut aps = Vec::new();
    for &apic in config.apic_ids().iter().skip(1) {
        let pool = host
            .alloc_pages(VMX_POOL_PAGES as usize)
            .map_err(|_| "out of memory for an AP's VMCS")?;
        aps.push(VmxAp {
            apic,
            pool,
            host_cpu: host.host_env(apic),
            mailbox: ApMailbox::new(),
            outcome: Outcome::new(),
        });
    }
    if !aps.is_empty() {
        hv_println!(
            "partition {}: {} AP(s) {:?} start reset and wait for start-up IPIs (virtual x2APIC ICR)",
            config.name,
            aps.len(),
            &config.apic_ids()[1..]
        );
    }
    Ok(VmxPartition {
        config: config.clone(),
        ept,
        start,
        pool,
        host_cpu,
        outcome: Outcome::new(),
        aps,
    })
}

/// The primary partition's EPT covers this much physical address space
/// (minus the holes): 512 GiB with 1 GiB pages, else 64 GiB.
const PRIMARY_LIMIT_HUGE: u64 = 512 << 30;
const PRIMARY_LIMIT: u64 = 64 << 30;
/// Frames for the primary's EPT (hole edges need 4 KiB tables).
const PRIMARY_TABLE_PAGES: u64 = 1024;
/// Host stack of the boot CPU once it runs the primary as a guest.
const HOST_STACK_PAGES: u64 = 16;

/// The primary partition on the boot CPU: its vCPU runs on the host stack.
struct Primary {
    config: PartitionConfig,
    /// The tables the processor walks, also read by the shared buffer checks.
    ept: Ept,
    /// Identity-mapped pages for the boot CPU's VMX structures.
    pool: u64,
    host_cpu: Option<HostCpu>,
    vcpu: UnsafeCell<Option<VmxVcpu>>,
    stats: UnsafeCell<Stats>,
    host_stack_top: u64,
    /// The firmware ran with interrupts on: the guest gets them back.
    interrupts: AtomicBool,
}

// SAFETY: only the boot CPU touches it: the host loop while the guest is
// suspended, the guest (reading the counters) while the host loop is.
unsafe impl Sync for Primary {}

/// EPT (everything but the hypervisor's pages and the other partitions'
/// regions, memory types from the MTRRs), VMX on the boot CPU and
/// a VMCS holding the boot CPU's own state.
fn setup_primary(
    host: &mut Tracked<'_, impl LaunchHost>,
    config: &PartitionConfig,
    plan: &Plan,
    ept_caps: EptCaps,
    mtrrs: &Mtrrs,
    bsp_host: Option<HostCpu>,
) -> Result<&'static Primary, &'static str> {
    let pool = host
        .alloc_pages(VMX_POOL_PAGES as usize)
        .map_err(|_| "out of hypervisor pages")?;
    let stack = host
        .alloc_pages(HOST_STACK_PAGES as usize)
        .map_err(|_| "out of hypervisor pages")?;
    let tables_pa = host
        .alloc_pages(PRIMARY_TABLE_PAGES as usize)
        .map_err(|_| "out of hypervisor pages")?;
    let limit = if ept_caps.pages_1g() {
        PRIMARY_LIMIT_HUGE
    } else {
        PRIMARY_LIMIT
    };
    let map = host.primary_map(config, plan, limit)?;
    // SAFETY: the pool was just allocated for these tables alone.
    let mut tables = unsafe { IdentityMem::new(tables_pa, PRIMARY_TABLE_PAGES) };
    let mut ept = Ept::new(&mut tables, ept_caps).map_err(|_| "out of EPT frames")?;
    for r in &map.ranges {
        ept.map_identity(&mut tables, r.start, r.size(), EptPerms::RWX, mtrrs)
            .map_err(|_| "cannot build the primary EPT (out of frames?)")?;
    }
    hv_println!(
        "partition {}: EPT {:#x} maps {} range(s) below {} GiB ({} x 4 KiB, {} x 2 MiB, {} x 1 GiB, \
         MTRR memory types), leaving out {} hypervisor and partition range(s); VPID {}, CPU {}",
        config.name,
        ept.pml4(),
        map.ranges.len(),
        limit >> 30,
        ept.stats.pages_4k,
        ept.stats.pages_2m,
        ept.stats.pages_1g,
        map.holes,
        vpid(config),
        config.apic_ids().first().copied().unwrap_or(0)
    );

    Ok(Box::leak(Box::new(Primary {
        config: config.clone(),
        ept,
        pool,
        host_cpu: bsp_host,
        vcpu: UnsafeCell::new(None),
        stats: UnsafeCell::new(Stats::new()),
        host_stack_top: stack + HOST_STACK_PAGES * 4096,
        interrupts: AtomicBool::new(false),
    })))
}

/// Virtualize the boot CPU: from the return on, this code runs in guest
/// mode as the primary partition, with the firmware's tables. Returns whether
/// the switch happened (if not, the boot CPU is as the firmware had it).
fn bluepill_primary(p: &'static Primary) -> bool {
    let name = p.config.name;
    // SAFETY: CPL 0 on the boot CPU; every path below restores IF or hands it to the guest.
    let interrupts = unsafe {
        let on = instructions::interrupts_enabled();
        instructions::cli();
        on
    };
    p.interrupts.store(interrupts, Ordering::Relaxed);
    // SAFETY: CPL 0; read before host selectors clear them.
    let fs_gs = unsafe { capture::fs_gs_bases() };
    // SAFETY: boot CPU, CPL 0, interrupts off, after the platform's host_cpu::init.
    let loaded = p.host_cpu.and_then(|h| unsafe { h.load() }.ok());
    // SAFETY: CPL 0; without a host environment the firmware's own state is the guest's.
    let fw = loaded.unwrap_or_else(|| unsafe { host_cpu::capture() });
    let undo = |why: &dyn core::fmt::Display| {
        hv_println!("partition {name}: the boot CPU stays unvirtualized: {why}");
        // SAFETY: same CPU, interrupts off, the firmware's tables are still valid.
        unsafe {
            if loaded.is_some() {
                fw.restore();
            }
            if interrupts {
                instructions::sti();
            }
        }
        false
    };
    // SAFETY: this pool is the boot CPU's alone, identity mapped.
    let mut mem = unsafe { IdentityMem::new(p.pool, VMX_POOL_PAGES) };
    // SAFETY: boot CPU, ring 0; with the host environment loaded TR is already set.
    if unsafe { host::ensure_task_register(&mut mem) }.is_none() {
        return undo(&"cannot give the boot CPU a task register");
    }
    // SAFETY: on the boot CPU (earlier users switched VMX off again).
    let cpu = match unsafe { VmxCpu::enable(&mut mem) } {
        Ok(c) => c,
        Err(e) => return undo(&e),
    };
    // The primary owns the machine's devices and MSRs: only EFER writes and the
    // VMX MSRs exit; no port does.
    let intercepts = Intercepts {
        all_ports: false,
        all_msrs: false,
        ports: &[],
    };
    // SAFETY: VMXON ran on this CPU; `fw` is the firmware's state on it.
    let vcpu = match unsafe {
        VmxVcpu::new_current(
            &cpu,
            &mut mem,
            p.ept.eptp(),
            vpid(&p.config),
            intercepts,
            &fw,
            fs_gs,
        )
    } {
        Ok(v) => v,
        Err(e) => {
            // SAFETY: nothing runs in VMX on this CPU.
            let _ = unsafe { vmx::vmxoff() };
            return undo(&e);
        }
    };
    // SAFETY: the guest does not run yet; only this code touches the cell.
    let gprs = unsafe { (*p.vcpu.get()).insert(vcpu).gprs_mut() as *mut _ };
    // SAFETY: `new_current` left this VMCS current with the firmware's state;
    // the host loop runs it on its own stack and never returns.
    let entered = unsafe {
        bluepill(
            gprs,
            p.host_stack_top,
            primary_host_loop,
            p as *const Primary as *mut c_void,
        )
    };
    if !entered {
        // SAFETY: nothing runs in VMX on this CPU.
        let _ = unsafe { vmx::vmxoff() };
        return undo(&"the switch to guest mode could not be prepared");
    }
    // Guest mode now. CPUID always exits under VMX: the NexusOS leaf proves it.
    let [eax, ebx, ecx, edx] = vmx::cpuid(nexus_abi::cpuid::BASE_LEAF, 0);
    let found = nexus_abi::cpuid::parse_signature_leaf(
        nexus_abi::cpuid::BASE_LEAF,
        CpuidResult { eax, ebx, ecx, edx },
    )
    .is_some();
    hv_println!(
        "partition {name}: the boot CPU now runs in guest mode (CPUID 0x40000000 {} NexusOS)",
        if found { "answers" } else { "does NOT answer" }
    );
    true
}

/// The boot CPU's host side after the blue-pill, on its own stack.
extern "sysv64" fn primary_host_loop(ctx: *mut c_void) -> ! {
    // SAFETY: `bluepill_primary` passes the leaked Primary.
    let p = unsafe { &*(ctx as *const Primary) };
    // SAFETY: the guest is suspended whenever this runs; nothing else touches these.
    let (vcpu, stats) = unsafe { (&mut *p.vcpu.get(), &mut *p.stats.get()) };
    let name = p.config.name;
    let Some(vcpu) = vcpu.as_mut() else {
        hv_println!("partition {name}: no vCPU; boot CPU halted");
        // SAFETY: nothing can continue on this CPU.
        unsafe { instructions::halt_forever() }
    };
    if p.interrupts.load(Ordering::Relaxed) {
        // SAFETY: `bluepill` left this vCPU's VMCS current on this CPU.
        if let Err(e) = unsafe { vcpu.enable_guest_interrupts() } {
            hv_println!("partition {name}: cannot give the firmware its interrupt flag back: {e}");
        }
    }
    let mut host = CpuHost {
        line: LineBuffer::new(name.as_str()),
        aps: &[],
        apic: vmx::cpuid(1, 0)[1] >> 24,
    };
    // SAFETY: an empty pool: guest memory is only touched through the EPT checks.
    let mut access = unsafe { IdentityMem::new(0, 0) };
    let stop = run_to_stop(
        vcpu,
        &p.config,
        &p.ept,
        &mut access,
        &mut host,
        stats,
        Transport::Vmcall,
        |why| hv_println!("partition {name}: {}", Unusual(*why)),
        // An INIT from the primary's own OS: wait for its SIPI in hardware.
        |vcpu| (!vcpu.waits_for_sipi_in_hardware()).then_some(StopReason::WaitsForSipi),
    );
    hv_println!(
        "partition {name} stopped at rip {:#x}: {stop}; boot CPU halted",
        vcpu.rip()
    );
    // SAFETY: the guest cannot continue; nothing else can run on this CPU.
    unsafe { instructions::halt_forever() }
}

fn vpid(config: &PartitionConfig) -> u16 {
    config.id as u16 + 1
}

/// Entry of a partition's AP (UEFI MP services procedure).
extern "efiapi" fn ap_entry(arg: *mut c_void) {
    // SAFETY: `run` passes a leaked (never freed) VmxPartition.
    let p = unsafe { &*(arg as *const VmxPartition) };
    // SAFETY: CPL 0 on this AP; the host must not take interrupts between
    // VM exits (they stay pending for the firmware).
    unsafe { instructions::cli() };
    let stop = run_here(p, p.host_cpu);
    // SAFETY: only this CPU ran the partition; its counters are no longer borrowed.
    unsafe { p.outcome.finish(stop) };
}

/// Run a partition on the boot CPU, keeping the firmware's FPU state and interrupt flag
/// (and its XCR0: the vCPU switches XCR0 around each entry; a change is reported).
fn run_on_boot_cpu(p: &VmxPartition, bsp: Option<HostCpu>) {
    // SAFETY: CPL 0 on the boot CPU, before the partition runs.
    let xcr0 = unsafe { HostXcr0::current_or_reset() };
    let mut fx = vmx::FxArea::zeroed();
    // SAFETY: CPL 0 on the boot CPU; restored below.
    let interrupts = unsafe {
        let on = instructions::interrupts_enabled();
        instructions::cli();
        vmx::fxsave(&mut fx);
        on
    };
    let stop = run_here(p, bsp);
    // SAFETY: restores exactly what was saved above on this CPU.
    unsafe {
        vmx::fxrstor(&fx);
        if interrupts {
            instructions::sti();
        }
    }
    // SAFETY: CPL 0 on the boot CPU.
    let after = unsafe { HostXcr0::current_or_reset() };
    if after != xcr0 {
        hv_println!(
            "partition {}: left XCR0 {after:#x} to the firmware (was {xcr0:#x})",
            p.config.name
        );
    }
    // SAFETY: only the boot CPU ran the partition; its counters are no longer borrowed.
    unsafe { p.outcome.finish(stop) };
}

/// Switch the running CPU (interrupts off) to its host environment, enable
/// VMX, run the partition to its stop, disable VMX, give the firmware its
/// tables back.
fn run_here(p: &VmxPartition, host_cpu: Option<HostCpu>) -> StopReason {
    // Host mode runs on the hypervisor's own GDT, TSS, IDT and page tables, so
    // a fault in the host is reported, and the firmware's tables may change.
    // SAFETY: on this CPU, CPL 0, interrupts off, after the platform's host_cpu::init
    // (HostCpu::new succeeded).
    let firmware = host_cpu.and_then(|h| unsafe { h.load() }.ok());
    let stop = run_vmx(p);
    if let Some(fw) = firmware {
        // SAFETY: same CPU, interrupts off, the firmware's tables are still valid.
        unsafe { fw.restore() };
    }
    stop
}

fn run_vmx(p: &VmxPartition) -> StopReason {
    let name = p.config.name;
    on_vmx_cpu(p, p.pool, Who::PartitionCpu, |vcpu| {
        // The CPU it really runs on (the boot CPU when its own could not start).
        hv_println!(
            "partition {name}: running on CPU {}",
            vmx::cpuid(1, 0)[1] >> 24
        );
        // SAFETY: CPL 0; each partition starts from clean x87/SSE state.
        unsafe { vmx::fpu_reset() };
        run_vcpu(p, vcpu)
    })
    .unwrap_or(StopReason::SetupFailed)
}

/// Which of a partition's CPUs a set-up message is about.
#[derive(Clone, Copy)]
enum Who {
    /// The CPU that runs the partition's image.
    PartitionCpu,
    Ap(u32),
}

impl core::fmt::Display for Who {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Who::PartitionCpu => f.write_str("its CPU"),
            Who::Ap(apic) => write!(f, "CPU {apic}"),
        }
    }
}

/// On the running CPU (interrupts off, host environment loaded): a task
/// register, VMXON with frames from `pool`, a vCPU of `p` set up for its image,
/// `run` on it, VMXOFF. `None` (logged) when any set-up step failed.
fn on_vmx_cpu(
    p: &VmxPartition,
    pool: u64,
    who: Who,
    run: impl FnOnce(&mut VmxVcpu) -> StopReason,
) -> Option<StopReason> {
    let name = p.config.name;
    // SAFETY: this pool is the running CPU's alone, identity mapped.
    let mut mem = unsafe { IdentityMem::new(pool, VMX_POOL_PAGES) };
    // SAFETY: ring 0, interrupts off; the GDT copy keeps the firmware's selectors.
    if unsafe { host::ensure_task_register(&mut mem) }.is_none() {
        hv_println!("partition {name}: {who} cannot get a task register");
        return None;
    }
    // SAFETY: on this CPU, with frames from its pool.
    let cpu = match unsafe { VmxCpu::enable(&mut mem) } {
        Ok(c) => c,
        Err(e) => {
            hv_println!("partition {name}: {who} cannot enable VMX: {e}");
            return None;
        }
    };
    let cfg = VcpuConfig {
        eptp: p.ept.eptp(),
        vpid: vpid(&p.config),
        start: p.start,
    };
    // SAFETY: VMXON ran on this CPU; frames come from its pool; the EPT lives
    // in runtime pages that are never freed.
    let stop = match unsafe { VmxVcpu::new_long_mode(&cpu, &mut mem, cfg, Intercepts::TEST) } {
        Ok(mut vcpu) => Some(run(&mut vcpu)),
        Err(e) => {
            hv_println!("partition {name}: {who}: {e}");
            None
        }
    };
    // SAFETY: no guest of this CPU runs any more.
    if let Err(e) = unsafe { vmx::vmxoff() } {
        hv_println!("partition {name}: {who}: VMXOFF failed: {e}");
    }
    stop
}

/// Run `vcpu` of `p` on this CPU (APIC `apic`) through the shared exit handler
/// until it stops, counting into `stats`; flushes its console line. `on_wait`
/// decides what follows an INIT (see [`run_to_stop`]).
fn run_guest(
    p: &VmxPartition,
    vcpu: &mut VmxVcpu,
    apic: u32,
    stats: &mut Stats,
    who: Who,
    on_wait: impl FnMut(&mut VmxVcpu) -> Option<StopReason>,
) -> StopReason {
    let name = p.config.name;
    let mut host = CpuHost {
        line: LineBuffer::new(name.as_str()),
        aps: &p.aps,
        apic,
    };
    // SAFETY: an empty pool: guest memory is only read and written through
    // checks against the partition's EPT, which covers its regions alone.
    let mut access = unsafe { IdentityMem::new(0, 0) };
    let stop = run_to_stop(
        vcpu,
        &p.config,
        &p.ept,
        &mut access,
        &mut host,
        stats,
        Transport::Vmcall,
        |why| match who {
            Who::PartitionCpu => hv_println!("partition {name}: {}", Unusual(*why)),
            Who::Ap(apic) => hv_println!("partition {name}: CPU {apic}: {}", Unusual(*why)),
        },
        on_wait,
    );
    if host.line.pending() > 0 {
        host.line.flush(&CONSOLE);
    }
    stop
}

fn run_vcpu(p: &VmxPartition, vcpu: &mut VmxVcpu) -> StopReason {
    let name = p.config.name;
    // SAFETY: only this CPU touches the stats until DONE is published.
    let stats = unsafe { p.outcome.stats_mut() };
    let apic = vmx::cpuid(1, 0)[1] >> 24;
    // The partition's first CPU: none of its APs may start it again.
    let stop = run_guest(p, vcpu, apic, stats, Who::PartitionCpu, |_| {
        Some(StopReason::WaitsForSipi)
    });
    hv_println!("partition {name} stopped at rip {:#x}: {stop}", vcpu.rip());
    // The partition ends with its first CPU: its APs stop, running ones by INIT.
    for ap in &p.aps {
        if ap.mailbox.stop() == ApState::Running {
            kick(ap.apic);
        }
    }
    stop
}

/// Entry of a partition's AP (UEFI MP services procedure).
extern "efiapi" fn ap_vcpu_entry(arg: *mut c_void) {
    // SAFETY: `run` passes a leaked (never freed) pair of a leaked partition and an index.
    let (p, index) = unsafe { *(arg as *const (&'static VmxPartition, usize)) };
    let ap = &p.aps[index];
    // SAFETY: CPL 0 on this AP; interrupts stay pending for the firmware.
    unsafe { instructions::cli() };
    // SAFETY: on this CPU, CPL 0, interrupts off, after the platform's host_cpu::init.
    let firmware = ap.host_cpu.and_then(|h| unsafe { h.load() }.ok());
    run_ap(p, ap);
    if let Some(fw) = firmware {
        // SAFETY: same CPU, interrupts off, the firmware's tables are still valid.
        unsafe { fw.restore() };
    }
}

/// Wait in host mode for a start-up IPI (Some(vector)) or the partition's end (None).
fn wait_for_startup(ap: &VmxAp) -> Option<u8> {
    loop {
        match ap.mailbox.take() {
            Mail::Start { vector } => return Some(vector),
            Mail::Stop => return None,
            Mail::Wait => core::hint::spin_loop(),
        }
    }
}

/// VMX on this AP, a vCPU reset as by INIT, then run whenever a SIPI starts it;
/// publishes how it ended.
fn run_ap(p: &VmxPartition, ap: &VmxAp) {
    let name = p.config.name;
    let apic = ap.apic;
    let ran = on_vmx_cpu(p, ap.pool, Who::Ap(apic), |vcpu| {
        let stop = run_ap_vcpu(p, ap, vcpu);
        match vcpu.drain_pending_init() {
            Some(true) => {
                hv_println!("partition {name}: CPU {apic} took a pending INIT before leaving VMX")
            }
            Some(false) => {}
            None => hv_println!(
                "partition {name}: CPU {apic}: cannot check for a pending INIT \
                 (no VMX-preemption timer); VMXOFF may deliver one"
            ),
        }
        // Published before VMXOFF: in Bochs 2.7 the INIT of an INIT exit stays
        // pending (even past the drain above) and resets this CPU at VMXOFF, so
        // nothing after it would run. The boot CPU only reads the outcome.
        // SAFETY: only this CPU ran the AP; its counters are no longer borrowed.
        unsafe { ap.outcome.finish(stop) };
        stop
    });
    if ran.is_none() {
        ap.mailbox.mark_absent();
        // SAFETY: the AP's vCPU never ran; nothing borrows its counters.
        unsafe { ap.outcome.finish(StopReason::SetupFailed) };
    }
}

fn run_ap_vcpu(p: &VmxPartition, ap: &VmxAp, vcpu: &mut VmxVcpu) -> StopReason {
    let name = p.config.name;
    let apic = ap.apic;
    if let Err(e) = vcpu.init_reset() {
        hv_println!("partition {name}: CPU {apic}: {e}");
        ap.mailbox.mark_absent();
        return StopReason::InitNotEmulated;
    }
    hv_println!("partition {name}: CPU {apic} is reset and waits for a start-up IPI");
    let started = |vcpu: &mut VmxVcpu, vector: u8| {
        vcpu.sipi_start(vector);
        let (cs, base) = crate::vcpu::sipi_cs(vector);
        hv_println!(
            "partition {name}: CPU {apic} started by SIPI vector {vector:#04x}: real mode at \
             {cs:04x}:0000 (address {base:#x})"
        );
    };
    let Some(vector) = wait_for_startup(ap) else {
        hv_println!("partition {name}: CPU {apic} was never started");
        return StopReason::PartitionEnded;
    };
    started(vcpu, vector);
    // SAFETY: CPL 0; the AP starts from clean x87/SSE state.
    unsafe { vmx::fpu_reset() };
    // SAFETY: only this CPU touches the AP's counters until its outcome is DONE.
    let stats = unsafe { ap.outcome.stats_mut() };
    let stop = run_guest(p, vcpu, apic, stats, Who::Ap(apic), |vcpu| {
        hv_println!("partition {name}: CPU {apic} took INIT (VM exit): reset to the INIT state");
        if !ap.mailbox.enter_wait() {
            return Some(StopReason::PartitionEnded);
        }
        hv_println!("partition {name}: CPU {apic} waits for a start-up IPI");
        match wait_for_startup(ap) {
            Some(vector) => {
                started(vcpu, vector);
                None
            }
            None => Some(StopReason::PartitionEnded),
        }
    });
    // Whatever ended it, nobody may start it again.
    ap.mailbox.stop();
    hv_println!(
        "partition {name}: CPU {apic} stopped at {:#x}: {stop}",
        vcpu.rip()
    );
    let mut text = summary::StrBuf::<512>::new();
    let _ = stats.write_to(&mut text);
    for l in text.as_str().lines() {
        hv_println!("stats {name} CPU {apic}: {l}");
    }
    stop
}
