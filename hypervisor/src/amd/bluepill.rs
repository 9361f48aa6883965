//! Virtualizing the boot CPU in place (blue-pill, as barevisor does): the
//! current register state becomes the primary partition's guest state, the
//! CPU enters the guest with VMRUN, and the code that called [`enter`]
//! carries on, now in guest mode, while exits are handled on a separate
//! host stack.

use super::run_state::RunState;
use super::vmcb::{save, Segment, Vmcb};
use crate::platform::instructions::{self, rdmsr};
use core::ffi::c_void;

core::arch::global_asm!(include_str!("bluepill.S"));

extern "sysv64" {
    fn nexus_svm_bluepill(
        state: *mut RunState,
        vmcb: *mut u8,
        host_stack_top: u64,
        host_loop: extern "sysv64" fn(*mut c_void) -> !,
        ctx: *mut c_void,
    ) -> u64;
    fn nexus_read_selectors(out: *mut [u16; 4]);
    fn nexus_read_dr7() -> u64;
    fn nexus_fxsave(area: *mut [u8; 512]);
    fn nexus_vmsave(vmcb_pa: u64);
}

/// The segment `selector` refers to in the current GDT.
///
/// # Safety
/// The GDT register must describe a readable, identity-mapped table.
unsafe fn segment(gdt_base: u64, gdt_limit: u16, selector: u16) -> Segment {
    let index = (selector & !7) as u64;
    if index == 0 || index + 7 > gdt_limit as u64 {
        return Segment {
            selector,
            ..Segment::default()
        };
    }
    // SAFETY: inside the GDT limit (checked above), identity-mapped (caller).
    let low = unsafe { core::ptr::read_volatile((gdt_base + index) as *const u64) };
    Segment::from_descriptor(selector, low, 0)
}

/// Fill the VMCB state-save area from this CPU's current state (RIP, RSP,
/// RAX and RFLAGS are set by [`enter`]) and the FXSAVE image from its FPU.
///
/// # Safety
/// CPL 0, SVM enabled on this CPU; `vmcb_pa` is the (identity-mapped) VMCB
/// page `v` views; `fx` is 16-byte aligned.
pub unsafe fn capture(v: &mut Vmcb<'_>, vmcb_pa: u64, fx: *mut [u8; 512]) {
    // SAFETY: privileged reads at CPL 0 (caller's contract).
    unsafe {
        let gdtr = instructions::sgdt();
        let idtr = instructions::sidt();
        let mut sel = [0u16; 4];
        nexus_read_selectors(&mut sel);
        for (off, s) in [
            (save::CS, sel[0]),
            (save::SS, sel[1]),
            (save::DS, sel[2]),
            (save::ES, sel[3]),
        ] {
            v.set_segment(off, segment(gdtr.base, gdtr.limit, s));
        }
        v.set_segment(
            save::GDTR,
            Segment {
                selector: 0,
                attrib: 0,
                limit: gdtr.limit as u32,
                base: gdtr.base,
            },
        );
        v.set_segment(
            save::IDTR,
            Segment {
                selector: 0,
                attrib: 0,
                limit: idtr.limit as u32,
                base: idtr.base,
            },
        );
        v.write_u8(save::CPL, 0);
        v.write_u64(save::EFER, rdmsr(super::svm::MSR_EFER));
        v.write_u64(save::CR0, instructions::read_cr0());
        v.write_u64(save::CR3, instructions::read_cr3());
        v.write_u64(save::CR4, instructions::read_cr4());
        v.write_u64(save::DR6, 0xffff_0ff0);
        v.write_u64(save::DR7, nexus_read_dr7());
        v.write_u64(save::G_PAT, rdmsr(super::svm::MSR_PAT));
        // FS, GS, TR, LDTR (with hidden parts) and the syscall MSRs.
        nexus_vmsave(vmcb_pa);
        nexus_fxsave(fx);
    }
}

/// Turn the calling code into the primary partition's guest: returns (in
/// guest mode) once `host_loop(ctx)`, running on `host_stack_top`, has
/// entered the guest.
///
/// # Safety
/// `capture` has filled the VMCB; `state` is the run state whose
/// `guest_vmcb_pa` is `vmcb`; `host_loop` enters the guest from that state
/// and never returns; the host stack is reserved for it.
pub unsafe fn enter(
    state: *mut RunState,
    vmcb: *mut u8,
    host_stack_top: u64,
    host_loop: extern "sysv64" fn(*mut c_void) -> !,
    ctx: *mut c_void,
) {
    // SAFETY: the caller's contract; the assembly returns here in guest mode.
    unsafe { nexus_svm_bluepill(state, vmcb, host_stack_top, host_loop, ctx) };
}
