//! Generic exit handling against a fake vCPU and fake memory.

extern crate std;

use super::*;
use crate::exit::Access;
use crate::intel::ept::{Ept, EptCaps, EptPerms};
use crate::intel::memtype::Mtrrs;
use crate::launch::ipi::{route, Action, Sender};
use crate::mem::fake::FakeMem;
use crate::npt::{Npt, NptOptions, Perm};
use crate::partition::plan::tests::test_partition;
use crate::vcpu::Gprs;
use nexus_abi::ring::{PartitionInfo, PartitionStats, Payload};
use nexus_abi::{Group, GroupSet, Hypercall, Status};
use std::boxed::Box;
use std::vec::Vec;

#[derive(Default)]
struct FakeVcpu {
    gprs: Gprs,
    rip: u64,
    efer: u64,
    cpl: u8,
    compat: bool,
    /// CR0.PE clear (real mode); otherwise 64-bit mode (or compatibility mode).
    real: bool,
    xcr0: u64,
    cr4: u64,
    xss: u64,
    injected: Vec<(u8, Option<u32>)>,
    /// `Some(vector)` once started by SIPI; INIT clears it.
    started_at: Option<u8>,
    reset: bool,
    /// The backend cannot represent the INIT state.
    no_init: bool,
}

impl Vcpu for FakeVcpu {
    fn run(&mut self) -> VmExit {
        unreachable!("tests call handle_exit directly")
    }
    fn gpr(&self, r: Gpr) -> u64 {
        self.gprs.get(r)
    }
    fn set_gpr(&mut self, r: Gpr, value: u64) {
        self.gprs.set(r, value)
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, rip: u64) {
        self.rip = rip
    }
    fn cr3(&self) -> u64 {
        0
    }
    fn cr4(&self) -> u64 {
        self.cr4
    }
    fn xcr0(&self) -> u64 {
        self.xcr0
    }
    fn xss(&self) -> u64 {
        self.xss
    }
    fn mode(&self) -> CpuMode {
        if self.real {
            CpuMode::Real
        } else {
            CpuMode::Long { cs_l: !self.compat }
        }
    }
    fn cpl(&self) -> u8 {
        self.cpl
    }
    fn efer(&self) -> u64 {
        self.efer
    }
    fn set_efer(&mut self, value: u64) {
        self.efer = value
    }
    fn set_xcr0(&mut self, value: u64) {
        self.xcr0 = value
    }
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        self.injected.push((vector, error_code))
    }
    fn init_reset(&mut self) -> Result<(), &'static str> {
        if self.no_init {
            return Err("no INIT state here");
        }
        self.reset = true;
        self.started_at = None;
        self.rip = crate::vcpu::init_state::RIP;
        Ok(())
    }
    fn sipi_start(&mut self, vector: u8) {
        self.started_at = Some(vector);
        self.rip = 0;
    }
    fn cs_base(&self) -> u64 {
        0
    }
    fn queue_nmi(&mut self) {}
}

#[derive(Default)]
struct FakeHost {
    console: Vec<u8>,
    /// Where the routed IPIs went (a test partition on CPU 1 owning CPUs 1 and 2, of 0-3);
    /// `refuse` makes every IPI fail.
    ipis: Vec<(u32, Action)>,
    refuse: bool,
    /// The counters of the partition's other CPUs (`partition_stats`), and how many;
    /// `None`: a host without counters.
    counters: Option<(u32, Stats)>,
    /// WBINVDs executed on the guest's behalf.
    write_backs: u32,
}

impl ExitHost for FakeHost {
    fn partition_stats(&self, into: &Stats) -> Option<u32> {
        let (cpus, stats) = self.counters.as_ref()?;
        into.add(stats);
        Some(*cpus)
    }
    fn console(&mut self, bytes: &[u8]) {
        self.console.extend_from_slice(bytes)
    }
    fn ipi(&mut self, icr: Icr, x2apic: bool) -> Result<(), Refused> {
        if self.refuse {
            return Err(Refused);
        }
        let sender = Sender {
            primary: false,
            apic_id: 1,
            own: &[1, 2],
            all: &[0, 1, 2, 3],
            x2apic,
            logical_id: &|_| None,
            flat: true,
        };
        let mut out = Vec::new();
        route(&icr, &sender, &mut |a, act| out.push((a, act)))?;
        self.ipis.extend(out);
        Ok(())
    }
    fn write_back_caches(&mut self) {
        self.write_backs += 1;
    }
    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        match leaf {
            // VMX, SSE3, XSAVE, and OSXSAVE as the host's CR4 has it.
            1 => CpuidResult {
                eax: 0x800f11,
                ebx: 0,
                ecx: 1 << 5 | 1 | 1 << 26 | 1 << 27,
                edx: 0,
            },
            // PKU, and OSPKE as the host's CR4 has it.
            7 => CpuidResult {
                ecx: 1 << 3 | 1 << 4,
                ..CpuidResult::default()
            },
            // SVM in ECX; long mode, NX and SYSCALL in EDX.
            0x8000_0001 => CpuidResult {
                eax: 0,
                ebx: 0,
                ecx: 0b111,
                edx: 1 << 29 | 1 << 20 | 1 << 11,
            },
            0x8000_000a => CpuidResult {
                eax: 1,
                ebx: 16,
                ecx: 0,
                edx: 0x10010001,
            },
            0x8000_0000 => CpuidResult {
                eax: 0x8000_0008,
                ..CpuidResult::default()
            },
            // MAXPHYADDR 39, linear 48.
            0x8000_0008 => CpuidResult {
                eax: 0x3027,
                ..CpuidResult::default()
            },
            // XCR0 bits: x87, SSE, AVX, AVX-512 (opmask, ZMM_Hi256, Hi16_ZMM), PKRU; EBX as
            // the host's XCR0 (x87|SSE) has it, ECX for all of them.
            0xd if subleaf == 0 => CpuidResult {
                eax: 0x2e7,
                ebx: 576,
                ecx: 2696,
                edx: 0,
            },
            // XSAVEOPT, XSAVEC, XGETBV1, XSAVES; EBX for the host's XCR0 | XSS.
            0xd if subleaf == 1 => CpuidResult {
                eax: 0xf,
                ebx: 576,
                ..CpuidResult::default()
            },
            0xd => {
                let c = crate::xcr0::tests::skylake_component(subleaf);
                CpuidResult {
                    eax: c.size,
                    ebx: c.offset,
                    ..CpuidResult::default()
                }
            }
            _ => CpuidResult {
                eax: leaf,
                ebx: 1,
                ecx: 2,
                edx: 3,
            },
        }
    }
}

