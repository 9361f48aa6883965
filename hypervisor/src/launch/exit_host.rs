//! [`CpuHost`]: the exit handler's view of the CPU and partition it runs for (console, CPUID,
//! IPI routing, the primary's trapped xAPIC writes and IA32_APIC_BASE, the doorbell, and its
//! accesses to memory it does not own), and `mem::ram_only::RamOnly`, which keeps the primary's hypercall
//! buffers in its RAM.

use super::backend::Backend;
use super::ipi::{self, Action, Refused, Sender};
use super::machine::{map_sink, CpuRole, Machine};
use crate::exit::{Access, ExitHost};
use crate::hv_println;
use crate::partition::Kind;
use crate::platform::apic;
use crate::platform::console::LineBuffer;
use crate::platform::instructions::{rdmsr, wrmsr};
use crate::platform::log::CONSOLE;
use core::sync::atomic::Ordering;
use nexus_abi::cpuid::CpuidResult;
use nexus_drivers::apic::{xapic, Icr, APIC_BASE_ENABLE, APIC_BASE_MSR, APIC_BASE_X2APIC};

/// Foreign accesses and dropped IPIs logged one by one before the log only counts them.
const LOG_FIRST: u64 = 16;
/// After that, one line every this many.
const LOG_EVERY: u64 = 4096;

/// The exit host of one vCPU.
pub struct CpuHost<B: Backend + 'static> {
    m: &'static Machine<B>,
    cpu: usize,
    part: usize,
    /// A firmware proxy run: no IPI leaves, no APIC write reaches the CPU.
    proxy: bool,
    line: LineBuffer,
    /// The xAPIC ICR high half the guest last wrote (the destination of its next IPI).
    icr_high: u32,
}

impl<B: Backend> CpuHost<B> {
    pub fn new(m: &'static Machine<B>, cpu: usize, part: usize, proxy: bool) -> Self {
        CpuHost {
            m,
            cpu,
            part,
            proxy,
            line: LineBuffer::new(m.parts[part].config.name.as_str()),
            icr_high: 0,
        }
    }

    pub fn flush_console(&mut self) {
        if self.line.pending() > 0 {
            self.line.flush(&CONSOLE);
        }
    }

    fn is_primary(&self) -> bool {
        self.m.parts[self.part].config.kind == Kind::Primary
    }

    fn apply(&self, target: u32, action: Action) {
        let m = self.m;
        let Some(t) = m.cpu_by_apic(target) else {
            return;
        };
        let mailbox = &m.cpus[t].mailbox;
        match action {
            Action::Init => {
                mailbox.post_init();
                m.kick(t);
            }
            Action::StartUp(vector) => {
                mailbox.post_startup(vector);
                m.kick(t);
            }
            Action::Forward(icr) => {
                // SAFETY: host mode with the identity map, interrupts off; `route` only
                // forwards fixed IPIs and NMIs to the sender's own partition's CPUs.
                unsafe { apic::send(icr) };
            }
            Action::ProxyInit => {
                // The INIT itself reaches nothing.
                mailbox.arm_proxy();
                self.dropped(target);
            }
            Action::Proxy(vector) => {
                if !mailbox.post_proxy(vector) {
                    // No INIT before it (or it was the second SIPI): ignored, as hardware
                    // ignores a start-up IPI to a CPU that does not wait for one.
                    self.dropped(target);
                } else if matches!(m.cpus[t].role, CpuRole::Idle | CpuRole::Managed { .. })
                    || m.cpus[t].outcome.is_done()
                {
                    // An idle or managed CPU wakes for it (a managed one serves it once its
                    // partition's run, if any, has ended); a test partition's CPU serves it
                    // once its partition has ended.
                    m.kick(t);
                }
            }
            Action::Drop => self.dropped(target),
        }
    }

