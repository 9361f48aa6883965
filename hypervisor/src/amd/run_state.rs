//! The block shared with `vmrun.S`: guest GPRs, VMCB addresses and FXSAVE
//! areas of one vCPU. Lives in a hypervisor page (one per vCPU).

use crate::vcpu::Gprs;

/// 512-byte FXSAVE image, 16-byte aligned as FXSAVE requires.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct FxArea(pub [u8; 512]);

impl FxArea {
    /// The state after FNINIT with SSE defaults: FCW = 0x37f, MXCSR = 0x1f80
    /// (FXRSTOR faults on reserved MXCSR bits, so zeros are not enough).
    pub fn initial() -> Self {
        let mut a = [0u8; 512];
        a[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        a[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        FxArea(a)
    }
}

/// Layout fixed by `vmrun.S`.
#[repr(C)]
pub struct RunState {
    pub gprs: Gprs,
    pub guest_vmcb_pa: u64,
    pub host_vmcb_pa: u64,
    pub guest_fx: *mut FxArea,
    pub host_fx: *mut FxArea,
    /// Non-zero: VMRUN with RFLAGS.IF set (GIF still clear), so that with V_INTR_MASKING
    /// and the INTR intercept a physical interrupt makes the guest exit whatever the
    /// guest's own IF (test partitions' deadline timer).
    pub host_if: u64,
}

/// A page-sized block holding the run state and both FXSAVE areas.
#[repr(C, align(4096))]
pub struct RunPage {
    pub state: RunState,
    pub guest_fx: FxArea,
    pub host_fx: FxArea,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn layout_matches_vmrun_s() {
        assert_eq!(offset_of!(RunState, gprs), 0);
        assert_eq!(offset_of!(RunState, guest_vmcb_pa), 0x80);
        assert_eq!(offset_of!(RunState, host_vmcb_pa), 0x88);
        assert_eq!(offset_of!(RunState, guest_fx), 0x90);
        assert_eq!(offset_of!(RunState, host_fx), 0x98);
        assert_eq!(offset_of!(RunState, host_if), 0xa0);
        assert_eq!(offset_of!(RunPage, guest_fx) % 16, 0);
        assert_eq!(offset_of!(RunPage, host_fx) % 16, 0);
        assert!(core::mem::size_of::<RunPage>() <= 4096);
    }
}
