//! Sending INIT to another CPU through this CPU's local APIC (host mode).
//!
//! The hypervisor uses it to make a CPU that runs guest code leave guest mode
//! (an INIT VM exit), for the software INIT/SIPI of `launch::ap_mailbox`. The
//! APIC stays in the mode the firmware chose: x2APIC through MSR 0x830, xAPIC
//! through the ICR at its MMIO base (identity-mapped, uncacheable by MTRR).

use crate::platform::instructions::{rdmsr, wrmsr};
use nexus_drivers::apic::{
    Icr, APIC_BASE_ADDR_MASK, APIC_BASE_MSR, APIC_BASE_X2APIC, ICR_DELIVERY_PENDING,
    X2APIC_ICR_MSR, XAPIC_ICR_HIGH, XAPIC_ICR_LOW,
};

/// How long to wait for the xAPIC to report the previous IPI sent.
const SEND_SPINS: u32 = 1_000_000;

/// Send `icr` from this CPU; false when an xAPIC never reported it sent.
///
/// # Safety
/// Host mode at CPL 0 with the hypervisor's identity map loaded (it covers the
/// APIC page); `icr` is an IPI the caller may send (an INIT to a CPU that runs
/// a vCPU of the hypervisor, never one that runs firmware or an OS natively).
pub unsafe fn send(icr: Icr) -> bool {
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (all x86-64 CPUs).
    let base = unsafe { rdmsr(APIC_BASE_MSR) };
    if base & APIC_BASE_X2APIC != 0 {
        // SAFETY: x2APIC mode is on; the ICR MSR sends the IPI.
        unsafe { wrmsr(X2APIC_ICR_MSR, icr.to_x2apic()) };
        return true;
    }
    let mmio = base & APIC_BASE_ADDR_MASK;
    let (high, low) = icr.to_xapic();
    let low_reg = (mmio + XAPIC_ICR_LOW) as *mut u32;
    let high_reg = (mmio + XAPIC_ICR_HIGH) as *mut u32;
    // SAFETY: the APIC registers are identity-mapped MMIO (the caller's
    // contract); 32-bit aligned volatile accesses as the SDM requires.
    unsafe {
        core::ptr::write_volatile(high_reg, high);
        core::ptr::write_volatile(low_reg, low);
        for _ in 0..SEND_SPINS {
            if core::ptr::read_volatile(low_reg) & ICR_DELIVERY_PENDING == 0 {
                return true;
            }
            core::hint::spin_loop();
        }
    }
    false
}