    /// Count (and log the first few of) the IPIs that reached nobody.
    fn dropped(&self, target: u32) {
        let m = self.m;
        let n = m.dropped_ipis.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= LOG_FIRST || n.is_multiple_of(LOG_EVERY) {
            hv_println!(
                "partition {}: IPI to CPU {target} dropped (not its CPU, or a delivery mode it \
                 may not use); {n} dropped so far",
                m.parts[self.part].config.name
            );
        }
    }
}

impl<B: Backend> ExitHost for CpuHost<B> {
    fn partitions(&self) -> Option<&dyn crate::hypercall::manage::Partitions> {
        Some(self.m)
    }

    fn partition_stats(&self, into: &crate::stats::Stats) -> Option<u32> {
        let cpus = &self.m.parts[self.part].cpus;
        for &c in cpus {
            into.add(self.m.cpus[c].outcome.stats());
        }
        Some(cpus.len() as u32)
    }

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

    fn ipi(&mut self, icr: Icr, x2apic: bool) -> Result<(), Refused> {
        if self.proxy {
            return Ok(());
        }
        let m = self.m;
        let p = &m.parts[self.part];
        let sender = Sender {
            primary: p.config.kind == Kind::Primary,
            apic_id: m.cpus[self.cpu].apic_id,
            own: &p.own_apics,
            all: &m.apic_ids,
            x2apic,
            logical_id: &|apic| {
                let c = m.cpu_by_apic(apic)?;
                let id = m.cpus[c].logical_id.load(Ordering::Relaxed);
                (p.cpus.contains(&c) && id != u32::MAX).then_some(id as u8)
            },
            flat: !m.xapic_cluster.load(Ordering::Relaxed),
        };
        ipi::route(&icr, &sender, &mut |target, action| {
            self.apply(target, action)
        })
    }

    fn apic_page(&self) -> Option<u64> {
        self.is_primary().then_some(self.m.primary_pages.apic)
    }

    fn apic_write(&mut self, offset: u64, value: u32, exchange: bool) -> u32 {
        if self.proxy {
            return 0;
        }
        match offset {
            xapic::ICR_HIGH => {
                return core::mem::replace(&mut self.icr_high, value);
            }
            xapic::ICR_LOW => {
                let _ = self.ipi(Icr::from_xapic(self.icr_high, value), false);
                return 0;
            }
            xapic::LDR => self.m.cpus[self.cpu]
                .logical_id
                .store(value >> 24, Ordering::Relaxed),
            xapic::DFR => self
                .m
                .xapic_cluster
                .store(value >> 28 != 0xf, Ordering::Relaxed),
            _ => {}
        }
        // SAFETY: CPL 0 in host mode.
        let apic::Mode::Xapic(mmio) = (unsafe { apic::mode() }) else {
            return 0; // x2APIC mode: the page is inert, as on hardware
        };
        // SAFETY: host mode with the identity map; the primary owns this CPU's APIC, and the
        // registers that address other CPUs (the ICR) were taken above.
        unsafe {
            let old = if exchange {
                apic::read_xapic(mmio, offset)
            } else {
                0
            };
            apic::write_xapic(mmio, offset, value);
            old
        }
    }

    fn apic_base_write(&mut self, value: u64) -> bool {
        if self.proxy {
            return true; // dropped: no MSR write of a proxy reaches the CPU
        }
        if !self.is_primary() {
            return false;
        }
        // SAFETY: CPL 0; IA32_APIC_BASE exists on every x86-64 CPU.
        let current = unsafe { rdmsr(APIC_BASE_MSR) };
        // Only xAPIC -> x2APIC (the base stays, the APIC stays enabled): moving the register
        // page would map it unguarded, and x2APIC -> xAPIC must go through disabled, which
        // would leave the CPU without the NMIs the hypervisor sends it.
        let to_x2apic = current & APIC_BASE_X2APIC == 0
            && current & APIC_BASE_ENABLE != 0
            && value == current | APIC_BASE_X2APIC;
        if value == current {
            return true;
        }
        if to_x2apic {
            // SAFETY: a valid transition of this CPU's APIC, which the primary owns.
            unsafe { wrmsr(APIC_BASE_MSR, value) };
            return true;
        }
        hv_println!(
            "partition {}: IA32_APIC_BASE write {value:#x} refused (was {current:#x}): only the \
             switch to x2APIC mode is allowed",
            self.m.parts[self.part].config.name
        );
        false
    }

