//! The management calls against a fake machine: a caller with 1 MiB at 0x4000_0000 and a
//! managed partition (id 2) with 1 MiB at 0x5000_0000 and two CPUs.

extern crate std;

use super::*;
use crate::mem::fake::FakeMem;
use crate::mem::guest::Paging;
use crate::npt::{Npt, NptOptions, Perm};
use crate::partition::plan::tests::test_partition;
use crate::partition::{FixedStr, Kind};
use core::cell::{Cell, RefCell};
use nexus_abi::manage::{LastStop, RunState, StateWord};
use nexus_abi::ring::{PartitionInfo, Payload};
use std::collections::BTreeMap;
use std::vec::Vec;

const CALLER: u64 = 0x4000_0000;
const TARGET: u64 = 0x5000_0000;
const MIB: u64 = 1 << 20;

struct Machine {
    configs: Vec<PartitionConfig>,
    life: Lifecycle,
    cpus: u32,
    /// Bytes written into the target, by address.
    written: RefCell<BTreeMap<u64, u8>>,
    runs: Cell<u32>,
    stops: Cell<u32>,
}

impl Machine {
    fn new() -> Machine {
        let mut primary = test_partition(CALLER, MIB);
        primary.id = 0;
        primary.kind = Kind::Primary;
        let mut test = test_partition(0x6000_0000, MIB);
        test.id = 1;
        let mut ai = test_partition(TARGET, MIB);
        ai.id = 2;
        ai.kind = Kind::Deferred;
        ai.name = FixedStr::new("ai");
        Machine {
            configs: std::vec![primary, test, ai],
            life: Lifecycle::new(),
            cpus: 2,
            written: RefCell::new(BTreeMap::new()),
            runs: Cell::new(0),
            stops: Cell::new(0),
        }
    }
}

impl Partitions for Machine {
    fn config(&self, id: u32) -> Option<&PartitionConfig> {
        self.configs.get(id as usize)
    }
    fn lifecycle(&self, id: u32) -> Option<&Lifecycle> {
        (id == 2).then_some(&self.life)
    }
    fn vcpus(&self, _id: u32) -> u32 {
        self.cpus
    }
    fn write_phys(&self, pa: u64, bytes: &[u8]) {
        assert!(self.configs[2].owns(pa, bytes.len() as u64), "{pa:#x}");
        let mut w = self.written.borrow_mut();
        for (i, b) in bytes.iter().enumerate() {
            w.insert(pa + i as u64, *b);
        }
    }
    fn post_run(&self, _id: u32) {
        self.runs.set(self.runs.get() + 1);
    }
    fn post_stop(&self, _id: u32) {
        self.stops.set(self.stops.get() + 1);
    }
}

struct Rig {
    machine: Machine,
    npt: Npt,
    mem: FakeMem,
}

impl Rig {
    fn new() -> Rig {
        let mut mem = FakeMem::new(0x10_0000_0000);
        let opts = NptOptions {
            huge_pages: false,
            nx: true,
        };
        let mut npt = Npt::new(&mut mem, opts).unwrap();
        npt.map_identity(&mut mem, CALLER, MIB, Perm::RWX).unwrap();
        Rig {
            machine: Machine::new(),
            npt,
            mem,
        }
    }

    fn call(&mut self, r: Request) -> Reply {
        let mut guest = GuestMemory {
            second_level: &self.npt,
            mem: &mut self.mem,
            paging: Paging::None,
        };
        handle(r, &self.machine, &mut guest, 39)
    }

    fn poke(&mut self, gpa: u64, bytes: &[u8]) {
        self.mem.write(gpa, bytes);
    }

    fn state(&mut self) -> StateWord {
        let v = self
            .call(Request::PartitionState { id: 2 })
            .result()
            .unwrap();
        StateWord::from_packed(v).unwrap()
    }

    fn start_with(&mut self, s: StartState) -> Reply {
        self.poke(CALLER + 0x800, &s.encode());
        self.call(Request::PartitionStart {
            id: 2,
            gpa: CALLER + 0x800,
            len: START_STATE_SIZE as u32,
        })
    }
}