const BASE: u64 = 0x4000_0000;

struct Rig {
    part: PartitionConfig,
    /// The NPT (SVM) or the EPT (VMX) of the partition.
    second_level: Box<dyn SecondLevel<FakeMem>>,
    mem: FakeMem,
    host: FakeHost,
    stats: Stats,
    vcpu: FakeVcpu,
    /// The backend's hypercall instruction (VMMCALL unless a test says VMX).
    transport: Transport,
}

impl Rig {
    fn new(groups: GroupSet) -> Rig {
        Rig::with(groups, false)
    }

    /// A rig whose partition memory is mapped by an EPT (`ept`) or an NPT.
    fn with(groups: GroupSet, ept: bool) -> Rig {
        let mut part = test_partition(BASE, 0x10_0000);
        part.groups = groups;
        part.cmdline = crate::partition::FixedStr::new("hypercalls now");
        let mut mem = FakeMem::new(0x10_0000_0000);
        let second_level: Box<dyn SecondLevel<FakeMem>> = if ept {
            let mut ept = Ept::new(&mut mem, EptCaps(0x0f01_0633_4141 | (1 << 16))).unwrap();
            let mtrrs = Mtrrs::all_write_back(39);
            ept.map_identity(&mut mem, BASE, 0x10_0000, EptPerms::RWX, &mtrrs)
                .unwrap();
            Box::new(ept)
        } else {
            let opts = NptOptions {
                huge_pages: false,
                nx: true,
            };
            let mut npt = Npt::new(&mut mem, opts).unwrap();
            npt.map_identity(&mut mem, BASE, 0x10_0000, Perm::RWX)
                .unwrap();
            Box::new(npt)
        };
        let vcpu = FakeVcpu {
            rip: BASE + 0x100,
            ..Default::default()
        };
        Rig {
            part,
            second_level,
            mem,
            host: FakeHost::default(),
            stats: Stats::new(),
            vcpu,
            transport: Transport::Vmmcall,
        }
    }

    fn exit(&mut self, reason: ExitReason, len: u8) -> Flow {
        let mut cx = ExitContext {
            partition: &self.part,
            second_level: &*self.second_level,
            mem: &mut self.mem,
            host: &mut self.host,
            stats: &self.stats,
            transport: self.transport,
        };
        handle_exit(&mut self.vcpu, VmExit::new(reason, len), &mut cx)
    }

    /// Make hypercall `number` with `args`; returns (flow, status, rdx).
    fn call(&mut self, number: u64, args: [u64; 6]) -> (Flow, Status, u64) {
        let regs = [Gpr::Rdi, Gpr::Rsi, Gpr::Rdx, Gpr::R10, Gpr::R8, Gpr::R9];
        self.vcpu.set_gpr(Gpr::Rax, number);
        for (r, a) in regs.iter().zip(args) {
            self.vcpu.set_gpr(*r, a);
        }
        let flow = self.exit(ExitReason::Hypercall, 3);
        (
            flow,
            Status::from_raw(self.vcpu.gpr(Gpr::Rax)),
            self.vcpu.gpr(Gpr::Rdx),
        )
    }
}

#[test]
fn cpuid_announces_nexus_and_hides_nested_virtualization() {
    let mut r = Rig::new(GroupSet::ALL);
    r.vcpu.set_gpr(Gpr::Rax, 0x4000_0000);
    assert_eq!(r.exit(ExitReason::Cpuid, 2), Flow::Continue);
    assert_eq!(r.vcpu.rip, BASE + 0x102);
    let sig: Vec<u8> = [Gpr::Rbx, Gpr::Rcx, Gpr::Rdx]
        .iter()
        .flat_map(|g| (r.vcpu.gpr(*g) as u32).to_le_bytes())
        .collect();
    assert_eq!(sig, b"NexusOSNexus");
    r.vcpu.set_gpr(Gpr::Rax, 0x4000_0001);
    r.exit(ExitReason::Cpuid, 2);
    assert_eq!(r.vcpu.gpr(Gpr::Rax) as u32, ABI_VERSION.packed());
    assert_eq!(r.vcpu.gpr(Gpr::Rdx) as u32, GroupSet::ALL.bits());
    r.vcpu.set_gpr(Gpr::Rax, 1);
    r.exit(ExitReason::Cpuid, 2);
    assert_eq!(
        r.vcpu.gpr(Gpr::Rcx) as u32,
        1 << 31 | 1 | 1 << 26,
        "VMX hidden, OSXSAVE from the guest's CR4 (clear)"
    );
    r.vcpu.set_gpr(Gpr::Rax, 0x8000_0001);
    r.exit(ExitReason::Cpuid, 2);
    assert_eq!(r.vcpu.gpr(Gpr::Rcx), 0b011);
    r.vcpu.set_gpr(Gpr::Rax, 0x8000_000a);
    r.exit(ExitReason::Cpuid, 2);
    assert_eq!(r.vcpu.gpr(Gpr::Rdx), 0);
    assert_eq!(r.stats.exits_named("cpuid"), 5);
}