    fn silent_uart(&self) -> Option<u16> {
        self.is_primary()
            .then(crate::platform::log::own_console_port)
            .flatten()
    }

    fn doorbell(&self) -> Option<u64> {
        (self.is_primary() && !self.proxy).then_some(self.m.primary_pages.doorbell)
    }

    fn foreign_access(&mut self, gpa: u64, access: Access) -> bool {
        if !self.is_primary() {
            return false;
        }
        let m = self.m;
        let n = m.foreign_accesses.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= LOG_FIRST || n.is_multiple_of(LOG_EVERY) {
            hv_println!(
                "partition {}: {} of {gpa:#x}, which it does not own: contained (sink page, no \
                 foreign data); {n} such page(s) so far",
                m.parts[self.part].config.name,
                access.name()
            );
        }
        let mapped = map_sink(m, m.parts[self.part].table, gpa);
        if !mapped {
            hv_println!(
                "partition {}: no table frame left for a sink page at {gpa:#x}",
                m.parts[self.part].config.name
            );
        }
        mapped
    }
}

/// The management calls' view of the machine (`hypercall::manage`): partitions by policy
/// index, the managed ones with their life cycle and CPUs.
impl<B: Backend> crate::hypercall::manage::Partitions for Machine<B> {
    fn config(&self, id: u32) -> Option<&crate::partition::PartitionConfig> {
        self.parts
            .iter()
            .map(|p| &p.config)
            .chain(self.failed.iter().map(|(c, _)| c))
            .find(|c| c.id as u32 == id)
    }

    fn lifecycle(&self, id: u32) -> Option<&crate::partition::lifecycle::Lifecycle> {
        self.managed(id)?.life.as_ref()
    }

    fn vcpus(&self, id: u32) -> u32 {
        // Only CPUs parked with virtualization on take a run; without its first CPU nothing
        // would start it.
        let Some(p) = self.managed(id) else {
            return 0;
        };
        match p.cpus.first() {
            Some(&first) if self.is_ready(first) => {
                p.cpus.iter().filter(|&&c| self.is_ready(c)).count() as u32
            }
            _ => 0,
        }
    }

    fn write_phys(&self, pa: u64, bytes: &[u8]) {
        // SAFETY: `hypercall::manage` passes a range inside a managed partition's regions
        // (reserved for it at boot, identity-mapped in host mode), which it holds claimed:
        // no vCPU runs there and no other call writes it meanwhile.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), pa as *mut u8, bytes.len()) };
    }

    fn post_run(&self, id: u32) {
        if let Some(p) = self.managed(id) {
            for &c in p.cpus.iter().filter(|&&c| self.is_ready(c)) {
                self.cpus[c].mailbox.post_run();
                self.kick(c);
            }
        }
    }

    fn post_stop(&self, id: u32) {
        if let Some(p) = self.managed(id) {
            for &c in &p.cpus {
                self.cpus[c].mailbox.post_stop();
                self.kick(c);
            }
        }
    }
}

impl<B: Backend> Machine<B> {
    fn is_ready(&self, cpu: usize) -> bool {
        self.cpus[cpu].ready.load(Ordering::Acquire)
    }

    /// Managed partition `id`.
    fn managed(&self, id: u32) -> Option<&super::machine::Part<B>> {
        self.parts
            .iter()
            .find(|p| p.config.id as u32 == id && p.life.is_some())
    }
}
