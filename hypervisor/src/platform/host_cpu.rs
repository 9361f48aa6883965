//! The host environment each CPU runs the hypervisor on: its own page tables, GDT with TSS,
//! IDT and stacks, all in the hypervisor's runtime-data page pool.
//!
//! Why its own: host mode keeps running after the BSP hands the machine back to the firmware
//! and the OS boots in the primary partition; the firmware's page tables, GDT, IDT and stacks
//! live in boot-services memory that the OS reclaims.
//!
//! Use from a backend, on the CPU concerned, before its first VMRUN/VMLAUNCH:
//! ```text
//! let cpu = HostCpu::new(apic_id)?;                 // any CPU (allocates only)
//! let firmware = unsafe { cpu.load() };            // on that CPU, interrupts off
//! // `firmware` holds the CPU's previous GDTR/IDTR/CR3/selectors for the guest state;
//! unsafe { switch_stack(cpu.stack_top, entry, arg) } // continue on the host stack
//! ```

use super::descriptors::{self, Tss, GDT_ENTRIES, HOST_CS, HOST_DS, HOST_TR, IST_STACKS};
use super::host_paging::{self, HostMapError, LeafSize};
use super::instructions::{self, DescriptorTablePointer};
use super::pages::{self, PAGE};
use core::ffi::c_void;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// Host stack per CPU (64 KiB).
pub const STACK_PAGES: usize = 16;
/// Each IST stack (16 KiB).
pub const IST_PAGES: usize = 4;
/// Pages one CPU's host state takes: GDT+TSS page, stack, IST stacks.
pub const PAGES_PER_CPU: usize = 1 + STACK_PAGES + IST_STACKS * IST_PAGES;

static HOST_CR3: AtomicU64 = AtomicU64::new(0);
static HOST_IDT: AtomicU64 = AtomicU64::new(0);

/// Why the host environment could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEnvError {
    OutOfPages,
    PageTables(HostMapError),
    /// The exception stubs are not laid out as `host_entry.S` promises.
    Stubs,
    /// [`init`] has not run.
    NotInitialised,
    /// After loading, the CPU did not report the host GDT, CS and CR3.
    SelfTest,
}

impl fmt::Display for HostEnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostEnvError::OutOfPages => write!(f, "hypervisor page pool exhausted"),
            HostEnvError::PageTables(e) => write!(f, "cannot build the host page tables: {e:?}"),
            HostEnvError::Stubs => write!(f, "exception stubs are misaligned"),
            HostEnvError::NotInitialised => write!(f, "host environment not initialised"),
            HostEnvError::SelfTest => {
                write!(f, "the host GDT/CS/CR3 did not take effect when loaded")
            }
        }
    }
}

/// Build the shared parts: the identity map of `[0, top)` and the IDT. BSP, once, after
/// `pages::init`. Returns the host CR3.
pub fn init(map_top: u64, gib_pages: bool) -> Result<u64, HostEnvError> {
    let leaf = if gib_pages {
        LeafSize::Huge1G
    } else {
        LeafSize::Large2M
    };
    // SAFETY: UEFI identity-maps memory; the frames come from the hypervisor's pool.
    let mut frames = unsafe { pages::PoolFrames::new() };
    let cr3 = host_paging::build(&mut frames, host_paging::map_top(map_top, leaf), leaf).map_err(
        |e| match e {
            HostMapError::OutOfFrames => HostEnvError::OutOfPages,
            other => HostEnvError::PageTables(other),
        },
    )?;
    let stubs = super::exceptions::stub_addresses().ok_or(HostEnvError::Stubs)?;
    let idt = pages::alloc(1).ok_or(HostEnvError::OutOfPages)?;
    let gates = descriptors::idt(&stubs);
    // SAFETY: `idt` is a fresh, identity-mapped pool page of exactly 256 * 16 bytes.
    unsafe { core::ptr::write(idt as *mut [descriptors::Gate; 256], gates) };
    HOST_IDT.store(idt, Ordering::Release);
    HOST_CR3.store(cr3, Ordering::Release);
    Ok(cr3)
}

/// CR3 of the host identity map (0 before [`init`]).
pub fn host_cr3() -> u64 {
    HOST_CR3.load(Ordering::Acquire)
}

/// Physical address of the shared host IDT (0 before [`init`]).
pub fn host_idt() -> u64 {
    HOST_IDT.load(Ordering::Acquire)
}

