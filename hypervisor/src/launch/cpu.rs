//! What each CPU does once the machine is built, for both backends.
//!
//! An AP arrives through UEFI MP services on a firmware stack ([`ap_entry`]), loads its host
//! environment, moves to its own host stack and never returns to the firmware (the
//! firmware's stacks and tables are boot-services memory that an OS reclaims). There it
//! enables virtualization and runs its role: a test partition's vCPU until it stops, a
//! primary AP for good, or nothing; afterwards it is parked, serving firmware proxy runs.
//! The boot CPU arrives through [`bsp_hand_over`] and runs the primary for good.

use super::backend::{Backend, Start};
use super::exit_host::CpuHost;
use super::machine::{tag, Cpu, CpuRole, Machine, Part, PROXY_DEADLINE_S, TEST_DEADLINE_S};
use super::mailbox::Requests;
use super::run::{self, CpuEvents, Role};
use super::summary::StrBuf;
use crate::exit::ExitContext;
use crate::hv_println;
use crate::mem::identity::IdentityMem;
use crate::partition::StopReason;
use crate::platform::log::CONSOLE;
use crate::platform::{apic, instructions, nmi};
use crate::vcpu::Vcpu;
use core::ffi::c_void;

/// What an AP's entry gets: the machine and which of its CPUs this is.
pub struct CpuArg<B: Backend> {
    pub machine: &'static Machine<B>,
    pub cpu: usize,
}

/// Entry of every AP (UEFI MP services procedure, on a firmware stack); `arg` is the leaked
/// [`CpuArg<B>`] of this CPU.
pub(super) extern "efiapi" fn ap_entry<B: Backend>(arg: *mut c_void) {
    // SAFETY: `launch` passes a leaked CpuArg<B> per AP.
    let a = unsafe { &*(arg as *const CpuArg<B>) };
    let cpu = &a.machine.cpus[a.cpu];
    // SAFETY: CPL 0 on this AP; host mode runs with interrupts off.
    unsafe { instructions::cli() };
    let Some(h) = cpu.host else {
        hv_println!(
            "CPU {}: no host environment; left to the firmware",
            cpu.apic_id
        );
        a.machine.cpus[a.cpu]
            .outcome
            .finish(StopReason::SetupFailed);
        return;
    };
    // SAFETY: on this CPU, CPL 0, interrupts off, after the platform's host_cpu::init.
    if let Err(e) = unsafe { h.load() } {
        hv_println!(
            "CPU {}: host environment not loaded ({e}); left to the firmware",
            cpu.apic_id
        );
        cpu.outcome.finish(StopReason::SetupFailed);
        return;
    }
    // SAFETY: the host stack belongs to this CPU alone; nothing on the firmware's stack is
    // used again.
    unsafe { crate::platform::host_cpu::switch_stack(h.stack_top, cpu_main::<B>, arg) }
}

/// An AP on its own host stack.
extern "sysv64" fn cpu_main<B: Backend>(arg: *mut c_void) -> ! {
    // SAFETY: as in `ap_entry`.
    let a = unsafe { &*(arg as *const CpuArg<B>) };
    let (m, ci) = (a.machine, a.cpu);
    let cpu = &m.cpus[ci];
    if !enable(m, cpu) {
        if matches!(cpu.role, CpuRole::Test { .. }) {
            cpu.outcome.finish(StopReason::SetupFailed);
            m.vcpu_finished();
        }
        park_without_virtualization(cpu)
    }
    match cpu.role {
        CpuRole::Test { part, first } => {
            let p = &m.parts[part];
            let start = match (first, p.start) {
                (true, Some(s)) => Start::Long(s),
                _ => Start::Reset,
            };
            let stop = run_role(m, ci, part, start, Role::Test);
            finish_test(m, ci, part, first, stop);
        }
        CpuRole::Primary { part, .. } => {
            // Its stop was logged by the run loop; the CPU is parked from here on.
            let _ = run_role(m, ci, part, Start::Reset, Role::Primary);
        }
        // Parked until a manager starts its partition: from now on it can take a run.
        CpuRole::Managed { .. } => cpu.ready.store(true, core::sync::atomic::Ordering::Release),
        CpuRole::Idle => {}
    }
    park(m, ci)
}

