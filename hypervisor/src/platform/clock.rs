//! A millisecond clock for host mode on any CPU: the time-stamp counter, calibrated once at
//! boot against the firmware's stall service (host mode cannot call the firmware).
//!
//! Used for rates (the console byte budget) and for the test partitions' deadlines
//! (`launch`), neither of which must be exact: the TSC runs at a constant rate on the
//! machines this targets (invariant TSC, and in QEMU and Bochs a virtual one), and CPUs
//! that disagree by a little only shift a refill or a deadline.

use core::sync::atomic::{AtomicU64, Ordering};

/// TSC ticks per millisecond; 0 until [`calibrate`] ran.
static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);
/// How long [`calibrate`] measures.
const CALIBRATION_US: u64 = 10_000;

/// The time-stamp counter of this CPU.
pub fn tsc() -> u64 {
    super::instructions::rdtsc()
}

/// Measure the TSC over `stall_us(CALIBRATION_US)` (the firmware's busy wait) and keep the
/// rate; returns ticks per millisecond (at least 1).
pub fn calibrate(stall_us: impl FnOnce(u64)) -> u64 {
    let start = tsc();
    stall_us(CALIBRATION_US);
    let ticks = tsc().wrapping_sub(start);
    let per_ms = ticks_per_ms(ticks, CALIBRATION_US);
    TICKS_PER_MS.store(per_ms, Ordering::Relaxed);
    per_ms
}

/// The rate [`calibrate`] measured, in ticks per millisecond; 0 before it ran.
pub fn calibrated_ticks_per_ms() -> u64 {
    TICKS_PER_MS.load(Ordering::Relaxed)
}

/// Ticks per millisecond from `ticks` counted over `us` microseconds, at least 1.
pub fn ticks_per_ms(ticks: u64, us: u64) -> u64 {
    (ticks.saturating_mul(1000) / us.max(1)).max(1)
}

/// Milliseconds since the TSC was reset (monotonic on one CPU); 0 before [`calibrate`].
pub fn now_ms() -> u64 {
    match calibrated_ticks_per_ms() {
        0 => 0,
        per_ms => tsc() / per_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_from_a_measurement() {
        assert_eq!(ticks_per_ms(30_000_000, 10_000), 3_000_000, "3 GHz");
        assert_eq!(
            ticks_per_ms(0, 10_000),
            1,
            "a stopped counter still divides"
        );
        assert_eq!(
            ticks_per_ms(u64::MAX, 1),
            u64::MAX,
            "saturates, never wraps"
        );
    }
}