/// Review L4: CPUID bits that describe the guest's own state follow the guest, not the host
/// whose CR4 and XCR0 are loaded when the hypervisor runs CPUID.
#[test]
fn cpuid_follows_the_guests_cr4_and_xcr0() {
    let mut r = Rig::new(GroupSet::ALL);
    let cpuid = |r: &mut Rig, leaf: u64, sub: u64| {
        r.vcpu.set_gpr(Gpr::Rax, leaf);
        r.vcpu.set_gpr(Gpr::Rcx, sub);
        assert_eq!(r.exit(ExitReason::Cpuid, 2), Flow::Continue);
        [Gpr::Rax, Gpr::Rbx, Gpr::Rcx, Gpr::Rdx].map(|g| r.vcpu.gpr(g) as u32)
    };
    // CR4 without OSXSAVE/PKE although the host has both.
    assert_eq!(cpuid(&mut r, 1, 0)[2] & (1 << 27), 0);
    assert_eq!(cpuid(&mut r, 7, 0)[2] & (1 << 4), 0);
    assert_ne!(cpuid(&mut r, 7, 0)[2] & (1 << 3), 0, "PKU itself stays");
    r.vcpu.cr4 = 1 << 18 | 1 << 22 | 0x20;
    assert_ne!(cpuid(&mut r, 1, 0)[2] & (1 << 27), 0);
    assert_ne!(cpuid(&mut r, 7, 0)[2] & (1 << 4), 0);
    // XSAVE sizes for the guest's XCR0 (host's is x87|SSE: 576 bytes).
    r.vcpu.xcr0 = 0x7;
    let d0 = cpuid(&mut r, 0xd, 0);
    assert_eq!(d0, [0x2e7, 832, 2696, 0], "EAX and ECX stay the CPU's");
    r.vcpu.xcr0 = 0x2e7;
    assert_eq!(cpuid(&mut r, 0xd, 0)[1], 2696);
    r.vcpu.xcr0 = 0x207;
    assert_eq!(cpuid(&mut r, 0xd, 1)[1], 576 + 256 + 8);
    r.vcpu.xcr0 = 0x1;
    assert_eq!(cpuid(&mut r, 0xd, 0)[1], 576);
    assert_eq!(cpuid(&mut r, 0xd, 1)[1], 576);
    // Other sub-leaves are the CPU's.
    assert_eq!(cpuid(&mut r, 0xd, 2)[..2], [256, 576]);
}

#[test]
fn hypercall_statuses() {
    let mut r = Rig::new(GroupSet::EMPTY.with(Group::Management).with(Group::Models));
    let slot = [0u64, 0, 0, 0, 0, 0];
    // AI call in a permitted group: validated, then service unavailable
    let (f, s, _) = r.call(Hypercall::AiModelLoad.number(), slot);
    assert_eq!((f, s), (Flow::Continue, Status::ServiceUnavailable));
    // group not granted
    let (_, s, _) = r.call(Hypercall::GpuAlloc.number(), slot);
    assert_eq!(s, Status::PermissionDenied);
    // unassigned number, and bad arguments
    assert_eq!(r.call(404, slot).1, Status::InvalidCall);
    assert_eq!(r.call(u64::MAX, slot).1, Status::InvalidCall);
    assert_eq!(
        r.call(Hypercall::AiModelLoad.number(), [0, 1, 0, 0, 0, 0])
            .1,
        Status::InvalidArgument
    );
    assert_eq!(
        r.call(Hypercall::AiModelLoad.number(), [1 << 40, 0, 0, 0, 0, 0])
            .1,
        Status::InvalidArgument
    );
    // version
    let (_, s, v) = r.call(Hypercall::Version.number(), slot);
    assert_eq!((s, v), (Status::Success, ABI_VERSION.packed() as u64));
    let (_, s, _) = r.call(Hypercall::Version.number(), [0x0002_0000, 0, 0, 0, 0, 0]);
    assert_eq!(s, Status::VersionMismatch);
    // RIP advanced over every call, counters kept
    assert_eq!(r.vcpu.rip, BASE + 0x100 + 3 * 8);
    assert_eq!(r.stats.exits_named("hypercall"), 8);
    assert_eq!(r.stats.invalid_calls(), 2);
}

/// Buffer checks give the same answers through an NPT and an EPT.
#[test]
fn console_write_checks_the_buffer() {
    for ept in [false, true] {
        console_write_checks_the_buffer_with(ept);
    }
}

fn console_write_checks_the_buffer_with(ept: bool) {
    let mut r = Rig::with(GroupSet::EMPTY.with(Group::Management), ept);
    r.mem.write(BASE + 0x800, b"hello\n");
    let (_, s, n) = r.call(
        Hypercall::ConsoleWrite.number(),
        [BASE + 0x800, 6, 0, 0, 0, 0],
    );
    assert_eq!((s, n), (Status::Success, 6));
    assert_eq!(r.host.console, b"hello\n");
    // outside the partition, or running off its end: nothing printed
    let (_, s, _) = r.call(Hypercall::ConsoleWrite.number(), [0x1000, 4, 0, 0, 0, 0]);
    assert_eq!(s, Status::BadAddress);
    let end = BASE + 0x10_0000;
    let (_, s, _) = r.call(Hypercall::ConsoleWrite.number(), [end - 2, 4, 0, 0, 0, 0]);
    assert_eq!(s, Status::BadAddress);
    assert_eq!(r.host.console, b"hello\n");
    let (_, s, _) = r.call(Hypercall::ConsoleWrite.number(), [BASE, 5000, 0, 0, 0, 0]);
    assert_eq!(s, Status::LimitExceeded);
    // without the console group (or management, which includes it)
    let mut r = Rig::new(GroupSet::EMPTY.with(Group::Models));
    let (_, s, _) = r.call(Hypercall::ConsoleWrite.number(), [BASE, 1, 0, 0, 0, 0]);
    assert_eq!(s, Status::PermissionDenied);
    // the console group alone (ABI 1.1) is enough
    let mut r = Rig::with(GroupSet::EMPTY.with(Group::Console), ept);
    r.mem.write(BASE, b"x");
    let (_, s, n) = r.call(Hypercall::ConsoleWrite.number(), [BASE, 1, 0, 0, 0, 0]);
    assert_eq!(
        (s, n, r.host.console.as_slice()),
        (Status::Success, 1, &b"x"[..])
    );
}