fn good_start() -> StartState {
    StartState {
        rip: TARGET + 0x1000,
        rsp: TARGET + 0x8000,
        rsi: TARGET + 0x7000,
        cr3: TARGET + 0x9000,
        gdt_base: TARGET + 0x500,
        gdt_limit: 0x1f,
        code_selector: 0x10,
        data_selector: 0x18,
    }
}

#[test]
fn describe_answers_any_partition_and_not_found_beyond() {
    let mut r = Rig::new();
    let reply = r.call(Request::PartitionDescribe {
        id: 2,
        gpa: CALLER,
        len: 512,
    });
    let n = reply.result().unwrap() as usize;
    let mut buf = std::vec![0u8; n];
    r.mem.read(CALLER, &mut buf);
    let info = PartitionInfo::decode(&buf).unwrap();
    assert_eq!((info.id, info.name, info.memory_base), (2, "ai", TARGET));
    assert_eq!(
        r.call(Request::PartitionDescribe {
            id: 3,
            gpa: CALLER,
            len: 512
        })
        .status,
        Status::NotFound
    );
    assert_eq!(
        r.call(Request::PartitionDescribe {
            id: 1,
            gpa: TARGET,
            len: 512
        })
        .status,
        Status::BadAddress,
        "the buffer must be the caller's"
    );
}

#[test]
fn a_load_copies_into_the_target_only_inside_it_and_only_while_stopped() {
    let mut r = Rig::new();
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    r.poke(CALLER + 0x1_0000, &payload);
    let load = |dst: u64, src: u64, len: u32| Request::PartitionLoad {
        id: 2,
        dst,
        src,
        len,
    };
    assert_eq!(
        r.call(load(TARGET + 0x100, CALLER + 0x1_0000, 10_000)),
        Reply::ok(10_000)
    );
    let got: Vec<u8> = (0..10_000)
        .map(|i| r.machine.written.borrow()[&(TARGET + 0x100 + i)])
        .collect();
    assert_eq!(got, payload);
    let before = r.machine.written.borrow().len();
    for (what, req, status) in [
        (
            "unknown id",
            Request::PartitionLoad {
                id: 9,
                dst: TARGET,
                src: CALLER,
                len: 16,
            },
            Status::NotFound,
        ),
        (
            "the primary",
            Request::PartitionLoad {
                id: 0,
                dst: CALLER,
                src: CALLER,
                len: 16,
            },
            Status::PermissionDenied,
        ),
        (
            "a test partition",
            Request::PartitionLoad {
                id: 1,
                dst: 0x6000_0000,
                src: CALLER,
                len: 16,
            },
            Status::PermissionDenied,
        ),
        (
            "past the target's end",
            load(TARGET + MIB - 8, CALLER, 16),
            Status::BadAddress,
        ),
        (
            "below the target",
            load(TARGET - 8, CALLER, 16),
            Status::BadAddress,
        ),
        (
            "into the caller",
            load(CALLER, CALLER, 16),
            Status::BadAddress,
        ),
        (
            "source outside the caller",
            load(TARGET, TARGET, 16),
            Status::BadAddress,
        ),
        (
            "source past the caller's end",
            load(TARGET, CALLER + MIB - 8, 16),
            Status::BadAddress,
        ),
        (
            "source beyond MAXPHYADDR",
            load(TARGET, 1 << 40, 16),
            Status::BadAddress,
        ),
    ] {
        assert_eq!(r.call(req).status, status, "{what}");
    }
    assert_eq!(
        r.machine.written.borrow().len(),
        before,
        "a refused load writes nothing"
    );
    // While it runs (or is claimed by a start) nothing is loaded.
    assert_eq!(r.start_with(good_start()), Reply::ok(0));
    assert_eq!(r.call(load(TARGET, CALLER, 16)).status, Status::Busy);
    assert_eq!(r.machine.written.borrow().len(), before);
}

