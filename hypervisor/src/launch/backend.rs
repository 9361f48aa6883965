//! What the launch needs from a virtualization backend (AMD SVM in `amd/`, Intel VMX in
//! `intel/`). The launch itself — plan, reserve, second-level tables, CPU start, run loop,
//! verdict — is written once above this trait (see `launch::machine`).
//!
//! A backend provides four kinds of objects, all built from the hypervisor's page pool on the
//! boot CPU and used on the CPU that runs them:
//!
//! - a partition's second-level table ([`Backend::Table`]: NPT or EPT) over a list of ranges,
//!   read by the shared buffer checks through [`SecondLevel`] and extended at run time by one
//!   page at a time ([`SecondLevelEdit`]);
//! - a partition's permission maps ([`Backend::Perms`]: MSR and I/O bitmaps) for one of the
//!   [`PermKind`]s;
//! - one CPU's pages ([`Backend::CpuPages`]: SVM host save area / VMX VMXON region and the
//!   control block its vCPUs use), made live by [`Backend::enable`] on that CPU;
//! - a vCPU ([`Backend::Vcpu`]) of a partition on that CPU, starting as [`Start`] says.

use super::LaunchHost;
use crate::mem::identity::IdentityMem;
use crate::mem::second_level::{Perm, SecondLevel};
use crate::mem::Range;
use crate::partition::guest_setup::GuestStart;
use crate::platform::host_cpu::FirmwareContext;
use crate::vcpu::Vcpu;
use nexus_abi::cpuid::Transport;

/// One range of a second-level table being built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRange {
    pub range: Range,
    pub perm: Perm,
    /// Device memory (the local APIC page, say): uncacheable in the table where the format
    /// carries a memory type.
    pub device: bool,
}

/// Adding pages to a live table (the primary's sink pages). Concurrent readers (the
/// processor's walks, the buffer checks) see either the old (absent) or the new entry; the
/// caller serialises writers.
pub trait SecondLevelEdit {
    /// Map the 4 KiB guest-physical page `gpa` to host-physical `hpa`; fails when the table's
    /// spare frames are used up or `gpa` is mapped already.
    fn map_page(&self, gpa: u64, hpa: u64, perm: Perm) -> Result<(), &'static str>;
    /// The same for a 2 MiB page (both 2 MiB aligned; nothing of it mapped yet).
    fn map_large(&self, gpa: u64, hpa: u64, perm: Perm) -> Result<(), &'static str>;
}

/// Which MSRs and ports exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermKind {
    /// A test partition owns no device and no machine MSR: everything exits.
    Test,
    /// The primary owns the machine's devices and MSRs, except what would let it see or
    /// change the hypervisor: EFER writes, the SVM/VMX MSRs, IA32_APIC_BASE writes and the
    /// x2APIC ICR (its IPIs are routed, `launch::ipi`), and the emulators' exit ports.
    Primary,
    /// The primary's firmware run on a CPU it does not own (`launch::proxy`): its ports like
    /// the primary's, but no MSR reaches that CPU.
    Proxy,
}

/// How a new vCPU starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    /// A test guest in 64-bit mode (state from the ELF loader and guest set-up).
    Long(GuestStart),
    /// The state INIT leaves, waiting for a start-up IPI (an AP).
    Reset,
    /// The boot CPU's firmware context (descriptor tables, control registers, segments,
    /// EFER and the MSRs of `fw`, captured before the host environment replaced them),
    /// continuing at `rip` with `rsp` and `rflags` (the hand-over to the OS loader).
    Current {
        fw: FirmwareContext,
        rip: u64,
        rsp: u64,
        rflags: u64,
    },
}

/// Intercepts that depend on the vCPU's role rather than its partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuIntercepts {
    /// HLT exits (test guests must call `partition_exit`; a proxy ends at its HLT).
    pub hlt: bool,
    /// External interrupts exit (a test partition's runaway deadline timer).
    pub interrupts: bool,
    /// An untrusted guest (a test partition, or the primary's firmware run as a proxy on a CPU
    /// the primary does not own): RDPMC (the counters count the host and other partitions
    /// too), MONITOR/MWAIT and #MC exit as well, and every entry flushes what the CPU needs
    /// flushed before a hostile guest runs (`crate::mitigations`). The primary keeps those
    /// native; INVD and WBINVD exit for everyone.
    pub untrusted: bool,
}

