//! The VMX implementation of the backend-neutral [`Vcpu`] trait.
//!
//! [`VmxCpu::enable`] puts one physical CPU into VMX root operation;
//! [`VmxVcpu`] is one guest CPU (its VMCS, its registers). The entry/exit path
//! is `vmx_entry.S`. Guest state that the generic code reads after an exit is
//! cached here so the trait accessors never touch the VMCS; dirty values are
//! written back just before the next entry.

use super::ap_state;
use super::controls::{self, ControlError, Controls, VmxCapabilities};
use super::cr_write::{self, CrState};
use super::decode::{self, RawExit};
use super::ept::EptCaps;
use super::host::HostState;
use super::instructions::{self as vmx, InvEptType, InvVpidType};
use super::vm_error::{self, VmFail};
use super::vmcs::*;
use crate::exit::{ExitReason, VmExit};
use crate::mem::PhysMem;
use crate::mitigations::{EntryBarrier, EntryFlush};
use crate::partition::guest_setup::GuestStart;
use crate::platform::instructions::{rdmsr, read_cr0, read_cr4, write_cr0, write_cr4, wrmsr};
use crate::vcpu::{init_state, CpuMode, Gpr, Gprs, Vcpu};
use crate::xcr0::{self, HostXcr0, Xcr0Switch};
use core::fmt;

core::arch::global_asm!(include_str!("vmx_entry.S"));

extern "sysv64" {
    fn nexus_vmx_run(gprs: *mut Gprs, launched: u64) -> u64;
    fn nexus_vmx_exit();
}

extern "sysv64" {
    /// IRET to the next instruction: ends the NMI blocking a VM exit caused by an NMI
    /// leaves in VMX root operation.
    fn nexus_vmx_unblock_nmis();
}

const MSR_FEATURE_CONTROL: u32 = 0x3A;
const FC_LOCK: u64 = 1 << 0;
const FC_VMXON_OUTSIDE_SMX: u64 = 1 << 2;
const CR4_VMXE: u64 = 1 << 13;
const EFER_LMA: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;

/// Why VMX could not be used or a vCPU could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmxError {
    /// CPUID.1:ECX.VMX is clear.
    NoVmx,
    /// IA32_FEATURE_CONTROL is locked with VMXON outside SMX disabled.
    DisabledByFirmware,
    Controls(ControlError),
    /// EPT lacks 4-level walks or write-back paging structures.
    EptUnsupported,
    NoMemory,
    /// A VMX instruction failed while setting up.
    Instruction {
        what: &'static str,
        fail: VmFail,
    },
}

impl fmt::Display for VmxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmxError::NoVmx => f.write_str("the CPU does not report VMX (CPUID.1:ECX bit 5)"),
            VmxError::DisabledByFirmware => f.write_str(
                "VMX is disabled by the firmware (IA32_FEATURE_CONTROL locked without VMXON outside SMX)",
            ),
            VmxError::Controls(e) => write!(f, "{e}"),
            VmxError::EptUnsupported => {
                f.write_str("EPT lacks 4-level page walks or write-back paging structures")
            }
            VmxError::NoMemory => f.write_str("out of memory for VMX structures"),
            VmxError::Instruction { what, fail } => write!(f, "{what} failed: {fail}"),
        }
    }
}

/// A physical CPU in VMX root operation.
pub struct VmxCpu {
    pub caps: VmxCapabilities,
    pub controls: Controls,
    pub vmxon_pa: u64,
}

impl VmxCpu {
    /// Enable VMX on the running CPU: feature control (set and lock it when
    /// the firmware left it unlocked, as OVMF under Bochs does), CR0/CR4 fixed
    /// bits, VMXON.
    ///
    /// # Safety
    /// Runs once per CPU, on that CPU, in ring 0 with the hypervisor's host
    /// environment loaded; `mem` hands out identity-mapped frames.
    pub unsafe fn enable(mem: &mut impl PhysMem) -> Result<VmxCpu, VmxError> {
        if vmx::cpuid(1, 0)[2] & (1 << 5) == 0 {
            return Err(VmxError::NoVmx);
        }
        // SAFETY: architectural MSRs on a VMX-capable CPU (checked above).
        unsafe {
            let fc = rdmsr(MSR_FEATURE_CONTROL);
            if fc & FC_LOCK == 0 {
                wrmsr(MSR_FEATURE_CONTROL, fc | FC_LOCK | FC_VMXON_OUTSIDE_SMX);
            } else if fc & FC_VMXON_OUTSIDE_SMX == 0 {
                return Err(VmxError::DisabledByFirmware);
            }
        }
        // SAFETY: the capability MSRs exist on VMX CPUs; `read` only reads the
        // TRUE_/secondary/EPT MSRs when IA32_VMX_BASIC/allowed-1 bits say they exist.
        let caps = VmxCapabilities::read(|m| unsafe { rdmsr(m) });
        let controls = controls::nexus_controls(&caps).map_err(VmxError::Controls)?;
        let ept = EptCaps(caps.ept_vpid);
        if !ept.walk_length_4() || !ept.wb_paging_structures() {
            return Err(VmxError::EptUnsupported);
        }
        // SAFETY: setting CR4.VMXE and the fixed bits keeps paging and protection
        // as they are (the fixed bits are ones a running 64-bit OS already has: PE, PG, NE).
        unsafe {
            write_cr4(caps.fix_cr4(read_cr4() | CR4_VMXE));
            write_cr0(caps.fix_cr0(read_cr0(), false));
        }
        let vmxon_pa = mem.alloc_frame().ok_or(VmxError::NoMemory)?;
        mem.write(vmxon_pa, &caps.revision_id().to_le_bytes());
        // SAFETY: VMXE and the fixed bits are set, feature control allows VMXON,
        // and the region is a fresh page with the revision identifier.
        unsafe { vmx::vmxon(vmxon_pa) }.map_err(|fail| VmxError::Instruction {
            what: "VMXON",
            fail,
        })?;
        Ok(VmxCpu {
            caps,
            controls,
            vmxon_pa,
        })
    }

