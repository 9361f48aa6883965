//! The life of a managed partition (policy role `ai` or `containers`): stopped, running,
//! stopping, and back. Shared by the CPU that makes a management call and the partition's
//! own CPUs; every transition is one atomic step, so two managers (or a manager and the
//! partition's own end) can never both win.
//!
//! ```text
//!   Stopped --claim--> Claimed --release--> Stopped        (partition_load copies meanwhile)
//!                      Claimed --run------> Running         (partition_start)
//!   Running --request_stop / a vCPU ends--> Stopping
//!   Stopping --the last vCPU leaves-------> Stopped
//! ```
//!
//! How a run ended is recorded once, by whoever ended it first: the manager's stop, the
//! guest's `partition_exit`, or the fault the hypervisor stopped it for.
//!
//! The messages to the partition's CPUs (run, stop) are posted under one lock together with
//! the transition that calls for them, so a stop meant for one run can never reach the CPUs
//! after the next run was posted (the starter clears what is left over before it posts).

use crate::platform::sync::SpinLock;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use nexus_abi::manage::{LastStop, RunState, StartState, StateWord};
use nexus_abi::Status;

const STOPPED: u8 = 1;
const RUNNING: u8 = 2;
const STOPPING: u8 = 3;
/// A load or a start holds the partition (reported as stopped).
const CLAIMED: u8 = 4;

/// One managed partition's state.
pub struct Lifecycle {
    state: AtomicU8,
    /// vCPUs of the current run that have not left it.
    running: AtomicU32,
    /// The current run's end is recorded.
    ended: AtomicBool,
    last: AtomicU8,
    exit_code: AtomicU32,
    starts: AtomicU32,
    /// What the first CPU starts from, written under a claim, read after `Running`.
    start: SpinLock<StartState>,
    /// Held while a transition's messages are posted.
    control: SpinLock<()>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

/// The partition held by one caller between [`Lifecycle::claim`] and
/// [`Claim::release`] / [`Claim::run`]; dropping it releases it.
pub struct Claim<'a> {
    life: &'a Lifecycle,
    done: bool,
}

impl Lifecycle {
    pub const fn new() -> Self {
        Lifecycle {
            state: AtomicU8::new(STOPPED),
            running: AtomicU32::new(0),
            ended: AtomicBool::new(false),
            last: AtomicU8::new(LastStop::None as u8),
            exit_code: AtomicU32::new(0),
            starts: AtomicU32::new(0),
            start: SpinLock::new(StartState {
                rip: 0,
                rsp: 0,
                rsi: 0,
                cr3: 0,
                gdt_base: 0,
                gdt_limit: 0,
                code_selector: 0,
                data_selector: 0,
            }),
            control: SpinLock::new(()),
        }
    }

    /// Hold a stopped partition for a load or a start; `Busy` while it runs, stops, or
    /// another caller holds it.
    pub fn claim(&self) -> Result<Claim<'_>, Status> {
        self.state
            .compare_exchange(STOPPED, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Claim {
                life: self,
                done: false,
            })
            .map_err(|_| Status::Busy)
    }

    /// Ask a running partition to stop: `true` when this call moved it to `Stopping` and
    /// ran `tell` (which asks its CPUs to leave); `false` when it was not running.
    pub fn request_stop(&self, tell: impl FnOnce()) -> bool {
        let _posting = self.control.lock();
        if self
            .state
            .compare_exchange(RUNNING, STOPPING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.record(LastStop::Stopped, 0);
        tell();
        true
    }

    /// A vCPU of the current run left it, `how` it ended. Returns `(first, last)`: `first`
    /// when it is the first to leave (then `tell_others`, which asks the partition's other
    /// CPUs to leave, ran before this vCPU stopped counting); `last`, the run's final state
    /// word, when no vCPU of the run is left (the partition is stopped now, and a manager may
    /// already start the next run: the word is taken before).
    pub fn vcpu_left(
        &self,
        how: LastStop,
        code: u32,
        tell_others: impl FnOnce(),
    ) -> (bool, Option<StateWord>) {
        let first = {
            let _posting = self.control.lock();
            let first = self
                .state
                .compare_exchange(RUNNING, STOPPING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            self.record(how, code);
            if first {
                tell_others();
            }
            first
        };
        if self.running.fetch_sub(1, Ordering::AcqRel) != 1 {
            return (first, None);
        }
        let word = StateWord {
            state: RunState::Stopped,
            ..self.word()
        };
        self.state.store(STOPPED, Ordering::Release);
        (first, Some(word))
    }

    /// The start state of the current run (for its first CPU).
    pub fn start_state(&self) -> StartState {
        *self.start.lock()
    }

    /// The answer of `partition_state`.
    pub fn word(&self) -> StateWord {
        let state = match self.state.load(Ordering::Acquire) {
            RUNNING => RunState::Running,
            STOPPING => RunState::Stopping,
            _ => RunState::Stopped,
        };
        let last = match self.last.load(Ordering::Acquire) {
            1 => LastStop::Exited,
            2 => LastStop::Stopped,
            3 => LastStop::Faulted,
            _ => LastStop::None,
        };
        StateWord {
            state,
            last,
            starts: self.starts.load(Ordering::Relaxed) as u16,
            exit_code: self.exit_code.load(Ordering::Relaxed),
        }
    }

    fn record(&self, how: LastStop, code: u32) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            self.exit_code.store(code, Ordering::Relaxed);
            self.last.store(how as u8, Ordering::Release);
        }
    }
}

