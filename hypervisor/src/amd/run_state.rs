//! The block shared with `vmrun.S`: guest GPRs and VMCB addresses of one vCPU. Lives in a
//! hypervisor page (one per CPU).

use crate::vcpu::Gprs;

/// Layout fixed by `vmrun.S`.
#[repr(C)]
pub struct RunState {
    pub gprs: Gprs,
    pub guest_vmcb_pa: u64,
    pub host_vmcb_pa: u64,
    /// Non-zero: VMRUN with RFLAGS.IF set (GIF still clear), so that with V_INTR_MASKING
    /// and the INTR intercept a physical interrupt makes the guest exit whatever the
    /// guest's own IF (test partitions' deadline timer).
    pub host_if: u64,
}

/// The page holding a CPU's run state.
#[repr(C, align(4096))]
pub struct RunPage {
    pub state: RunState,
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
        assert_eq!(offset_of!(RunState, host_if), 0x90);
        assert!(core::mem::size_of::<RunPage>() <= 4096);
    }

    /// The world switch leaves the x87/SSE/AVX registers alone (the host never uses them),
    /// and in particular restores none: under QEMU's TCG every FXRSTOR, FRSTOR, FLDENV or
    /// XRSTOR also rewrites CPU 0's hidden mode flags from the executing thread without a
    /// lock, which can undo a world switch CPU 0 makes at that moment (docs/boot.md).
    #[test]
    fn the_world_switch_restores_no_fpu_state() {
        extern crate std;
        let code = include_str!("vmrun.S")
            .lines()
            .map(|l| {
                l.split("//")
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|l| !l.is_empty())
            .collect::<std::vec::Vec<_>>();
        assert!(code.iter().any(|l| l.starts_with("vmrun")), "{code:?}");
        for l in &code {
            for m in [
                "fxrstor", "fxsave", "frstor", "fnsave", "fldenv", "xrstor", "xsave",
            ] {
                assert!(!l.starts_with(m), "vmrun.S: {l}");
            }
        }
    }
}
