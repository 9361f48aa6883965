//! From the policy to what the hypervisor builds: which ranges each
//! partition's nested page table maps.
//!
//! Test partitions map exactly their regions. The primary partition maps
//! everything below `limit` except the other partitions' regions and the
//! hypervisor's own memory (Jailhouse's root-cell model).

use super::{Expectation, FixedStr, Kind, PartitionConfig, MAX_CPUS, MAX_PARTITIONS, MAX_REGIONS};
use crate::mem::{Range, PAGE_SIZE};
use nexus_policy::compiled::{CompiledPolicy, CpuEntry};
use nexus_policy::Role;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// More ranges than the output can hold.
    TooManyRanges,
    /// More partitions than [`MAX_PARTITIONS`].
    TooManyPartitions { count: usize },
    /// Partition `index` has more regions than [`MAX_REGIONS`].
    TooManyRegions { index: usize },
    /// Partition `index` asks for CPUs by class; this version needs APIC IDs.
    CpusByClass { index: usize },
    /// Partition `index` has more CPUs than [`MAX_CPUS`].
    TooManyCpus { index: usize },
    /// Test partition `index` has no image, no CPU or no memory.
    TestIncomplete { index: usize },
    /// Partition `index`'s region is not 4 KiB aligned.
    Unaligned { index: usize },
}

/// The partitions of a policy, in policy order.
pub struct Plan {
    pub partitions: [Option<PartitionConfig>; MAX_PARTITIONS],
    pub count: usize,
}

impl Plan {
    pub fn iter(&self) -> impl Iterator<Item = &PartitionConfig> {
        self.partitions[..self.count].iter().flatten()
    }
}

