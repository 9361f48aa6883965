//! Does the compiled policy fit this machine? Pure checks over what discovery found.
//!
//! The policy was validated when it was compiled (no overlaps, no CPU given twice, ...); what
//! only the machine can answer is checked here: the CPUs named exist and are enabled in the
//! MADT, class counts can be met, the boot CPU belongs to the primary partition, the
//! regions the hypervisor must reserve are free conventional memory, the machine has the RAM
//! the policy assumes, and the CPU can virtualize. Every mismatch is reported, each naming
//! the partition, the field and what the machine has instead.
//!
//! Single-CPU machines (Bochs 2.7 must run with one CPU): when the boot CPU is the only
//! enabled CPU, CPUs that the machine list or test partitions name but the machine lacks are
//! not misfits; the plan lists them as [`CpuPlan::unplaced`] and the backend runs those test
//! partitions one after another on the boot CPU before it returns to the firmware (the VMX
//! launcher does; see docs/boot.md). With two or more CPUs every named CPU must exist.

use super::acpi::MadtCpu;
use super::cpu_info::CoreType;
use super::memory_map::{self, MapEntry, PAGE_SIZE};
use crate::topology::{self, ClassRequest, CoreKind, CpuSet, Topology};
use alloc::vec::Vec;
use core::fmt;
use nexus_policy::compiled::{CompiledPolicy, CpuEntry};
use nexus_policy::{CoreClass, Role};

/// What discovery found, as the checks need it.
#[derive(Debug, Clone, Copy)]
pub struct MachineFacts<'a> {
    /// CPUs from the ACPI MADT.
    pub cpus: &'a [MadtCpu],
    /// Core type per APIC ID (CPUID leaf 0x1A on each CPU), when known. CPUs without an
    /// entry count as P-cores (non-hybrid parts, emulators).
    pub core_types: &'a [(u32, CoreType)],
    /// Width of the SMT field of the APIC ID (CPUID 0xB, [`topology::smt_shift`]); 0 when
    /// unknown, then every logical CPU counts as a core of its own.
    pub smt_shift: u32,
    /// APIC ID of the boot CPU (the one that returns to firmware as the primary partition).
    pub bsp_apic_id: u32,
    /// The UEFI memory map, read after the hypervisor's own allocations.
    pub memory_map: &'a [MapEntry],
    /// Whether the CPU offers a usable virtualization backend (SVM+NPT or VMX+EPT).
    pub can_virtualize: bool,
}

impl MachineFacts<'_> {
    fn enabled(&self, apic_id: u32) -> bool {
        self.cpus.iter().any(|c| c.enabled && c.apic_id == apic_id)
    }

    fn kind_of(&self, apic_id: u32) -> CoreKind {
        match self.core_types.iter().find(|(id, _)| *id == apic_id) {
            Some((_, CoreType::Efficiency)) => CoreKind::Efficiency,
            _ => CoreKind::Performance,
        }
    }

    fn class_of(&self, apic_id: u32) -> CoreClass {
        self.kind_of(apic_id).class()
    }

    /// The enabled CPUs with their classes, for the shared resolver.
    fn topology(&self) -> Topology {
        let enabled = self.cpus.iter().filter(|c| c.enabled);
        Topology::from_kinds(
            enabled.map(|c| (c.apic_id, self.kind_of(c.apic_id))),
            self.smt_shift,
        )
    }

    /// Only the boot CPU is enabled.
    fn uniprocessor(&self) -> bool {
        self.enabled_count() == 1 && self.enabled(self.bsp_apic_id)
    }

    fn enabled_count(&self) -> usize {
        self.cpus.iter().filter(|c| c.enabled).count()
    }

    fn ram_bytes(&self) -> u64 {
        self.memory_map
            .iter()
            .filter(|e| e.is_ram())
            .map(|e| e.pages * PAGE_SIZE)
            .sum()
    }
}

/// One way the policy does not fit the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misfit<'p> {
    /// The CPU has neither SVM with NPT nor VMX with EPT.
    NoVirtualization,
    /// `[machine] cpus` (owner `None`) or a partition's `apic_ids` names an APIC ID that is
    /// not an enabled CPU in the MADT.
    CpuMissing {
        partition: Option<&'p str>,
        apic_id: u32,
    },
    /// `[machine] cpus`/`cpu_counts` describe more CPUs than the MADT has enabled.
    TooFewCpus { policy: usize, machine: usize },
    /// A `[machine] cpus` entry's class differs from what CPUID leaf 0x1A reports.
    ClassMismatch {
        apic_id: u32,
        policy: CoreClass,
        machine: CoreClass,
    },
    /// A partition asks for `wanted` CPUs of `class`; only `free` are left.
    ClassShortage {
        partition: &'p str,
        class: CoreClass,
        wanted: u32,
        free: u32,
    },
    /// A partition's count of `class` CPUs does not make whole cores (low-latency partitions
    /// and those without `share_smt_core` never share a core with another partition).
    SplitCore {
        partition: &'p str,
        class: CoreClass,
        wanted: u32,
        low_latency: bool,
    },
    /// Two partitions would run on SMT siblings of one core (review M5: a hostile guest could
    /// sample its sibling's data through L1TF, MDS or cross-thread Spectre); allowed only when
    /// both set `share_smt_core`.
    SharedCore {
        first: &'p str,
        first_apic: u32,
        second: &'p str,
        second_apic: u32,
        core: u32,
    },
    /// The boot CPU is not given to the primary partition.
    BspNotPrimary { bsp: u32, owner: Option<&'p str> },
    /// A region the hypervisor must reserve is not free conventional memory.
    RegionNotFree {
        partition: &'p str,
        base: u64,
        size: u64,
        conflict: Option<MapEntry>,
    },
    /// A primary-partition region holds no RAM at all.
    RegionNotRam {
        partition: &'p str,
        base: u64,
        size: u64,
    },
    /// The firmware reports less RAM than `[machine] memory` (more than 1/8 less).
    TooLittleRam { policy: u64, machine: u64 },
}

