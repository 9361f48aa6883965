//! `manage ID`: a manager's view of partition `ID` through the management calls (ABI 1.5).
//! Refused calls first (each must change nothing), then the programs of
//! [`crate::payload`]: one that exits with the RSI it was started with, one that only a
//! stop ends, one the hypervisor stops for a fault, and ten more start/exit cycles. Every
//! step is one `ok`/`FAIL` line; the exit code is 0 only when all passed.

use super::{call, transport, Console};
use crate::payload::{self, Program};
use core::fmt::Write;
use nexus_abi::manage::{LastStop, RunState, StateWord, START_STATE_SIZE};
use nexus_abi::ring::{PartitionInfo, Payload};
use nexus_abi::{Hypercall, Reply, Status};

/// `partition_state` polls (each followed by a `yield`) before a run counts as hung.
const POLLS: u32 = 2_000_000;
/// Start/exit cycles after the first run.
const CYCLES: u32 = 10;

#[repr(C, align(4096))]
struct Staging {
    tables: [u64; 3 * 512],
    gdt: [u64; 4],
    code: [u8; payload::CODE_SIZE],
    start: [u8; START_STATE_SIZE],
    info: [u8; 512],
}

static mut STAGING: Staging = Staging {
    tables: [0; 3 * 512],
    gdt: [0; 4],
    code: [0; payload::CODE_SIZE],
    start: [0; START_STATE_SIZE],
    info: [0; 512],
};

fn staging() -> &'static mut Staging {
    // SAFETY: this partition's only CPU runs this test alone, once.
    unsafe { &mut *core::ptr::addr_of_mut!(STAGING) }
}

fn mgmt(call_: Hypercall, args: [u64; 6]) -> Reply {
    call(call_.number(), args)
}

fn state(id: u32) -> Option<StateWord> {
    StateWord::from_packed(
        mgmt(Hypercall::PartitionState, [id as u64, 0, 0, 0, 0, 0])
            .result()
            .ok()?,
    )
}

struct Checker {
    failed: u32,
}

impl Checker {
    fn expect(&mut self, what: &str, got: Status, want: Status) {
        if got == want {
            say!("ok   {what} -> {got}");
        } else {
            say!("FAIL {what} -> {got} (expected {want})");
            self.failed += 1;
        }
    }

    fn check(&mut self, what: &str, ok: bool) {
        if ok {
            say!("ok   {what}");
        } else {
            say!("FAIL {what}");
            self.failed += 1;
        }
    }
}

fn load(id: u32, dst: u64, src: u64, len: usize) -> Status {
    mgmt(
        Hypercall::PartitionLoad,
        [id as u64, dst, src, len as u64, 0, 0],
    )
    .status
}

fn start(id: u32, state: &nexus_abi::manage::StartState) -> Status {
    let s = staging();
    s.start = state.encode();
    let gpa = s.start.as_ptr() as u64;
    mgmt(
        Hypercall::PartitionStart,
        [id as u64, gpa, START_STATE_SIZE as u64, 0, 0, 0],
    )
    .status
}

/// Load `program` into the partition at `base`, start it with `rsi`.
fn launch(c: &mut Checker, id: u32, base: u64, program: Program, rsi: u64, log: bool) -> bool {
    let s = staging();
    s.code = payload::code(program, base, transport());
    let st = load(
        id,
        base + payload::CODE_OFFSET,
        s.code.as_ptr() as u64,
        s.code.len(),
    );
    let go = start(id, &payload::start_state(base, rsi));
    if log || st != Status::Success || go != Status::Success {
        c.expect("partition_load of the program", st, Status::Success);
        c.expect("partition_start", go, Status::Success);
    }
    st == Status::Success && go == Status::Success
}

/// Poll until the partition is stopped; its state word then.
fn wait_stopped(id: u32) -> Option<StateWord> {
    for _ in 0..POLLS {
        match state(id) {
            Some(w) if w.state == RunState::Stopped => return Some(w),
            Some(_) => {}
            None => return None,
        }
        call(Hypercall::Yield.number(), [0; 6]);
    }
    None
}