    pub fn ept_caps(&self) -> EptCaps {
        EptCaps(self.caps.ept_vpid)
    }

    /// Invalidate cached guest-physical translations of one EPT hierarchy.
    pub fn invalidate_ept(&self, eptp: u64) -> Result<(), VmxError> {
        let caps = self.ept_caps();
        let kind = if caps.invept_single() {
            InvEptType::SingleContext
        } else {
            InvEptType::AllContexts
        };
        if !caps.invept() {
            return Ok(()); // without INVEPT, VMXON/VMCLEAR flushes are all there is
        }
        // SAFETY: in VMX root operation (self exists); the type is supported.
        unsafe { vmx::invept(kind, eptp) }.map_err(|fail| VmxError::Instruction {
            what: "INVEPT",
            fail,
        })
    }

    /// Invalidate linear translations tagged with `vpid`.
    pub fn invalidate_vpid(&self, vpid: u16) -> Result<(), VmxError> {
        let caps = self.ept_caps();
        if !caps.invvpid() {
            return Ok(());
        }
        let kind = if caps.invvpid_single() {
            InvVpidType::SingleContext
        } else {
            InvVpidType::AllContexts
        };
        // SAFETY: in VMX root operation; vpid is non-zero (callers use partition id + 1).
        unsafe { vmx::invvpid(kind, vpid, 0) }.map_err(|fail| VmxError::Instruction {
            what: "INVVPID",
            fail,
        })
    }
}

/// A partition's MSR bitmap and I/O bitmaps A and B (physical addresses).
#[derive(Debug, Clone, Copy)]
pub struct Bitmaps {
    pub msr: u64,
    pub io_a: u64,
    pub io_b: u64,
}

/// What a new vCPU's VMCS points at and which role-dependent exits it takes.
#[derive(Debug, Clone, Copy)]
pub struct VcpuSetup {
    /// The VMCS page (this CPU's).
    pub vmcs: u64,
    pub eptp: u64,
    /// Non-zero, unique per partition.
    pub vpid: u16,
    pub bitmaps: Bitmaps,
    /// HLT exits (test guests, proxies).
    pub hlt: bool,
    /// An untrusted guest (a test partition): RDPMC, MONITOR/MWAIT and #MC exit too, and
    /// entries flush what this CPU needs flushed (`crate::mitigations`).
    pub untrusted: bool,
    /// External interrupts exit (the deadline timer of test partitions and proxies).
    pub interrupts: bool,
}

/// One guest CPU.
pub struct VmxVcpu {
    vmcs_pa: u64,
    gprs: Gprs,
    launched: bool,
    rip: u64,
    rsp: u64,
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    cs_ar: u32,
    ss_ar: u32,
    dirty_rip: bool,
    dirty_rsp: bool,
    dirty_efer: bool,
    pending_event: Option<(u32, u32)>,
    entry_controls: u32,
    cr0_fixed0: u64,
    cr0_fixed1: u64,
    cr4_fixed0: u64,
    cr4_fixed1: u64,
    /// The CR0/CR4 guest/host masks: bits whose guest view is the read shadow.
    cr0_mask: u64,
    cr4_mask: u64,
    /// Unrestricted guest is on: the guest may run with CR0.PE/PG clear (INIT state).
    unrestricted: bool,
    /// IA32_VMX_MISC allows entering in wait-for-SIPI (hardware SIPI exits).
    hw_wait_for_sipi: bool,
    /// The guest's XCR0, loaded around each entry.
    xcr0: Xcr0Switch,
    /// An NMI waits for delivery (see [`Vcpu::queue_nmi`]).
    nmi_pending: bool,
    /// The primary processor-based controls as last written (NMI-window exiting toggles).
    proc_controls: u32,
    /// Flushes before each entry (L1D flush or VERW for test partitions, IBPB on a switch).
    barrier: EntryBarrier,
    /// The last VM-instruction failure of VMLAUNCH/VMRESUME, for the log.
    pub last_failure: Option<VmFail>,
    pub last_raw: RawExit,
}

fn setup_fail(what: &'static str) -> impl Fn(VmFail) -> VmxError {
    move |fail| VmxError::Instruction { what, fail }
}

/// A segment's VMCS image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    pub ar: u32,
}

/// The (selector, limit, access rights, base) fields of one segment register.
pub type SegmentFields = (u32, u32, u32, u32);
pub const SEG_CS: SegmentFields = (
    guest16::CS_SELECTOR,
    guest32::CS_LIMIT,
    guest32::CS_AR,
    guestn::CS_BASE,
);
pub const SEG_SS: SegmentFields = (
    guest16::SS_SELECTOR,
    guest32::SS_LIMIT,
    guest32::SS_AR,
    guestn::SS_BASE,
);
pub const SEG_DS: SegmentFields = (
    guest16::DS_SELECTOR,
    guest32::DS_LIMIT,
    guest32::DS_AR,
    guestn::DS_BASE,
);
pub const SEG_ES: SegmentFields = (
    guest16::ES_SELECTOR,
    guest32::ES_LIMIT,
    guest32::ES_AR,
    guestn::ES_BASE,
);
pub const SEG_FS: SegmentFields = (
    guest16::FS_SELECTOR,
    guest32::FS_LIMIT,
    guest32::FS_AR,
    guestn::FS_BASE,
);
pub const SEG_GS: SegmentFields = (
    guest16::GS_SELECTOR,
    guest32::GS_LIMIT,
    guest32::GS_AR,
    guestn::GS_BASE,
);
pub const SEG_TR: SegmentFields = (
    guest16::TR_SELECTOR,
    guest32::TR_LIMIT,
    guest32::TR_AR,
    guestn::TR_BASE,
);
pub const SEG_LDTR: SegmentFields = (
    guest16::LDTR_SELECTOR,
    guest32::LDTR_LIMIT,
    guest32::LDTR_AR,
    guestn::LDTR_BASE,
);