/// Turn virtualization on for this CPU; `false` (logged) when it cannot.
fn enable<B: Backend>(m: &Machine<B>, cpu: &Cpu<B>) -> bool {
    let Some(pages) = cpu.pages else {
        return false;
    };
    // SAFETY: on this CPU, CPL 0, interrupts off, host environment loaded.
    match unsafe { m.backend.enable(pages) } {
        Ok(()) => true,
        Err(e) => {
            hv_println!("CPU {}: cannot enable {}: {e}", cpu.apic_id, B::NAME);
            false
        }
    }
}

/// A new vCPU of partition `p` on this CPU, which starts from the x87/SSE reset state: the
/// host leaves those registers to the guest (it never uses them), so without the reset one
/// partition's values would reach the next vCPU this CPU runs.
///
/// # Safety
/// As [`Backend::vcpu`]: on the CPU that owns `pages`, virtualization enabled, called from
/// the host stack the vCPU will be entered from.
unsafe fn fresh_vcpu<B: Backend>(
    m: &'static Machine<B>,
    pages: &'static B::CpuPages,
    p: &Part<B>,
    perms: &'static B::Perms,
    start: Start,
    role: Role,
) -> Result<B::Vcpu, &'static str> {
    // SAFETY: host mode at CPL 0 on this CPU (the caller's contract), CR0.TS clear and
    // OSFXSR set by the firmware and kept by the host environment.
    unsafe { instructions::fpu_reset() };
    // SAFETY: the caller's contract is `vcpu`'s.
    unsafe {
        m.backend.vcpu(
            pages,
            p.table,
            perms,
            tag(&p.config),
            start,
            role.intercepts(),
        )
    }
}

/// Build this CPU's vCPU of partition `part` and run it to its stop.
fn run_role<B: Backend>(
    m: &'static Machine<B>,
    ci: usize,
    part: usize,
    start: Start,
    role: Role,
) -> StopReason {
    let p = &m.parts[part];
    let cpu = &m.cpus[ci];
    let Some(pages) = cpu.pages else {
        return StopReason::SetupFailed;
    };
    // SAFETY: `enable` ran on this CPU; a fresh vCPU entered from this host stack.
    let mut vcpu = match unsafe { fresh_vcpu(m, pages, p, p.perms, start, role) } {
        Ok(v) => v,
        Err(e) => {
            hv_println!(
                "partition {}: CPU {}: no vCPU: {e}",
                p.config.name,
                cpu.apic_id
            );
            return StopReason::SetupFailed;
        }
    };
    let waiting = matches!(start, Start::Reset);
    if waiting {
        hv_println!(
            "partition {}: CPU {} is reset and waits for a start-up IPI",
            p.config.name,
            cpu.apic_id
        );
    } else if role == Role::Test {
        hv_println!(
            "partition {}: running on CPU {} (host mode on the hypervisor's tables)",
            p.config.name,
            cpu.apic_id
        );
    }
    let deadline = match role {
        Role::Test => Some(TEST_DEADLINE_S),
        _ => None,
    };
    run_vcpu(m, ci, part, &mut vcpu, role, waiting, deadline)
}

