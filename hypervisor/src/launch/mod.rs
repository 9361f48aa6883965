//! Starting the partitions a policy describes, running them, and judging the test
//! partitions — written once for both virtualization backends.
//!
//! `main.rs` calls [`launch`] after discovery, policy and image loading. The flow:
//!
//! 1. **plan**: the policy's partitions with the CPUs the platform's fit check gave each
//!    (one CPU plan, [`Facts`]);
//! 2. **build** ([`machine::build`]): each test partition's memory reserved and zeroed, its
//!    image loaded, its second-level table and permission maps; deferred partitions' memory
//!    reserved; every CPU's role and pages; last the primary's table (everything but the
//!    hypervisor's memory and the other partitions', its xAPIC page read-only, the doorbell
//!    left out);
//! 3. **start CPUs** ([`cpu::ap_entry`]): every AP moves to its own host stack for good and
//!    runs its role; test partitions without a CPU of their own (single-CPU machines) run
//!    on the boot CPU first;
//! 4. **hand-over**: the boot CPU becomes the primary's guest, continuing at the platform's
//!    hand-over stub (which starts the policy's OS loader, or returns to the firmware), and
//!    its host side runs the primary for good ([`cpu::bsp_main`]);
//! 5. **verdict**: the CPU that finishes the last test vCPU prints the summary; without an OS
//!    loader (the test harness) it also ends the emulator run.
//!
//! Backends plug in below [`backend::Backend`]; the platform provides [`LaunchHost`].

pub mod backend;
#[cfg(target_os = "uefi")]
pub mod cpu;
#[cfg(target_os = "uefi")]
pub mod exit_host;
pub mod guest_load;
pub mod ipi;
#[cfg(target_os = "uefi")]
pub mod machine;
pub mod mailbox;
pub mod outcome;
pub mod run;
pub mod summary;
pub mod tracked;

use crate::mem::Range;
use crate::partition::{FixedStr, PartitionConfig};
use alloc::vec::Vec;
use core::ffi::c_void;
use core::fmt;

/// A function an AP runs (UEFI MP services procedure signature).
pub type ApEntry = extern "efiapi" fn(*mut c_void);

/// Why a platform service failed, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub &'static str);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// What the platform found that the launch needs.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Every CPU the firmware lists (APIC IDs), the boot CPU included.
    pub cpus: Vec<u32>,
    pub boot_cpu: u32,
    /// The fit check's CPU plan: (APIC ID, partition index), sorted by APIC ID.
    pub owners: Vec<(u32, usize)>,
    /// Single-CPU machines: test partitions whose CPUs the machine lacks (they run on the
    /// boot CPU), as (APIC ID, partition index).
    pub unplaced: Vec<(u32, usize)>,
    /// RAM as the firmware's memory map describes it.
    pub ram: Vec<Range>,
    /// The boot CPU's xAPIC register page (IA32_APIC_BASE).
    pub apic_base: u64,
    /// The primary's table may use 1 GiB pages.
    pub gib_pages: bool,
}

impl Facts {
    /// The partition the fit check gave `apic_id`.
    pub fn owner_of(&self, apic_id: u32) -> Option<usize> {
        self.owners
            .iter()
            .chain(self.unplaced.iter())
            .find(|(a, _)| *a == apic_id)
            .map(|(_, p)| *p)
    }

    /// The CPUs the fit check gave partition `index`, in APIC ID order.
    pub fn cpus_of(&self, index: usize) -> impl Iterator<Item = u32> + '_ {
        self.owners
            .iter()
            .chain(self.unplaced.iter())
            .filter(move |(_, p)| *p == index)
            .map(|(a, _)| *a)
    }
}

/// Where the boot CPU, turned into the primary's guest, continues: the platform's hand-over
/// stub in memory the primary owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandOver {
    pub rip: u64,
    pub rsp: u64,
    /// What the stub starts (for the log).
    pub loader: Option<FixedStr<96>>,
}

/// What the launch needs from the platform (boot CPU, before the hand-over).
pub trait LaunchHost {
    /// Zeroed, 4 KiB-aligned, identity-mapped pages that a later OS never reclaims
    /// (hypervisor data: control blocks, page tables, bitmaps).
    fn alloc_pages(&mut self, pages: usize) -> Result<u64, HostError>;
    /// The same, aligned to `align` bytes (a power of two).
    fn alloc_pages_aligned(&mut self, pages: usize, align: u64) -> Result<u64, HostError>;
    /// Claim exactly `[base, base+size)` for a partition (zeroed).
    fn reserve_at(&mut self, base: u64, size: u64) -> Result<(), HostError>;
    /// The guest image (ELF bytes) a partition's `image` field names.
    fn image(&self, name: &str) -> Option<&'static [u8]>;
    /// Start `entry(arg)` on the CPU with this APIC ID and return at once.
    fn start_on_cpu(
        &mut self,
        apic_id: u32,
        entry: ApEntry,
        arg: *mut c_void,
    ) -> Result<(), HostError>;
    /// Busy-wait about `us` microseconds.
    fn stall_us(&mut self, us: u64);
    /// Report each range of the hypervisor's own memory that was not handed out through
    /// [`LaunchHost::alloc_pages`] (image, heap, page pool, guest image files), as
    /// `(base, bytes)`, so that the primary's table leaves it out.
    fn hypervisor_ranges(&self, _out: &mut dyn FnMut(u64, u64)) {}
    /// What the platform found.
    fn facts(&self) -> Facts;
    /// Prepare the boot CPU's hand-over: load the OS loader at ESP path `loader` (with
    /// `options` as its load options) or none, and place the stub that starts it (or returns
    /// to the firmware) in memory the primary owns.
    fn hand_over(&mut self, loader: Option<(&str, &str)>) -> Result<HandOver, HostError>;
}