/// Review L8 (appendix test `console_write_above_maxphyaddr_is_refused`): a buffer
/// address with bits above the 48 a 4-level table translates, or above the CPU's
/// MAXPHYADDR, is refused instead of being aliased onto the partition's own memory.
#[test]
fn buffers_above_the_physical_address_width_are_refused() {
    for ept in [false, true] {
        let mut r = Rig::with(GroupSet::EMPTY.with(Group::Management), ept);
        r.mem.write(BASE, b"aliased!");
        for gpa in [
            1 << 48 | BASE,
            1 << 63 | BASE,
            1 << 39 | BASE,
            (1 << 39) - 4,
        ] {
            let (_, s, _) = r.call(Hypercall::ConsoleWrite.number(), [gpa, 8, 0, 0, 0, 0]);
            assert_eq!(
                s,
                Status::BadAddress,
                "console_write at {gpa:#x} (ept {ept})"
            );
            let (_, s, _) = r.call(
                Hypercall::PartitionInfo.number(),
                [gpa & !7, 512, 0, 0, 0, 0],
            );
            assert_eq!(
                s,
                Status::BadAddress,
                "partition_info at {gpa:#x} (ept {ept})"
            );
            let (_, s, _) = r.call(
                Hypercall::PartitionStats.number(),
                [gpa & !7, 2048, 0, 0, 0, 0],
            );
            assert_eq!(
                s,
                Status::BadAddress,
                "partition_stats at {gpa:#x} (ept {ept})"
            );
        }
        assert!(r.host.console.is_empty(), "nothing printed from an alias");
        assert!(r
            .second_level
            .translate_gpa(&mut r.mem, 1 << 48 | BASE)
            .is_none());
        // The same buffer at its real address is fine.
        let (_, s, _) = r.call(Hypercall::ConsoleWrite.number(), [BASE, 8, 0, 0, 0, 0]);
        assert_eq!(s, Status::Success);
        assert_eq!(r.host.console, b"aliased!");
    }
}

#[test]
fn partition_info_and_exit() {
    for ept in [false, true] {
        partition_info_and_exit_with(ept);
    }
}

fn partition_info_and_exit_with(ept: bool) {
    let mut r = Rig::with(GroupSet::EMPTY.with(Group::Management), ept);
    let (_, s, n) = r.call(
        Hypercall::PartitionInfo.number(),
        [BASE + 0x1000, 512, 0, 0, 0, 0],
    );
    assert_eq!(s, Status::Success);
    let mut buf = std::vec![0u8; n as usize];
    r.mem.read(BASE + 0x1000, &mut buf);
    let info = PartitionInfo::decode(&buf).unwrap();
    assert_eq!(info.cmdline, "hypercalls now");
    assert_eq!(info.name, "t");
    assert_eq!((info.memory_base, info.memory_size), (BASE, 0x10_0000));
    let (_, s, need) = r.call(
        Hypercall::PartitionInfo.number(),
        [BASE + 0x1000, 8, 0, 0, 0, 0],
    );
    assert_eq!((s, need), (Status::BufferTooSmall, n));
    let (_, s, _) = r.call(Hypercall::PartitionInfo.number(), [0x2000, 512, 0, 0, 0, 0]);
    assert_eq!(s, Status::BadAddress);
    let rip = r.vcpu.rip;
    let (f, _, _) = r.call(Hypercall::PartitionExit.number(), [7, 0, 0, 0, 0, 0]);
    assert_eq!(f, Flow::Stop(StopReason::Exited { code: 7 }));
    assert_eq!(r.vcpu.rip, rip, "an exit does not step");
}

#[test]
fn partition_stats_reports_the_partitions_counters_and_refuses_bad_buffers() {
    let mut r = Rig::new(GroupSet::EMPTY.with(Group::Management));
    let n = Hypercall::PartitionStats.number();
    let (_, s, _) = r.call(n, [BASE + 0x1000, 512, 0, 0, 0, 0]);
    assert_eq!(s, Status::ServiceUnavailable, "a host without counters");
    let others = Stats::new();
    for _ in 0..5 {
        others.count_exit(&ExitReason::Cpuid);
    }
    others.count_call(Hypercall::ConsoleWrite.number());
    others.count_call(999);
    r.host.counters = Some((2, others));
    let (_, s, len) = r.call(n, [BASE + 0x1000, 512, 0, 0, 0, 0]);
    assert_eq!(s, Status::Success);
    let mut buf = std::vec![0u8; len as usize];
    r.mem.read(BASE + 0x1000, &mut buf);
    let stats = PartitionStats::decode(&buf).unwrap();
    assert_eq!(stats.vcpus, 2);
    assert_eq!(stats.exits_total, 5);
    let exits: Vec<_> = stats.exits.iter().map(|c| (c.name, c.count)).collect();
    assert_eq!(exits, [("cpuid", 5)]);
    let calls: Vec<_> = stats.calls.iter().map(|c| (c.name, c.count)).collect();
    assert_eq!(calls, [("console_write", 1)]);
    assert_eq!(stats.invalid_calls, 1);
    // Hostile buffers: too small (nothing written), outside the partition, misaligned,
    // too long, wrapping; reserved registers set; no management group.
    let canary = [0xa5u8; 16];
    r.mem.write(BASE + 0x3000, &canary);
    let (_, s, need) = r.call(n, [BASE + 0x3000, 8, 0, 0, 0, 0]);
    assert_eq!((s, need), (Status::BufferTooSmall, len));
    let mut after = [0u8; 16];
    r.mem.read(BASE + 0x3000, &mut after);
    assert_eq!(after, canary, "nothing written on BufferTooSmall");
    for (args, want) in [
        ([0x2000, 512, 0, 0, 0, 0], Status::BadAddress),
        ([BASE + 0xf_fff8, 512, 0, 0, 0, 0], Status::BadAddress),
        ([BASE + 4, 512, 0, 0, 0, 0], Status::InvalidArgument),
        ([BASE, 4097, 0, 0, 0, 0], Status::LimitExceeded),
        ([u64::MAX - 7, 512, 0, 0, 0, 0], Status::InvalidArgument),
        ([BASE, 512, 1, 0, 0, 0], Status::InvalidArgument),
    ] {
        assert_eq!(r.call(n, args).1, want, "{args:x?}");
    }
    let mut r = Rig::new(GroupSet::EMPTY);
    assert_eq!(
        r.call(n, [BASE, 512, 0, 0, 0, 0]).1,
        Status::PermissionDenied
    );
}

#[test]
fn hypercalls_only_from_64_bit_ring_0() {
    let mut r = Rig::new(GroupSet::ALL);
    r.vcpu.cpl = 3;
    r.vcpu.set_gpr(Gpr::Rax, Hypercall::PartitionExit.number());
    assert_eq!(r.exit(ExitReason::Hypercall, 3), Flow::Continue);
    assert_eq!(r.vcpu.injected, [(6, None)]);
    r.vcpu.cpl = 0;
    r.vcpu.compat = true;
    assert_eq!(r.exit(ExitReason::Hypercall, 3), Flow::Continue);
    assert_eq!(r.vcpu.injected.len(), 2);
}

