//! [`Vcpu`] for AMD SVM: a VMCB page, the run state shared with `vmrun.S`,
//! and the partition's nested page table (for fetching instruction bytes
//! when the CPU has no nrip-save).
//!
//! NMIs for the guest are injected through EVENTINJ; SVM tracks no NMI blocking of its own
//! (without vNMI), so after an injection the IRET intercept marks when the guest's handler
//! returns, and the next NMI waits until the exit after that IRET.

use super::exit::decode;
use super::features::SvmFeatures;
use super::guest_vmcb::{guest_efer, init_reset_state, sipi_state, vmcb_efer, EFER_LMA};
use super::host_state_check::{holds_host_state, ExitHistory, ExitRecord, PageLedger, When};
use super::insn_len::{self, ExitSite};
use super::run_state::RunState;
use super::vmcb::{ctrl, save, tlb, Vmcb};
use crate::exit::VmExit;
use crate::mem::guest::{GuestMemory, Paging};
use crate::mem::second_level::SecondLevel;
use crate::mem::PhysMem;
use crate::mitigations::{EntryBarrier, EntryFlush};
use crate::vcpu::{CpuMode, Gpr, Vcpu};
use crate::xcr0::{HostXcr0, Xcr0Switch};

core::arch::global_asm!(include_str!("vmrun.S"));

extern "sysv64" {
    /// Enter the guest described by `state` and return at its next #VMEXIT.
    fn nexus_svm_run(state: *mut RunState);
    /// The host's resume point inside `nexus_svm_run` (not callable).
    fn nexus_svm_resume();
}

/// Every vCPU's VMCB and host save area, to catch two CPUs whose pages clash.
static PAGES: PageLedger = PageLedger::new();

/// SVM exit code of the IRET intercept (the end of the guest's NMI handler).
const EXIT_IRET: u64 = 0x74;
/// MISC1 bit of the IRET intercept.
const INTERCEPT_IRET: u32 = 1 << 20;

pub struct SvmVcpu<'a, M: PhysMem> {
    state: &'a mut RunState,
    vmcb: &'a mut [u8; 4096],
    features: SvmFeatures,
    npt: &'a dyn SecondLevel<M>,
    /// Reads guest code bytes (never allocates).
    mem: M,
    /// Flush this ASID's TLB entries on the next entry.
    flush: bool,
    /// The guest's XCR0, loaded around each VMRUN.
    xcr0: Xcr0Switch,
    /// An NMI waits for delivery.
    nmi_pending: bool,
    /// An injected NMI's handler has not returned yet (its IRET is intercepted).
    nmi_in_service: bool,
    /// Flushes before each VMRUN (IBPB when this CPU switches partitions).
    barrier: EntryBarrier,
    /// The VMCB was found holding the host's state once (logged once).
    host_state_reported: bool,
    /// VM_HSAVE_PA when the vCPU was made (this CPU's host save area).
    host_save_pa: u64,
    /// The last exits, for that report.
    history: ExitHistory,
}

impl<'a, M: PhysMem> SvmVcpu<'a, M> {
    /// # Safety
    /// `state` must be set up for `vmrun.S` (VMCB addresses, FX areas) with
    /// `state.guest_vmcb_pa` the physical address of `vmcb`, which must hold
    /// a valid guest; SVM must be enabled on the CPU that calls `run`;
    /// `xcr0` is the guest's initial XCR0, valid on that CPU
    /// (see [`crate::xcr0`]).
    pub unsafe fn new(
        state: &'a mut RunState,
        vmcb: &'a mut [u8; 4096],
        features: SvmFeatures,
        npt: &'a dyn SecondLevel<M>,
        mem: M,
        xcr0: u64,
        untrusted: bool,
    ) -> Self {
        let asid = Vmcb(vmcb).read_u32(ctrl::GUEST_ASID);
        let v = SvmVcpu {
            state,
            vmcb,
            features,
            npt,
            mem,
            flush: true,
            // QEMU 7.2 TCG ignores the XSETBV intercept: read XCR0 back after exits.
            xcr0: Xcr0Switch::new(xcr0).reading_back(),
            nmi_pending: false,
            nmi_in_service: false,
            // L1D flush and VERW are for Intel's L1TF/MDS family, which AMD parts are not
            // affected by (`EntryFlush::decide` leaves them off): on SVM only the IBPB on a
            // partition switch applies, to everyone.
            barrier: EntryBarrier::new(EntryFlush::for_this_cpu(), untrusted, asid),
            host_state_reported: false,
            // SAFETY: the caller's contract: SVM is enabled on this CPU, CPL 0.
            host_save_pa: unsafe {
                crate::platform::instructions::rdmsr(super::svm::MSR_VM_HSAVE_PA)
            },
            history: ExitHistory::default(),
        };
        let stack = &v as *const _ as u64;
        let apic = crate::platform::cpu_info::current_apic_id();
        crate::hv_println!(
            "svm: APIC {apic} runs a vCPU: VMCB {:#x}, host save area {:#x}, host stack near \
             {stack:#x}",
            v.state.guest_vmcb_pa,
            v.host_save_pa
        );
        if let Some(other) = PAGES.register(v.state.guest_vmcb_pa, v.host_save_pa) {
            crate::hv_println!(
                "svm: its pages clash with another vCPU's (VMCB {:#x}, host save area {:#x}): a \
                 VMRUN would store one CPU's host state in the other's guest",
                other.vmcb,
                other.host_save
            );
        }
        v
    }

