//! How a test partition's run ended, handed from the CPU that runs it to the
//! boot CPU (both backends). The running CPU counts into the statistics and
//! writes the stop reason, then stores DONE with release ordering; the boot
//! CPU reads them only after loading DONE with acquire ordering.

use super::summary::{self, Result as PartResult};
use super::Verdict;
use crate::hv_println;
use crate::partition::{PartitionConfig, StopReason};
use crate::stats::Stats;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

/// One partition's stop reason and counters, with the DONE hand-over.
pub struct Outcome {
    state: AtomicU8,
    stop: UnsafeCell<Option<StopReason>>,
    stats: UnsafeCell<Stats>,
}

// SAFETY: the UnsafeCells are handed over through `state` (see the module docs).
unsafe impl Sync for Outcome {}

impl Default for Outcome {
    fn default() -> Self {
        Self::new()
    }
}

impl Outcome {
    pub fn new() -> Self {
        Outcome {
            state: AtomicU8::new(PENDING),
            stop: UnsafeCell::new(None),
            stats: UnsafeCell::new(Stats::new()),
        }
    }

    /// The partition is handed to its CPU.
    pub fn start(&self) {
        self.state.store(RUNNING, Ordering::Release);
    }

    /// Whether the stop reason and counters are published.
    pub fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// The counters, for the CPU that runs the partition.
    ///
    /// # Safety
    /// Only the one CPU that runs the partition calls this, before
    /// [`Outcome::finish`], and holds one such borrow at a time.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn stats_mut(&self) -> &mut Stats {
        // SAFETY: the caller is the only user of the cell until DONE (see above).
        unsafe { &mut *self.stats.get() }
    }

    /// Publish how the partition stopped, with its counters.
    ///
    /// # Safety
    /// Called once, by the CPU that ran the partition (or by the boot CPU when
    /// that CPU never started), with no borrow from [`Outcome::stats_mut`] left.
    pub unsafe fn finish(&self, stop: StopReason) {
        // SAFETY: the caller is the only writer until DONE is stored below.
        unsafe { *self.stop.get() = Some(stop) };
        self.state.store(DONE, Ordering::Release);
    }

    /// The summary's view: stop and counters once DONE; otherwise no stop
    /// (timed out) and `empty` counters.
    pub fn result<'a>(&'a self, config: &'a PartitionConfig, empty: &'a Stats) -> PartResult<'a> {
        if self.is_done() {
            // SAFETY: DONE was loaded with acquire ordering: the running CPU
            // is finished with both cells and never writes them again.
            let (stop, stats) = unsafe { (*self.stop.get(), &*self.stats.get()) };
            PartResult {
                config,
                stop,
                stats,
            }
        } else {
            PartResult {
                config,
                stop: None,
                stats: empty,
            }
        }
    }
}

/// Print the summary of the started partitions and of those whose set-up
/// failed, and judge (partitions not DONE count as timed out).
pub fn summarize<'a>(
    started: impl Iterator<Item = (&'a PartitionConfig, &'a Outcome)>,
    failed: impl Iterator<Item = (&'a PartitionConfig, StopReason)>,
) -> Verdict {
    let empty = Stats::new();
    let mut results: Vec<PartResult<'_>> = started
        .map(|(config, outcome)| outcome.result(config, &empty))
        .collect();
    results.extend(failed.map(|(config, stop)| PartResult {
        config,
        stop: Some(stop),
        stats: &empty,
    }));
    summary::summarize(&results, |line| hv_println!("{line}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::plan::tests::test_partition;

    #[test]
    fn counters_and_stop_are_seen_only_once_done() {
        let config = test_partition(0x4000_0000, 16 << 20);
        let empty = Stats::new();
        let o = Outcome::new();
        o.start();
        // SAFETY: this thread plays the partition's CPU; one borrow.
        unsafe { o.stats_mut() }.invalid_calls = 7;
        assert!(!o.is_done());
        let r = o.result(&config, &empty);
        assert_eq!(r.stop, None, "not DONE: timed out");
        assert!(core::ptr::eq(r.stats, &empty));
        // SAFETY: once, no borrow of the counters left.
        unsafe { o.finish(StopReason::SetupFailed) };
        assert!(o.is_done());
        let r = o.result(&config, &empty);
        assert_eq!(r.stop, Some(StopReason::SetupFailed));
        assert_eq!(r.stats.invalid_calls, 7);
    }
}