/// Review L1 (appendix test `efer_write_with_reserved_bits_takes_gp`): EFER writes the
/// processor would refuse raise #GP and leave EFER alone, instead of failing the next entry.
#[test]
fn efer_writes_are_checked_as_the_cpu_checks_them() {
    let mut r = Rig::new(GroupSet::ALL);
    let long = 0xd01; // SCE | LME | LMA | NXE
    r.vcpu.efer = long;
    r.vcpu.set_gpr(Gpr::Rcx, MSR_EFER as u64);
    for (value, why) in [
        (0x8000_0000_0000_0d00u64, "bit 63 reserved"),
        (long | 1 << 12, "SVME: the guest was told SVM is off"),
        (long | 1 << 14, "FFXSR: not on this CPU"),
        (0x801, "LME cleared while paging"),
    ] {
        let rip = r.vcpu.rip;
        r.vcpu.set_gpr(Gpr::Rax, value & 0xffff_ffff);
        r.vcpu.set_gpr(Gpr::Rdx, value >> 32);
        assert_eq!(r.exit(ExitReason::Msr { write: true }, 2), Flow::Continue);
        assert_eq!(r.vcpu.injected.pop(), Some((vector::GP, Some(0))), "{why}");
        assert_eq!(
            (r.vcpu.efer, r.vcpu.rip),
            (long, rip),
            "{why}: nothing changed"
        );
    }
    // A valid write (NXE off) steps and lands.
    r.vcpu.set_gpr(Gpr::Rax, 0x501);
    r.vcpu.set_gpr(Gpr::Rdx, 0);
    r.exit(ExitReason::Msr { write: true }, 2);
    assert_eq!(r.vcpu.efer, 0x501);
    assert!(r.vcpu.injected.is_empty());
    // Without paging, LME may change (entering long mode); SVME stays refused.
    r.vcpu.real = true;
    r.vcpu.efer = 0;
    r.vcpu.set_gpr(Gpr::Rax, 0x100);
    r.exit(ExitReason::Msr { write: true }, 2);
    assert_eq!(r.vcpu.efer, 0x100);
    // The primary too, on both backends: its EFER reads exit like everyone's and show no
    // SVME (the SVM backend keeps the bit underneath, `amd::guest_vmcb::guest_efer`), so
    // what it reads and writes back is accepted, and setting SVME is refused.
    for transport in [Transport::Vmmcall, Transport::Vmcall] {
        let mut p = Rig::new(GroupSet::ALL);
        p.part.kind = Kind::Primary;
        p.transport = transport;
        p.vcpu.efer = long;
        p.vcpu.set_gpr(Gpr::Rcx, MSR_EFER as u64);
        assert_eq!(p.exit(ExitReason::Msr { write: false }, 2), Flow::Continue);
        let read = p.vcpu.gpr(Gpr::Rax) | p.vcpu.gpr(Gpr::Rdx) << 32;
        assert_eq!(read, long, "{transport:?}");
        p.exit(ExitReason::Msr { write: true }, 2);
        assert!(p.vcpu.injected.is_empty(), "{transport:?}");
        assert_eq!(p.vcpu.efer, long);
        p.vcpu.set_gpr(Gpr::Rax, long | 1 << 12);
        p.exit(ExitReason::Msr { write: true }, 2);
        assert_eq!(p.vcpu.injected, [(vector::GP, Some(0))], "{transport:?}");
        assert_eq!(p.vcpu.efer, long);
    }
}

#[test]
fn msrs_efer_and_refused() {
    let mut r = Rig::new(GroupSet::ALL);
    r.vcpu.efer = 0xd01;
    r.vcpu.set_gpr(Gpr::Rcx, MSR_EFER as u64);
    assert_eq!(r.exit(ExitReason::Msr { write: false }, 2), Flow::Continue);
    assert_eq!(r.vcpu.gpr(Gpr::Rax), 0xd01);
    r.vcpu.set_gpr(Gpr::Rax, 0x501);
    r.vcpu.set_gpr(Gpr::Rdx, 0);
    r.exit(ExitReason::Msr { write: true }, 2);
    assert_eq!(r.vcpu.efer, 0x501);
    let rip = r.vcpu.rip;
    r.vcpu.set_gpr(Gpr::Rcx, 0x1b); // APIC base
    assert_eq!(r.exit(ExitReason::Msr { write: false }, 2), Flow::Continue);
    assert_eq!(r.vcpu.injected, [(13, Some(0))]);
    assert_eq!(r.vcpu.rip, rip, "a faulting RDMSR does not step");
}

/// VMX guests read IA32_FEATURE_CONTROL as "locked, VMX disabled" (like VM_CR on SVM);
/// writing it, or reading it where the backend is SVM, faults as on hardware.
#[test]
fn feature_control_reads_locked_with_vmx_off_on_vmx() {
    let mut r = Rig::new(GroupSet::ALL);
    r.transport = Transport::Vmcall;
    r.vcpu.set_gpr(Gpr::Rax, 0xdead);
    r.vcpu.set_gpr(Gpr::Rdx, 0xbeef);
    r.vcpu.set_gpr(Gpr::Rcx, MSR_FEATURE_CONTROL as u64);
    let rip = r.vcpu.rip;
    assert_eq!(r.exit(ExitReason::Msr { write: false }, 2), Flow::Continue);
    assert_eq!((r.vcpu.gpr(Gpr::Rax), r.vcpu.gpr(Gpr::Rdx)), (1, 0));
    assert_eq!(r.vcpu.rip, rip + 2);
    assert!(r.vcpu.injected.is_empty());
    // A write (e.g. trying to enable VMX) faults: the register is locked.
    r.vcpu.set_gpr(Gpr::Rax, 0x5);
    assert_eq!(r.exit(ExitReason::Msr { write: true }, 2), Flow::Continue);
    assert_eq!(r.vcpu.injected, [(13, Some(0))]);
    assert_eq!(r.vcpu.rip, rip + 2, "a faulting WRMSR does not step");
    // SVM: the MSR does not exist on AMD parts.
    let mut r = Rig::new(GroupSet::ALL);
    r.vcpu.set_gpr(Gpr::Rcx, MSR_FEATURE_CONTROL as u64);
    assert_eq!(r.transport, Transport::Vmmcall);
    r.exit(ExitReason::Msr { write: false }, 2);
    assert_eq!(r.vcpu.injected, [(13, Some(0))]);
}