/// # Safety
/// A VMCS must be current.
unsafe fn write_segment(f: SegmentFields, s: Segment) -> Result<(), VmxError> {
    // SAFETY: the caller guarantees a current VMCS.
    unsafe {
        write(f.0, s.selector as u64)?;
        write(f.1, s.limit as u64)?;
        write(f.2, s.ar as u64)?;
        write(f.3, s.base)
    }
}

/// VMWRITE, mapping a failure to a setup error naming the field.
///
/// # Safety
/// A VMCS must be current.
unsafe fn write(field: u32, value: u64) -> Result<(), VmxError> {
    // SAFETY: the caller guarantees a current VMCS.
    unsafe { vmx::vmwrite(field, value) }.map_err(setup_fail("VMWRITE"))
}

impl VmxVcpu {
    /// A 64-bit test guest at `start`: host state from this CPU, guest state for flat 64-bit
    /// segments.
    ///
    /// # Safety
    /// On the CPU of `cpu` (in VMX root operation), with its final host environment loaded;
    /// `setup.vmcs` is this CPU's VMCS page (no vCPU of it runs any more); the EPT and the
    /// bitmaps stay alive while this vCPU runs.
    pub unsafe fn new_long_mode(
        cpu: &VmxCpu,
        setup: &VcpuSetup,
        start: GuestStart,
    ) -> Result<Self, VmxError> {
        let cr0 = cpu.caps.fix_cr0(0x8000_0031, false); // PG | NE | ET | PE
        let cr4_shadow: u64 = 0x20; // PAE
        let efer = EFER_LMA | EFER_LME;
        // SAFETY: the caller's contract.
        let mut v = unsafe { Self::init_vmcs(cpu, setup, cr0, cr4_shadow)? };
        // SAFETY: `init_vmcs` left this vCPU's VMCS current.
        unsafe {
            for (field, value) in [
                (guestn::CR3, start.cr3),
                (guestn::RSP, start.rsp),
                (guestn::RIP, start.rip),
                (guestn::RFLAGS, 0x2),
                (guest64::EFER, efer),
                (guest64::PAT, super::memtype::Pat::POWER_ON.0),
                (guest32::SYSENTER_CS, 0),
                (guestn::SYSENTER_ESP, 0),
                (guestn::SYSENTER_EIP, 0),
                (guestn::GDTR_BASE, start.segments.map_or(0, |b| b.gdt_base)),
                (
                    guest32::GDTR_LIMIT,
                    start.segments.map_or(0xffff, |b| b.gdt_limit as u64),
                ),
                (guestn::IDTR_BASE, 0),
                (guest32::IDTR_LIMIT, 0),
            ] {
                write(field, value)?;
            }
            // Flat segments: 64-bit code, data, a busy 64-bit TSS, no LDT; the selectors the
            // guest's own GDT gives them, if it has one.
            let (code_sel, data_sel) = start.segments.map_or((0x08, 0x10), |b| (b.code, b.data));
            let data = Segment {
                selector: data_sel,
                base: 0,
                limit: 0xffff_ffff,
                ar: 0xc093,
            };
            let segs = [
                (
                    SEG_CS,
                    Segment {
                        selector: code_sel,
                        base: 0,
                        limit: 0xffff_ffff,
                        ar: 0xa09b,
                    },
                ),
                (SEG_SS, data),
                (SEG_DS, data),
                (SEG_ES, data),
                (SEG_FS, data),
                (SEG_GS, data),
                (
                    SEG_TR,
                    Segment {
                        selector: 0x18,
                        base: 0,
                        limit: 0x67,
                        ar: 0x008b,
                    },
                ),
                (
                    SEG_LDTR,
                    Segment {
                        selector: 0,
                        base: 0,
                        limit: 0,
                        ar: AR_UNUSABLE,
                    },
                ),
            ];
            for (fields, seg) in segs {
                write_segment(fields, seg)?;
            }
        }
        v.rip = start.rip;
        v.rsp = start.rsp;
        v.cr3 = start.cr3;
        v.efer = efer;
        v.cs_ar = 0xa09b;
        v.ss_ar = 0xc093;
        cpu.invalidate_ept(setup.eptp)?;
        cpu.invalidate_vpid(setup.vpid)?;
        Ok(v)
    }

    /// A vCPU in the state INIT leaves, waiting for a start-up IPI (an AP).
    ///
    /// # Safety
    /// As [`VmxVcpu::new_long_mode`].
    pub unsafe fn new_reset(cpu: &VmxCpu, setup: &VcpuSetup) -> Result<Self, VmxError> {
        let parked = GuestStart {
            cr3: 0,
            rsp: 0,
            rip: 0,
            segments: None,
        };
        // SAFETY: the caller's contract.
        let mut v = unsafe { Self::new_long_mode(cpu, setup, parked)? };
        v.init_reset().map_err(|_| VmxError::Instruction {
            what: "INIT state (needs unrestricted guest)",
            fail: VmFail::Invalid,
        })?;
        Ok(v)
    }

    /// A vCPU whose guest state is the firmware's (the boot CPU's blue-pill): `fw` is what
    /// the boot CPU had loaded before the host environment replaced it (host state comes
    /// from the running CPU); the guest continues at `rip` with `rsp` and `rflags`.
    ///
    /// # Safety
    /// As [`VmxVcpu::new_long_mode`]; `fw`'s GDT is still identity mapped and readable.
    pub unsafe fn new_current(
        cpu: &VmxCpu,
        setup: &VcpuSetup,
        fw: &crate::platform::host_cpu::FirmwareContext,
        rip: u64,
        rsp: u64,
        rflags: u64,
    ) -> Result<Self, VmxError> {
        let (cr0, cr4) = (fw.cr0, fw.cr4);
        // SAFETY: the caller's contract.
        let mut v = unsafe { Self::init_vmcs(cpu, setup, cr0, cr4 & !CR4_VMXE)? };
        // SAFETY: the VMCS is current; the firmware's GDT is readable (caller's contract).
        let captured = unsafe { super::capture::firmware_guest_state(fw) };
        // SAFETY: as above.
        unsafe {
            for (field, value) in captured.fields {
                write(field, value)?;
            }
            for (fields, seg) in captured.segments {
                write_segment(fields, seg)?;
            }
            write(guestn::RIP, rip)?;
            write(guestn::RSP, rsp)?;
            write(guestn::RFLAGS, rflags)?;
        }
        v.rip = rip;
        v.rsp = rsp;
        v.cr3 = captured.cr3;
        v.efer = captured.efer;
        // SAFETY: CPL 0 on the boot CPU, before the hand-over: the firmware's XCR0.
        v.xcr0 = Xcr0Switch::new(unsafe { HostXcr0::current_or_reset() });
        v.cs_ar = captured.segments[0].1.ar;
        v.ss_ar = captured.segments[1].1.ar;
        cpu.invalidate_ept(setup.eptp)?;
        cpu.invalidate_vpid(setup.vpid)?;
        Ok(v)
    }