impl fmt::Display for Misfit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misfit::NoVirtualization => {
                write!(f, "the CPU has neither SVM with nested paging nor VMX with EPT")
            }
            Misfit::CpuMissing { partition: None, apic_id } => {
                write!(f, "machine.cpus: APIC ID {apic_id} is not an enabled CPU in the ACPI MADT")
            }
            Misfit::CpuMissing { partition: Some(p), apic_id } => write!(
                f,
                "partition '{p}' cpus: APIC ID {apic_id} is not an enabled CPU in the ACPI MADT"
            ),
            Misfit::TooFewCpus { policy, machine } => write!(
                f,
                "machine: the policy describes {policy} CPUs, the ACPI MADT has {machine} enabled"
            ),
            Misfit::ClassMismatch { apic_id, policy, machine } => write!(
                f,
                "machine.cpus: APIC ID {apic_id} is listed as a {policy}-core, CPUID leaf 0x1A says {machine}-core"
            ),
            Misfit::ClassShortage { partition, class, wanted, free } => write!(
                f,
                "partition '{partition}' cpus: wants {wanted} {class}-core CPU(s), {free} left on this machine"
            ),
            Misfit::SplitCore { partition, class, wanted, low_latency: true } => write!(
                f,
                "partition '{partition}' cpus: low-latency, so {wanted} {class}-core CPU(s) must make whole cores; the free {class}-cores do not split that way"
            ),
            Misfit::SplitCore { partition, class, wanted, low_latency: false } => write!(
                f,
                "partition '{partition}' cpus: {wanted} {class}-core CPU(s) must make whole cores, since it shares no SMT core with another partition (set share_smt_core = true to allow it); the free {class}-cores do not split that way"
            ),
            Misfit::SharedCore { first, first_apic, second, second_apic, core } => write!(
                f,
                "partitions '{first}' (APIC ID {first_apic}) and '{second}' (APIC ID {second_apic}) would share SMT core {core}; give each whole cores, or set share_smt_core = true on both"
            ),
            Misfit::BspNotPrimary { bsp, owner: None } => write!(
                f,
                "the boot CPU (APIC ID {bsp}) is not given to the primary partition"
            ),
            Misfit::BspNotPrimary { bsp, owner: Some(p) } => write!(
                f,
                "the boot CPU (APIC ID {bsp}) is given to partition '{p}'; it must stay with the primary partition"
            ),
            Misfit::RegionNotFree { partition, base, size, conflict } => {
                write!(
                    f,
                    "partition '{partition}' memory {:#x}..{:#x} is not free conventional memory",
                    base,
                    base.saturating_add(*size)
                )?;
                match conflict {
                    Some(e) => write!(
                        f,
                        " (firmware has {} at {:#x}..{:#x})",
                        memory_map::type_name(e.ty),
                        e.base,
                        e.end()
                    ),
                    None => write!(f, " (not in the firmware memory map)"),
                }
            }
            Misfit::RegionNotRam { partition, base, size } => write!(
                f,
                "partition '{partition}' memory {:#x}..{:#x} contains no RAM in the firmware memory map",
                base,
                base.saturating_add(*size)
            ),
            Misfit::TooLittleRam { policy, machine } => write!(
                f,
                "machine.memory: the policy assumes {} MiB of RAM, the firmware reports {} MiB",
                policy >> 20,
                machine >> 20
            ),
        }
    }
}

/// Which CPU runs which partition, after the checks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuPlan {
    /// (APIC ID, partition index), sorted by APIC ID; unassigned CPUs are absent.
    pub owners: Vec<(u32, usize)>,
    /// Single-CPU machines only: (APIC ID, partition index) of test-partition CPUs the
    /// machine lacks; those partitions run on the boot CPU.
    pub unplaced: Vec<(u32, usize)>,
    /// (core, partition index, partition index): SMT cores two partitions share because both
    /// set `share_smt_core`; empty when no two partitions share a core.
    pub shared_cores: Vec<(u32, usize, usize)>,
}

