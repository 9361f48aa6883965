//! Hybrid-core topology: classify logical CPUs as performance (P) or efficiency
//! (E) cores from CPUID leaf 0x1A, and resolve a policy's per-class CPU counts
//! to concrete APIC IDs. Backend-neutral: the platform's fit check
//! (`platform/policy_fit.rs`) plans every machine's CPUs through [`resolve_one`],
//! whatever the vendor (non-hybrid parts are all P).
//!
//! Each CPU must execute CPUID 0x1A itself (the leaf describes the executing
//! core), so the boot code gathers `(APIC ID, CPUID.1A.EAX)` on every CPU and
//! hands the records here. CPUID.1A:EAX[31:24] is the core type (0x40 = Intel
//! Core, 0x20 = Intel Atom), EAX[23:0] the native model ID. The leaf is only
//! meaningful when CPUID.7.0:EDX[15] (hybrid) is set.

use core::fmt;

/// Core type values of CPUID.1A:EAX[31:24].
pub const CORE_TYPE_ATOM: u8 = 0x20;
pub const CORE_TYPE_CORE: u8 = 0x40;

/// The class a logical CPU belongs to. The codes match the policy crate's
/// `CoreClass::code()` (P = 0, E = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreKind {
    Performance,
    Efficiency,
}

impl CoreKind {
    pub const fn code(self) -> u8 {
        match self {
            CoreKind::Performance => 0,
            CoreKind::Efficiency => 1,
        }
    }
    pub const fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(CoreKind::Performance),
            1 => Some(CoreKind::Efficiency),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            CoreKind::Performance => "P",
            CoreKind::Efficiency => "E",
        }
    }

    /// The policy's class of the same name.
    pub const fn from_class(class: nexus_policy::CoreClass) -> Self {
        match class {
            nexus_policy::CoreClass::P => CoreKind::Performance,
            nexus_policy::CoreClass::E => CoreKind::Efficiency,
        }
    }
}

impl CoreKind {
    /// The policy's class of this kind.
    pub const fn class(self) -> nexus_policy::CoreClass {
        match self {
            CoreKind::Performance => nexus_policy::CoreClass::P,
            CoreKind::Efficiency => nexus_policy::CoreClass::E,
        }
    }
}

/// Width of the SMT field of the APIC ID from CPUID leaf 0xB sub-leaf 0
/// (EAX[4:0] when ECX[15:8] says the level is SMT), 0 without the leaf:
/// then every logical CPU counts as a core of its own. `cpuid(leaf, subleaf)`
/// returns EAX, EBX, ECX, EDX of the executing CPU.
pub fn smt_shift(cpuid: impl Fn(u32, u32) -> [u32; 4]) -> u32 {
    const LEVEL_SMT: u32 = 1;
    if cpuid(0, 0)[0] < 0xB {
        return 0;
    }
    let [eax, _, ecx, _] = cpuid(0xB, 0);
    if (ecx >> 8) & 0xff == LEVEL_SMT {
        eax & 0x1f
    } else {
        0
    }
}

/// Classify one CPU from its CPUID.1A EAX. A non-hybrid part (or an unknown
/// core type) counts as P: every core of a uniform part is a "big" core.
pub const fn classify(hybrid: bool, leaf_1a_eax: u32) -> CoreKind {
    if hybrid && (leaf_1a_eax >> 24) as u8 == CORE_TYPE_ATOM {
        CoreKind::Efficiency
    } else {
        CoreKind::Performance
    }
}

/// A set of APIC IDs below 256.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuSet([u64; 4]);

impl CpuSet {
    pub const EMPTY: CpuSet = CpuSet([0; 4]);
    pub const MAX_APIC_ID: u32 = 255;

    pub fn insert(&mut self, apic_id: u32) {
        if apic_id <= Self::MAX_APIC_ID {
            self.0[(apic_id / 64) as usize] |= 1 << (apic_id % 64);
        }
    }
    pub fn contains(&self, apic_id: u32) -> bool {
        apic_id <= Self::MAX_APIC_ID && self.0[(apic_id / 64) as usize] & (1 << (apic_id % 64)) != 0
    }
    pub fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..=Self::MAX_APIC_ID).filter(move |&id| self.contains(id))
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// One logical CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogicalCpu {
    pub apic_id: u32,
    pub kind: CoreKind,
    /// Cores share everything above the SMT bits of the APIC ID.
    pub core: u32,
}