    /// The VMCS with everything but the guest's registers and segments:
    /// bitmaps, host state of this CPU, controls, EPTP, VPID, CR masks and
    /// shadows, fixed guest fields. Leaves the VMCS current.
    ///
    /// # Safety
    /// As [`VmxVcpu::new_long_mode`].
    unsafe fn init_vmcs(
        cpu: &VmxCpu,
        setup: &VcpuSetup,
        cr0_guest: u64,
        cr4_shadow: u64,
    ) -> Result<Self, VmxError> {
        let vmcs = setup.vmcs;
        let mut c = cpu.controls;
        let proc = cpu.caps.capability(controls::ControlField::ProcBased);
        if !setup.hlt && proc.must_be_one & controls::proc::HLT_EXITING == 0 {
            c.proc &= !controls::proc::HLT_EXITING;
        }
        if !setup.untrusted {
            // The primary keeps RDPMC (perf) and MONITOR/MWAIT (its idle loop) native;
            // WBINVD and INVD still exit (the host writes back for it).
            c.proc &= !(controls::proc::UNTRUSTED_ONLY & !proc.must_be_one);
        }
        let pin = cpu.caps.capability(controls::ControlField::PinBased);
        if setup.interrupts && pin.may_be_one & controls::pin::EXTERNAL_INTERRUPT_EXITING != 0 {
            c.pin |= controls::pin::EXTERNAL_INTERRUPT_EXITING;
        }
        // SAFETY: VMX root operation on this CPU; the VMCS page is this CPU's, and the
        // revision identifier goes into its first dword before VMCLEAR.
        unsafe {
            core::ptr::write_bytes(vmcs as *mut u8, 0, 4096);
            core::ptr::write_volatile(vmcs as *mut u32, cpu.caps.revision_id());
            vmx::vmclear(vmcs).map_err(setup_fail("VMCLEAR"))?;
            vmx::vmptrld(vmcs).map_err(setup_fail("VMPTRLD"))?;
        }
        let cr0 = cpu.caps.fix_cr0(cr0_guest, false);
        let cr4 = cpu.caps.fix_cr4(cr4_shadow);
        let unrestricted = c.proc2 & controls::proc2::UNRESTRICTED_GUEST != 0;
        let cr0_mask = cpu.caps.cr0_fixed0 | !cpu.caps.cr0_fixed1;
        let cr4_mask = cpu.caps.cr4_fixed0 | !cpu.caps.cr4_fixed1;
        // SAFETY: the VMCS is current (loaded above).
        unsafe {
            let host = HostState::capture(nexus_vmx_exit as *const () as u64);
            for (field, value) in host.fields {
                write(field, value)?;
            }
            for (field, value) in [
                (ctrl32::PIN_BASED, c.pin as u64),
                (ctrl32::PROC_BASED, c.proc as u64),
                (ctrl32::PROC_BASED2, c.proc2 as u64),
                (ctrl32::EXIT_CONTROLS, c.exit as u64),
                (ctrl32::ENTRY_CONTROLS, c.entry as u64),
                // A machine check in a test guest exits (reported as its stop); the
                // primary's #MC goes to its own handler.
                (
                    ctrl32::EXCEPTION_BITMAP,
                    if setup.untrusted {
                        1 << crate::vcpu::vector::MC
                    } else {
                        0
                    },
                ),
                (ctrl32::CR3_TARGET_COUNT, 0),
                (ctrl64::MSR_BITMAP, setup.bitmaps.msr),
                (ctrl64::IO_BITMAP_A, setup.bitmaps.io_a),
                (ctrl64::IO_BITMAP_B, setup.bitmaps.io_b),
                (ctrl64::EPT_POINTER, setup.eptp),
                (ctrl16::VPID, setup.vpid as u64),
                // The guest owns CR0/CR4 except the bits VMX fixes; those read
                // as the guest wrote them (CR4.VMXE reads as 0).
                (ctrln::CR0_GUEST_HOST_MASK, cr0_mask),
                (ctrln::CR0_READ_SHADOW, cr0_guest),
                (ctrln::CR4_GUEST_HOST_MASK, cr4_mask),
                (ctrln::CR4_READ_SHADOW, cr4_shadow),
                (guestn::CR0, cr0),
                (guestn::CR4, cr4),
                (guestn::DR7, 0x400),
                (guest64::VMCS_LINK_POINTER, u64::MAX),
                (guest32::INTERRUPTIBILITY, 0),
                (guest32::ACTIVITY_STATE, 0),
                (guestn::PENDING_DEBUG, 0),
            ] {
                write(field, value)?;
            }
        }
        Ok(VmxVcpu {
            vmcs_pa: vmcs,
            gprs: Gprs::default(),
            launched: false,
            rip: 0,
            rsp: 0,
            cr0,
            cr3: 0,
            cr4: cr4_shadow,
            efer: 0,
            cs_ar: 0,
            ss_ar: 0,
            dirty_rip: false,
            dirty_rsp: false,
            dirty_efer: false,
            pending_event: None,
            entry_controls: c.entry,
            // With unrestricted guest, PE and PG are the guest's to clear.
            cr0_fixed0: cpu.caps.fix_cr0(0, unrestricted),
            cr0_fixed1: cpu.caps.cr0_fixed1,
            cr4_fixed0: cpu.caps.cr4_fixed0,
            cr4_fixed1: cpu.caps.cr4_fixed1,
            cr0_mask,
            cr4_mask,
            unrestricted,
            hw_wait_for_sipi: cpu.caps.misc & super::ap_state::MISC_WAIT_FOR_SIPI != 0,
            // A test guest starts as after RESET; `new_current` keeps the firmware's.
            xcr0: Xcr0Switch::new(xcr0::RESET),
            nmi_pending: false,
            proc_controls: c.proc,
            // L1D flush or VERW only before entering an untrusted guest; IBPB on a switch.
            barrier: EntryBarrier::new(
                EntryFlush::for_this_cpu(),
                setup.untrusted,
                setup.vpid as u32,
            ),
            last_failure: None,
            last_raw: RawExit::default(),
        })
    }