/// One CPU's host state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCpu {
    pub apic_id: u32,
    /// Physical (= linear) address of this CPU's GDT.
    pub gdt: u64,
    /// Physical address of this CPU's TSS.
    pub tss: u64,
    /// Initial RSP for host mode (16-byte aligned, grows down).
    pub stack_top: u64,
}

/// What a CPU had loaded before [`HostCpu::load`]: the guest state of a blue-pilled CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareContext {
    pub gdtr: DescriptorTablePointer,
    pub idtr: DescriptorTablePointer,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// `(cs, ss, ds, es, fs, gs)`.
    pub selectors: [u16; 6],
    pub tr: u16,
    pub ldtr: u16,
    pub msrs: ContextMsrs,
}

/// The MSRs of a blue-pilled CPU's guest state that VM entry loads (or VMSAVE/VMLOAD switch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextMsrs {
    pub fs_base: u64,
    pub gs_base: u64,
    pub kernel_gs_base: u64,
    pub pat: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub debugctl: u64,
    pub dr7: u64,
}

impl HostCpu {
    /// Allocate and fill this CPU's GDT, TSS and stacks from the pool (any CPU).
    pub fn new(apic_id: u32) -> Result<Self, HostEnvError> {
        let base = pages::alloc(PAGES_PER_CPU).ok_or(HostEnvError::OutOfPages)?;
        let gdt = base;
        let tss = base + 64;
        let stack_top = base + (1 + STACK_PAGES) as u64 * PAGE;
        let ist_base = stack_top;
        let mut ist = [0u64; IST_STACKS];
        for (i, top) in ist.iter_mut().enumerate() {
            *top = ist_base + ((i + 1) * IST_PAGES) as u64 * PAGE;
        }
        // SAFETY: `base` is a fresh pool allocation of PAGES_PER_CPU identity-mapped pages;
        // the GDT (40 bytes) and the TSS (104 bytes at +64) fit its first page.
        unsafe {
            core::ptr::write(gdt as *mut [u64; GDT_ENTRIES], descriptors::gdt(tss));
            core::ptr::write(tss as *mut Tss, Tss::with_ist(ist));
        }
        Ok(HostCpu {
            apic_id,
            gdt,
            tss,
            stack_top,
        })
    }

    /// Switch this CPU to the host GDT, segments, TSS, IDT and page tables; returns what was
    /// loaded before. Interrupts must be off (the host IDT treats every vector as fatal).
    ///
    /// # Safety
    /// Must run on the CPU this `HostCpu` belongs to, at CPL 0 with interrupts disabled,
    /// after [`init`]. The code, stack and data in use must be identity mapped below the
    /// host map's top (true for all RAM).
    pub unsafe fn load(&self) -> Result<FirmwareContext, HostEnvError> {
        // SAFETY: the caller upholds `load`'s contract, which includes `load_tables`'.
        unsafe { self.load_tables(true) }
    }

    /// `load`, optionally without the task register: `ltr` cannot be undone (a null TR
    /// cannot be loaded back), so the self test leaves TR alone.
    ///
    /// # Safety
    /// As [`HostCpu::load`].
    unsafe fn load_tables(&self, with_tr: bool) -> Result<FirmwareContext, HostEnvError> {
        let (cr3, idt) = (host_cr3(), host_idt());
        if cr3 == 0 || idt == 0 {
            return Err(HostEnvError::NotInitialised);
        }
        // SAFETY: CPL 0 per the contract; reads only.
        let before = unsafe { capture() };
        // Mark the TSS available again, in case this CPU loaded it before (ltr sets busy).
        let [tss_lo, _] = descriptors::tss_descriptor(self.tss);
        let gdtr = DescriptorTablePointer {
            limit: (GDT_ENTRIES * 8 - 1) as u16,
            base: self.gdt,
        };
        let idtr = DescriptorTablePointer {
            limit: 256 * 16 - 1,
            base: idt,
        };
        // SAFETY: the GDT/TSS/IDT were built by `new`/`init` in pool pages that live forever;
        // selectors name the entries `descriptors::gdt` defines; the host map covers all RAM.
        unsafe {
            core::ptr::write_volatile((self.gdt + u64::from(HOST_TR)) as *mut u64, tss_lo);
            instructions::lgdt(&gdtr);
            instructions::reload_segments(HOST_CS, HOST_DS);
            if with_tr {
                instructions::ltr(HOST_TR);
            }
            instructions::lidt(&idtr);
            instructions::write_cr3(cr3);
        }
        Ok(before)
    }
}

const IA32_EFER: u32 = 0xC000_0080;

