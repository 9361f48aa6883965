//! The run loop against a scripted vCPU and a scripted CPU.

extern crate std;

use super::*;
use crate::exit::{ExitHost, VmExit};
use crate::launch::mailbox::Requests;
use crate::mem::fake::FakeMem;
use crate::npt::{Npt, NptOptions, Perm};
use crate::partition::plan::tests::test_partition;
use crate::partition::{Kind, PartitionConfig};
use crate::stats::Stats;
use crate::vcpu::{CpuMode, Gpr, Gprs};
use nexus_abi::cpuid::{CpuidResult, Transport};
use nexus_abi::Hypercall;
use std::collections::VecDeque;
use std::vec::Vec;

/// A vCPU whose exits come from a script; it records what the loop did to it.
#[derive(Default)]
struct ScriptVcpu {
    gprs: Gprs,
    rip: u64,
    exits: VecDeque<(ExitReason, u8)>,
    /// Exits to produce after the script (CPUID, counted down), for long runs.
    cpuid_tail: u64,
    nmis_queued: u32,
    resets: u32,
    started: Vec<u8>,
    runs: u64,
}

impl Vcpu for ScriptVcpu {
    fn run(&mut self) -> VmExit {
        self.runs += 1;
        if let Some((r, len)) = self.exits.pop_front() {
            return VmExit::new(r, len);
        }
        if self.cpuid_tail > 0 {
            self.cpuid_tail -= 1;
            return VmExit::new(ExitReason::Cpuid, 2);
        }
        // partition_exit(0) once everything else is done.
        self.gprs.set(Gpr::Rax, Hypercall::PartitionExit.number());
        for r in [Gpr::Rdi, Gpr::Rsi, Gpr::Rdx, Gpr::R10, Gpr::R8, Gpr::R9] {
            self.gprs.set(r, 0);
        }
        VmExit::new(ExitReason::Hypercall, 3)
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
        0x20
    }
    fn xcr0(&self) -> u64 {
        1
    }
    fn xss(&self) -> u64 {
        0
    }
    fn mode(&self) -> CpuMode {
        CpuMode::Long { cs_l: true }
    }
    fn cpl(&self) -> u8 {
        0
    }
    fn cs_base(&self) -> u64 {
        0
    }
    fn efer(&self) -> u64 {
        0xd00
    }
    fn set_efer(&mut self, _: u64) {}
    fn set_xcr0(&mut self, _: u64) {}
    fn inject_exception(&mut self, _: u8, _: Option<u32>) {}
    fn init_reset(&mut self) -> Result<(), &'static str> {
        self.resets += 1;
        Ok(())
    }
    fn sipi_start(&mut self, vector: u8) {
        self.started.push(vector);
    }
    fn queue_nmi(&mut self) {
        self.nmis_queued += 1;
    }
}

struct Host;

impl ExitHost for Host {
    fn console(&mut self, _: &[u8]) {}
    fn host_cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
        CpuidResult {
            eax: leaf,
            ..CpuidResult::default()
        }
    }
}

/// The CPU side: NMIs and requests handed out one step at a time.
#[derive(Default)]
struct Cpu {
    /// Per loop iteration: (NMIs, requests).
    steps: VecDeque<(u32, Requests)>,
    /// Requests delivered while the vCPU waits.
    on_wait: VecDeque<Requests>,
    waits: u32,
    deadline_after_checks: Option<u32>,
    checks: u32,
    interrupts_taken: u32,
    pending: Option<Requests>,
}

impl CpuEvents for Cpu {
    fn take_nmis(&mut self) -> u32 {
        match self.steps.front() {
            Some((n, _)) => *n,
            None => 0,
        }
    }
    fn take_requests(&mut self) -> Requests {
        if let Some(r) = self.pending.take() {
            return r;
        }
        self.steps.pop_front().map(|(_, r)| r).unwrap_or_default()
    }
    fn wait_for_request(&mut self) {
        self.waits += 1;
        self.pending = Some(
            self.on_wait
                .pop_front()
                .expect("the loop waited with no request left to give"),
        );
    }
    fn past_deadline(&mut self) -> Option<u32> {
        self.checks += 1;
        match self.deadline_after_checks {
            Some(n) if self.checks > n => Some(120),
            _ => None,
        }
    }
    fn take_interrupt(&mut self) {
        self.interrupts_taken += 1;
    }
    fn on_reset(&mut self) {}
    fn on_start(&mut self, _: u8) {}
}

fn run_with(
    kind: Kind,
    vcpu: &mut ScriptVcpu,
    cpu: &mut Cpu,
    role: Role,
    waiting: bool,
) -> (StopReason, Stats) {
    let mut part: PartitionConfig = test_partition(0x4000_0000, 0x10_0000);
    part.kind = kind;
    let mut mem = FakeMem::new(0x10_0000_0000);
    let opts = NptOptions {
        huge_pages: false,
        nx: true,
    };
    let mut npt = Npt::new(&mut mem, opts).unwrap();
    npt.map_identity(&mut mem, 0x4000_0000, 0x10_0000, Perm::RWX)
        .unwrap();
    let stats = Stats::new();
    let mut host = Host;
    let mut cx = ExitContext {
        partition: &part,
        second_level: &npt,
        mem: &mut mem,
        host: &mut host,
        stats: &stats,
        transport: Transport::Vmmcall,
    };
    let stop = run(vcpu, &mut cx, cpu, role, waiting);
    (stop, stats)
}

