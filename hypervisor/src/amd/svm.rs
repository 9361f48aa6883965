//! SVM-specific privileged operations. The instructions that switch worlds
//! are in `vmrun.S`; this module turns SVM on for the current CPU.

use crate::platform::instructions::{rdmsr, wrmsr};

pub const MSR_EFER: u32 = 0xc000_0080;
pub const MSR_VM_CR: u32 = 0xc001_0114;
pub const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
pub const MSR_PAT: u32 = 0x277;
const VM_CR_SVMDIS: u64 = 1 << 4;
const EFER_SVME: u64 = 1 << 12;

/// Why SVM could not be enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnableError {
    /// VM_CR.SVMDIS: disabled by firmware.
    DisabledByFirmware,
}

/// Set EFER.SVME and point VM_HSAVE_PA at this CPU's host save area.
///
/// # Safety
/// Must run at CPL 0 on an AMD CPU that reports SVM; `hsave_pa` must be a
/// 4 KiB page reserved for this CPU's host state for as long as SVM is on.
pub unsafe fn enable(hsave_pa: u64) -> Result<(), EnableError> {
    // SAFETY: CPL 0 on an SVM-capable CPU (caller's contract); these MSRs exist there.
    unsafe {
        if rdmsr(MSR_VM_CR) & VM_CR_SVMDIS != 0 {
            return Err(EnableError::DisabledByFirmware);
        }
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SVME);
        wrmsr(MSR_VM_HSAVE_PA, hsave_pa);
    }
    Ok(())
}