/// Read the current descriptor tables, control registers, selectors and the MSRs of
/// [`ContextMsrs`] (before anything reloads FS or GS, which clears their bases).
///
/// # Safety
/// CPL 0.
pub unsafe fn capture() -> FirmwareContext {
    use instructions::rdmsr;
    // SAFETY: CPL 0 per the contract; all are reads of architectural registers and MSRs
    // every x86-64 CPU has.
    unsafe {
        FirmwareContext {
            gdtr: instructions::sgdt(),
            idtr: instructions::sidt(),
            cr0: instructions::read_cr0(),
            cr3: instructions::read_cr3(),
            cr4: instructions::read_cr4(),
            efer: rdmsr(IA32_EFER),
            selectors: instructions::read_selectors(),
            tr: instructions::str(),
            ldtr: instructions::sldt(),
            msrs: ContextMsrs {
                fs_base: rdmsr(0xc000_0100),
                gs_base: rdmsr(0xc000_0101),
                kernel_gs_base: rdmsr(0xc000_0102),
                pat: rdmsr(0x277),
                star: rdmsr(0xc000_0081),
                lstar: rdmsr(0xc000_0082),
                cstar: rdmsr(0xc000_0083),
                sfmask: rdmsr(0xc000_0084),
                sysenter_cs: rdmsr(0x174),
                sysenter_esp: rdmsr(0x175),
                sysenter_eip: rdmsr(0x176),
                debugctl: rdmsr(0x1d9),
                dr7: instructions::read_dr7(),
            },
        }
    }
}

impl FirmwareContext {
    /// Go back to the captured GDT, segments, IDT and CR3 (TR stays: a null TR cannot be
    /// loaded, and 64-bit firmware without IST gates never uses it).
    ///
    /// # Safety
    /// On the CPU it was captured on, with interrupts off, while the captured tables and
    /// page tables are still valid (before the OS reclaims boot-services memory).
    pub unsafe fn restore(&self) {
        // SAFETY: the caller upholds the contract; these are the firmware's own values.
        unsafe {
            instructions::lgdt(&self.gdtr);
            instructions::reload_segments(self.selectors[0], self.selectors[1]);
            instructions::lidt(&self.idtr);
            instructions::write_cr3(self.cr3);
        }
    }
}

/// A function that runs on a fresh stack and never returns (System V convention on every
/// target, matching `host_entry.S`).
pub type StackEntry = extern "sysv64" fn(*mut c_void) -> !;

/// Continue on the stack at `top`, calling `entry(arg)`.
///
/// # Safety
/// `top` must be the top of a stack nothing else uses, identity mapped and large enough for
/// `entry`; everything on the current stack is abandoned (no destructors run).
pub unsafe fn switch_stack(top: u64, entry: StackEntry, arg: *mut c_void) -> ! {
    extern "sysv64" {
        fn nexus_switch_stack(top: u64, entry: StackEntry, arg: *mut c_void) -> !;
    }
    // SAFETY: the caller upholds the contract; `host_entry.S` implements the switch.
    unsafe { nexus_switch_stack(top, entry, arg) }
}

/// Load the host environment on this CPU (all but TR) and go back to the firmware's, with
/// interrupts off in between: proves the GDT/IDT/CR3 are loadable before a backend relies
/// on them, and leaves the CPU exactly as the firmware had it.
///
/// # Safety
/// CPL 0, after [`init`], before the firmware's tables are reclaimed.
pub unsafe fn self_test(cpu: &HostCpu) -> Result<FirmwareContext, HostEnvError> {
    let were_enabled = instructions::interrupts_enabled();
    // SAFETY: CPL 0; interrupts are re-enabled below only if they were on.
    unsafe { instructions::cli() };
    // SAFETY: interrupts are off, `init` ran (checked by `load_tables`), this is the CPU's
    // own state.
    let result = unsafe { cpu.load_tables(false) };
    let after = if result.is_ok() {
        // SAFETY: CPL 0; reads only.
        Some(unsafe { capture() })
    } else {
        None
    };
    if let Ok(fw) = &result {
        // SAFETY: same CPU, interrupts still off, firmware tables still valid.
        unsafe { fw.restore() };
    }
    if were_enabled {
        // SAFETY: the firmware's IDT is back in place.
        unsafe { instructions::sti() };
    }
    let fw = result?;
    match after {
        Some(a)
            if a.gdtr.base == cpu.gdt
                && a.selectors[0] == HOST_CS
                && a.tr == fw.tr
                && a.cr3 == host_cr3() =>
        {
            Ok(fw)
        }
        _ => Err(HostEnvError::SelfTest),
    }
}