impl Claim<'_> {
    /// Start a run of `vcpus` vCPUs from `start`: the partition is `Running` when `tell`
    /// (which clears its CPUs' left-over messages and posts the run) is called.
    pub fn run(mut self, start: StartState, vcpus: u32, tell: impl FnOnce()) {
        let life = self.life;
        let _posting = life.control.lock();
        *life.start.lock() = start;
        life.running.store(vcpus, Ordering::Release);
        life.ended.store(false, Ordering::Release);
        life.last.store(LastStop::None as u8, Ordering::Release);
        life.exit_code.store(0, Ordering::Relaxed);
        life.starts.fetch_add(1, Ordering::Relaxed);
        life.state.store(RUNNING, Ordering::Release);
        self.done = true;
        tell();
    }

    /// Give the partition back, still stopped.
    pub fn release(self) {}
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.life.state.store(STOPPED, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> StartState {
        StartState {
            rip: 0x1000,
            cr3: 0x2000,
            ..StartState::default()
        }
    }

    #[test]
    fn a_claim_excludes_every_other_claim_until_released() {
        let l = Lifecycle::new();
        let c = l.claim().unwrap();
        assert_eq!(l.claim().err(), Some(Status::Busy));
        assert_eq!(
            l.word().state,
            RunState::Stopped,
            "a claim reads as stopped"
        );
        assert!(
            !l.request_stop(|| panic!("nothing to tell")),
            "nothing runs"
        );
        c.release();
        let c = l.claim().unwrap();
        drop(c);
        assert!(l.claim().is_ok(), "dropping a claim releases it");
    }

    #[test]
    fn a_run_ends_when_its_last_vcpu_leaves_and_the_first_end_is_kept() {
        let l = Lifecycle::new();
        let told = core::cell::Cell::new(0);
        l.claim()
            .unwrap()
            .run(start(), 2, || told.set(told.get() + 1));
        assert_eq!(told.get(), 1);
        assert_eq!(l.start_state(), start());
        let w = l.word();
        assert_eq!(
            (w.state, w.last, w.starts),
            (RunState::Running, LastStop::None, 1)
        );
        assert_eq!(l.claim().err(), Some(Status::Busy), "no load while it runs");
        // The guest exits on its first CPU; the AP leaves because the partition ended.
        assert_eq!(
            l.vcpu_left(LastStop::Exited, 7, || told.set(10)),
            (true, None)
        );
        assert_eq!(told.get(), 10, "the first to leave tells the others");
        assert_eq!(l.word().state, RunState::Stopping);
        assert!(!l.request_stop(|| panic!("told twice")), "already stopping");
        let (first, last) = l.vcpu_left(LastStop::Stopped, 0, || panic!("not the first"));
        assert!(!first);
        assert_eq!(last, Some(l.word()), "the run's final word");
        let w = l.word();
        assert_eq!(
            (w.state, w.last, w.exit_code),
            (RunState::Stopped, LastStop::Exited, 7)
        );
        // A second run starts clean and counts.
        l.claim().unwrap().run(start(), 1, || {});
        let w = l.word();
        assert_eq!((w.last, w.exit_code, w.starts), (LastStop::None, 0, 2));
        assert!(l.request_stop(|| {}));
        assert!(l.vcpu_left(LastStop::Faulted, 0, || {}).1.is_some());
        assert_eq!(
            l.word().last,
            LastStop::Stopped,
            "the manager's stop came first"
        );
    }

    #[test]
    fn ten_cycles_leave_the_same_state() {
        let l = Lifecycle::new();
        for i in 1..=10u16 {
            l.claim().unwrap().run(start(), 3, || {});
            assert!(l.request_stop(|| {}));
            for k in 0..3 {
                let (first, last) = l.vcpu_left(LastStop::Stopped, 0, || {});
                assert_eq!((first, last.is_some()), (false, k == 2));
            }
            let w = l.word();
            assert_eq!((w.state, w.starts), (RunState::Stopped, i));
        }
    }
}