    /// Write cached changes and the pending event into the current VMCS.
    ///
    /// # Safety
    /// This vCPU's VMCS is current.
    unsafe fn flush(&mut self) -> Result<(), VmFail> {
        // SAFETY: the caller guarantees the VMCS is current.
        unsafe {
            if self.dirty_rip {
                vmx::vmwrite(guestn::RIP, self.rip)?;
            }
            if self.dirty_rsp {
                vmx::vmwrite(guestn::RSP, self.rsp)?;
            }
            if self.dirty_efer {
                vmx::vmwrite(guest64::EFER, self.efer)?;
                // "IA-32e mode guest" must match EFER.LMA at entry.
                let ia32e = controls::entry::IA32E_MODE_GUEST;
                self.entry_controls = if self.efer & EFER_LMA != 0 {
                    self.entry_controls | ia32e
                } else {
                    self.entry_controls & !ia32e
                };
                vmx::vmwrite(ctrl32::ENTRY_CONTROLS, self.entry_controls as u64)?;
            }
            let (mut info, err) = self.pending_event.take().unwrap_or((0, 0));
            // An NMI goes in when nothing else is injected and the guest does not block it
            // (STI, MOV SS or NMI blocking); otherwise NMI-window exiting says when.
            let mut window = false;
            if self.nmi_pending {
                let blocked = vmx::vmread(guest32::INTERRUPTIBILITY)? & 0b1011 != 0;
                if info == 0 && !blocked {
                    // Vector 2, type 2 (NMI), valid.
                    info = 2 | (2 << 8) | (1 << 31);
                    self.nmi_pending = false;
                } else {
                    window = true;
                }
            }
            let proc = if window {
                self.proc_controls | controls::proc::NMI_WINDOW_EXITING
            } else {
                self.proc_controls & !controls::proc::NMI_WINDOW_EXITING
            };
            if proc != self.proc_controls {
                vmx::vmwrite(ctrl32::PROC_BASED, proc as u64)?;
                self.proc_controls = proc;
            }
            vmx::vmwrite(ctrl32::ENTRY_INTERRUPTION_INFO, info as u64)?;
            if info & (1 << 11) != 0 {
                vmx::vmwrite(ctrl32::ENTRY_EXCEPTION_ERROR_CODE, err as u64)?;
            }
        }
        self.dirty_rip = false;
        self.dirty_rsp = false;
        self.dirty_efer = false;
        Ok(())
    }

    /// Read the exit fields and refresh the cached guest state.
    ///
    /// # Safety
    /// This vCPU's VMCS is current and the guest just exited.
    unsafe fn read_exit(&mut self) -> Result<RawExit, VmFail> {
        // SAFETY: the caller guarantees the VMCS is current.
        unsafe {
            let raw = RawExit {
                reason: vmx::vmread(ro32::EXIT_REASON)? as u32,
                qualification: vmx::vmread(ron::EXIT_QUALIFICATION)?,
                insn_len: vmx::vmread(ro32::EXIT_INSTRUCTION_LEN)? as u32,
                guest_physical: vmx::vmread(ro64::GUEST_PHYSICAL_ADDRESS)?,
                interruption_info: vmx::vmread(ro32::EXIT_INTERRUPTION_INFO)? as u32,
                interruption_error: vmx::vmread(ro32::EXIT_INTERRUPTION_ERROR_CODE)? as u32,
                vectoring_info: vmx::vmread(ro32::IDT_VECTORING_INFO)? as u32,
                vectoring_error: vmx::vmread(ro32::IDT_VECTORING_ERROR_CODE)? as u32,
            };
            self.rip = vmx::vmread(guestn::RIP)?;
            self.rsp = vmx::vmread(guestn::RSP)?;
            self.cr0 = vmx::vmread(guestn::CR0)?;
            self.cr3 = vmx::vmread(guestn::CR3)?;
            // The guest's view: the shadow for masked bits, the register for the rest.
            self.cr4 = (vmx::vmread(guestn::CR4)? & !self.cr4_mask)
                | (vmx::vmread(ctrln::CR4_READ_SHADOW)? & self.cr4_mask);
            self.efer = vmx::vmread(guest64::EFER)?;
            self.cs_ar = vmx::vmread(guest32::CS_AR)? as u32;
            self.ss_ar = vmx::vmread(guest32::SS_AR)? as u32;
            Ok(raw)
        }
    }

