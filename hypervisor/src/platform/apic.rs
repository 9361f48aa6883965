//! This CPU's local APIC from host mode: sending an IPI (an NMI kick, an INIT or start-up the
//! hypervisor emulates for a partition, a fixed IPI the primary may send), acknowledging an
//! interrupt. The APIC stays in the mode the firmware (or the primary's OS) chose: x2APIC
//! through its MSRs, xAPIC through the registers at its MMIO base (identity-mapped,
//! uncacheable by MTRR).

use crate::platform::instructions::{rdmsr, wrmsr};
use nexus_drivers::apic::{
    xapic, Icr, APIC_BASE_ADDR_MASK, APIC_BASE_MSR, APIC_BASE_X2APIC, ICR_DELIVERY_PENDING,
    X2APIC_EOI_MSR, X2APIC_ICR_MSR,
};

/// How long to wait for the xAPIC to report the previous IPI sent.
const SEND_SPINS: u32 = 1_000_000;

/// How this CPU's APIC is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    X2apic,
    /// xAPIC at this physical (= host-virtual) MMIO base.
    Xapic(u64),
}

/// The mode and base of this CPU's APIC.
///
/// # Safety
/// CPL 0.
pub unsafe fn mode() -> Mode {
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (all x86-64 CPUs); CPL 0.
    let base = unsafe { rdmsr(APIC_BASE_MSR) };
    if base & APIC_BASE_X2APIC != 0 {
        Mode::X2apic
    } else {
        Mode::Xapic(base & APIC_BASE_ADDR_MASK)
    }
}

/// Send `icr` from this CPU; false when an xAPIC never reported it sent.
///
/// # Safety
/// Host mode at CPL 0 with the hypervisor's identity map loaded (it covers the APIC page),
/// interrupts off (the two xAPIC writes must not be split by another sender on this CPU);
/// `icr` is an IPI the caller may send: an NMI kick or INIT to a CPU that runs a vCPU of the
/// hypervisor, or an IPI a policy lets a partition send.
pub unsafe fn send(icr: Icr) -> bool {
    // SAFETY: the caller's contract (CPL 0).
    match unsafe { mode() } {
        Mode::X2apic => {
            // SAFETY: x2APIC mode is on; the ICR MSR sends the IPI.
            unsafe { wrmsr(X2APIC_ICR_MSR, icr.to_x2apic()) };
            true
        }
        Mode::Xapic(mmio) => {
            let (high, low) = icr.to_xapic();
            let low_reg = (mmio + xapic::ICR_LOW) as *mut u32;
            let high_reg = (mmio + xapic::ICR_HIGH) as *mut u32;
            // SAFETY: the APIC registers are identity-mapped MMIO (the caller's contract);
            // 32-bit aligned volatile accesses as the SDM requires.
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
    }
}

/// Acknowledge the interrupt in service (EOI).
///
/// # Safety
/// Host mode at CPL 0 with the identity map loaded; an interrupt from this APIC is in service.
pub unsafe fn eoi() {
    // SAFETY: the caller's contract.
    match unsafe { mode() } {
        // SAFETY: x2APIC mode: the EOI MSR takes 0.
        Mode::X2apic => unsafe { wrmsr(X2APIC_EOI_MSR, 0) },
        // SAFETY: identity-mapped APIC page (caller's contract), aligned 32-bit write.
        Mode::Xapic(mmio) => unsafe {
            core::ptr::write_volatile((mmio + xapic::EOI) as *mut u32, 0)
        },
    }
}

/// Write one xAPIC register of this CPU (the primary's trapped writes, forwarded).
///
/// # Safety
/// Host mode at CPL 0 with the identity map loaded, the APIC in xAPIC mode at `mmio`;
/// `offset` is a 16-byte aligned register the caller lets the guest write.
pub unsafe fn write_xapic(mmio: u64, offset: u64, value: u32) {
    // SAFETY: the caller's contract.
    unsafe { core::ptr::write_volatile((mmio + (offset & 0xff0)) as *mut u32, value) }
}

/// Read one xAPIC register of this CPU.
///
/// # Safety
/// As [`write_xapic`], for a readable register.
pub unsafe fn read_xapic(mmio: u64, offset: u64) -> u32 {
    // SAFETY: the caller's contract.
    unsafe { core::ptr::read_volatile((mmio + (offset & 0xff0)) as *const u32) }
}

/// xAPIC timer registers (the x2APIC MSR is 0x800 + offset / 16).
const LVT_TIMER: u64 = 0x320;
const TIMER_INITIAL: u64 = 0x380;
const TIMER_DIVIDE: u64 = 0x3e0;
/// LVT mask bit.
const LVT_MASKED: u32 = 1 << 16;
/// Divide configuration 0b0011: divide by 16.
const DIVIDE_BY_16: u32 = 0x3;

const SVR: u64 = 0xf0;
/// SVR bit 8: the APIC is software-enabled (an LVT interrupt is delivered only then).
const SVR_ENABLE: u32 = 1 << 8;

fn read_reg(mode: Mode, offset: u64) -> u32 {
    match mode {
        // SAFETY: callers are in host mode at CPL 0 (their contract); x2APIC register MSRs.
        Mode::X2apic => unsafe { rdmsr(0x800 + (offset >> 4) as u32) as u32 },
        // SAFETY: as above, with the identity map covering the APIC page.
        Mode::Xapic(mmio) => unsafe { read_xapic(mmio, offset) },
    }
}

fn write_reg(mode: Mode, offset: u64, value: u32) {
    match mode {
        // SAFETY: callers are in host mode at CPL 0 (their contract); x2APIC register MSRs.
        Mode::X2apic => unsafe { wrmsr(0x800 + (offset >> 4) as u32, value as u64) },
        // SAFETY: as above, with the identity map covering the APIC page.
        Mode::Xapic(mmio) => unsafe { write_xapic(mmio, offset, value) },
    }
}

/// Start this CPU's local APIC timer, one-shot, raising `vector` after `count` ticks of the
/// bus clock divided by 16 (the runaway deadline of the partition running here).
///
/// # Safety
/// Host mode at CPL 0 with the identity map, on a CPU whose APIC no partition owns (a test
/// partition's or an idle CPU's).
pub unsafe fn arm_timer(vector: u8, count: u32) {
    // SAFETY: the caller's contract.
    let mode = unsafe { mode() };
    let svr = read_reg(mode, SVR);
    if svr & SVR_ENABLE == 0 {
        write_reg(mode, SVR, svr | SVR_ENABLE | 0xff);
    }
    write_reg(mode, TIMER_DIVIDE, DIVIDE_BY_16);
    write_reg(mode, LVT_TIMER, vector as u32);
    write_reg(mode, TIMER_INITIAL, count);
}

/// Stop this CPU's local APIC timer.
///
/// # Safety
/// As [`arm_timer`].
pub unsafe fn disarm_timer() {
    // SAFETY: the caller's contract.
    let mode = unsafe { mode() };
    write_reg(mode, TIMER_INITIAL, 0);
    write_reg(mode, LVT_TIMER, LVT_MASKED);
}
