//! The probe's local APIC: its ID, its mode, and IPIs written into the ICR (the xAPIC
//! registers in the page IA32_APIC_BASE names, or the x2APIC ICR MSR). Under NexusOS the
//! primary's xAPIC page is read-only and the ICR MSR intercepted, so every write here is
//! a VM exit that the hypervisor routes.

use core::arch::x86_64::__cpuid;
use nexus_drivers::apic::{
    Icr, APIC_BASE_ADDR_MASK, APIC_BASE_MSR, APIC_BASE_X2APIC, X2APIC_ICR_MSR, XAPIC_ICR_HIGH,
    XAPIC_ICR_LOW,
};

/// The calling CPU's initial APIC ID (CPUID leaf 1, EBX bits 31:24).
pub fn my_apic_id() -> u32 {
    __cpuid(1).ebx >> 24
}

/// CPUID.1:ECX.x2APIC.
pub fn has_x2apic() -> bool {
    __cpuid(1).ecx & (1 << 21) != 0
}

fn apic_base() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU; reading it has no side effects.
    unsafe { rdmsr(APIC_BASE_MSR) }
}

/// The xAPIC register page.
pub fn xapic_page() -> u64 {
    apic_base() & APIC_BASE_ADDR_MASK
}

pub fn in_x2apic_mode() -> bool {
    apic_base() & APIC_BASE_X2APIC != 0
}

/// Switch this CPU's APIC from xAPIC to x2APIC mode (IA32_APIC_BASE bit 10), the one
/// change of IA32_APIC_BASE the hypervisor allows the primary.
///
/// # Safety
/// The firmware's APIC code must cope with the mode changing under it (OVMF's reads the
/// mode on every access).
pub unsafe fn enable_x2apic() {
    // SAFETY: the caller's contract; xAPIC -> x2APIC with the base and enable bit kept.
    unsafe { wrmsr(APIC_BASE_MSR, apic_base() | APIC_BASE_X2APIC) };
}

/// Write `icr` through the xAPIC registers (high half first; the low half sends).
///
/// # Safety
/// The CPU is in xAPIC mode with its page at [`xapic_page`], identity-mapped.
pub unsafe fn send_xapic(icr: Icr) {
    let (high, low) = icr.to_xapic();
    let page = xapic_page();
    // SAFETY: the caller's contract; 32-bit aligned stores to the ICR registers.
    unsafe {
        core::ptr::write_volatile((page + XAPIC_ICR_HIGH) as *mut u32, high);
        core::ptr::write_volatile((page + XAPIC_ICR_LOW) as *mut u32, low);
    }
}

/// Write `icr` into the x2APIC ICR MSR.
///
/// # Safety
/// The CPU is in x2APIC mode.
pub unsafe fn send_x2apic(icr: Icr) {
    // SAFETY: the caller's contract; 0x830 exists in x2APIC mode.
    unsafe { wrmsr(X2APIC_ICR_MSR, icr.to_x2apic()) };
}

/// # Safety
/// `msr` exists and may be read at CPL 0.
unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller's contract.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    (hi as u64) << 32 | lo as u64
}

/// # Safety
/// `msr` exists and `value` is valid for it.
unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack)
        )
    };
}

/// A CPUID leaf (an exit under NexusOS: lets the hypervisor deliver what it holds).
pub fn cpuid_exit() {
    let _ = __cpuid(0);
}
