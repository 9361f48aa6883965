//! How a vCPU's run ended, handed from the CPU that runs it to whichever CPU
//! prints the summary. The running CPU counts into the statistics (relaxed
//! atomics, readable at any time) and writes the stop reason, then stores DONE
//! with release ordering; readers take the stop reason only after loading DONE
//! with acquire ordering.

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
const FINISHING: u8 = 3;

/// One vCPU's stop reason and counters, with the DONE hand-over.
pub struct Outcome {
    state: AtomicU8,
    stop: UnsafeCell<Option<StopReason>>,
    stats: Stats,
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
            stats: Stats::new(),
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

    /// The counters (written by the CPU that runs the vCPU, readable anywhere).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Publish how the vCPU stopped; false (and nothing changes) when it was published
    /// before.
    pub fn finish(&self, stop: StopReason) -> bool {
        // Claim the one write: RUNNING/PENDING -> FINISHING, then DONE.
        let claimed = [PENDING, RUNNING].into_iter().any(|from| {
            self.state
                .compare_exchange(from, FINISHING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        if !claimed {
            return false;
        }
        // SAFETY: FINISHING is held by this caller alone; readers look only after DONE.
        unsafe { *self.stop.get() = Some(stop) };
        self.state.store(DONE, Ordering::Release);
        true
    }

    /// The stop reason once DONE.
    pub fn stop(&self) -> Option<StopReason> {
        if self.is_done() {
            // SAFETY: DONE was loaded with acquire ordering: written once, never again.
            unsafe { *self.stop.get() }
        } else {
            None
        }
    }

    /// The summary's view: the stop once DONE (`None`: did not finish) and the counters.
    pub fn result<'a>(&'a self, config: &'a PartitionConfig) -> PartResult<'a> {
        PartResult {
            config,
            stop: self.stop(),
            stats: &self.stats,
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
        .map(|(config, outcome)| outcome.result(config))
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
    fn the_stop_is_seen_only_once_done_and_written_once() {
        let config = test_partition(0x4000_0000, 16 << 20);
        let o = Outcome::new();
        o.start();
        o.stats().count_call(9999);
        assert!(!o.is_done());
        let r = o.result(&config);
        assert_eq!(r.stop, None, "not DONE: timed out");
        assert_eq!(r.stats.invalid_calls(), 1, "counters are live");
        assert!(o.finish(StopReason::SetupFailed));
        assert!(o.is_done());
        assert!(!o.finish(StopReason::Halted), "a second stop is refused");
        let r = o.result(&config);
        assert_eq!(r.stop, Some(StopReason::SetupFailed));
        assert_eq!(r.stats.invalid_calls(), 1);
    }
}