fn io(port: u16, size: u8, dir: IoDir) -> ExitReason {
    ExitReason::Io(IoAccess {
        port,
        size,
        dir,
        string: false,
        rep: false,
    })
}

#[test]
fn port_io_com1_emulated_everything_else_stops_a_test_partition() {
    let mut r = Rig::new(GroupSet::ALL);
    r.vcpu.set_gpr(Gpr::Rax, 0x1234_5641);
    assert_eq!(r.exit(io(COM1, 1, IoDir::Out), 1), Flow::Continue);
    assert_eq!(r.host.console, b"A");
    r.vcpu.set_gpr(Gpr::Rax, 0xffff_ffff_ffff_ffff);
    r.exit(io(COM1 + 5, 1, IoDir::In), 1);
    assert_eq!(r.vcpu.gpr(Gpr::Rax), 0xffff_ffff_ffff_ff60);
    assert_eq!(
        r.exit(io(DEBUG_EXIT_PORT, 4, IoDir::Out), 1),
        Flow::Stop(StopReason::PortDenied { port: 0xf4 })
    );
    assert_eq!(
        r.exit(io(0x60, 1, IoDir::In), 2),
        Flow::Stop(StopReason::PortDenied { port: 0x60 })
    );
    // the primary's trapped ports are dropped, reads float high
    r.part.kind = Kind::Primary;
    r.vcpu.set_gpr(Gpr::Rax, 0);
    assert_eq!(r.exit(io(DEBUG_EXIT_PORT, 2, IoDir::In), 1), Flow::Continue);
    assert_eq!(r.vcpu.gpr(Gpr::Rax), 0xffff);
}

#[test]
fn faults_stop_only_with_a_reason_and_never_panic() {
    let mut r = Rig::new(GroupSet::ALL);
    let npf = ExitReason::NestedPageFault {
        gpa: 0x4100_0000,
        access: Access::WRITE,
    };
    assert_eq!(
        r.exit(npf, 0),
        Flow::Stop(StopReason::Isolation {
            gpa: 0x4100_0000,
            access: Access::WRITE
        })
    );
    assert_eq!(
        r.exit(ExitReason::Shutdown, 0),
        Flow::Stop(StopReason::TripleFault)
    );
    assert_eq!(r.exit(ExitReason::Hlt, 1), Flow::Stop(StopReason::Halted));
    assert_eq!(
        r.exit(
            ExitReason::Unknown {
                code: 0x99,
                info1: 0,
                info2: 0
            },
            0
        ),
        Flow::Stop(StopReason::ExitNotHandled { code: 0x99 })
    );
    assert_eq!(r.exit(ExitReason::Interrupt, 0), Flow::Continue);
    // an instruction exit whose length is unknown cannot be emulated safely
    let rip = r.vcpu.rip;
    assert_eq!(
        r.exit(ExitReason::Cpuid, 0),
        Flow::Stop(StopReason::Undecodable { rip })
    );
}

/// Review M2: a test partition's INVD and WBINVD do nothing (no dirty line of the host or a
/// sibling is dropped, no shared cache flushed); RDPMC gets #GP; MONITOR/MWAIT return at once.
/// Each is counted.
#[test]
fn cache_counter_and_monitor_instructions_of_a_test_partition() {
    let mut r = Rig::new(GroupSet::ALL);
    let rip = r.vcpu.rip;
    for reason in [
        ExitReason::Invd,
        ExitReason::Wbinvd,
        ExitReason::Monitor,
        ExitReason::Mwait,
    ] {
        assert_eq!(r.exit(reason, 3), Flow::Continue, "{reason:?}");
    }
    assert_eq!(r.vcpu.rip, rip + 12, "each stepped over");
    assert_eq!(
        r.host.write_backs, 0,
        "nothing written back for a test partition"
    );
    assert_eq!(r.exit(ExitReason::Rdpmc, 2), Flow::Continue);
    assert_eq!(r.vcpu.injected, [(vector::GP, Some(0))]);
    assert_eq!(r.vcpu.rip, rip + 12, "a faulting RDPMC is not stepped over");
    for name in ["invd", "wbinvd", "monitor", "mwait", "rdpmc"] {
        assert_eq!(r.stats.exits_named(name), 1, "{name}");
    }
    // Without a length they cannot be stepped over safely.
    let at = r.vcpu.rip;
    assert_eq!(
        r.exit(ExitReason::Wbinvd, 0),
        Flow::Stop(StopReason::Undecodable { rip: at })
    );
}

/// The primary's INVD and WBINVD are executed as WBINVD by the host (INVD never discards).
#[test]
fn the_primarys_invd_and_wbinvd_write_back() {
    let mut r = Rig::new(GroupSet::ALL);
    r.part.kind = Kind::Primary;
    assert_eq!(r.exit(ExitReason::Invd, 2), Flow::Continue);
    assert_eq!(r.exit(ExitReason::Wbinvd, 3), Flow::Continue);
    assert_eq!(r.host.write_backs, 2);
    assert_eq!(r.vcpu.rip, BASE + 0x105);
}

/// Review L9: a machine check stops a test partition with its own reason; the primary gets
/// the #MC injected (its OS handles machine checks), RIP unchanged.
#[test]
fn machine_checks_are_reported_or_reflected() {
    let mut r = Rig::new(GroupSet::ALL);
    assert_eq!(
        r.exit(ExitReason::MachineCheck, 0),
        Flow::Stop(StopReason::MachineCheck)
    );
    assert_eq!(
        std::format!("{}", StopReason::MachineCheck),
        "stopped: machine check (#MC) while the guest ran"
    );
    assert_eq!(r.stats.exits_named("machine-check"), 1);
    r.part.kind = Kind::Primary;
    let rip = r.vcpu.rip;
    assert_eq!(r.exit(ExitReason::MachineCheck, 0), Flow::Continue);
    assert_eq!(r.vcpu.injected, [(vector::MC, None)]);
    assert_eq!(r.vcpu.rip, rip);
}