    /// Log once when the VMCB's save area holds the host's own state (see
    /// [`super::host_state_check`]).
    fn check_host_state(&mut self, when: When) {
        let resume = nexus_svm_resume as *const () as u64;
        if self.host_state_reported || self.read(save::RIP) != resume {
            return;
        }
        // SAFETY: host mode at CPL 0 (the run loop's caller's contract).
        let host_cr3 = unsafe { crate::platform::instructions::read_cr3() };
        if !holds_host_state(self.read(save::RIP), self.read(save::CR3), resume, host_cr3) {
            return;
        }
        self.host_state_reported = true;
        // SAFETY: as above; VM_HSAVE_PA exists once SVM is enabled on this CPU.
        let hsave = unsafe { crate::platform::instructions::rdmsr(super::svm::MSR_VM_HSAVE_PA) };
        // SAFETY: the host save area is a pool page of this CPU, identity mapped.
        let saved =
            |off: usize| unsafe { core::ptr::read_volatile((hsave + off as u64) as *const u64) };
        crate::hv_println!(
            "svm: this vCPU's VMCB {:#x} holds the host's own state {}: rip {resume:#x}, cr3 \
             {host_cr3:#x}; last exit code {:#x} info1 {:#x} info2 {:#x} exitintinfo {:#x}; \
             host save area {hsave:#x} (rip {:#x} cr3 {:#x}); the guest will fault at its \
             next entry (docs/boot.md, \"The QEMU FXRSTOR race\")",
            self.state.guest_vmcb_pa,
            when.name(),
            self.read(ctrl::EXITCODE),
            self.read(ctrl::EXITINFO1),
            self.read(ctrl::EXITINFO2),
            self.read(ctrl::EXITINTINFO),
            saved(save::RIP),
            saved(save::CR3),
        );
        crate::hv_println!(
            "svm: that VMCB's rax {:#x} and rsp {:#x} are the VMCB address and host stack of \
             the VMRUN that stored it (this CPU's VM_HSAVE_PA was {:#x} when the vCPU was made)",
            self.read(save::RAX),
            self.read(save::RSP),
            self.host_save_pa,
        );
        for line in self.history.lines() {
            crate::hv_println!("svm: earlier exit (newest first): {line}");
        }
    }

    /// Inject a pending NMI when nothing else is being injected and the guest is not inside
    /// the handler of the last one.
    fn deliver_nmi(&mut self) {
        if !self.nmi_pending || self.nmi_in_service {
            return;
        }
        let mut v = self.v();
        if v.read_u64(ctrl::EVENTINJ) & (1 << 31) != 0 {
            return; // an exception goes first; the NMI follows at a later entry
        }
        // EVENTINJ: vector 2, type 2 (NMI), valid.
        v.write_u64(ctrl::EVENTINJ, 2 | (2 << 8) | (1 << 31));
        let m1 = v.read_u32(ctrl::INTERCEPT_MISC1);
        v.write_u32(ctrl::INTERCEPT_MISC1, m1 | INTERCEPT_IRET);
        self.nmi_pending = false;
        self.nmi_in_service = true;
    }

    /// The guest's NMI handler returns (IRET exit, taken before the IRET executes): stop
    /// intercepting IRET; a pending NMI is delivered from the next exit on, once the IRET
    /// has run.
    fn nmi_handler_returns(&mut self) {
        let mut v = self.v();
        let m1 = v.read_u32(ctrl::INTERCEPT_MISC1);
        v.write_u32(ctrl::INTERCEPT_MISC1, m1 & !INTERCEPT_IRET);
        self.nmi_in_service = false;
    }