#[test]
fn a_test_guest_runs_until_it_exits() {
    let mut v = ScriptVcpu::default();
    v.exits.push_back((ExitReason::Cpuid, 2));
    v.exits.push_back((ExitReason::Interrupt, 0));
    let mut cpu = Cpu::default();
    let (stop, stats) = run_with(Kind::Test, &mut v, &mut cpu, Role::Test, false);
    assert_eq!(stop, StopReason::Exited { code: 0 });
    assert_eq!(stats.exits_named("cpuid"), 1);
    assert_eq!(
        cpu.interrupts_taken, 1,
        "the host acknowledged the interrupt"
    );
}

#[test]
fn the_primary_has_no_exit_budget() {
    // The security review's H2: a primary stopped after 1,000,000 exits. No budget now.
    let mut v = ScriptVcpu {
        cpuid_tail: 1_000_005,
        ..ScriptVcpu::default()
    };
    let mut cpu = Cpu::default();
    let (stop, stats) = run_with(Kind::Primary, &mut v, &mut cpu, Role::Primary, false);
    assert_eq!(stop, StopReason::Exited { code: 0 });
    assert_eq!(stats.exits_named("cpuid"), 1_000_005);
}

#[test]
fn a_test_guest_past_its_deadline_is_stopped() {
    let mut v = ScriptVcpu {
        cpuid_tail: u64::MAX,
        ..ScriptVcpu::default()
    };
    let mut cpu = Cpu {
        deadline_after_checks: Some(50),
        ..Cpu::default()
    };
    let (stop, _) = run_with(Kind::Test, &mut v, &mut cpu, Role::Test, false);
    assert_eq!(stop, StopReason::Runaway { seconds: 120 });
    assert_eq!(v.runs, 50);
}

#[test]
fn an_ap_waits_then_starts_at_the_sipi_vector_and_stops_with_its_partition() {
    let mut v = ScriptVcpu {
        cpuid_tail: u64::MAX,
        ..ScriptVcpu::default()
    };
    let init_sipi = Requests {
        init: true,
        startup: Some(0x9a),
        ..Requests::default()
    };
    let stop = Requests {
        stop: true,
        ..Requests::default()
    };
    let mut cpu = Cpu {
        on_wait: VecDeque::from([Requests::default(), init_sipi]),
        ..Cpu::default()
    };
    for _ in 0..3 {
        cpu.steps.push_back((0, Requests::default()));
    }
    cpu.steps.push_back((1, stop));
    let (reason, stats) = run_with(Kind::Test, &mut v, &mut cpu, Role::Test, true);
    assert_eq!(reason, StopReason::PartitionEnded);
    assert_eq!(cpu.waits, 2, "an empty wake-up waits again");
    assert_eq!(v.resets, 1);
    assert_eq!(v.started, [0x9a]);
    assert_eq!(stats.exits_named("cpuid"), 3);
}

#[test]
fn nmis_without_a_request_go_to_the_primary_only() {
    let kick = Requests {
        init: true,
        ..Requests::default()
    };
    for (role, kind, steps, queued) in [
        (Role::Primary, Kind::Primary, [(1, Requests::default())], 1),
        (Role::Primary, Kind::Primary, [(1, kick)], 0),
        (Role::Test, Kind::Test, [(1, Requests::default())], 0),
    ] {
        let mut v = ScriptVcpu::default();
        v.exits.push_back((ExitReason::Nmi, 0));
        let mut cpu = Cpu {
            steps: VecDeque::from(steps),
            on_wait: VecDeque::from([Requests {
                startup: Some(0x10),
                ..Requests::default()
            }]),
            ..Cpu::default()
        };
        let (stop, _) = run_with(kind, &mut v, &mut cpu, role, false);
        assert_eq!(stop, StopReason::Exited { code: 0 });
        assert_eq!(v.nmis_queued, queued, "{role:?} {steps:?}");
    }
}

#[test]
fn a_firmware_proxy_ends_at_its_halt() {
    let mut v = ScriptVcpu::default();
    v.exits.push_back((ExitReason::Cpuid, 2));
    v.exits.push_back((ExitReason::Hlt, 1));
    let mut cpu = Cpu::default();
    let (stop, stats) = run_with(Kind::Primary, &mut v, &mut cpu, Role::Proxy, false);
    assert_eq!(stop, StopReason::Halted);
    assert_eq!(stats.exits_named("hlt"), 1);
}

/// OVMF's APs idle in a MONITOR/MWAIT loop once their work is done: a proxy ends there too
/// (MONITOR is answered and stepped over, MWAIT ends it), while the primary's own MWAIT
/// would not even exit.
#[test]
fn a_firmware_proxy_ends_at_its_mwait() {
    let mut v = ScriptVcpu::default();
    v.exits.push_back((ExitReason::Monitor, 3));
    v.exits.push_back((ExitReason::Mwait, 3));
    let mut cpu = Cpu::default();
    let (stop, stats) = run_with(Kind::Primary, &mut v, &mut cpu, Role::Proxy, false);
    assert_eq!(stop, StopReason::Halted);
    assert_eq!(stats.exits_named("monitor"), 1);
    assert_eq!(stats.exits_named("mwait"), 1);
    assert!(Role::Proxy.intercepts().untrusted);
    assert!(!Role::Primary.intercepts().untrusted);
}