/// A two-CPU test partition (APIC 1 and 2) writing its x2APIC ICR.
fn smp_rig() -> Rig {
    let mut r = Rig::new(GroupSet::ALL);
    r.part.apic_ids[1] = 2;
    r.part.cpu_count = 2;
    r
}

fn write_icr(r: &mut Rig, value: u64) -> Flow {
    r.vcpu.set_gpr(Gpr::Rcx, MSR_X2APIC_ICR as u64);
    r.vcpu.set_gpr(Gpr::Rax, value & 0xffff_ffff);
    r.vcpu.set_gpr(Gpr::Rdx, value >> 32);
    r.exit(ExitReason::Msr { write: true }, 2)
}

#[test]
fn icr_init_and_startup_reach_the_partitions_own_cpu() {
    let mut r = smp_rig();
    assert_eq!(write_icr(&mut r, 0x2_0000_4500), Flow::Continue);
    assert_eq!(write_icr(&mut r, 0x2_0000_4620), Flow::Continue);
    // INIT level de-assert (old MP protocol): accepted, no effect.
    assert_eq!(write_icr(&mut r, 0x2_0000_8500), Flow::Continue);
    assert_eq!(r.host.ipis, [(2, Action::Init), (2, Action::StartUp(0x20))]);
    assert!(r.vcpu.injected.is_empty());
    assert_eq!(r.vcpu.rip, BASE + 0x106, "each WRMSR stepped over");
    assert_eq!(r.stats.exits_named("wrmsr"), 3);
}

#[test]
fn icr_writes_outside_the_partition_or_of_other_kinds_take_gp() {
    let mut r = smp_rig();
    for value in [
        0x3_0000_4500u64,      // INIT to APIC 3: another partition's CPU
        0x2_0000_0041,         // fixed interrupt: partitions own no interrupt path
        0x2_0000_0400,         // NMI
        0x2_0000_4d00,         // INIT in logical destination mode
        0x0_000c_4500,         // INIT to all but self (shorthand)
        0xffff_ffff_0000_4500, // INIT broadcast
    ] {
        let rip = r.vcpu.rip;
        assert_eq!(write_icr(&mut r, value), Flow::Continue, "{value:#x}");
        assert_eq!(
            r.vcpu.injected.pop(),
            Some((vector::GP, Some(0))),
            "{value:#x}"
        );
        assert_eq!(
            r.vcpu.rip, rip,
            "{value:#x}: a faulting WRMSR is not stepped over"
        );
    }
    assert!(r.host.ipis.is_empty());
    // The host refuses (the target never started): #GP as well.
    r.host.refuse = true;
    write_icr(&mut r, 0x2_0000_4500);
    assert_eq!(r.vcpu.injected.pop(), Some((vector::GP, Some(0))));
}

#[test]
fn init_resets_and_waits_sipi_starts() {
    let mut r = smp_rig();
    r.vcpu.rip = 0x1234;
    assert_eq!(r.exit(ExitReason::Init, 0), Flow::WaitForSipi);
    assert!(r.vcpu.reset);
    assert_eq!(
        r.vcpu.rip,
        crate::vcpu::init_state::RIP,
        "not stepped: INIT is no instruction"
    );
    assert_eq!(r.exit(ExitReason::Sipi { vector: 0x9a }, 0), Flow::Continue);
    assert_eq!((r.vcpu.started_at, r.vcpu.rip), (Some(0x9a), 0));
    assert_eq!(r.stats.exits_named("init"), 1);
    assert_eq!(r.stats.exits_named("sipi"), 1);
    // A backend without the INIT state stops the vCPU with a reason.
    r.vcpu.no_init = true;
    assert_eq!(
        r.exit(ExitReason::Init, 0),
        Flow::Stop(StopReason::InitNotEmulated)
    );
}

#[test]
fn sipi_loads_real_mode_cs_from_the_vector() {
    assert_eq!(crate::vcpu::sipi_cs(0x20), (0x2000, 0x2_0000));
    assert_eq!(crate::vcpu::sipi_cs(0xff), (0xff00, 0xf_f000));
    assert_eq!(crate::vcpu::sipi_cs(0), (0, 0));
}

/// XSETBV of `value` to XCR `index` with a 3-byte instruction.
fn xsetbv(r: &mut Rig, index: u32, value: u64) -> Flow {
    r.vcpu.set_gpr(Gpr::Rcx, index as u64);
    r.vcpu
        .set_gpr(Gpr::Rax, value & 0xffff_ffff | 0xdead_0000_0000_0000);
    r.vcpu.set_gpr(Gpr::Rdx, value >> 32);
    r.exit(ExitReason::Xsetbv, 3)
}

#[test]
fn xsetbv_valid_values_reach_the_vcpu_and_step() {
    let mut r = Rig::new(GroupSet::ALL);
    r.vcpu.xcr0 = 1;
    let rip = r.vcpu.rip;
    assert_eq!(xsetbv(&mut r, 0, 0x7), Flow::Continue);
    assert_eq!(
        (r.vcpu.xcr0, r.vcpu.rip),
        (0x7, rip + 3),
        "EAX's upper half ignored"
    );
    assert_eq!(xsetbv(&mut r, 0, 0x3), Flow::Continue);
    assert_eq!(xsetbv(&mut r, 0, 0x2e7), Flow::Continue);
    assert_eq!((r.vcpu.xcr0, r.vcpu.rip), (0x2e7, rip + 9));
    assert!(r.vcpu.injected.is_empty());
    assert_eq!(r.stats.exits_named("xsetbv"), 3);
}

#[test]
fn xsetbv_invalid_values_get_gp_without_advancing_rip() {
    for (index, value, why) in [
        (1, 0x3, "invalid index (only XCR0)"),
        (0, 0x2, "x87 (bit 0) clear"),
        (0, 0x5, "AVX without SSE"),
        (0, 0x27, "AVX-512 not all or nothing"),
        (0, 0xe3, "AVX-512 without AVX"),
        (0, 0x1f, "MPX bits the CPU does not report"),
        (0, 1 << 32 | 0x3, "a bit in EDX the CPU does not report"),
    ] {
        let mut r = Rig::new(GroupSet::ALL);
        r.vcpu.xcr0 = 0x3;
        let rip = r.vcpu.rip;
        assert_eq!(xsetbv(&mut r, index, value), Flow::Continue, "{why}");
        assert_eq!(r.vcpu.injected, [(vector::GP, Some(0))], "{why}");
        assert_eq!(r.vcpu.rip, rip, "{why}: RIP stays on the faulting XSETBV");
        assert_eq!(r.vcpu.xcr0, 0x3, "{why}: XCR0 unchanged");
    }
}