    /// Exits only VMX has and that only the backend can complete: the NMI window
    /// (the next entry injects the pending NMI), MOV to CR0/CR4 and LMSW touching bits VMX owns, checked as the processor checks
    /// them ([`cr_write`]: #GP(0) with RIP kept for what it refuses; EFER.LMA and
    /// "IA-32e mode guest" follow CR0.PG). Returns true when handled, so `run`
    /// re-enters the guest. (XSETBV, which always exits, is handled by the
    /// shared handler.)
    fn emulate_internal(&mut self, raw: &RawExit) -> bool {
        use super::exit_reason::{CrAccess, CrAccessType};
        match raw.reason {
            // NMI window open: the next entry injects the pending NMI.
            8 => return true,
            28 => {}
            _ => return false,
        }
        let q = CrAccess::decode(raw.qualification);
        let gpr = |v: &Self| {
            if q.gpr == 4 {
                v.rsp
            } else {
                v.gprs.0[q.gpr as usize]
            }
        };
        // SAFETY: called from `run` with this VMCS current.
        let Ok(cr0_shadow) = (unsafe { vmx::vmread(ctrln::CR0_READ_SHADOW) }) else {
            return false;
        };
        let state = CrState {
            cr0: (self.cr0 & !self.cr0_mask) | (cr0_shadow & self.cr0_mask),
            cr3: self.cr3,
            cr4: self.cr4,
            efer: self.efer,
            cs_l: self.cs_ar & (1 << 13) != 0,
        };
        let (cr, result) = match (q.access, q.cr) {
            (CrAccessType::MovToCr, 0) => (0, cr_write::cr0_write(&state, gpr(self))),
            (CrAccessType::MovToCr, 4) => {
                (4, cr_write::cr4_write(&state, gpr(self), self.cr4_fixed1))
            }
            (CrAccessType::Lmsw { source }, _) => (0, cr_write::lmsw(&state, source)),
            _ => return false,
        };
        let w = match result {
            Ok(w) => w,
            Err(_) => {
                self.inject_exception(crate::vcpu::vector::GP, Some(0));
                return true;
            }
        };
        // The guest's value goes to the read shadow; the processor gets it with
        // the VMX-fixed bits forced.
        let (field, shadow, hw) = if cr == 0 {
            (
                guestn::CR0,
                ctrln::CR0_READ_SHADOW,
                (w.value | self.cr0_fixed0) & self.cr0_fixed1,
            )
        } else {
            (
                guestn::CR4,
                ctrln::CR4_READ_SHADOW,
                (w.value | self.cr4_fixed0) & self.cr4_fixed1,
            )
        };
        // SAFETY: called from `run` with this VMCS current.
        let ok =
            unsafe { vmx::vmwrite(field, hw).is_ok() && vmx::vmwrite(shadow, w.value).is_ok() };
        if !ok {
            return false;
        }
        if cr == 0 {
            self.cr0 = hw;
            // Without unrestricted guest the processor keeps PG set whatever the
            // guest wrote, so IA-32e mode stays as it is.
            if self.unrestricted && w.efer != self.efer {
                self.efer = w.efer;
                self.dirty_efer = true;
            }
        } else {
            self.cr4 = w.value;
        }
        self.set_rip(self.rip.wrapping_add(raw.insn_len as u64));
        true
    }

    /// A log line for an exit the shared handler stops on: failed entries with
    /// their VM-instruction error, unknown exits with their SDM name.
    pub fn describe_unusual(reason: &ExitReason) -> Unusual {
        Unusual(*reason)
    }

    /// A readable description of an `EntryFailed` code from this backend.
    pub fn describe_entry_failure(code: u64) -> EntryFailure {
        EntryFailure(code)
    }
}

/// Display for [`ExitReason::EntryFailed`] codes produced by the VMX backend:
/// bit 32 set = VMLAUNCH/VMRESUME failed with the VM-instruction error in the
/// low bits (0 = VMfailInvalid); otherwise the raw exit reason of a failed entry.
pub struct EntryFailure(pub u64);

pub const ENTRY_VMFAIL: u64 = 1 << 32;

impl fmt::Display for EntryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 & ENTRY_VMFAIL != 0 {
            let n = self.0 as u32;
            if n == 0 {
                f.write_str("VM entry failed: VMfailInvalid (no current VMCS)")
            } else {
                write!(
                    f,
                    "VM entry failed: VM-instruction error {}: {}",
                    n,
                    vm_error::describe(n)
                )
            }
        } else {
            let r = super::exit_reason::ExitReason::from_raw(self.0 as u32);
            write!(f, "VM entry failed: exit reason {} ({})", r.basic, r.name())
        }
    }
}

/// Display for [`VmxVcpu::describe_unusual`].
pub struct Unusual(pub ExitReason);

impl fmt::Display for Unusual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ExitReason::EntryFailed { code } => write!(f, "{}", EntryFailure(code)),
            ExitReason::Unknown { code, info1, info2 } => {
                let r = super::exit_reason::ExitReason::from_raw(code as u32);
                write!(
                    f,
                    "unhandled VM exit {} ({}), qualification {info1:#x}, guest-physical {info2:#x}",
                    r.basic,
                    r.name()
                )
            }
            other => write!(f, "VM exit {}", other.name()),
        }
    }
}

