//! From the policy to what the hypervisor builds: which ranges each
//! partition's nested page table maps.
//!
//! Test partitions map exactly their regions. The primary partition maps
//! everything below `limit` except the other partitions' regions and the
//! hypervisor's own memory (Jailhouse's root-cell model).

use crate::mem::{Range, PAGE_SIZE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// More ranges than the output can hold.
    TooManyRanges,
}

/// Sort and merge `ranges` in place (page-aligned outward); returns how many
/// remain at the front.
pub fn normalize(ranges: &mut [Range]) -> usize {
    for r in ranges.iter_mut() {
        r.start &= !(PAGE_SIZE - 1);
        r.end = r.end.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    }
    ranges.sort_unstable_by_key(|r| r.start);
    let mut n = 0;
    for i in 0..ranges.len() {
        let r = ranges[i];
        if r.start >= r.end {
            continue;
        }
        if n > 0 && r.start <= ranges[n - 1].end {
            ranges[n - 1].end = ranges[n - 1].end.max(r.end);
        } else {
            ranges[n] = r;
            n += 1;
        }
    }
    n
}

/// The parts of `[0, limit)` not covered by `excluded` (which this sorts and
/// merges), written to `out`; returns how many.
pub fn complement(
    limit: u64,
    excluded: &mut [Range],
    out: &mut [Range],
) -> Result<usize, PlanError> {
    let n = normalize(excluded);
    let mut count = 0;
    let mut at = 0;
    let mut push = |r: Range, count: &mut usize| -> Result<(), PlanError> {
        if r.start < r.end {
            *out.get_mut(*count).ok_or(PlanError::TooManyRanges)? = r;
            *count += 1;
        }
        Ok(())
    };
    for e in &excluded[..n] {
        if e.start >= limit {
            break;
        }
        push(
            Range {
                start: at,
                end: e.start,
            },
            &mut count,
        )?;
        at = at.max(e.end);
    }
    push(
        Range {
            start: at,
            end: limit,
        },
        &mut count,
    )?;
    Ok(count)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::partition::{Expectation, FixedStr, Kind, PartitionConfig, MAX_CPUS, MAX_REGIONS};
    use nexus_abi::GroupSet;

    /// A one-region test partition, for tests across the crate.
    pub(crate) fn test_partition(base: u64, size: u64) -> PartitionConfig {
        let mut regions = [Range::default(); MAX_REGIONS];
        regions[0] = Range::new(base, size);
        let mut apic_ids = [0; MAX_CPUS];
        apic_ids[0] = 1;
        PartitionConfig {
            id: 1,
            name: FixedStr::new("t"),
            kind: Kind::Test,
            image: FixedStr::new("test-guest"),
            cmdline: FixedStr::new("hypercalls"),
            groups: GroupSet::ALL,
            regions,
            region_count: 1,
            apic_ids,
            cpu_count: 1,
            expect: Expectation::ExitZero,
        }
    }

    #[test]
    fn primary_gets_everything_else() {
        let mut ex = [
            Range::new(0x4100_0000, 0x100_0000),
            Range::new(0x7e00_0123, 0x1000), // hypervisor page, unaligned
            Range::new(0x4000_0000, 0x100_0000),
        ];
        let mut out = [Range::default(); 8];
        let n = complement(0x1_0000_0000, &mut ex, &mut out).unwrap();
        assert_eq!(
            &out[..n],
            &[
                Range {
                    start: 0,
                    end: 0x4000_0000
                },
                Range {
                    start: 0x4200_0000,
                    end: 0x7e00_0000
                },
                Range {
                    start: 0x7e00_2000,
                    end: 0x1_0000_0000
                },
            ]
        );
        // no output range touches an excluded one
        for o in &out[..n] {
            for e in &ex[..3] {
                assert!(!o.overlaps(e), "{o:?} {e:?}");
            }
        }
    }

    #[test]
    fn overlapping_and_out_of_limit_exclusions() {
        let mut ex = [
            Range::new(0x1000, 0x3000),
            Range::new(0x2000, 0x4000),
            Range::new(0x9000_0000, 0x1000),
        ];
        let mut out = [Range::default(); 2];
        let n = complement(0x1000_0000, &mut ex, &mut out).unwrap();
        assert_eq!(
            &out[..n],
            &[
                Range {
                    start: 0,
                    end: 0x1000
                },
                Range {
                    start: 0x6000,
                    end: 0x1000_0000
                }
            ]
        );
        let mut ex = [Range::new(0x1000, 0x1000), Range::new(0x3000, 0x1000)];
        let mut out = [Range::default(); 2];
        assert_eq!(
            complement(0x10000, &mut ex, &mut out),
            Err(PlanError::TooManyRanges)
        );
    }
}