/// The shared run loop with this CPU's exit host and events.
pub fn run_vcpu<B: Backend, V: Vcpu>(
    m: &'static Machine<B>,
    ci: usize,
    part: usize,
    vcpu: &mut V,
    role: Role,
    waiting: bool,
    deadline_s: Option<u32>,
) -> StopReason {
    let p = &m.parts[part];
    let cpu = &m.cpus[ci];
    let mut host = CpuHost::new(m, ci, part, role == Role::Proxy);
    // SAFETY: an empty pool: guest memory is only touched through the partition's table.
    let mut mem = unsafe { IdentityMem::new(0, 0) };
    let ram_only = crate::mem::ram_only::RamOnly {
        table: p.table,
        ram: if p.config.kind == crate::partition::Kind::Primary {
            Some(m.ram.as_slice())
        } else {
            None
        },
    };
    let stats = if role == Role::Proxy {
        &cpu.proxy_stats
    } else {
        cpu.outcome.stats()
    };
    let mut cx = ExitContext {
        partition: &p.config,
        second_level: &ram_only,
        mem: &mut mem,
        host: &mut host,
        stats,
        transport: B::TRANSPORT,
    };
    let mut events = Events {
        m,
        ci,
        deadline: deadline_s.map(|s| (instructions::rdtsc() + s as u64 * m.tsc_hz, s)),
        timer: deadline_s.is_some(),
        first_exit: matches!(cpu.role, CpuRole::Primary { boot: true, .. })
            && role == Role::Primary,
    };
    events.arm_timer();
    let stop = run::run(vcpu, &mut cx, &mut events, role, waiting);
    events.disarm_timer();
    host.flush_console();
    if role == Role::Proxy && stop == StopReason::Halted {
        hv_println!(
            "CPU {}: the firmware proxy is done: its code idles (HLT or MWAIT) at rip {:#x}",
            cpu.apic_id,
            vcpu.rip()
        );
    } else if role == Role::Proxy {
        hv_println!(
            "CPU {}: the firmware proxy stopped at rip {:#x}: {stop}",
            cpu.apic_id,
            vcpu.rip()
        );
    } else if p.cpus.first() == Some(&ci) {
        hv_println!(
            "partition {} stopped at rip {:#x}: {stop}",
            p.config.name,
            vcpu.rip()
        );
    } else {
        hv_println!(
            "partition {}: CPU {} stopped at {:#x}: {stop}",
            p.config.name,
            cpu.apic_id,
            vcpu.rip()
        );
    }
    stop
}

/// A test vCPU ended: publish its outcome; the partition's first CPU ends its APs.
fn finish_test<B: Backend>(m: &Machine<B>, ci: usize, part: usize, first: bool, stop: StopReason) {
    let p = &m.parts[part];
    if first {
        for &other in &p.cpus[1..] {
            m.cpus[other].mailbox.post_stop();
            m.kick(other);
        }
    }
    if m.cpus[ci].outcome.finish(stop) {
        m.vcpu_finished();
    }
}

/// A CPU with nothing to run: wait for firmware proxy requests and, on a managed
/// partition's CPU, for its runs, forever.
fn park<B: Backend>(m: &'static Machine<B>, ci: usize) -> ! {
    let cpu = &m.cpus[ci];
    loop {
        // SAFETY: host mode, interrupts off, the hypervisor's IDT loaded on this CPU.
        unsafe { nmi::wait_until(cpu.nmi_slot, || cpu.mailbox.pending_parked()) };
        let r = cpu.mailbox.take_parked();
        if let Some(vector) = r.proxy {
            run_proxy(m, ci, vector);
        }
        if r.run {
            run_managed(m, ci);
        }
    }
}