/// A virtualization backend.
pub trait Backend: Sized + Sync + 'static {
    type Table: SecondLevel<IdentityMem> + SecondLevelEdit + Send + Sync + 'static;
    type Perms: Send + Sync + 'static;
    type CpuPages: Send + Sync + 'static;
    type Vcpu: Vcpu;
    /// The hypercall instruction announced in CPUID.
    const TRANSPORT: Transport;
    /// "svm" or "vmx", for the log.
    const NAME: &'static str;

    /// Check the CPU (and print what it offers); `Err` when it cannot run partitions.
    fn probe() -> Result<Self, &'static str>;

    /// Whether tables may use 1 GiB pages (the primary's table then covers 512 GiB).
    fn huge_pages(&self) -> bool;

    /// Build a second-level table over `ranges` (sorted, not overlapping) with `spare` extra
    /// frames for later [`SecondLevelEdit::map_page`] calls; `label` names it in the log.
    fn build_table(
        &self,
        host: &mut dyn LaunchHost,
        ranges: &[MapRange],
        spare: u64,
    ) -> Result<Self::Table, &'static str>;

    /// A line describing the table for the log (root, leaves by size, ...).
    fn describe_table(&self, table: &Self::Table, out: &mut dyn core::fmt::Write);

    fn build_perms(
        &self,
        host: &mut dyn LaunchHost,
        kind: PermKind,
    ) -> Result<Self::Perms, &'static str>;

    /// Pages of one CPU (any CPU may build them, on the boot CPU).
    fn cpu_pages(&self, host: &mut dyn LaunchHost) -> Result<Self::CpuPages, &'static str>;

    /// Turn virtualization on for the calling CPU.
    ///
    /// # Safety
    /// On the CPU `cpu` belongs to, at CPL 0, interrupts off, with the host environment
    /// (GDT, TSS, IDT, page tables) loaded.
    unsafe fn enable(&self, cpu: &'static Self::CpuPages) -> Result<(), &'static str>;

    /// A vCPU on the calling CPU, for a partition whose table and maps are `table`/`perms`,
    /// identified by `tag` (ASID / VPID, non-zero, unique per partition).
    ///
    /// # Safety
    /// [`Backend::enable`] ran on this CPU for `cpu`; for [`Start::Current`], the caller
    /// enters the vCPU from this CPU's host stack without changing the captured state first.
    unsafe fn vcpu(
        &self,
        cpu: &'static Self::CpuPages,
        table: &'static Self::Table,
        perms: &'static Self::Perms,
        tag: u16,
        start: Start,
        intercepts: VcpuIntercepts,
    ) -> Result<Self::Vcpu, &'static str>;
}

/// The MSRs whose interception the backends agree on (one table for both).
pub mod msr {
    pub const APIC_BASE: u32 = 0x1b;
    pub const FEATURE_CONTROL: u32 = 0x3a;
    /// IA32_VMX_BASIC ..= IA32_VMX_EXIT_CTLS2.
    pub const VMX_FIRST: u32 = 0x480;
    pub const VMX_LAST: u32 = 0x493;
    pub const X2APIC_ICR: u32 = 0x830;
    pub const EFER: u32 = 0xc000_0080;
    pub const VM_CR: u32 = 0xc001_0114;
    pub const VM_HSAVE_PA: u32 = 0xc001_0117;

    /// What exits for the primary, as `(first, last, read, write)`: EFER (reads hide SVME,
    /// which the SVM guest's EFER must hold; writes are checked and keep SVME and LMA the
    /// hypervisor's), the virtualization MSRs (it must neither see nor change them),
    /// IA32_APIC_BASE writes (the APIC page must not move out of its trap) and the x2APIC
    /// ICR (its IPIs are routed). Everything else is the primary's.
    pub const PRIMARY: &[(u32, u32, bool, bool)] = &[
        (EFER, EFER, true, true),
        (APIC_BASE, APIC_BASE, false, true),
        (X2APIC_ICR, X2APIC_ICR, false, true),
        (FEATURE_CONTROL, FEATURE_CONTROL, true, true),
        (VMX_FIRST, VMX_LAST, true, true),
        (VM_CR, VM_CR, true, true),
        (VM_HSAVE_PA, VM_HSAVE_PA, true, true),
    ];
}

/// Ports that exit for the primary (and a proxy), as `(first, last)`: the emulators' exit
/// ports, so that no guest can end the run (QEMU isa-debug-exit 0xf4..0xf7, Bochs shutdown
/// 0x8900), and the hypervisor's own console UART when it has one (`platform::log`).
pub fn primary_ports() -> impl Iterator<Item = (u16, u16)> {
    let console = crate::platform::log::own_console_port()
        .map(|base| (base, base + nexus_drivers::uart16550::PORTS - 1));
    [(0xf4, 0xf7), (0x8900, 0x8900)].into_iter().chain(console)
}

#[cfg(test)]
mod tests {
    use super::msr::*;

    /// Whether the primary's `read`/write of MSR `id` exits.
    fn exits(id: u32, write: bool) -> bool {
        PRIMARY
            .iter()
            .any(|&(first, last, r, w)| (first..=last).contains(&id) && if write { w } else { r })
    }

    /// The primary reads EFER through an exit (which hides SVME on SVM) and writes it
    /// through the checks; it never reaches a VMX capability MSR (through
    /// IA32_VMX_PROCBASED_CTLS3 and IA32_VMX_EXIT_CTLS2, review L9) or the SVM MSRs.
    #[test]
    fn the_primary_sees_no_virtualization_msr() {
        for write in [false, true] {
            assert!(exits(EFER, write), "EFER write={write}");
            for id in [
                FEATURE_CONTROL,
                0x480,
                0x48b,
                0x491,
                0x492,
                0x493,
                VM_CR,
                VM_HSAVE_PA,
            ] {
                assert!(exits(id, write), "{id:#x} write={write}");
            }
        }
        // What the primary owns stays native: the APIC base and the ICR are only trapped
        // for writes, other MSRs not at all.
        assert!(!exits(APIC_BASE, false) && exits(APIC_BASE, true));
        assert!(!exits(X2APIC_ICR, false) && exits(X2APIC_ICR, true));
        assert!(!exits(0x10, false), "TSC");
        assert!(!exits(0x494, false));
    }
}