/// The judgement of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub pass: bool,
    /// Why it failed (empty when it passed).
    pub why: FixedStr<160>,
}

impl Verdict {
    pub fn fail(why: fmt::Arguments<'_>) -> Verdict {
        let mut w = summary::StrBuf::<160>::new();
        let _ = fmt::write(&mut w, why);
        Verdict {
            pass: false,
            why: FixedStr::new(w.as_str()),
        }
    }
}

/// The primary's partition configuration.
pub fn primary_config(plan: &crate::partition::plan::Plan) -> Option<&PartitionConfig> {
    plan.iter()
        .find(|c| c.kind == crate::partition::Kind::Primary)
}

/// Run the policy's partitions on this machine. Returns only when the boot CPU could not be
/// handed over (or there is nothing to run): the verdict to print; otherwise the boot CPU
/// continues as the primary's guest and the run is judged by the CPUs.
#[cfg(target_os = "uefi")]
pub fn launch(
    host: &mut dyn LaunchHost,
    policy: &nexus_policy::compiled::CompiledPolicy<'_>,
) -> Verdict {
    use crate::partition::plan;
    let facts = host.facts();
    let plan = match plan::from_policy(policy, &facts) {
        Ok(p) => p,
        Err(e) => return Verdict::fail(format_args!("policy cannot be run: {e:?}")),
    };
    // The primary's OS loader and its command line (up to 1024 bytes, read from the policy
    // itself: the partition records keep a shorter cmdline); none: back to the firmware.
    let loader = policy
        .partitions()
        .find(|p| p.role() == nexus_policy::Role::Primary)
        .and_then(|p| p.boot().map(|path| (path, p.cmdline().unwrap_or(""))));
    // CPUID 0x8000_0001 ECX bit 2: SVM.
    let svm = core::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 2) != 0;
    if svm {
        start::<crate::amd::Svm>(host, &plan, &facts, loader)
    } else {
        start::<crate::intel::Vmx>(host, &plan, &facts, loader)
    }
}

#[cfg(target_os = "uefi")]
fn start<B: backend::Backend>(
    host: &mut dyn LaunchHost,
    plan: &crate::partition::plan::Plan,
    facts: &Facts,
    loader: Option<(&str, &str)>,
) -> Verdict {
    use crate::hv_println;
    let backend = match B::probe() {
        Ok(b) => b,
        Err(why) => return Verdict::fail(format_args!("{}: {why}", B::NAME)),
    };
    let mut facts = facts.clone();
    facts.gib_pages = backend.huge_pages();
    // TSC ticks per second, for the test partitions' deadlines: the clock the platform
    // calibrated at boot (the console budgets use it too), measured here if it did not.
    let per_ms = match crate::platform::clock::calibrated_ticks_per_ms() {
        0 => crate::platform::clock::calibrate(|us| host.stall_us(us)),
        n => n,
    };
    let tsc_hz = per_ms.saturating_mul(1000);
    let harness = loader.is_none();
    let mut tracked = tracked::Tracked::new(host);
    let m = match machine::build::<B>(backend, &mut tracked, plan, &facts, harness, tsc_hz) {
        Ok(m) => m,
        Err(v) => return *v,
    };
    let boot = m.cpus.iter().position(|c| {
        c.apic_id == facts.boot_cpu
            && matches!(c.role, machine::CpuRole::Primary { boot: true, .. })
    });
    for (i, c) in m.cpus.iter().enumerate() {
        if Some(i) == boot || c.apic_id == facts.boot_cpu {
            continue;
        }
        let arg =
            alloc::boxed::Box::leak(alloc::boxed::Box::new(cpu::CpuArg { machine: m, cpu: i }));
        if let Err(e) = tracked.start_on_cpu(
            c.apic_id,
            cpu::ap_entry::<B>,
            arg as *mut cpu::CpuArg<B> as *mut c_void,
        ) {
            hv_println!("CPU {}: cannot be started ({e})", c.apic_id);
            if matches!(c.role, machine::CpuRole::Test { .. })
                && c.outcome.finish(crate::partition::StopReason::SetupFailed)
            {
                m.vcpu_finished();
            }
        }
    }
    let Some(boot) = boot else {
        return Verdict::fail(format_args!("the boot CPU belongs to no primary partition"));
    };
    let h = match tracked.hand_over(loader) {
        Ok(h) => h,
        Err(e) => return Verdict::fail(format_args!("hand-over: {e}")),
    };
    hv_println!(
        "hand-over: the boot CPU continues as the primary's guest at {:#x} (stack {:#x}), {}",
        h.rip,
        h.rsp,
        match &h.loader {
            Some(l) => alloc::format!("starting {l}"),
            None => alloc::string::String::from("returning to the firmware (no OS loader)"),
        }
    );
    // Test partitions whose CPUs the machine lacks run on the boot CPU first; a run with no
    // test partition at all is judged now.
    cpu::bsp_hand_over(m, boot, h)
}