impl Vcpu for VmxVcpu {
    fn run(&mut self) -> VmExit {
        loop {
            // SAFETY: this vCPU was created on this CPU in VMX root operation;
            // its VMCS is loaded before anything touches it. Host mode at CPL 0;
            // the guest's XCR0 is its initial value or one `set_xcr0` got after the checks;
            // the barrier's flushes were decided from this CPU's CPUID when the vCPU was made.
            let entered = unsafe {
                vmx::vmptrld(self.vmcs_pa)
                    .and_then(|_| self.flush())
                    .map(|_| {
                        let mut hw = HostXcr0::new();
                        self.xcr0.enter(&mut hw);
                        self.barrier.before_entry();
                        let rc = nexus_vmx_run(&mut self.gprs, self.launched as u64);
                        self.xcr0.leave(&mut hw);
                        rc
                    })
            };
            let rc = match entered {
                Ok(rc) => rc,
                Err(fail) => {
                    self.last_failure = Some(fail);
                    let n = if let VmFail::Valid(n) = fail { n } else { 0 };
                    return VmExit::new(
                        ExitReason::EntryFailed {
                            code: ENTRY_VMFAIL | n as u64,
                        },
                        0,
                    );
                }
            };
            if rc != 0 {
                let n = if rc == 2 {
                    // SAFETY: VMfailValid means the VMCS is current; the error field is readable.
                    unsafe { vmx::vmread(ro32::VM_INSTRUCTION_ERROR) }.unwrap_or(0) as u32
                } else {
                    0
                };
                self.last_failure = Some(if n == 0 {
                    VmFail::Invalid
                } else {
                    VmFail::Valid(n)
                });
                return VmExit::new(
                    ExitReason::EntryFailed {
                        code: ENTRY_VMFAIL | n as u64,
                    },
                    0,
                );
            }
            self.launched = true;
            // SAFETY: the guest just exited; its VMCS is current.
            let raw = match unsafe { self.read_exit() } {
                Ok(raw) => raw,
                Err(fail) => {
                    self.last_failure = Some(fail);
                    return VmExit::new(ExitReason::EntryFailed { code: ENTRY_VMFAIL }, 0);
                }
            };
            self.last_raw = raw;
            // An event the exit interrupted is delivered at the next entry, unless the
            // exit's handler injects something else (its decision about this exit first).
            if let Some(event) = super::event::reinjection(raw.vectoring_info, raw.vectoring_error)
            {
                self.pending_event = Some(event);
            }
            if self.emulate_internal(&raw) {
                continue;
            }
            let exit = decode::decode(&raw);
            if exit.reason == ExitReason::Nmi {
                // The exit consumed the NMI and left NMIs blocked in root operation: note it
                // for the run loop, and IRET to unblock.
                crate::platform::nmi::record(crate::platform::cpu_info::current_apic_id());
                // SAFETY: host mode at CPL 0 on the host stack; the helper IRETs to its own
                // return address with the current CS/SS/RFLAGS.
                unsafe { nexus_vmx_unblock_nmis() };
            }
            return exit;
        }
    }

    fn gpr(&self, r: Gpr) -> u64 {
        if r == Gpr::Rsp {
            self.rsp
        } else {
            self.gprs.get(r)
        }
    }

    fn set_gpr(&mut self, r: Gpr, value: u64) {
        if r == Gpr::Rsp {
            self.rsp = value;
            self.dirty_rsp = true;
        } else {
            self.gprs.set(r, value);
        }
    }

    fn rip(&self) -> u64 {
        self.rip
    }

    fn set_rip(&mut self, rip: u64) {
        self.rip = rip;
        self.dirty_rip = true;
    }

    fn cr3(&self) -> u64 {
        self.cr3
    }

    fn cr4(&self) -> u64 {
        self.cr4
    }

    fn xcr0(&self) -> u64 {
        self.xcr0.guest()
    }

    fn xss(&self) -> u64 {
        xcr0::current_xss()
    }

    fn mode(&self) -> CpuMode {
        if self.cr0 & 1 == 0 {
            CpuMode::Real
        } else if self.efer & EFER_LMA != 0 {
            CpuMode::Long {
                cs_l: self.cs_ar & (1 << 13) != 0,
            }
        } else {
            CpuMode::Protected {
                cs_db: self.cs_ar & (1 << 14) != 0,
                paging: self.cr0 & (1 << 31) != 0,
            }
        }
    }

    fn cpl(&self) -> u8 {
        ((self.ss_ar >> 5) & 3) as u8
    }

    fn cs_base(&self) -> u64 {
        // SAFETY: the exit handler runs right after `run`, with this vCPU's VMCS current.
        unsafe { vmx::vmread(guestn::CS_BASE) }.unwrap_or(0)
    }

    fn queue_nmi(&mut self) {
        self.nmi_pending = true;
    }

    fn efer(&self) -> u64 {
        self.efer
    }

    fn set_efer(&mut self, value: u64) {
        // LMA is the processor's: it follows LME once paging is on.
        let lma = if value & EFER_LME != 0 && self.cr0 & (1 << 31) != 0 {
            EFER_LMA
        } else {
            0
        };
        self.efer = (value & !EFER_LMA) | lma;
        self.dirty_efer = true;
    }

    fn set_xcr0(&mut self, value: u64) {
        self.xcr0.set_guest(value);
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        // No error code in real mode (CR0.PE clear, unrestricted guest): an entry
        // asking for one fails.
        let protected = self.cr0 & cr_write::CR0_PE != 0;
        self.pending_event = Some(cr_write::exception_event(vector, error_code, protected));
    }