pub const MAX_CPUS: usize = 256;

/// The machine's CPUs, sorted by APIC ID.
#[derive(Clone)]
pub struct Topology {
    cpus: [Option<LogicalCpu>; MAX_CPUS],
    count: usize,
}

impl Topology {
    /// Build from `(APIC ID, CPUID.1A.EAX)` records. `smt_shift` is the width of
    /// the SMT field of the APIC ID (CPUID 0x1F/0xB sub-leaf 0, EAX[4:0]).
    pub fn from_records(records: &[(u32, u32)], hybrid: bool, smt_shift: u32) -> Self {
        let mut t = Topology {
            cpus: [None; MAX_CPUS],
            count: 0,
        };
        for &(apic_id, eax) in records.iter().take(MAX_CPUS) {
            t.cpus[t.count] = Some(LogicalCpu {
                apic_id,
                kind: classify(hybrid, eax),
                core: apic_id >> smt_shift,
            });
            t.count += 1;
        }
        t.cpus[..t.count].sort_unstable_by_key(|c| c.map(|c| c.apic_id));
        t
    }

    /// Build from CPUs already classified (the platform reads leaf 0x1A on each).
    pub fn from_kinds(cpus: impl IntoIterator<Item = (u32, CoreKind)>, smt_shift: u32) -> Self {
        let mut t = Topology {
            cpus: [None; MAX_CPUS],
            count: 0,
        };
        for (apic_id, kind) in cpus.into_iter().take(MAX_CPUS) {
            t.cpus[t.count] = Some(LogicalCpu {
                apic_id,
                kind,
                core: apic_id >> smt_shift,
            });
            t.count += 1;
        }
        t.cpus[..t.count].sort_unstable_by_key(|c| c.map(|c| c.apic_id));
        t
    }

    pub fn cpus(&self) -> impl Iterator<Item = LogicalCpu> + '_ {
        self.cpus[..self.count].iter().flatten().copied()
    }

    pub fn count(&self, kind: CoreKind) -> u32 {
        self.cpus().filter(|c| c.kind == kind).count() as u32
    }

    fn threads_of(&self, core: u32) -> impl Iterator<Item = LogicalCpu> + '_ {
        self.cpus().filter(move |c| c.core == core)
    }
}

/// One partition's request: `count` logical CPUs of `kind`; `whole_cores` keeps
/// SMT siblings together (low-latency partitions never share a core).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassRequest {
    pub kind: CoreKind,
    pub count: u32,
    pub whole_cores: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolveError {
    /// Index of the request that could not be met.
    pub request: usize,
    pub kind: CoreKind,
    pub wanted: u32,
    /// Logical CPUs of that class still free when the request was resolved.
    pub free: u32,
    /// The count does not split into whole cores.
    pub split_core: bool,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.split_core {
            write!(
                f,
                "CPU request {}: {} {}-class CPUs do not make whole cores ({} left free)",
                self.request,
                self.wanted,
                self.kind.name(),
                self.free
            )
        } else {
            write!(
                f,
                "CPU request {}: wants {} {}-class CPUs, only {} left free on this machine",
                self.request,
                self.wanted,
                self.kind.name(),
                self.free
            )
        }
    }
}

/// Resolve requests in order (callers put low-latency partitions first) to
/// APIC IDs. CPUs in `reserved` are never handed out. Each result set is
/// disjoint from all others. Stops at the first request that cannot be met.
pub fn resolve(
    topo: &Topology,
    requests: &[ClassRequest],
    reserved: CpuSet,
    out: &mut [CpuSet],
) -> Result<(), ResolveError> {
    let mut taken = reserved;
    for (i, req) in requests.iter().enumerate() {
        let set = resolve_one(topo, i, req, &mut taken)?;
        if let Some(slot) = out.get_mut(i) {
            *slot = set;
        }
    }
    Ok(())
}