#[test]
fn a_start_checks_its_state_against_the_target_and_runs_once() {
    let mut r = Rig::new();
    let s = good_start();
    for (what, bad, status) in [
        (
            "cr3 outside the target",
            StartState { cr3: CALLER, ..s },
            Status::BadAddress,
        ),
        (
            "cr3 at the target's last byte",
            StartState {
                cr3: TARGET + MIB,
                ..s
            },
            Status::BadAddress,
        ),
        (
            "GDT outside the target",
            StartState {
                gdt_base: TARGET + MIB - 16,
                ..s
            },
            Status::BadAddress,
        ),
        (
            "selector beyond the GDT",
            StartState {
                code_selector: 0x20,
                ..s
            },
            Status::InvalidArgument,
        ),
        (
            "rip not canonical",
            StartState { rip: 1 << 50, ..s },
            Status::InvalidArgument,
        ),
    ] {
        assert_eq!(r.start_with(bad).status, status, "{what}");
    }
    let mut raw = s.encode();
    raw[0] = 9;
    r.poke(CALLER + 0x800, &raw);
    let start = Request::PartitionStart {
        id: 2,
        gpa: CALLER + 0x800,
        len: START_STATE_SIZE as u32,
    };
    assert_eq!(r.call(start).status, Status::VersionMismatch);
    let outside = Request::PartitionStart {
        id: 2,
        gpa: TARGET,
        len: START_STATE_SIZE as u32,
    };
    assert_eq!(r.call(outside).status, Status::BadAddress);
    assert_eq!(r.machine.runs.get(), 0, "nothing started");
    assert_eq!(r.state().state, RunState::Stopped);

    assert_eq!(r.start_with(s), Reply::ok(0));
    assert_eq!(r.machine.runs.get(), 1);
    assert_eq!(r.machine.life.start_state(), s);
    assert_eq!(r.state().state, RunState::Running);
    assert_eq!(r.start_with(s).status, Status::Busy, "it runs already");
    assert_eq!(r.machine.runs.get(), 1);

    r.machine.cpus = 0;
    assert_eq!(
        r.call(Request::PartitionStop { id: 2 }).status,
        Status::Success
    );
    r.machine.life.vcpu_left(LastStop::Stopped, 0, || {});
    r.machine.life.vcpu_left(LastStop::Stopped, 0, || {});
    assert_eq!(
        r.start_with(s).status,
        Status::Unsupported,
        "none of its CPUs can run it here"
    );
}

#[test]
fn stop_and_state_follow_the_run_and_ten_cycles_end_where_they_began() {
    let mut r = Rig::new();
    let stop = Request::PartitionStop { id: 2 };
    let w = StateWord::from_packed(r.call(stop).result().unwrap()).unwrap();
    assert_eq!(
        w.state,
        RunState::Stopped,
        "stopping a stopped partition is no error"
    );
    assert_eq!(r.machine.stops.get(), 0, "and tells no CPU");
    for i in 1..=10u16 {
        assert_eq!(r.start_with(good_start()), Reply::ok(0));
        let w = StateWord::from_packed(r.call(stop).result().unwrap()).unwrap();
        assert_eq!(w.state, RunState::Stopping);
        assert_eq!(r.machine.stops.get(), i as u32);
        // A second stop while its CPUs leave changes nothing.
        r.call(stop).result().unwrap();
        assert_eq!(r.machine.stops.get(), i as u32);
        assert_eq!(
            r.machine.life.vcpu_left(LastStop::Stopped, 0, || {}),
            (false, None)
        );
        let (_, last) = r.machine.life.vcpu_left(LastStop::Stopped, 0, || {});
        assert_eq!(last.map(|w| w.starts), Some(i));
        let w = r.state();
        assert_eq!(
            (w.state, w.last, w.starts),
            (RunState::Stopped, LastStop::Stopped, i)
        );
    }
    for (id, status) in [
        (0, Status::PermissionDenied),
        (1, Status::PermissionDenied),
        (7, Status::NotFound),
    ] {
        assert_eq!(
            r.call(Request::PartitionStop { id }).status,
            status,
            "stop {id}"
        );
        assert_eq!(
            r.call(Request::PartitionState { id }).status,
            status,
            "state {id}"
        );
    }
}