    fn init_reset(&mut self) -> Result<(), &'static str> {
        if !self.unrestricted {
            return Err("real mode needs the unrestricted-guest control");
        }
        let cr0 = (init_state::CR0 | self.cr0_fixed0) & self.cr0_fixed1;
        let cr4 = self.cr4_fixed0 & self.cr4_fixed1;
        let fields = ap_state::init_fields(cr0, cr4, self.hw_wait_for_sipi);
        // SAFETY: a VmxVcpu is only used on the CPU where its VMCS is current
        // (exit handling right after `run`, or set-up right after creation).
        let written = unsafe {
            fields.iter().all(|&(f, v)| vmx::vmwrite(f, v).is_ok())
                && ap_state::init_segments()
                    .into_iter()
                    .all(|(f, seg)| write_segment(f, seg).is_ok())
        };
        if !written {
            return Err("VMWRITE of the INIT state failed");
        }
        self.gprs = Gprs::default();
        // EDX after INIT: the processor signature.
        self.gprs.set(Gpr::Rdx, vmx::cpuid(1, 0)[0] as u64);
        self.rip = init_state::RIP;
        self.rsp = 0;
        self.cr0 = cr0;
        self.cr3 = 0;
        self.cr4 = 0;
        self.cs_ar = ap_state::AR_REAL_CODE;
        self.ss_ar = ap_state::AR_REAL_DATA;
        self.dirty_rip = false;
        self.dirty_rsp = false;
        // EFER = 0 also clears the "IA-32e mode guest" entry control at the next entry.
        self.efer = 0;
        self.dirty_efer = true;
        self.pending_event = None;
        Ok(())
    }

    fn sipi_start(&mut self, vector: u8) {
        // SAFETY: as in `init_reset`: this vCPU's VMCS is current on this CPU.
        let ok = unsafe {
            ap_state::sipi_fields(vector)
                .iter()
                .all(|&(f, v)| vmx::vmwrite(f, v).is_ok())
        };
        if ok {
            self.rip = 0;
            self.dirty_rip = false;
        }
        // A failed VMWRITE leaves the vCPU in wait-for-SIPI (or at F000:FFF0,
        // outside a test partition): the next entry reports it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vCPU whose cached state is set by hand (no VMCS behind it): the trait
    /// accessors only read and write that cache.
    fn cached(cr0: u64, efer: u64, cs_ar: u32, ss_ar: u32) -> VmxVcpu {
        VmxVcpu {
            vmcs_pa: 0,
            gprs: Gprs::default(),
            launched: false,
            rip: 0x1000,
            rsp: 0x8000,
            cr0,
            cr3: 0x5000,
            cr4: 0x20,
            efer,
            cs_ar,
            ss_ar,
            dirty_rip: false,
            dirty_rsp: false,
            dirty_efer: false,
            pending_event: None,
            entry_controls: controls::entry::IA32E_MODE_GUEST,
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xffff_ffff,
            cr4_fixed0: 0x2000,
            unrestricted: true,
            hw_wait_for_sipi: true,
            cr4_fixed1: 0x0037_27ff,
            cr0_mask: 0xffff_ffff_8000_0021,
            cr4_mask: 0xffff_ffff_ffc8_f800,
            xcr0: Xcr0Switch::new(xcr0::RESET),
            nmi_pending: false,
            proc_controls: 0,
            barrier: EntryBarrier::new(EntryFlush::default(), true, 1),
            last_failure: None,
            last_raw: RawExit::default(),
        }
    }

    #[test]
    fn mode_and_cpl_from_cached_state() {
        let long = cached(0x8000_0031, EFER_LMA | EFER_LME, 0xa09b, 0xc093);
        assert_eq!(long.mode(), CpuMode::Long { cs_l: true });
        assert_eq!(long.cpl(), 0);
        let compat = cached(0x8000_0031, EFER_LMA | EFER_LME, 0xc09b, 0xc093);
        assert_eq!(compat.mode(), CpuMode::Long { cs_l: false });
        let prot = cached(0x11, 0, 0xc09b, 0xc0f3);
        assert_eq!(
            prot.mode(),
            CpuMode::Protected {
                cs_db: true,
                paging: false
            }
        );
        assert_eq!(prot.cpl(), 3, "DPL of SS");
        assert_eq!(cached(0x10, 0, 0x9b, 0x93).mode(), CpuMode::Real);
    }

    #[test]
    fn rsp_lives_in_the_cache_other_gprs_in_the_register_file() {
        let mut v = cached(0x8000_0031, EFER_LMA, 0xa09b, 0xc093);
        assert_eq!(v.gpr(Gpr::Rsp), 0x8000);
        v.set_gpr(Gpr::Rsp, 0x9000);
        v.set_gpr(Gpr::Rax, 7);
        assert!(v.dirty_rsp);
        assert_eq!(
            v.gprs.get(Gpr::Rsp),
            0,
            "RSP is not taken from the register file"
        );
        assert_eq!((v.gpr(Gpr::Rsp), v.gpr(Gpr::Rax)), (0x9000, 7));
        v.set_rip(0x1003);
        assert!(v.dirty_rip && v.rip() == 0x1003);
    }

    #[test]
    fn efer_writes_keep_lma_the_processors() {
        let mut v = cached(0x8000_0031, EFER_LMA | EFER_LME, 0xa09b, 0xc093);
        v.set_efer(EFER_LME | (1 << 11)); // guest omits LMA, sets NXE
        assert_eq!(v.efer(), EFER_LMA | EFER_LME | (1 << 11));
        assert!(v.dirty_efer);
        let mut no_paging = cached(0x11, 0, 0xc09b, 0xc093);
        no_paging.set_efer(EFER_LME | EFER_LMA);
        assert_eq!(no_paging.efer(), EFER_LME, "LMA only with paging on");
    }

    #[test]
    fn exception_injection_encoding() {
        let mut v = cached(0x8000_0031, EFER_LMA, 0xa09b, 0xc093);
        v.inject_exception(crate::vcpu::vector::GP, Some(0));
        assert_eq!(
            v.pending_event,
            Some(((1 << 31) | (1 << 11) | (3 << 8) | 13, 0))
        );
        v.inject_exception(crate::vcpu::vector::UD, None);
        assert_eq!(v.pending_event, Some(((1 << 31) | (3 << 8) | 6, 0)));
        // Real mode (unrestricted guest, CR0.PE clear): no error code (review L3).
        let mut real = cached(0x10, 0, 0x9b, 0x93);
        real.inject_exception(crate::vcpu::vector::GP, Some(0));
        assert_eq!(real.pending_event, Some(((1 << 31) | (3 << 8) | 13, 0)));
    }

    #[test]
    fn entry_failure_messages() {
        let s = format!("{}", EntryFailure(ENTRY_VMFAIL | 7));
        assert!(
            s.contains("error 7") && s.contains("invalid control field"),
            "{s}"
        );
        let s = format!("{}", EntryFailure(ENTRY_VMFAIL));
        assert!(s.contains("VMfailInvalid"), "{s}");
        let s = format!("{}", EntryFailure(0x8000_0021));
        assert!(s.contains("invalid guest state"), "{s}");
        let s = format!(
            "{}",
            Unusual(ExitReason::Unknown {
                code: 49,
                info1: 0,
                info2: 0x9000_0000
            })
        );
        assert!(
            s.contains("EPT misconfiguration") && s.contains("0x90000000"),
            "{s}"
        );
        let s = format!(
            "{}",
            Unusual(ExitReason::Unknown {
                code: 3,
                info1: 0,
                info2: 0
            })
        );
        assert!(s.contains("INIT signal"), "{s}");
    }
}