impl CpuPlan {
    /// APIC IDs given to partition `index`, ascending.
    pub fn cpus_of(&self, index: usize) -> impl Iterator<Item = u32> + '_ {
        self.owners
            .iter()
            .filter(move |(_, p)| *p == index)
            .map(|(a, _)| *a)
    }

    /// The partition that owns `apic_id`, if any.
    pub fn owner_of(&self, apic_id: u32) -> Option<usize> {
        self.owners
            .iter()
            .find(|(a, _)| *a == apic_id)
            .map(|(_, p)| *p)
    }

    /// The CPUs of `all` that partition `index` does not own (another partition's, or no
    /// one's), ascending: what that partition's OS must never see.
    pub fn not_owned_by(&self, index: usize, all: impl IntoIterator<Item = u32>) -> Vec<u32> {
        let mut v: Vec<u32> = all
            .into_iter()
            .filter(|&a| self.owner_of(a) != Some(index))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Check the policy against the machine and plan the CPUs. `Err` lists every misfit.
pub fn check<'p>(
    policy: &CompiledPolicy<'p>,
    m: &MachineFacts<'_>,
) -> Result<CpuPlan, Vec<Misfit<'p>>> {
    let mut misfits = Vec::new();
    if !m.can_virtualize {
        misfits.push(Misfit::NoVirtualization);
    }
    check_machine(policy, m, &mut misfits);
    let mut plan = plan_cpus(policy, m, &mut misfits);
    plan.shared_cores = check_smt(policy, m, &plan, &mut misfits);
    check_bsp(policy, m, &plan, &mut misfits);
    check_memory(policy, m, &mut misfits);
    if misfits.is_empty() {
        Ok(plan)
    } else {
        Err(misfits)
    }
}

fn check_machine<'p>(policy: &CompiledPolicy<'p>, m: &MachineFacts<'_>, out: &mut Vec<Misfit<'p>>) {
    let machine = policy.machine();
    let listed = machine.cpus().count();
    let described = match machine.cpu_counts() {
        Some(c) => (c.p + c.e) as usize,
        None => listed,
    };
    if described > m.enabled_count() && !m.uniprocessor() {
        out.push(Misfit::TooFewCpus {
            policy: described,
            machine: m.enabled_count(),
        });
    }
    for cpu in machine.cpus() {
        if !m.enabled(cpu.apic_id) {
            if m.uniprocessor() {
                continue;
            }
            out.push(Misfit::CpuMissing {
                partition: None,
                apic_id: cpu.apic_id,
            });
        } else if m.core_types.iter().any(|(id, _)| *id == cpu.apic_id)
            && m.class_of(cpu.apic_id) != cpu.class
        {
            out.push(Misfit::ClassMismatch {
                apic_id: cpu.apic_id,
                policy: cpu.class,
                machine: m.class_of(cpu.apic_id),
            });
        }
    }
    let stated = machine.memory();
    let reported = m.ram_bytes();
    if stated > 0 && reported < stated - stated / 8 {
        out.push(Misfit::TooLittleRam {
            policy: stated,
            machine: reported,
        });
    }
}

/// Explicit APIC IDs first, then class counts through the shared resolver
/// ([`topology::resolve_one`]): lowest free APIC IDs of that class, low-latency partitions
/// first; to whole cores (SMT siblings together) unless the partition may share cores. Every
/// request that cannot be met is reported.
fn plan_cpus<'p>(
    policy: &CompiledPolicy<'p>,
    m: &MachineFacts<'_>,
    out: &mut Vec<Misfit<'p>>,
) -> CpuPlan {
    let mut owners: Vec<(u32, usize)> = Vec::new();
    let mut unplaced: Vec<(u32, usize)> = Vec::new();
    for p in policy.partitions() {
        for entry in p.cpus() {
            if let CpuEntry::ApicId(id) = entry {
                if m.enabled(id) {
                    owners.push((id, p.index()));
                } else if m.uniprocessor() && p.role() == Role::Test {
                    unplaced.push((id, p.index()));
                } else {
                    out.push(Misfit::CpuMissing {
                        partition: Some(p.name()),
                        apic_id: id,
                    });
                }
            }
        }
    }
    let topo = m.topology();
    let mut taken = CpuSet::EMPTY;
    for &(a, _) in &owners {
        taken.insert(a);
    }
    let mut order: Vec<_> = policy.partitions().collect();
    order.sort_by_key(|p| (!p.low_latency(), p.index()));
    let mut request = 0;
    for p in order {
        for entry in p.cpus() {
            if let CpuEntry::Class { class, count } = entry {
                let req = ClassRequest {
                    kind: CoreKind::from_class(class),
                    count,
                    whole_cores: p.low_latency() || !p.share_smt_core(),
                };
                match topology::resolve_one(&topo, request, &req, &mut taken) {
                    Ok(set) => owners.extend(set.iter().map(|a| (a, p.index()))),
                    Err(e) if e.split_core => out.push(Misfit::SplitCore {
                        partition: p.name(),
                        class,
                        wanted: count,
                        low_latency: p.low_latency(),
                    }),
                    Err(e) => out.push(Misfit::ClassShortage {
                        partition: p.name(),
                        class,
                        wanted: count,
                        free: e.free,
                    }),
                }
                request += 1;
            }
        }
    }
    owners.sort_unstable();
    CpuPlan {
        owners,
        unplaced,
        shared_cores: Vec::new(),
    }
}

