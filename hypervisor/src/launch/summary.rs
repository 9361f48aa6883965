//! The end-of-run summary: one line per test partition with its ending and
//! whether that is what was expected, its counters, and the verdict.

use super::Verdict;
use crate::partition::{Expectation, FixedStr, PartitionConfig, StopReason};
use crate::stats::Stats;
use core::fmt::{self, Write};

/// A fixed-capacity string writer (no allocator needed).
pub struct StrBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StrBuf<N> {
    pub const fn new() -> Self {
        StrBuf {
            buf: [0; N],
            len: 0,
        }
    }

    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

impl<const N: usize> Default for StrBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Write for StrBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// How one test partition ended (`None`: it did not finish in time).
pub struct Result<'a> {
    pub config: &'a PartitionConfig,
    pub stop: Option<StopReason>,
    pub stats: &'a Stats,
}

fn expected(e: Expectation) -> &'static str {
    e.describe()
}

/// Write the summary lines (without prefix) through `line`, and judge.
pub fn summarize(results: &[Result<'_>], mut line: impl FnMut(fmt::Arguments<'_>)) -> Verdict {
    line(format_args!("summary: {} test partition(s)", results.len()));
    let mut failed = 0;
    let mut first = StrBuf::<160>::new();
    for r in results {
        let name = r.config.name.as_str();
        let ok = r.stop.is_some_and(|s| s.passes(r.config.expect));
        let ending = match &r.stop {
            Some(s) => {
                let mut b = StrBuf::<120>::new();
                let _ = write!(b, "{s}");
                b
            }
            None => {
                let mut b = StrBuf::<120>::new();
                let _ = b.write_str("did not finish (timed out)");
                b
            }
        };
        let verdict = if ok { "PASS" } else { "FAIL" };
        line(format_args!(
            "partition {name}: {} ({}) -> {verdict}",
            ending.as_str(),
            expected(r.config.expect)
        ));
        let mut stats = StrBuf::<512>::new();
        let _ = r.stats.write_to(&mut stats);
        for l in stats.as_str().lines() {
            line(format_args!("stats {name}: {l}"));
        }
        if !ok {
            if failed == 0 {
                let _ = write!(first, "partition {name}: {}", ending.as_str());
            }
            failed += 1;
        }
    }
    if results.is_empty() {
        // A production policy (no test partitions) has nothing to judge.
        line(format_args!("no test partition to judge"));
        return Verdict {
            pass: true,
            why: FixedStr::EMPTY,
        };
    }
    if failed == 0 {
        line(format_args!(
            "all {} test partition(s) passed",
            results.len()
        ));
        Verdict {
            pass: true,
            why: FixedStr::EMPTY,
        }
    } else {
        line(format_args!(
            "{failed} of {} test partition(s) failed",
            results.len()
        ));
        if failed > 1 {
            let _ = write!(first, "; {} more", failed - 1);
        }
        Verdict::fail(format_args!("{}", first.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{Access, ExitReason};
    use crate::partition::plan::tests::test_partition;
    use std::string::String;
    use std::vec::Vec;

    fn run(results: &[Result<'_>]) -> (Verdict, Vec<String>) {
        let mut lines = Vec::new();
        let v = summarize(results, |a| lines.push(std::format!("{a}")));
        (v, lines)
    }

    #[test]
    fn passing_run_with_a_contained_partition() {
        let mut h = test_partition(0x4000_0000, 0x100_0000);
        h.name = FixedStr::new("hypercalls");
        let mut i = test_partition(0x4100_0000, 0x100_0000);
        i.name = FixedStr::new("isolation");
        i.expect = Expectation::Contained;
        let stats = Stats::new();
        stats.count_exit(&ExitReason::Hypercall);
        stats.count_call(2);
        let empty = Stats::new();
        let (v, lines) = run(&[
            Result {
                config: &h,
                stop: Some(StopReason::Exited { code: 0 }),
                stats: &stats,
            },
            Result {
                config: &i,
                stop: Some(StopReason::Isolation {
                    gpa: 0x4000_0000,
                    access: Access::READ,
                }),
                stats: &empty,
            },
        ]);
        assert!(v.pass, "{lines:?}");
        assert_eq!(
            lines[1],
            "partition hypercalls: exited with code 0 (expected exit 0) -> PASS"
        );
        assert_eq!(lines[2], "stats hypercalls: exits: total=1 hypercall=1");
        assert_eq!(lines[3], "stats hypercalls: hypercalls: console_write=1");
        assert_eq!(
            lines[4],
            "partition isolation: stopped by isolation: nested page fault on read of 0x40000000 \
             (expected to be contained) -> PASS"
        );
        assert_eq!(lines.last().unwrap(), "all 2 test partition(s) passed");
    }

    #[test]
    fn failures_are_named() {
        let mut f = test_partition(0x4000_0000, 0x100_0000);
        f.name = FixedStr::new("fail");
        let mut t = test_partition(0x4100_0000, 0x100_0000);
        t.name = FixedStr::new("slow");
        let s = Stats::new();
        let (v, lines) = run(&[
            Result {
                config: &f,
                stop: Some(StopReason::Exited { code: 1 }),
                stats: &s,
            },
            Result {
                config: &t,
                stop: None,
                stats: &s,
            },
        ]);
        assert!(!v.pass);
        assert_eq!(v.why.as_str(), "partition fail: exited with code 1; 1 more");
        assert!(lines
            .iter()
            .any(|l| l.contains("did not finish (timed out)")));
        let (v, lines) = run(&[]);
        assert!(v.pass);
        assert_eq!(lines.last().unwrap(), "no test partition to judge");
    }
}