/// Resolve one request (number `index`, for the error) from the CPUs not in
/// `taken`, and add what it got to `taken`. On error nothing is taken, so a
/// caller that reports every problem can go on with the next request.
pub fn resolve_one(
    topo: &Topology,
    index: usize,
    req: &ClassRequest,
    taken: &mut CpuSet,
) -> Result<CpuSet, ResolveError> {
    let taken_now = *taken;
    let free = || {
        topo.cpus()
            .filter(move |c| c.kind == req.kind && !taken_now.contains(c.apic_id))
    };
    let free_count = free().count() as u32;
    let err = |split_core| ResolveError {
        request: index,
        kind: req.kind,
        wanted: req.count,
        free: free_count,
        split_core,
    };
    let mut set = CpuSet::EMPTY;
    if req.whole_cores {
        // Take cores whose threads are all free, one whole core at a time.
        for cpu in free() {
            if set.len() >= req.count || set.contains(cpu.apic_id) {
                continue;
            }
            if topo
                .threads_of(cpu.core)
                .all(|t| !taken_now.contains(t.apic_id))
            {
                topo.threads_of(cpu.core)
                    .for_each(|t| set.insert(t.apic_id));
                if set.len() > req.count {
                    return Err(err(free_count >= req.count));
                }
            }
        }
    } else {
        for cpu in free().take(req.count as usize) {
            set.insert(cpu.apic_id);
        }
    }
    if set.len() < req.count {
        return Err(err(false));
    }
    for id in set.iter() {
        taken.insert(id);
    }
    Ok(set)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// CPUID 0x1A EAX as a Raptor Lake part reports it: core type in bits 31:24,
    /// native model ID 1 in bits 23:0.
    const P_EAX: u32 = 0x4000_0001;
    const E_EAX: u32 = 0x2000_0001;

    /// The reference policy's low-latency primary: 8 P-core threads and 4 E-cores, to
    /// whole cores (tests across the crate).
    pub(crate) const REFERENCE_PRIMARY: [ClassRequest; 2] = [
        ClassRequest {
            kind: CoreKind::Performance,
            count: 8,
            whole_cores: true,
        },
        ClassRequest {
            kind: CoreKind::Efficiency,
            count: 4,
            whole_cores: true,
        },
    ];

    /// i9-13900HX: 8 P-cores with two threads (APIC IDs 0..15, SMT shift 1) and
    /// 16 E-cores without SMT at even APIC IDs 32..62, as the firmware enumerates them:
    /// `(APIC ID, CPUID 0x1A EAX)` (tests across the crate).
    pub(crate) fn i9_13900hx() -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> = (0..16).map(|id| (id, P_EAX)).collect();
        v.extend((0..16).map(|i| (32 + 2 * i, E_EAX)));
        v
    }

    #[test]
    fn classification_from_leaf_1a() {
        assert_eq!(classify(true, P_EAX), CoreKind::Performance);
        assert_eq!(classify(true, E_EAX), CoreKind::Efficiency);
        assert_eq!(
            classify(false, E_EAX),
            CoreKind::Performance,
            "leaf ignored when not hybrid"
        );
        assert_eq!(classify(true, 0), CoreKind::Performance);
    }

    #[test]
    fn i9_13900hx_counts() {
        let t = Topology::from_records(&i9_13900hx(), true, 1);
        assert_eq!(t.count(CoreKind::Performance), 16);
        assert_eq!(t.count(CoreKind::Efficiency), 16);
        let e: Vec<_> = t
            .cpus()
            .filter(|c| c.kind == CoreKind::Efficiency)
            .collect();
        assert_eq!(e[0].apic_id, 32);
        assert_ne!(e[0].core, e[1].core, "E-cores have no SMT siblings");
        let p: Vec<_> = t
            .cpus()
            .filter(|c| c.kind == CoreKind::Performance)
            .collect();
        assert_eq!(p[0].core, p[1].core, "APIC IDs 0 and 1 are one P-core");
    }

    #[test]
    fn default_policy_layout_maps_to_apic_ids() {
        // Mirrors policies/i9-13900hx-rtx4080.toml: the gaming partition
        // (low latency, whole cores) first, then AI on P-cores, containers on E-cores.
        let t = Topology::from_records(&i9_13900hx(), true, 1);
        let reqs = [
            REFERENCE_PRIMARY[0],
            REFERENCE_PRIMARY[1],
            ClassRequest {
                kind: CoreKind::Performance,
                count: 8,
                whole_cores: false,
            },
            ClassRequest {
                kind: CoreKind::Efficiency,
                count: 12,
                whole_cores: false,
            },
        ];
        let mut out = [CpuSet::EMPTY; 4];
        resolve(&t, &reqs, CpuSet::EMPTY, &mut out).unwrap();
        assert_eq!(
            out[0].iter().collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
        assert_eq!(out[1].iter().collect::<Vec<_>>(), vec![32, 34, 36, 38]);
        assert_eq!(
            out[2].iter().collect::<Vec<_>>(),
            (8..16).collect::<Vec<_>>()
        );
        assert_eq!(out[3].len(), 12);
        assert!(out[3]
            .iter()
            .all(|id| (40..=62).contains(&id) && id % 2 == 0));
        for (i, a) in out.iter().enumerate() {
            for b in &out[i + 1..] {
                assert!(a.iter().all(|id| !b.contains(id)), "sets overlap");
            }
        }
    }

    /// The shipped layout, read from policies/i9-13900hx-rtx4080.toml: every
    /// partition's class requests (low-latency ones first, to whole cores)
    /// resolve to disjoint APIC IDs of the right class on the modelled part,
    /// and the boot CPU (APIC 0) lands in the primary partition.
    #[test]
    fn shipped_i9_policy_maps_to_apic_ids() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/i9-13900hx-rtx4080.toml"
        );
        let policy = nexus_policy::load_file(path).unwrap_or_else(|e| panic!("{e}"));
        let t = Topology::from_records(&i9_13900hx(), true, 1);
        let machine = policy
            .machine
            .cpu_counts
            .expect("the i9 policy counts CPUs per class");
        assert_eq!(machine.p, t.count(CoreKind::Performance));
        assert_eq!(machine.e, t.count(CoreKind::Efficiency));

        let mut order: Vec<&nexus_policy::Partition> = policy.partitions.iter().collect();
        order.sort_by_key(|p| !p.low_latency);
        let mut reqs = Vec::new();
        let mut owner = Vec::new();
        for p in &order {
            for r in &p.cpus {
                reqs.push(ClassRequest {
                    kind: CoreKind::from_class(r.class),
                    count: r.count,
                    whole_cores: p.low_latency,
                });
                owner.push(p.name.as_str());
            }
        }
        let mut out = vec![CpuSet::EMPTY; reqs.len()];
        resolve(&t, &reqs, CpuSet::EMPTY, &mut out).unwrap_or_else(|e| panic!("{e}"));
        let mut all = CpuSet::EMPTY;
        for ((req, set), name) in reqs.iter().zip(&out).zip(&owner) {
            assert_eq!(set.len(), req.count, "{name}");
            for id in set.iter() {
                assert!(!all.contains(id), "APIC {id} given twice ({name})");
                all.insert(id);
                let cpu = t.cpus().find(|c| c.apic_id == id).unwrap();
                assert_eq!(cpu.kind, req.kind, "{name}: APIC {id}");
                if req.whole_cores {
                    assert!(
                        t.threads_of(cpu.core).all(|s| set.contains(s.apic_id)),
                        "{name}: {id}"
                    );
                }
            }
        }
        let primary = owner.iter().position(|n| *n == "primary").unwrap();
        assert!(
            out[primary].contains(0),
            "the boot CPU belongs to the primary"
        );
        assert_eq!(all.len(), 32, "every logical CPU is assigned");
    }

    #[test]
    fn reserved_cpus_are_skipped_and_whole_cores_respected() {
        let t = Topology::from_records(&i9_13900hx(), true, 1);
        let mut reserved = CpuSet::EMPTY;
        reserved.insert(1); // hypervisor keeps a thread of core 0
        let reqs = [ClassRequest {
            kind: CoreKind::Performance,
            count: 2,
            whole_cores: true,
        }];
        let mut out = [CpuSet::EMPTY];
        resolve(&t, &reqs, reserved, &mut out).unwrap();
        assert_eq!(
            out[0].iter().collect::<Vec<_>>(),
            vec![2, 3],
            "core 0 is half taken"
        );
    }

    #[test]
    fn errors_name_the_request() {
        let t = Topology::from_records(&i9_13900hx(), true, 1);
        let reqs = [
            ClassRequest {
                kind: CoreKind::Efficiency,
                count: 10,
                whole_cores: false,
            },
            ClassRequest {
                kind: CoreKind::Efficiency,
                count: 7,
                whole_cores: false,
            },
        ];
        let mut out = [CpuSet::EMPTY; 2];
        let e = resolve(&t, &reqs, CpuSet::EMPTY, &mut out).unwrap_err();
        assert_eq!(
            (e.request, e.wanted, e.free, e.split_core),
            (1, 7, 6, false)
        );
        assert!(format!("{e}").contains("only 6 left"), "{e}");
        let odd = [ClassRequest {
            kind: CoreKind::Performance,
            count: 3,
            whole_cores: true,
        }];
        let e = resolve(&t, &odd, CpuSet::EMPTY, &mut out).unwrap_err();
        assert!(e.split_core, "{e}");
    }

    #[test]
    fn non_hybrid_machine_is_all_p() {
        let recs: Vec<_> = (0..4).map(|id| (id, 0)).collect();
        let t = Topology::from_records(&recs, false, 0);
        assert_eq!(t.count(CoreKind::Performance), 4);
        assert_eq!(t.count(CoreKind::Efficiency), 0);
    }

    #[test]
    fn cpuset_basics() {
        let mut s = CpuSet::EMPTY;
        s.insert(0);
        s.insert(255);
        s.insert(300); // ignored: beyond xAPIC range we track
        assert_eq!(s.len(), 2);
        assert!(s.contains(255) && !s.contains(300));
        assert_eq!(format!("{s:?}"), "{0, 255}");
    }

    #[test]
    fn smt_shift_from_leaf_b() {
        // Raptor Lake: leaf 0xB sub-leaf 0 is the SMT level (ECX[15:8] = 1), shift 1.
        let raptor = |leaf: u32, _sub: u32| match leaf {
            0 => [0x20, 0, 0, 0],
            0xB => [1, 2, 0x100, 0],
            _ => [0; 4],
        };
        assert_eq!(smt_shift(raptor), 1);
        // No leaf 0xB: unknown, every thread its own core.
        assert_eq!(smt_shift(|_, _| [0xA, 0, 0, 0]), 0);
        // Sub-leaf 0 reporting a core level (type 2) is not an SMT width.
        assert_eq!(
            smt_shift(|l, _| if l == 0 {
                [0x20, 0, 0, 0]
            } else {
                [4, 8, 0x200, 0]
            }),
            0
        );
    }

    #[test]
    fn classified_cpus_build_the_same_topology() {
        let raw = Topology::from_records(&i9_13900hx(), true, 1);
        let kinds = i9_13900hx()
            .into_iter()
            .map(|(id, eax)| (id, classify(true, eax)));
        let t = Topology::from_kinds(kinds, 1);
        assert_eq!(t.cpus().collect::<Vec<_>>(), raw.cpus().collect::<Vec<_>>());
        assert_eq!(CoreKind::Efficiency.class(), nexus_policy::CoreClass::E);
    }

    #[test]
    fn a_failed_request_takes_nothing() {
        let t = Topology::from_records(&i9_13900hx(), true, 1);
        let mut taken = CpuSet::EMPTY;
        let big = ClassRequest {
            kind: CoreKind::Efficiency,
            count: 17,
            whole_cores: false,
        };
        assert!(resolve_one(&t, 0, &big, &mut taken).is_err());
        assert!(taken.is_empty());
        let ok = ClassRequest { count: 2, ..big };
        let set = resolve_one(&t, 1, &ok, &mut taken).unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![32, 34]);
        assert_eq!(taken, set);
    }
}