#[test]
fn xsetbv_needs_its_instruction_length() {
    let mut r = Rig::new(GroupSet::ALL);
    let rip = r.vcpu.rip;
    r.vcpu.set_gpr(Gpr::Rax, 0x3);
    assert_eq!(
        r.exit(ExitReason::Xsetbv, 0),
        Flow::Stop(StopReason::Undecodable { rip })
    );
}

/// Randomized exit handling: any exit reason with any register values, instruction length,
/// privilege level, mode, partition kind and backend is handled without a panic, and RIP
/// moves only when the exit was handled (an instruction emulated and stepped over by exactly
/// its length, or the architectural RIP of INIT and SIPI); a stop, an injected fault or
/// anything else leaves it where it was.
mod randomized {
    use super::*;
    use proptest::prelude::*;

    fn reason() -> impl Strategy<Value = ExitReason> {
        let io = (
            any::<u16>(),
            prop::sample::select(std::vec![1u8, 2, 4]),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(port, size, input, string, rep)| {
                ExitReason::Io(IoAccess {
                    port: if port % 4 == 0 { COM1 + port % 8 } else { port },
                    size,
                    dir: if input { IoDir::In } else { IoDir::Out },
                    string,
                    rep,
                })
            });
        prop_oneof![
            Just(ExitReason::Hypercall),
            Just(ExitReason::Cpuid),
            any::<bool>().prop_map(|write| ExitReason::Msr { write }),
            io,
            (any::<u64>(), any::<bool>(), any::<bool>()).prop_map(|(gpa, write, exec)| {
                ExitReason::NestedPageFault {
                    gpa,
                    access: Access { write, exec },
                }
            }),
            Just(ExitReason::Hlt),
            Just(ExitReason::Xsetbv),
            Just(ExitReason::Invd),
            Just(ExitReason::Wbinvd),
            Just(ExitReason::Rdpmc),
            Just(ExitReason::Monitor),
            Just(ExitReason::Mwait),
            Just(ExitReason::MachineCheck),
            Just(ExitReason::Shutdown),
            (any::<u8>(), any::<Option<u32>>())
                .prop_map(|(vector, error_code)| ExitReason::Exception { vector, error_code }),
            Just(ExitReason::Interrupt),
            Just(ExitReason::Nmi),
            Just(ExitReason::Init),
            any::<u8>().prop_map(|vector| ExitReason::Sipi { vector }),
            any::<u64>().prop_map(|code| ExitReason::EntryFailed { code }),
            (any::<u64>(), any::<u64>(), any::<u64>())
                .prop_map(|(code, info1, info2)| ExitReason::Unknown { code, info1, info2 }),
        ]
    }

    /// Register values: anything, or values that reach the handler's interesting paths
    /// (hypercall numbers, MSR indices, CPUID leaves, addresses in the partition).
    fn register() -> impl Strategy<Value = u64> {
        prop_oneof![
            3 => any::<u64>(),
            2 => 0u64..700,
            1 => prop::sample::select(std::vec![
                0xc000_0080u64, 0xc001_0114, 0x3a, 0x830, 0x1b, 0xd, 0x7, 0x1,
                0x4000_0000, 0x4000_0001, 0x8000_0001, 0x8000_0008, 0x8000_000a,
            ]),
            1 => BASE..BASE + 0x10_0000,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn any_exit_is_handled_without_panic_and_rip_moves_only_when_handled(
            reason in reason(),
            len in prop_oneof![Just(0u8), 1u8..=15],
            gprs in prop::array::uniform16(register()),
            rip in any::<u64>(),
            cpl in 0u8..4,
            primary in any::<bool>(),
            vmx in any::<bool>(),
            real in any::<bool>(),
            compat in any::<bool>(),
            efer in register(),
            xcr0 in prop::sample::select(std::vec![1u64, 3, 7, 0x2e7]),
            groups in any::<u32>(),
        ) {
            let mut r = Rig::with(GroupSet::from_bits_truncate(groups), vmx);
            if primary {
                r.part.kind = Kind::Primary;
            }
            if vmx {
                r.transport = Transport::Vmcall;
            }
            r.vcpu.gprs = Gprs(gprs);
            r.vcpu.rip = rip;
            r.vcpu.cpl = cpl;
            r.vcpu.real = real;
            r.vcpu.compat = compat;
            r.vcpu.efer = efer;
            r.vcpu.xcr0 = xcr0;
            let flow = r.exit(reason, len);
            let moved = r.vcpu.rip != rip;
            let stepped = r.vcpu.rip == rip.wrapping_add(len as u64);
            let faulted = !r.vcpu.injected.is_empty();
            match reason {
                // INIT and SIPI set the architectural RIP; nothing else may.
                ExitReason::Init | ExitReason::Sipi { .. } => {}
                _ if moved => {
                    prop_assert!(
                        reason.is_instruction(),
                        "{reason:?} moved RIP {rip:#x} -> {:#x}", r.vcpu.rip
                    );
                    prop_assert!(stepped && len > 0, "{reason:?}: RIP moved by other than its length");
                    prop_assert_eq!(flow, Flow::Continue, "{:?}: moved RIP and stopped", reason);
                    prop_assert!(!faulted, "{reason:?}: stepped over an instruction that faulted");
                }
                _ => {}
            }
            if let Flow::Stop(_) = flow {
                prop_assert!(!moved, "{reason:?}: stopped with RIP moved");
            }
            if reason.is_instruction() && len == 0 {
                prop_assert!(!moved, "{reason:?} without a length stepped");
                let undecodable = matches!(flow, Flow::Stop(StopReason::Undecodable { .. }));
                prop_assert!(undecodable, "{:?} without a length: {:?}", reason, flow);
            }
            prop_assert!(r.vcpu.injected.len() <= 1, "one event per exit at most");
            prop_assert_eq!(r.stats.total_exits(), 1);
        }
    }
}