/// No two partitions on SMT siblings of one core (cores are the APIC ID without its
/// `smt_shift` low bits) unless both allow it; answers the cores shared by consent. Every
/// pair that may not share is reported once per core.
fn check_smt<'p>(
    policy: &CompiledPolicy<'p>,
    m: &MachineFacts<'_>,
    plan: &CpuPlan,
    out: &mut Vec<Misfit<'p>>,
) -> Vec<(u32, usize, usize)> {
    let mut shared = Vec::new();
    for (i, &(a, pa)) in plan.owners.iter().enumerate() {
        for &(b, pb) in &plan.owners[i + 1..] {
            let core = a >> m.smt_shift;
            if pa == pb || core != b >> m.smt_shift {
                continue;
            }
            let reported = |list: &[(u32, usize, usize)]| {
                list.iter()
                    .any(|&(c, x, y)| c == core && (x, y) == (pa, pb))
            };
            let (Some(first), Some(second)) = (policy.partition(pa), policy.partition(pb)) else {
                continue;
            };
            if first.share_smt_core() && second.share_smt_core() {
                if !reported(&shared) {
                    shared.push((core, pa, pb));
                }
            } else if !out.iter().any(|x| {
                matches!(x, Misfit::SharedCore { first: f, second: s, core: c, .. }
                    if *c == core && *f == first.name() && *s == second.name())
            }) {
                out.push(Misfit::SharedCore {
                    first: first.name(),
                    first_apic: a,
                    second: second.name(),
                    second_apic: b,
                    core,
                });
            }
        }
    }
    shared
}

fn check_bsp<'p>(
    policy: &CompiledPolicy<'p>,
    m: &MachineFacts<'_>,
    plan: &CpuPlan,
    out: &mut Vec<Misfit<'p>>,
) {
    let owner = plan
        .owner_of(m.bsp_apic_id)
        .and_then(|i| policy.partition(i));
    if owner.is_none_or(|p| p.role() != Role::Primary) {
        out.push(Misfit::BspNotPrimary {
            bsp: m.bsp_apic_id,
            owner: owner.map(|p| p.name()),
        });
    }
}

fn check_memory<'p>(policy: &CompiledPolicy<'p>, m: &MachineFacts<'_>, out: &mut Vec<Misfit<'p>>) {
    for p in policy.partitions() {
        for r in p.memory() {
            let (base, size) = (r.base(), r.size());
            if p.role() == Role::Primary {
                let any_ram = m
                    .memory_map
                    .iter()
                    .any(|e| e.is_ram() && e.base < r.end() && base < e.end());
                if !any_ram {
                    out.push(Misfit::RegionNotRam {
                        partition: p.name(),
                        base,
                        size,
                    });
                }
            } else if !memory_map::is_free_range(m.memory_map, base, size) {
                out.push(Misfit::RegionNotFree {
                    partition: p.name(),
                    base,
                    size,
                    conflict: first_conflict(m.memory_map, base, size),
                });
            }
        }
    }
}

/// The first descriptor inside `[base, base+size)` that is not conventional memory.
fn first_conflict(map: &[MapEntry], base: u64, size: u64) -> Option<MapEntry> {
    let end = base.saturating_add(size);
    let mut hits: Vec<MapEntry> = map
        .iter()
        .copied()
        .filter(|e| e.ty != memory_map::ty::CONVENTIONAL && e.base < end && base < e.end())
        .collect();
    hits.sort_unstable_by_key(|e| e.base);
    hits.first().copied()
}

/// One line for `NEXUS RESULT: FAIL (...)`: the first misfit, and how many more there are.
pub struct FailSummary<'a, 'p>(pub &'a [Misfit<'p>]);

