//! Time for timeouts: the TSC, calibrated once against the firmware's Stall.
//!
//! Waiting loops poll memory and must not make VM exits of their own (an exit would hide
//! an NMI the hypervisor holds back until the next one), so they read the TSC instead of
//! calling the firmware.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// TSC at the calibration (the probe's time 0).
static START: AtomicU64 = AtomicU64::new(0);

pub fn now() -> u64 {
    // SAFETY: RDTSC has no side effects; the primary may read the TSC.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Measure the TSC rate over 20 ms of firmware Stall; returns ticks per second.
pub fn calibrate() -> u64 {
    let t0 = now();
    uefi::boot::stall(Duration::from_millis(20));
    let hz = now().saturating_sub(t0).max(1) * 50;
    START.store(t0, Ordering::Relaxed);
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// A point `ms` milliseconds from now.
pub fn deadline_ms(ms: u64) -> u64 {
    now().saturating_add(TSC_HZ.load(Ordering::Relaxed).saturating_mul(ms) / 1000)
}

/// A point `us` microseconds from now.
pub fn deadline_us(us: u64) -> u64 {
    now().saturating_add(TSC_HZ.load(Ordering::Relaxed).saturating_mul(us) / 1_000_000)
}

pub fn passed(deadline: u64) -> bool {
    now() >= deadline
}

/// Milliseconds between two TSC readings.
pub fn ms_between(t0: u64, t1: u64) -> u64 {
    t1.saturating_sub(t0).saturating_mul(1000) / TSC_HZ.load(Ordering::Relaxed).max(1)
}

/// Milliseconds since the calibration; `None` before it.
pub fn since_start_ms() -> Option<u64> {
    let start = START.load(Ordering::Relaxed);
    (TSC_HZ.load(Ordering::Relaxed) != 0).then(|| ms_between(start, now()))
}