/// One run of this CPU's managed partition, from its `partition_start` until it stops; the
/// first CPU to leave the run asks the others to leave too, the last one logs the stop.
fn run_managed<B: Backend>(m: &'static Machine<B>, ci: usize) {
    use crate::partition::guest_setup::GuestStart;
    use nexus_abi::manage::LastStop;
    let cpu = &m.cpus[ci];
    let CpuRole::Managed { part } = cpu.role else {
        return;
    };
    let p = &m.parts[part];
    let first = p.cpus.first() == Some(&ci);
    let Some(life) = p.life.as_ref() else {
        return;
    };
    let state = life.start_state();
    let start = if first {
        Start::Long(GuestStart::managed(&state))
    } else {
        Start::Reset
    };
    let stop = match cpu.pages {
        // SAFETY: `enable` ran on this CPU (it is parked with virtualization on); a fresh
        // vCPU entered from this host stack.
        Some(pages) => match unsafe { fresh_vcpu(m, pages, p, p.perms, start, Role::Managed) } {
            Ok(mut vcpu) => {
                if first {
                    // Linux's boot_params; the other registers start zero.
                    vcpu.set_gpr(crate::vcpu::Gpr::Rsi, state.rsi);
                    hv_println!(
                        "partition {}: started on CPU {} at rip {:#x} (cr3 {:#x}, rsi {:#x})",
                        p.config.name,
                        cpu.apic_id,
                        state.rip,
                        state.cr3,
                        state.rsi
                    );
                }
                run_vcpu(m, ci, part, &mut vcpu, Role::Managed, !first, None)
            }
            Err(e) => {
                hv_println!(
                    "partition {}: CPU {}: no vCPU: {e}",
                    p.config.name,
                    cpu.apic_id
                );
                StopReason::SetupFailed
            }
        },
        None => StopReason::SetupFailed,
    };
    let (how, code) = match stop {
        StopReason::Exited { code } => (LastStop::Exited, code),
        StopReason::PartitionEnded => (LastStop::Stopped, 0),
        _ => (LastStop::Faulted, 0),
    };
    let (_, last) = life.vcpu_left(how, code, || {
        for &other in p.cpus.iter().filter(|&&o| o != ci) {
            m.cpus[other].mailbox.post_stop();
            m.kick(other);
        }
    });
    if let Some(w) = last {
        let (used, capacity) = crate::platform::pages::usage();
        hv_println!(
            "partition {}: stopped ({:?}, exit code {:#x}, run {}); its CPUs wait in the \
             hypervisor; hypervisor pages in use: {used} of {capacity}",
            p.config.name,
            w.last,
            w.exit_code,
            w.starts
        );
    }
}

/// A CPU that could not enable virtualization: it only waits (NMIs wake and are dropped).
fn park_without_virtualization<B: Backend>(cpu: &Cpu<B>) -> ! {
    loop {
        // SAFETY: host mode, interrupts off, the hypervisor's IDT loaded on this CPU.
        unsafe { nmi::wait_until(cpu.nmi_slot, || false) };
    }
}

/// The primary's firmware sent this CPU, which it does not own, a broadcast INIT and start-up
/// IPI (its boot services wake every CPU they know that way at ExitBootServices and wait
/// until each has counted itself in; see `Mailbox::arm_proxy`): run that firmware code here,
/// in guest mode with the primary's table and no MSR or APIC write reaching the CPU, until it
/// halts or its deadline passes.
fn run_proxy<B: Backend>(m: &'static Machine<B>, ci: usize, vector: u8) {
    let cpu = &m.cpus[ci];
    let (Some(pi), Some(perms), Some(pages)) = (m.primary, m.proxy_perms, cpu.pages) else {
        return;
    };
    let p = &m.parts[pi];
    // SAFETY: virtualization is enabled on this CPU; a fresh vCPU entered from this stack.
    let mut vcpu = match unsafe { fresh_vcpu(m, pages, p, perms, Start::Reset, Role::Proxy) } {
        Ok(v) => v,
        Err(e) => {
            hv_println!("CPU {}: no firmware proxy vCPU: {e}", cpu.apic_id);
            return;
        }
    };
    hv_println!(
        "CPU {}: runs the primary's firmware from start-up vector {vector:#04x} until it halts",
        cpu.apic_id
    );
    vcpu.sipi_start(vector);
    run_vcpu(
        m,
        ci,
        pi,
        &mut vcpu,
        Role::Proxy,
        false,
        Some(PROXY_DEADLINE_S),
    );
}