pub fn run(id: u32, own: &PartitionInfo<'_>) -> u32 {
    let mut c = Checker { failed: 0 };
    let s = staging();
    let n = match mgmt(
        Hypercall::PartitionDescribe,
        [
            id as u64,
            s.info.as_mut_ptr() as u64,
            s.info.len() as u64,
            0,
            0,
            0,
        ],
    )
    .result()
    {
        Ok(n) => n as usize,
        Err(e) => {
            say!("FAIL partition_describe {id} -> {e}");
            return 20;
        }
    };
    let Ok(target) = PartitionInfo::decode(&s.info[..n.min(s.info.len())]) else {
        say!("FAIL partition_describe {id}: the answer does not decode");
        return 21;
    };
    let (base, size) = (target.memory_base, target.memory_size);
    say!(
        "managing partition {} (id {id}), memory {base:#x}+{size:#x}, {} CPU(s)",
        target.name,
        target.vcpus
    );
    let tables = s.tables.as_ptr() as u64;
    let mine = own.memory_base;

    // Refused calls: each answers its status and changes nothing.
    let w = state(id);
    c.check(
        "partition_state before any start: stopped, never started",
        w.is_some_and(|w| w.state == RunState::Stopped && w.starts == 0),
    );
    c.expect(
        "partition_load into partition 0 (the primary)",
        load(0, 0x10_0000, tables, 16),
        Status::PermissionDenied,
    );
    c.expect(
        "partition_load into myself",
        load(own.id, mine, tables, 16),
        Status::PermissionDenied,
    );
    c.expect(
        "partition_load into partition 999",
        load(999, base, tables, 16),
        Status::NotFound,
    );
    c.expect(
        "partition_load past the target's end",
        load(id, base + size - 8, tables, 16),
        Status::BadAddress,
    );
    c.expect(
        "partition_load from outside my memory",
        load(id, base, base, 16),
        Status::BadAddress,
    );
    c.expect(
        "partition_load of 1 MiB + 1",
        load(id, base, tables, (1 << 20) + 1),
        Status::LimitExceeded,
    );
    let good = payload::start_state(base, 0x600d);
    let mut bad_version = good.encode();
    bad_version[0] = 7;
    s.start = bad_version;
    let st = mgmt(
        Hypercall::PartitionStart,
        [
            id as u64,
            s.start.as_ptr() as u64,
            START_STATE_SIZE as u64,
            0,
            0,
            0,
        ],
    )
    .status;
    c.expect(
        "partition_start, start state version 7",
        st,
        Status::VersionMismatch,
    );
    let outside_cr3 = nexus_abi::manage::StartState { cr3: mine, ..good };
    c.expect(
        "partition_start, cr3 in my memory",
        start(id, &outside_cr3),
        Status::BadAddress,
    );
    let bad_selector = nexus_abi::manage::StartState {
        code_selector: 0x20,
        ..good
    };
    c.expect(
        "partition_start, code selector beyond the GDT",
        start(id, &bad_selector),
        Status::InvalidArgument,
    );
    c.expect(
        "partition_start of partition 0",
        start(0, &good),
        Status::PermissionDenied,
    );
    let w = mgmt(Hypercall::PartitionStop, [id as u64, 0, 0, 0, 0, 0]).result();
    c.check(
        "partition_stop of a stopped partition: success, still stopped",
        w.ok()
            .and_then(StateWord::from_packed)
            .is_some_and(|w| w.state == RunState::Stopped && w.starts == 0),
    );

    // The boot data a VMM writes: page tables and GDT.
    s.tables = payload::tables(base);
    s.gdt = payload::GDT;
    c.expect(
        "partition_load of the page tables (12 KiB)",
        load(id, base + payload::TABLES_OFFSET, tables, 3 * 4096),
        Status::Success,
    );
    c.expect(
        "partition_load of the GDT",
        load(id, base + payload::GDT_OFFSET, s.gdt.as_ptr() as u64, 32),
        Status::Success,
    );

    // 1: it prints and exits with its RSI.
    if launch(&mut c, id, base, Program::Hello, 0x600d, true) {
        let w = wait_stopped(id);
        c.check(
            "the program exited with code 0x600d (its RSI)",
            w.is_some_and(|w| w.last == LastStop::Exited && w.exit_code == 0x600d && w.starts == 1),
        );
    }
    // 2: it spins until stopped; meanwhile it cannot be loaded or started again.
    if launch(&mut c, id, base, Program::Spin, 0, true) {
        let w = state(id);
        c.check(
            "partition_state of the spinning program: running",
            w.is_some_and(|w| w.state == RunState::Running),
        );
        c.expect(
            "partition_load while it runs",
            load(id, base, tables, 16),
            Status::Busy,
        );
        c.expect(
            "partition_start while it runs",
            start(id, &good),
            Status::Busy,
        );
        let st = mgmt(Hypercall::PartitionStop, [id as u64, 0, 0, 0, 0, 0]).status;
        c.expect("partition_stop of the running program", st, Status::Success);
        let w = wait_stopped(id);
        c.check(
            "the program was stopped by its manager",
            w.is_some_and(|w| w.last == LastStop::Stopped),
        );
    }
    // 3: the hypervisor stops it for writing outside its memory; the manager goes on.
    if launch(&mut c, id, base, Program::Fault, 0, true) {
        let w = wait_stopped(id);
        c.check(
            "the faulting program was stopped by the hypervisor",
            w.is_some_and(|w| w.last == LastStop::Faulted),
        );
    }
    // 4: ten more start/exit cycles, each with its own exit code.
    let mut cycles_ok = 0;
    for i in 0..CYCLES {
        let code = 0x1000 + i as u64;
        if launch(&mut c, id, base, Program::Hello, code, false)
            && wait_stopped(id)
                .is_some_and(|w| w.last == LastStop::Exited && w.exit_code == code as u32)
        {
            cycles_ok += 1;
        }
    }
    say!("managed cycles: {cycles_ok} of {CYCLES} exited with their own code");
    c.check("every cycle exited with its own code", cycles_ok == CYCLES);
    let w = state(id);
    c.check(
        "partition_state counts 13 starts",
        w.is_some_and(|w| w.starts == 3 + CYCLES as u16),
    );
    say!("management checks: {} failed", c.failed);
    if c.failed == 0 {
        0
    } else {
        22
    }
}