    fn v(&mut self) -> Vmcb<'_> {
        Vmcb(self.vmcb)
    }

    fn read(&self, off: usize) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.vmcb[off..off + 8]);
        u64::from_le_bytes(b)
    }

    /// Copy guest code at linear address `rip` (CS base is 0 in 64-bit mode
    /// and flat elsewhere for the guests we run).
    fn fetch(&mut self, rip: u64, buf: &mut [u8]) -> usize {
        let efer = self.read(save::EFER);
        let cr0 = self.read(save::CR0);
        let paging = if cr0 & (1 << 31) == 0 {
            Paging::None
        } else if efer & EFER_LMA != 0 {
            Paging::long(self.read(save::CR3), self.read(save::CR4))
        } else {
            return 0; // 32-bit paging: not supported for decoding
        };
        // CS base counts outside 64-bit mode only.
        let cs_l = self.vmcb[save::CS + 3] & 0x2 != 0;
        let cs_base = if efer & EFER_LMA != 0 && cs_l {
            0
        } else {
            self.read(save::CS + 8)
        };
        let mut g = GuestMemory {
            second_level: self.npt,
            mem: &mut self.mem,
            paging,
        };
        match g.read(cs_base.wrapping_add(rip), buf) {
            Ok(()) => buf.len(),
            Err(_) => 0,
        }
    }
}

impl<M: PhysMem> SvmVcpu<'_, M> {
    /// One VMRUN and the decoded exit.
    fn run_once(&mut self) -> VmExit {
        self.deliver_nmi();
        self.check_host_state(When::BeforeEntry);
        let (rax, rsp) = (self.state.gprs.get(Gpr::Rax), self.state.gprs.get(Gpr::Rsp));
        let flush = self.flush;
        let flush_by_asid = self.features.flush_by_asid;
        let mut v = self.v();
        v.write_u64(save::RAX, rax);
        v.write_u64(save::RSP, rsp);
        // First entry: drop stale translations of this ASID; only this ASID
        // with flush-by-ASID, the whole TLB without it (QEMU TCG).
        let tlb_op = match (flush, flush_by_asid) {
            (false, _) => tlb::NOTHING,
            (true, true) => tlb::FLUSH_GUEST,
            (true, false) => tlb::FLUSH_ALL,
        };
        v.write_u8(ctrl::TLB_CONTROL, tlb_op);
        // QEMU lacks VMCB clean bits; real CPUs may cache state, so say
        // nothing is clean (always correct, slightly slower).
        v.write_u32(ctrl::CLEAN_BITS, 0);
        let injected_at_entry = v.read_u64(ctrl::EVENTINJ);
        let (entry_rip, entry_cr3) = (v.read_u64(save::RIP), v.read_u64(save::CR3));
        // SAFETY: `new`'s contract: the run state and VMCB describe a valid
        // guest and SVM is on for this CPU, in host mode at CPL 0; the guest's
        // XCR0 is its initial value or one `set_xcr0` got after the checks; the
        // barrier's flushes were decided from this CPU's CPUID (in `new`, here).
        unsafe {
            let mut hw = HostXcr0::new();
            self.xcr0.enter(&mut hw);
            self.barrier.before_entry();
            nexus_svm_run(self.state);
            self.xcr0.leave(&mut hw);
        }
        self.flush = false;
        // The exit's fields, read once: for the history, the re-injection and the decoding.
        let exit = ExitRecord {
            entry_rip,
            entry_cr3,
            code: self.read(ctrl::EXITCODE),
            rip: self.read(save::RIP),
            info1: self.read(ctrl::EXITINFO1),
            info2: self.read(ctrl::EXITINFO2),
            intinfo: self.read(ctrl::EXITINTINFO),
            injected: injected_at_entry,
        };
        self.history.push(exit);
        self.check_host_state(When::AfterExit);
        // An event the exit interrupted is delivered at the next entry, unless the exit's
        // handler injects something else (its decision about this exit comes first).
        if let Some(event) = super::event::reinjection(exit.intinfo) {
            self.v().write_u64(ctrl::EVENTINJ, event);
        }
        let v = Vmcb(self.vmcb);
        let (exitcode, info1, info2, rip) = (exit.code, exit.info1, exit.info2, exit.rip);
        let rax = v.read_u64(save::RAX);
        let rsp = v.read_u64(save::RSP);
        let nrip = v.read_u64(ctrl::NRIP);
        let efer = v.read_u64(save::EFER);
        let cs_l = v.segment(save::CS).attrib & 0x200 != 0;
        self.state.gprs.set(Gpr::Rax, rax);
        self.state.gprs.set(Gpr::Rsp, rsp);
        let reason = decode(exitcode, info1, info2);
        let len = if reason.is_instruction() {
            let site = ExitSite {
                rip,
                nrip: self.features.nrip_save.then_some(nrip),
                exitinfo2: info2,
                long_mode: cs_l && efer & EFER_LMA != 0,
            };
            insn_len::length(&reason, &site, |at, buf| self.fetch(at, buf))
        } else {
            0
        };
        VmExit::new(reason, len)
    }
}