/// The boot CPU's host side after the hand-over: the primary, for good.
pub extern "sysv64" fn bsp_main<B: Backend, V: Vcpu>(arg: *mut c_void) -> ! {
    // SAFETY: `bsp_hand_over` passes a leaked BspArg.
    let a = unsafe { &mut *(arg as *mut BspArg<B, V>) };
    let (m, ci) = (a.machine, a.cpu);
    let part = m.primary.unwrap_or(0);
    let stop = run_vcpu(m, ci, part, &mut a.vcpu, Role::Primary, false, None);
    hv_println!("partition primary: the boot CPU's guest stopped: {stop}; boot CPU halted");
    // SAFETY: nothing can continue on this CPU.
    unsafe { instructions::halt_forever() }
}

/// What the boot CPU's host side gets.
pub struct BspArg<B: Backend, V: Vcpu> {
    pub machine: &'static Machine<B>,
    pub cpu: usize,
    pub vcpu: V,
}

/// The run loop's view of this CPU.
struct Events<B: Backend + 'static> {
    m: &'static Machine<B>,
    ci: usize,
    /// TSC value and its length in seconds.
    deadline: Option<(u64, u32)>,
    /// The local APIC timer wakes the guest's CPU while a deadline is set.
    timer: bool,
    /// Log the next exit (the boot CPU's first as the primary's guest).
    first_exit: bool,
}

/// Vector of the host's deadline timer.
pub const TIMER_VECTOR: u8 = 0xee;
/// Initial count of the deadline timer (divide by 16): a few hundred ms on common bus clocks.
const TIMER_COUNT: u32 = 1 << 24;

impl<B: Backend> Events<B> {
    fn arm_timer(&self) {
        if self.timer {
            // SAFETY: host mode on this CPU, which runs no partition that owns its APIC.
            unsafe { apic::arm_timer(TIMER_VECTOR, TIMER_COUNT) };
        }
    }

    fn disarm_timer(&self) {
        if self.timer {
            // SAFETY: as above.
            unsafe { apic::disarm_timer() };
        }
    }
}

impl<B: Backend> CpuEvents for Events<B> {
    fn take_nmis(&mut self) -> u32 {
        nmi::take(self.m.cpus[self.ci].nmi_slot)
    }

    fn take_requests(&mut self) -> Requests {
        self.m.cpus[self.ci].mailbox.take_for_vcpu()
    }

    fn wait_for_request(&mut self) {
        let cpu = &self.m.cpus[self.ci];
        // SAFETY: host mode, interrupts off, the hypervisor's IDT loaded on this CPU.
        unsafe { nmi::wait_until(cpu.nmi_slot, || cpu.mailbox.pending_for_vcpu()) };
    }

    fn past_deadline(&mut self) -> Option<u32> {
        let (at, s) = self.deadline?;
        (instructions::rdtsc() >= at).then_some(s)
    }

    fn take_interrupt(&mut self) {
        // SAFETY: host mode on this CPU with the hypervisor's IDT, whose external-interrupt
        // stubs acknowledge and return; interrupts go off again right after.
        unsafe { instructions::take_pending_interrupts() };
        self.arm_timer();
    }

    fn on_exit(&mut self, exit: &crate::exit::VmExit, rip: u64) {
        if core::mem::take(&mut self.first_exit) {
            hv_println!(
                "partition {}: the boot CPU runs in guest mode: first exit {} at rip {rip:#x}",
                self.m.parts[self.m.primary.unwrap_or(0)].config.name,
                exit.reason.name()
            );
            self.m.primary_running();
        }
    }

    fn on_reset(&mut self) {
        let mut who = StrBuf::<64>::new();
        super::machine::describe_cpu(self.m, self.ci, &mut who);
        hv_println!("{}: reset by INIT, waits for a start-up IPI", who.as_str());
    }