impl fmt::Display for FailSummary<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy does not fit: ")?;
        match self.0 {
            [] => write!(f, "(no details)"),
            [one] => write!(f, "{one}"),
            [first, rest @ ..] => write!(f, "{first}; and {} more", rest.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::topology::tests::REFERENCE_PRIMARY;
    use std::string::{String, ToString};
    use std::vec;

    const QEMU_DEV: &str = include_str!("../../../policies/qemu-dev.toml");
    const BOCHS_DEV: &str = include_str!("../../../policies/bochs-dev.toml");
    const QEMU_PROBE: &str = include_str!("../../../policies/qemu-probe.toml");
    const I9: &str = include_str!("../../../policies/i9-13900hx-rtx4080.toml");

    fn compile(toml: &str) -> Vec<u8> {
        nexus_policy::compile(&nexus_policy::parse_str(toml).unwrap_or_else(|e| panic!("{e}")))
    }

    /// The recorded OVMF map of the machine the end-to-end tests boot.
    fn qemu_map() -> Vec<MapEntry> {
        include_str!("testdata/qemu-smp4-2g.map")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
                MapEntry::new(f[0].parse().unwrap(), hex(f[1]), hex(f[2]))
            })
            .collect()
    }

    /// Enabled xAPIC CPUs with these APIC IDs (UID = APIC ID).
    fn madt_cpus(ids: impl IntoIterator<Item = u32>) -> Vec<MadtCpu> {
        ids.into_iter()
            .map(|a| MadtCpu {
                uid: a,
                apic_id: a,
                enabled: true,
                online_capable: false,
                x2apic: false,
            })
            .collect()
    }

    fn qemu_cpus(n: u32) -> Vec<MadtCpu> {
        madt_cpus(0..n)
    }

    /// A hybrid part's CPUs: APIC IDs below 16 are P-core threads, the others E-cores,
    /// classes as the platform reads them from CPUID 0x1A.
    fn hybrid(ids: Vec<u32>) -> (Vec<MadtCpu>, Vec<(u32, CoreType)>) {
        let types = ids
            .iter()
            .map(|&a| {
                let t = if a < 16 {
                    CoreType::Performance
                } else {
                    CoreType::Efficiency
                };
                (a, t)
            })
            .collect();
        (madt_cpus(ids), types)
    }

    fn facts<'a>(cpus: &'a [MadtCpu], map: &'a [MapEntry]) -> MachineFacts<'a> {
        MachineFacts {
            cpus,
            core_types: &[],
            smt_shift: 0,
            bsp_apic_id: 0,
            memory_map: map,
            can_virtualize: true,
        }
    }

    /// [`facts`] of a hybrid part: core types known, SMT field `smt_shift` bits wide.
    fn hybrid_facts<'a>(
        cpus: &'a [MadtCpu],
        core_types: &'a [(u32, CoreType)],
        smt_shift: u32,
        map: &'a [MapEntry],
    ) -> MachineFacts<'a> {
        MachineFacts {
            core_types,
            smt_shift,
            ..facts(cpus, map)
        }
    }

    fn messages(r: Result<CpuPlan, Vec<Misfit<'_>>>) -> Vec<String> {
        r.unwrap_err().iter().map(|m| m.to_string()).collect()
    }

    #[test]
    fn qemu_dev_fits_the_recorded_qemu_machine() {
        let bytes = compile(QEMU_DEV);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let (cpus, map) = (qemu_cpus(5), qemu_map());
        let plan = check(&policy, &facts(&cpus, &map)).unwrap_or_else(|e| panic!("{e:?}"));
        let idx = |n: &str| policy.partition_by_name(n).unwrap().index();
        assert_eq!(plan.cpus_of(idx("primary")).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(plan.cpus_of(idx("hypercalls")).collect::<Vec<_>>(), vec![2]);
        assert_eq!(plan.cpus_of(idx("isolation")).collect::<Vec<_>>(), vec![3]);
        assert_eq!(
            plan.cpus_of(idx("isolation-hv")).collect::<Vec<_>>(),
            vec![4]
        );
    }

    #[test]
    fn the_primary_does_not_own_other_partitions_cpus_nor_unassigned_ones() {
        // qemu-probe: primary 0-1, test partitions on 2 and 3, APIC 4 no one's
        let bytes = compile(QEMU_PROBE);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let (cpus, map) = (qemu_cpus(5), qemu_map());
        let plan = check(&policy, &facts(&cpus, &map)).unwrap_or_else(|e| panic!("{e:?}"));
        let primary = policy.partition_by_name("primary").unwrap().index();
        assert_eq!(plan.owner_of(4), None);
        assert_eq!(
            plan.not_owned_by(primary, cpus.iter().map(|c| c.apic_id)),
            vec![2, 3, 4]
        );
        let spin = policy.partition_by_name("spin").unwrap().index();
        assert_eq!(plan.not_owned_by(spin, [4, 0, 3, 0]), vec![0, 4]);
    }

    #[test]
    fn too_few_cpus_name_the_missing_apic_ids() {
        let bytes = compile(QEMU_DEV);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let (cpus, map) = (qemu_cpus(2), qemu_map());
        let msgs = messages(check(&policy, &facts(&cpus, &map)));
        assert!(
            msgs.contains(
                &"machine: the policy describes 5 CPUs, the ACPI MADT has 2 enabled".into()
            ),
            "{msgs:?}"
        );
        assert!(
            msgs.contains(&"machine.cpus: APIC ID 3 is not an enabled CPU in the ACPI MADT".into()),
            "{msgs:?}"
        );
        assert!(
            msgs.contains(
                &"partition 'isolation' cpus: APIC ID 3 is not an enabled CPU in the ACPI MADT"
                    .into()
            ),
            "{msgs:?}"
        );
    }

    #[test]
    fn single_cpu_machines_run_test_partitions_on_the_boot_cpu() {
        // The Bochs layout: the primary on the boot CPU alone, test partitions on 1-3.
        let bytes = compile(BOCHS_DEV);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let (cpus, map) = (qemu_cpus(1), qemu_map());
        let plan = check(&policy, &facts(&cpus, &map)).unwrap_or_else(|e| panic!("{e:?}"));
        let idx = |n: &str| policy.partition_by_name(n).unwrap().index();
        assert_eq!(plan.owners, vec![(0, idx("primary"))]);
        assert_eq!(
            plan.unplaced,
            vec![
                (1, idx("hypercalls")),
                (2, idx("isolation")),
                (3, idx("isolation-hv"))
            ]
        );
        // Two CPUs: the same policy is refused, naming the missing one.
        let cpus = qemu_cpus(2);
        let msgs = messages(check(&policy, &facts(&cpus, &map)));
        assert!(
            msgs.iter()
                .any(|m| m.contains("'isolation' cpus: APIC ID 2")),
            "{msgs:?}"
        );
    }

    #[test]
    fn disabled_madt_cpus_do_not_count() {
        let bytes = compile(QEMU_DEV);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let mut cpus = qemu_cpus(5);
        cpus[2].enabled = false;
        let map = qemu_map();
        let msgs = messages(check(&policy, &facts(&cpus, &map)));
        assert!(
            msgs.iter()
                .any(|m| m.contains("'hypercalls' cpus: APIC ID 2")),
            "{msgs:?}"
        );
    }

    #[test]
    fn small_memory_and_taken_regions_are_refused() {
        let bytes = compile(QEMU_DEV);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let cpus = qemu_cpus(5);
        // A 256 MiB machine: RAM ends at 0x1000_0000, so 0x4000_0000 is outside the map.
        let small = [
            MapEntry::new(memory_map::ty::CONVENTIONAL, 0x10_0000, 0xff00),
            MapEntry::new(memory_map::ty::MMIO, 0xffc0_0000, 0x400),
        ];
        let msgs = messages(check(&policy, &facts(&cpus, &small)));
        assert!(
            msgs.contains(
                &"machine.memory: the policy assumes 2048 MiB of RAM, the firmware reports 255 MiB"
                    .into()
            ),
            "{msgs:?}"
        );
        assert!(
            msgs.contains(
                &"partition 'hypercalls' memory 0x40000000..0x41000000 is not free conventional memory (not in the firmware memory map)"
                    .into()
            ),
            "{msgs:?}"
        );
        // Firmware data inside a test region.
        let mut map = qemu_map();
        map.push(MapEntry::new(
            memory_map::ty::BOOT_SERVICES_DATA,
            0x4180_0000,
            0x10,
        ));
        // Carve it out of the conventional entry that covered it, as the firmware would.
        let conv = map
            .iter()
            .position(|e| e.ty == 7 && e.base <= 0x4180_0000 && 0x4180_0000 < e.end())
            .unwrap();
        let c = map.remove(conv);
        map.push(MapEntry::new(7, c.base, (0x4180_0000 - c.base) / PAGE_SIZE));
        map.push(MapEntry::new(
            7,
            0x4181_0000,
            (c.end() - 0x4181_0000) / PAGE_SIZE,
        ));
        let msgs = messages(check(&policy, &facts(&cpus, &map)));
        assert_eq!(
            msgs,
            vec![
                "partition 'isolation' memory 0x41000000..0x42000000 is not free conventional memory (firmware has boot-data at 0x41800000..0x41810000)"
            ]
        );
    }

    #[test]
    fn boot_cpu_must_stay_primary() {
        let bytes = compile(QEMU_DEV);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let (cpus, map) = (qemu_cpus(5), qemu_map());
        let mut f = facts(&cpus, &map);
        f.bsp_apic_id = 2;
        let msgs = messages(check(&policy, &f));
        assert_eq!(
            msgs,
            vec!["the boot CPU (APIC ID 2) is given to partition 'hypercalls'; it must stay with the primary partition"]
        );
        f.bsp_apic_id = 4;
        let msgs = messages(check(&policy, &f));
        assert_eq!(
            msgs,
            vec!["the boot CPU (APIC ID 4) is given to partition 'isolation-hv'; it must stay with the primary partition"]
        );
        f.bsp_apic_id = 3;
        // qemu-fail.toml leaves APIC ID 3 to nobody.
        let bytes = compile(include_str!("../../../policies/qemu-fail.toml"));
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let msgs = messages(check(&policy, &f));
        assert_eq!(
            msgs,
            vec!["the boot CPU (APIC ID 3) is not given to the primary partition"]
        );
    }

    #[test]
    fn no_virtualization_is_a_misfit() {
        let bytes = compile(QEMU_DEV);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let (cpus, map) = (qemu_cpus(5), qemu_map());
        let mut f = facts(&cpus, &map);
        f.can_virtualize = false;
        let misfits = check(&policy, &f).unwrap_err();
        assert_eq!(misfits, vec![Misfit::NoVirtualization]);
        assert_eq!(
            FailSummary(&misfits).to_string(),
            "policy does not fit: the CPU has neither SVM with nested paging nor VMX with EPT"
        );
    }

    /// The reference machine: 16 P threads (APIC IDs 0..16), 16 E-cores (APIC IDs 32..48).
    fn raptor_lake() -> (Vec<MadtCpu>, Vec<(u32, CoreType)>) {
        hybrid((0..16).chain(32..48).collect())
    }

    fn raptor_lake_map() -> Vec<MapEntry> {
        let gib = 1u64 << 30;
        vec![
            MapEntry::new(memory_map::ty::BOOT_SERVICES_CODE, 0, 1),
            MapEntry::new(
                memory_map::ty::CONVENTIONAL,
                0x1000,
                (2 * gib - 0x1000) / PAGE_SIZE,
            ),
            MapEntry::new(memory_map::ty::CONVENTIONAL, 4 * gib, 62 * gib / PAGE_SIZE),
        ]
    }

    #[test]
    fn reference_layout_resolves_classes_to_apic_ids() {
        let bytes = compile(I9);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let (cpus, types) = raptor_lake();
        let map = raptor_lake_map();
        let f = hybrid_facts(&cpus, &types, 0, &map);
        let plan = check(&policy, &f).unwrap_or_else(|e| panic!("{e:?}"));
        let idx = |n: &str| policy.partition_by_name(n).unwrap().index();
        // Primary is low-latency: it picks first, so it gets P threads 0..8 and E-cores 32..36.
        let primary: Vec<u32> = plan.cpus_of(idx("primary")).collect();
        assert_eq!(primary, (0..8).chain(32..36).collect::<Vec<_>>());
        assert_eq!(
            plan.cpus_of(idx("ai")).collect::<Vec<_>>(),
            (8..16).collect::<Vec<_>>()
        );
        assert_eq!(
            plan.cpus_of(idx("containers")).collect::<Vec<_>>(),
            (36..48).collect::<Vec<_>>()
        );
    }

    #[test]
    fn reference_layout_on_a_smaller_hybrid_part() {
        let bytes = compile(I9);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let (mut cpus, types) = raptor_lake();
        cpus.truncate(24); // only 8 E-cores
        let map = raptor_lake_map();
        let f = hybrid_facts(&cpus, &types, 0, &map);
        let msgs = messages(check(&policy, &f));
        assert!(
            msgs.contains(
                &"machine: the policy describes 32 CPUs, the ACPI MADT has 24 enabled".into()
            ),
            "{msgs:?}"
        );
        assert!(
            msgs.contains(
                &"partition 'containers' cpus: wants 12 E-core CPU(s), 4 left on this machine"
                    .into()
            ),
            "{msgs:?}"
        );
    }

    /// The i9-13900HX as `topology`'s tests model it (8 P-cores x 2 threads at APIC IDs
    /// 0..16, SMT shift 1; 16 E-cores at even APIC IDs 32..62), classes as the platform
    /// reads them from CPUID 0x1A.
    fn i9_13900hx() -> (Vec<MadtCpu>, Vec<(u32, CoreType)>) {
        hybrid(
            topology::tests::i9_13900hx()
                .iter()
                .map(|&(apic_id, _)| apic_id)
                .collect(),
        )
    }

    /// The fit check plans the reference policy through the shared resolver: the
    /// low-latency primary gets whole P-cores (both threads) and E-cores first, the boot
    /// CPU stays with it, every CPU is used once, each of the right class.
    #[test]
    fn reference_layout_through_the_shared_resolver_on_the_modelled_i9() {
        let bytes = compile(I9);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let (cpus, types) = i9_13900hx();
        let map = raptor_lake_map();
        let f = hybrid_facts(&cpus, &types, 1, &map);
        let plan = check(&policy, &f).unwrap_or_else(|e| panic!("{e:?}"));
        let idx = |n: &str| policy.partition_by_name(n).unwrap().index();
        let primary: Vec<u32> = plan.cpus_of(idx("primary")).collect();
        assert_eq!(primary, vec![0, 1, 2, 3, 4, 5, 6, 7, 32, 34, 36, 38]);
        assert_eq!(
            plan.cpus_of(idx("ai")).collect::<Vec<_>>(),
            (8..16).collect::<Vec<_>>()
        );
        assert_eq!(
            plan.cpus_of(idx("containers")).collect::<Vec<_>>(),
            (40..64).step_by(2).collect::<Vec<_>>()
        );
        assert_eq!(plan.owners.len(), 32, "every logical CPU is assigned once");
        for &(apic, owner) in &plan.owners {
            let p = policy.partition(owner).unwrap();
            let wants_e = p.cpus().any(|e| {
                matches!(
                    e,
                    CpuEntry::Class {
                        class: CoreClass::E,
                        ..
                    }
                )
            });
            assert!(apic < 16 || wants_e, "{} got E-core {apic}", p.name());
        }
        // The same answer as the resolver gives on its own for the same requests.
        let topo = f.topology();
        let mut out = [CpuSet::EMPTY; 2];
        topology::resolve(&topo, &REFERENCE_PRIMARY, CpuSet::EMPTY, &mut out).unwrap();
        let direct: Vec<u32> = out[0].iter().chain(out[1].iter()).collect();
        assert_eq!(direct, primary);
    }

    /// A low-latency partition whose P-thread count is odd cannot have whole cores once the
    /// SMT siblings are known; without SMT information the same policy fits.
    #[test]
    fn low_latency_counts_must_make_whole_cores() {
        let toml = I9.replace(
            "cpus = [{ class = \"P\", count = 8 }, { class = \"E\", count = 4 }]",
            "cpus = [{ class = \"P\", count = 7 }, { class = \"E\", count = 4 }]",
        );
        assert_ne!(toml, I9, "the reference policy's primary CPU line changed");
        let bytes = compile(&toml);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let (cpus, types) = i9_13900hx();
        let map = raptor_lake_map();
        let mut f = hybrid_facts(&cpus, &types, 1, &map);
        let msgs = messages(check(&policy, &f));
        assert!(
            msgs.contains(
                &"partition 'primary' cpus: low-latency, so 7 P-core CPU(s) must make whole cores; the free P-cores do not split that way"
                    .into()
            ),
            "{msgs:?}"
        );
        // With the primary's last P thread missing, the AI partition's 8 P-threads cannot
        // make whole cores either: it does not share cores unless the policy says so.
        f.smt_shift = 0;
        let plan = check(&policy, &f).unwrap_or_else(|e| panic!("{e:?}"));
        let idx = |n: &str| policy.partition_by_name(n).unwrap().index();
        assert_eq!(plan.cpus_of(idx("primary")).filter(|&a| a < 16).count(), 7);
    }

    /// The QEMU development policy on a machine whose APIC IDs 2k and 2k+1 are SMT siblings
    /// (`smt_shift` = 1): the primary's two CPUs (0, 1) are one core, which is allowed (one
    /// partition), but hypercalls (APIC 2) would share core 1 with isolation (3). Refused,
    /// naming the pair and the core.
    #[test]
    fn partitions_on_smt_siblings_do_not_fit() {
        let bytes = compile(QEMU_DEV);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let (cpus, map) = (qemu_cpus(5), qemu_map());
        let mut f = facts(&cpus, &map);
        f.smt_shift = 1;
        let msgs = messages(check(&policy, &f));
        assert_eq!(
            msgs,
            vec![
                "partitions 'hypercalls' (APIC ID 2) and 'isolation' (APIC ID 3) would share SMT core 1; give each whole cores, or set share_smt_core = true on both",
            ]
        );
        // Without SMT (each APIC ID its own core) the same policy fits.
        f.smt_shift = 0;
        let plan = check(&policy, &f).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(plan.shared_cores.is_empty());
    }

    /// `share_smt_core = true` on both partitions of a core lets them share it (and the plan
    /// says so); on one of them only, it does not.
    #[test]
    fn sharing_a_core_needs_both_partitions_consent() {
        let hypercalls = |t: &str| {
            t.replace(
                "cmdline = \"hypercalls\"",
                "cmdline = \"hypercalls\"\nshare_smt_core = true",
            )
        };
        let isolation = |t: &str| {
            t.replace(
                "cmdline = \"isolation\"",
                "cmdline = \"isolation\"\nshare_smt_core = true",
            )
        };
        let (cpus, map) = (qemu_cpus(5), qemu_map());
        let mut f = facts(&cpus, &map);
        f.smt_shift = 1;
        // One side only: still refused.
        let one = isolation(QEMU_DEV);
        assert_ne!(one, QEMU_DEV);
        let bytes = compile(&one);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let msgs = messages(check(&policy, &f));
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0].contains("'hypercalls' (APIC ID 2) and 'isolation' (APIC ID 3)"),
            "{msgs:?}"
        );
        // Both: the plan shares core 1 by consent and lists it.
        let both = hypercalls(&one);
        assert_ne!(both, one);
        let bytes = compile(&both);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let plan = check(&policy, &f).unwrap_or_else(|e| panic!("{e:?}"));
        let idx = |n: &str| policy.partition_by_name(n).unwrap().index();
        assert_eq!(
            plan.shared_cores,
            vec![(1, idx("hypercalls"), idx("isolation"))]
        );
    }

    /// Class requests of partitions that do not share take whole cores: the reference layout
    /// still fits the modelled i9 (8 P-threads are 4 whole cores), an odd count does not,
    /// and with `share_smt_core` it does.
    #[test]
    fn class_requests_take_whole_cores_unless_sharing_is_allowed() {
        let odd = I9.replace(
            "cpus = { class = \"P\", count = 8 }",
            "cpus = { class = \"P\", count = 7 }",
        );
        assert_ne!(odd, I9, "the reference policy's AI CPU line changed");
        let bytes = compile(&odd);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let (cpus, types) = i9_13900hx();
        let map = raptor_lake_map();
        let f = hybrid_facts(&cpus, &types, 1, &map);
        let msgs = messages(check(&policy, &f));
        assert_eq!(
            msgs,
            vec!["partition 'ai' cpus: 7 P-core CPU(s) must make whole cores, since it shares no SMT core with another partition (set share_smt_core = true to allow it); the free P-cores do not split that way"]
        );
        let sharing = odd.replace("role = \"ai\"", "role = \"ai\"\nshare_smt_core = true");
        let bytes = compile(&sharing);
        let policy = CompiledPolicy::decode(&bytes).unwrap();
        let plan = check(&policy, &f).unwrap_or_else(|e| panic!("{e:?}"));
        let ai = policy.partition_by_name("ai").unwrap().index();
        assert_eq!(plan.cpus_of(ai).count(), 7);
        assert!(plan.shared_cores.is_empty(), "its spare thread is nobody's");
    }
}
