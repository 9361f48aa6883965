//! The VMX instructions, each a thin `unsafe fn` (SDM Vol. 3C chapter 31).
//!
//! Results follow the VMX convention (SDM 31.2): CF=1 is VMfailInvalid (no
//! current VMCS), ZF=1 is VMfailValid (error number in the current VMCS),
//! both clear is success. Nothing else in the backend contains these opcodes
//! except the entry/exit path in `vmx_entry.S`.

use super::vm_error::VmFail;
use super::vmcs::ro32;
use core::arch::asm;

/// Turn the flags after a VMX instruction into a result.
#[inline(always)]
fn check(cf: u8, zf: u8) -> Result<(), VmFail> {
    if cf != 0 {
        Err(VmFail::Invalid)
    } else if zf != 0 {
        // SAFETY: ZF=1 means a current VMCS exists, so reading its error field is valid.
        Err(VmFail::Valid(
            unsafe { vmread(ro32::VM_INSTRUCTION_ERROR) }.unwrap_or(0) as u32,
        ))
    } else {
        Ok(())
    }
}

/// Enter VMX root operation with the VMXON region at `pa`.
///
/// # Safety
/// CR4.VMXE must be set, CR0/CR4 must satisfy the VMX fixed bits, the feature
/// control MSR must allow VMXON, and `pa` must be a 4 KiB-aligned page holding
/// the VMCS revision identifier that stays reserved until VMXOFF.
pub unsafe fn vmxon(pa: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller upholds the contract; VMXON reads the 8-byte pointer at the address.
    unsafe {
        asm!("vmxon [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf, out(reg_byte) zf,
             options(nostack));
    }
    check(cf, zf)
}

/// Leave VMX operation.
///
/// # Safety
/// Must be in VMX root operation; no guest of this CPU may run afterwards.
pub unsafe fn vmxoff() -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller upholds the contract.
    unsafe {
        asm!("vmxoff", "setc {}", "setz {}", out(reg_byte) cf, out(reg_byte) zf, options(nostack))
    };
    check(cf, zf)
}

/// Initialise (clear) the VMCS at `pa` and make it not current.
///
/// # Safety
/// In VMX root operation; `pa` is a 4 KiB-aligned VMCS region, not the VMXON region.
pub unsafe fn vmclear(pa: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller upholds the contract.
    unsafe {
        asm!("vmclear [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf, out(reg_byte) zf,
             options(nostack));
    }
    check(cf, zf)
}

/// Make the VMCS at `pa` current on this CPU.
///
/// # Safety
/// In VMX root operation; `pa` is a VMCS region holding the right revision
/// identifier and not current on another CPU.
pub unsafe fn vmptrld(pa: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller upholds the contract.
    unsafe {
        asm!("vmptrld [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf, out(reg_byte) zf,
             options(nostack));
    }
    check(cf, zf)
}

/// Read a field of the current VMCS.
///
/// # Safety
/// In VMX root operation with a current VMCS.
pub unsafe fn vmread(field: u32) -> Result<u64, VmFail> {
    let value: u64;
    let (cf, zf): (u8, u8);
    // SAFETY: the caller upholds the contract; VMREAD only reads the current VMCS.
    unsafe {
        asm!("vmread {}, {}", "setc {}", "setz {}", out(reg) value, in(reg) field as u64,
             out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    if cf != 0 {
        Err(VmFail::Invalid)
    } else if zf != 0 {
        // Reading the error field itself failed: report "unsupported component".
        Err(VmFail::Valid(12))
    } else {
        Ok(value)
    }
}

/// Write a field of the current VMCS.
///
/// # Safety
/// In VMX root operation with a current VMCS; the value must be valid for the
/// field or the next VM entry fails (which is reported, not undefined).
pub unsafe fn vmwrite(field: u32, value: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller upholds the contract; VMWRITE only writes the current VMCS.
    unsafe {
        asm!("vmwrite {}, {}", "setc {}", "setz {}", in(reg) field as u64, in(reg) value,
             out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    check(cf, zf)
}

/// INVEPT types (SDM 31.3, INVEPT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum InvEptType {
    SingleContext = 1,
    AllContexts = 2,
}

/// Invalidate EPT-derived translations for `eptp` (single) or all EPTPs.
///
/// # Safety
/// In VMX root operation; the type must be supported (IA32_VMX_EPT_VPID_CAP).
pub unsafe fn invept(kind: InvEptType, eptp: u64) -> Result<(), VmFail> {
    let desc: [u64; 2] = [eptp, 0];
    let (cf, zf): (u8, u8);
    // SAFETY: the caller upholds the contract; the descriptor lives on this stack frame.
    unsafe {
        asm!("invept {}, [{}]", "setc {}", "setz {}", in(reg) kind as u64, in(reg) &desc,
             out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    check(cf, zf)
}

/// INVVPID types (SDM 31.3, INVVPID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum InvVpidType {
    IndividualAddress = 0,
    SingleContext = 1,
    AllContexts = 2,
    SingleContextRetainingGlobals = 3,
}

/// Invalidate linear translations tagged with `vpid` (or all VPIDs).
///
/// # Safety
/// In VMX root operation; the type must be supported; `vpid` is non-zero for
/// the single-context and individual-address types.
pub unsafe fn invvpid(kind: InvVpidType, vpid: u16, addr: u64) -> Result<(), VmFail> {
    let desc: [u64; 2] = [vpid as u64, addr];
    let (cf, zf): (u8, u8);
    // SAFETY: the caller upholds the contract; the descriptor lives on this stack frame.
    unsafe {
        asm!("invvpid {}, [{}]", "setc {}", "setz {}", in(reg) kind as u64, in(reg) &desc,
             out(reg_byte) cf, out(reg_byte) zf, options(nostack));
    }
    check(cf, zf)
}

/// Read the segment selectors of the running CPU (host state for the VMCS).
pub fn read_selectors() -> [u16; 6] {
    let (es, cs, ss, ds, fs, gs): (u16, u16, u16, u16, u16, u16);
    // SAFETY: reading segment registers has no side effects and is allowed at any CPL.
    unsafe {
        asm!("mov {0:x}, es", "mov {1:x}, cs", "mov {2:x}, ss", "mov {3:x}, ds",
             "mov {4:x}, fs", "mov {5:x}, gs",
             out(reg) es, out(reg) cs, out(reg) ss, out(reg) ds, out(reg) fs, out(reg) gs,
             options(nomem, nostack, preserves_flags));
    }
    [es, cs, ss, ds, fs, gs]
}

/// CPUID as the host sees it.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}