    fn on_start(&mut self, vector: u8) {
        let mut who = StrBuf::<64>::new();
        super::machine::describe_cpu(self.m, self.ci, &mut who);
        let (cs, base) = crate::vcpu::sipi_cs(vector);
        hv_println!(
            "{} started by SIPI vector {vector:#04x}: real mode at {cs:04x}:0000 (address {base:#x})",
            who.as_str()
        );
    }
}

/// Flush a partition console line left at the end of a run.
pub fn flush_line(line: &mut crate::platform::console::LineBuffer) {
    if line.pending() > 0 {
        line.flush(&CONSOLE);
    }
}

/// The boot CPU: run the test partitions that have no CPU of their own (single-CPU
/// machines), then become the primary's guest at the hand-over stub, for good. Returns only
/// when that cannot be done.
#[cfg(target_os = "uefi")]
pub fn bsp_hand_over<B: Backend>(
    m: &'static Machine<B>,
    ci: usize,
    h: super::HandOver,
) -> super::Verdict {
    use super::Verdict;
    let cpu = &m.cpus[ci];
    let (Some(host), Some(pages), Some(pi)) = (cpu.host, cpu.pages, m.primary) else {
        return Verdict::fail(format_args!("the boot CPU has no host environment"));
    };
    let interrupts = instructions::interrupts_enabled();
    // SAFETY: CPL 0 on the boot CPU; from here host mode runs with interrupts off (the
    // hand-over stub turns them back on in guest mode).
    unsafe { instructions::cli() };
    // SAFETY: on the boot CPU, CPL 0, interrupts off, after the platform's host_cpu::init.
    let fw = match unsafe { host.load() } {
        Ok(fw) => fw,
        Err(e) => {
            if interrupts {
                // SAFETY: nothing changed; the firmware's IDT is loaded.
                unsafe { instructions::sti() };
            }
            return Verdict::fail(format_args!("boot CPU host environment: {e}"));
        }
    };
    let undo = |why: &dyn core::fmt::Display| {
        // SAFETY: same CPU, interrupts off, the firmware's tables are still valid.
        unsafe {
            fw.restore();
            if interrupts {
                instructions::sti();
            }
        }
        Verdict::fail(format_args!("boot CPU: {why}"))
    };
    if !enable(m, cpu) {
        return undo(&"virtualization could not be enabled");
    }
    // Test partitions without a CPU of their own, one after another (each has its deadline).
    for (ti, t) in m.cpus.iter().enumerate() {
        if let CpuRole::Test { part, first: true } = t.role {
            if t.apic_id == cpu.apic_id && ti != ci {
                let start = m.parts[part].start.map_or(Start::Reset, Start::Long);
                let stop = run_role(m, ti, part, start, Role::Test);
                finish_test(m, ti, part, true, stop);
            }
        }
    }
    let p = &m.parts[pi];
    let start = Start::Current {
        fw,
        rip: h.rip,
        rsp: h.rsp,
        // Interrupts off until the stub's first exit; the stub turns them back on.
        rflags: 0x2,
    };
    // SAFETY: `enable` ran on this CPU; the vCPU is entered from the host stack below without
    // changing the captured state.
    let vcpu = match unsafe {
        m.backend.vcpu(
            pages,
            p.table,
            p.perms,
            tag(&p.config),
            start,
            Role::Primary.intercepts(),
        )
    } {
        Ok(v) => v,
        Err(e) => return undo(&e),
    };
    let arg = alloc::boxed::Box::leak(alloc::boxed::Box::new(BspArg {
        machine: m,
        cpu: ci,
        vcpu,
    }));
    // SAFETY: the host stack is the boot CPU's alone; everything on the firmware's stack is
    // abandoned (the guest continues at the hand-over stub with its own stack).
    unsafe {
        crate::platform::host_cpu::switch_stack(
            host.stack_top,
            bsp_main::<B, B::Vcpu>,
            arg as *mut BspArg<B, B::Vcpu> as *mut c_void,
        )
    }
}