impl<M: PhysMem> Vcpu for SvmVcpu<'_, M> {
    fn run(&mut self) -> VmExit {
        loop {
            let exit = self.run_once();
            if Vmcb(self.vmcb).read_u64(ctrl::EXITCODE) == EXIT_IRET {
                self.nmi_handler_returns();
                continue;
            }
            return exit;
        }
    }
    fn cs_base(&self) -> u64 {
        self.read(save::CS + 8)
    }

    fn queue_nmi(&mut self) {
        self.nmi_pending = true;
    }

    fn gpr(&self, r: Gpr) -> u64 {
        self.state.gprs.get(r)
    }

    fn set_gpr(&mut self, r: Gpr, value: u64) {
        self.state.gprs.set(r, value)
    }

    fn rip(&self) -> u64 {
        self.read(save::RIP)
    }

    fn set_rip(&mut self, rip: u64) {
        self.v().write_u64(save::RIP, rip)
    }

    fn cr3(&self) -> u64 {
        self.read(save::CR3)
    }

    fn cr4(&self) -> u64 {
        self.read(save::CR4)
    }

    fn xcr0(&self) -> u64 {
        self.xcr0.guest()
    }

    fn xss(&self) -> u64 {
        crate::xcr0::current_xss()
    }

    fn mode(&self) -> CpuMode {
        let cr0 = self.read(save::CR0);
        let efer = self.read(save::EFER);
        let attrib = u16::from_le_bytes([self.vmcb[save::CS + 2], self.vmcb[save::CS + 3]]);
        if cr0 & 1 == 0 {
            CpuMode::Real
        } else if efer & EFER_LMA != 0 {
            CpuMode::Long {
                cs_l: attrib & 0x200 != 0,
            }
        } else {
            CpuMode::Protected {
                cs_db: attrib & 0x400 != 0,
                paging: cr0 & (1 << 31) != 0,
            }
        }
    }

    fn cpl(&self) -> u8 {
        self.vmcb[save::CPL] & 3
    }

    fn efer(&self) -> u64 {
        guest_efer(self.read(save::EFER))
    }

    fn set_efer(&mut self, value: u64) {
        let efer = vmcb_efer(value, self.read(save::EFER));
        self.v().write_u64(save::EFER, efer);
    }

    fn set_xcr0(&mut self, value: u64) {
        self.xcr0.set_guest(value);
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        // EVENTINJ: vector, type 3 (exception), EV when an error code is
        // pushed, V (valid), error code in bits 63:32.
        // No error code in real mode (CR0.PE clear): nothing would push it.
        let mut e = vector as u64 | (3 << 8) | (1 << 31);
        let protected = self.read(save::CR0) & 1 != 0;
        if let (Some(code), true) = (error_code, protected) {
            e |= (1 << 11) | ((code as u64) << 32);
        }
        self.v().write_u64(ctrl::EVENTINJ, e);
    }

    /// The INIT state in the VMCB (real mode needs nothing special under nested paging).
    fn init_reset(&mut self) -> Result<(), &'static str> {
        init_reset_state(&mut self.v());
        self.state.gprs.0 = [0; 16];
        // EDX after INIT: the processor signature.
        self.state.gprs.0[2] = core::arch::x86_64::__cpuid(1).eax as u64;
        self.v().write_u64(ctrl::EVENTINJ, 0);
        self.nmi_pending = false;
        self.nmi_in_service = false;
        let mut v = self.v();
        let m1 = v.read_u32(ctrl::INTERCEPT_MISC1);
        v.write_u32(ctrl::INTERCEPT_MISC1, m1 & !INTERCEPT_IRET);
        self.flush = true;
        Ok(())
    }

    fn sipi_start(&mut self, vector: u8) {
        sipi_state(&mut self.v(), vector);
    }
}