/// Turn the compiled policy into partition configurations, each with the CPUs the
/// platform's fit check gave it (`facts`: classes resolved to APIC IDs; the one CPU plan).
/// Without a fit (`facts.owners` empty: host tests, or a policy that lists APIC IDs) the
/// policy's APIC IDs are used as written. The policy was validated when compiled; this
/// checks only what this hypervisor version cannot do (and says so by name).
pub fn from_policy(
    policy: &CompiledPolicy<'_>,
    facts: &crate::launch::Facts,
) -> Result<Plan, PlanError> {
    let count = policy.partition_count();
    if count > MAX_PARTITIONS {
        return Err(PlanError::TooManyPartitions { count });
    }
    let mut plan = Plan {
        partitions: Default::default(),
        count,
    };
    for (index, p) in policy.partitions().enumerate() {
        let kind = match p.role() {
            Role::Primary => Kind::Primary,
            Role::Test => Kind::Test,
            Role::Ai | Role::Containers => Kind::Deferred,
        };
        let mut regions = [Range::default(); MAX_REGIONS];
        let mut region_count = 0;
        for m in p.memory() {
            let r = regions
                .get_mut(region_count)
                .ok_or(PlanError::TooManyRegions { index })?;
            *r = Range::new(m.base(), m.size());
            if m.base() % PAGE_SIZE != 0 || m.size() % PAGE_SIZE != 0 {
                return Err(PlanError::Unaligned { index });
            }
            region_count += 1;
        }
        let mut apic_ids = [0u32; MAX_CPUS];
        let mut cpu_count = 0;
        let mut push = |id: u32| -> Result<(), PlanError> {
            *apic_ids
                .get_mut(cpu_count)
                .ok_or(PlanError::TooManyCpus { index })? = id;
            cpu_count += 1;
            Ok(())
        };
        if facts.owners.is_empty() && facts.unplaced.is_empty() {
            for c in p.cpus() {
                match c {
                    CpuEntry::ApicId(id) => push(id)?,
                    CpuEntry::Class { .. } if kind != Kind::Test => {}
                    CpuEntry::Class { .. } => return Err(PlanError::CpusByClass { index }),
                }
            }
        } else {
            for id in facts.cpus_of(index) {
                push(id)?;
            }
        }
        let cmdline = p.cmdline().unwrap_or("");
        if kind == Kind::Test && (p.image().is_none() || cpu_count == 0 || region_count == 0) {
            return Err(PlanError::TestIncomplete { index });
        }
        plan.partitions[index] = Some(PartitionConfig {
            id: index as u8,
            name: FixedStr::new(p.name()),
            kind,
            image: FixedStr::new(p.image().unwrap_or("")),
            cmdline: FixedStr::new(cmdline),
            groups: p.groups(),
            regions,
            region_count,
            apic_ids,
            cpu_count,
            expect: Expectation::from_cmdline(cmdline),
        });
    }
    Ok(plan)
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

    /// A policy of `policies/`, compiled, for tests across the crate.
    pub(crate) fn compiled(path: &str) -> std::vec::Vec<u8> {
        let text = std::fs::read_to_string(std::format!(
            "{}/../policies/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        nexus_policy::compile(&nexus_policy::parse_str(&text).unwrap())
    }

    #[test]
    fn qemu_dev_policy_plans_three_test_partitions_and_the_primary() {
        let bytes = compiled("qemu-dev.toml");
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let plan = from_policy(&policy, &crate::launch::Facts::default()).unwrap();
        let parts: std::vec::Vec<_> = plan.iter().collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0].name.as_str(), parts[0].kind),
            ("primary", Kind::Primary)
        );
        assert_eq!(parts[0].apic_ids(), &[0, 1]);
        let h = parts[1];
        assert_eq!(
            (h.name.as_str(), h.kind, h.image.as_str()),
            ("hypercalls", Kind::Test, "test-guest")
        );
        assert_eq!(h.regions(), &[Range::new(0x4000_0000, 16 << 20)]);
        assert_eq!(h.apic_ids(), &[2]);
        assert_eq!(h.expect, Expectation::ExitZero);
        assert_eq!(
            h.groups,
            nexus_abi::GroupSet::ALL.without(nexus_abi::Group::Management)
        );
        let i = parts[2];
        assert_eq!(
            i.cmdline.as_str().split_whitespace().next(),
            Some("isolation")
        );
        assert_eq!(i.expect, Expectation::Contained);
        assert_eq!(i.asid(), 3);
        let w = parts[3];
        assert_eq!(w.name.as_str(), "isolation-hv");
        assert_eq!(w.cmdline.as_str(), "isolation write 0x4200_0000");
        assert_eq!(w.expect, Expectation::Contained);
        assert_eq!(w.apic_ids(), &[4]);
        // distinct ASIDs, none zero
        assert!(parts.iter().all(|p| p.asid() != 0));
    }

    #[test]
    fn reference_machine_policy_plans_primary_and_deferred_partitions() {
        let bytes = compiled("i9-13900hx-rtx4080.toml");
        let plan = from_policy(
            &CompiledPolicy::decode(&bytes).unwrap(),
            &crate::launch::Facts::default(),
        )
        .unwrap();
        let kinds: std::vec::Vec<_> = plan.iter().map(|p| (p.name.as_str(), p.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("primary", Kind::Primary),
                ("ai", Kind::Deferred),
                ("containers", Kind::Deferred)
            ]
        );
        // The AI model cache is a region of its own, which the primary's NPT leaves out.
        let ai = plan.iter().find(|p| p.name.as_str() == "ai").unwrap();
        assert!(
            ai.regions().iter().any(|r| r.size() >= 32 << 30),
            "{:?}",
            ai.regions()
        );
    }

    #[test]
    fn qemu_fail_policy_plans_the_fail_partition() {
        let bytes = compiled("qemu-fail.toml");
        let plan = from_policy(
            &CompiledPolicy::decode(&bytes).unwrap(),
            &crate::launch::Facts::default(),
        )
        .unwrap();
        let fail = plan.iter().find(|p| p.kind == Kind::Test).unwrap();
        assert_eq!(fail.cmdline.as_str(), "fail");
        assert_eq!(fail.expect, Expectation::ExitZero);
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
