//! Software INIT/SIPI between the CPUs of one test partition.
//!
//! A partition's first CPU starts its image in 64-bit mode; every other CPU
//! (an AP of the partition) starts reset, waiting for a start-up IPI, as a
//! real AP waits after power-on. The partition's vCPUs signal each other
//! through their virtual x2APIC ICR (see `exit::handler`); the hypervisor
//! delivers those signals through one [`ApMailbox`] per AP:
//!
//! - SIPI: posted into the mailbox; the AP's CPU waits in host mode and takes
//!   it ([`ApMailbox::take`]). A SIPI to an AP that is not waiting is dropped,
//!   as hardware drops it.
//! - INIT to an AP that runs guest code: the sender's CPU sends a physical
//!   INIT to the AP's CPU (a VM exit there, the same one an OS's INIT causes),
//!   whose handler resets the vCPU and marks the mailbox waiting; the sender
//!   waits for that mark (bounded), so a SIPI sent right after finds the AP
//!   waiting.
//! - End of the partition: the mailbox is stopped; an AP running guest code
//!   is made to exit by the same physical INIT.
//!
//! Why not hardware wait-for-SIPI for these APs: a start-up IPI only reaches a
//! CPU in wait-for-SIPI while it is in guest mode, and Bochs 2.7 (the VMX test
//! machine) mishandles exactly that case (its `deliver_SIPI` performs the VM
//! exit from the sending CPU's context). The backend still handles the
//! hardware SIPI exit for INITs from outside the partition.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

const RUNNING: u32 = 0;
const WAITING: u32 = 1;
/// Low byte; the vector sits in bits 15:8.
const START_PENDING: u32 = 2;
const STOPPED: u32 = 3;
const ABSENT: u32 = 4;

/// Where an AP is, as its mailbox records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApState {
    /// Executing guest code (or handling one of its exits).
    Running,
    /// Reset, in host mode, waiting for a start-up IPI.
    Waiting,
    /// A start-up IPI was posted and not yet taken.
    StartPending { vector: u8 },
    /// The AP's vCPU ended (its partition ended, or it stopped on its own).
    Stopped,
    /// Its CPU never started.
    Absent,
}

/// What the AP's CPU finds when it looks while waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mail {
    /// Nothing yet: keep waiting.
    Wait,
    /// Start at this SIPI vector (the mailbox now says running).
    Start { vector: u8 },
    /// Stop: the partition ended.
    Stop,
}

/// How a start-up IPI was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SipiResult {
    /// The AP waited and will start at the vector.
    Accepted,
    /// The AP was not waiting (running, or a start already pending): dropped.
    Ignored,
    /// The AP is stopped or absent.
    Gone,
}

/// How an INIT was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitResult {
    /// The AP was already waiting (a pending start is cancelled).
    AlreadyWaiting,
    /// The AP ran guest code, took the INIT and now waits.
    Reset,
    /// It ran guest code and did not take the INIT in time.
    NoResponse,
    Gone,
}

/// One AP's mailbox; all operations are lock-free.
#[derive(Debug)]
pub struct ApMailbox {
    state: AtomicU32,
    /// A sender kicked the AP with a physical INIT that its CPU has not taken
    /// yet. An INIT exit without it is a repeat (Bochs 2.7 delivers an INIT
    /// that caused a VM exit a second time, at the next VM entry).
    init_sent: AtomicBool,
}

impl Default for ApMailbox {
    fn default() -> Self {
        Self::new()
    }
}

impl ApMailbox {
    /// An AP that has not run yet waits for its first start-up IPI.
    pub const fn new() -> Self {
        ApMailbox {
            state: AtomicU32::new(WAITING),
            init_sent: AtomicBool::new(false),
        }
    }

    pub fn state(&self) -> ApState {
        decode(self.state.load(Ordering::Acquire))
    }

    /// The AP's CPU could not be started.
    pub fn mark_absent(&self) {
        self.state.store(ABSENT, Ordering::Release);
    }

    /// The AP's CPU looks for a start-up IPI (or the end of its partition).
    pub fn take(&self) -> Mail {
        let s = self.state.load(Ordering::Acquire);
        match decode(s) {
            ApState::StartPending { vector } => {
                match self
                    .state
                    .compare_exchange(s, RUNNING, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => Mail::Start { vector },
                    // Stopped or INIT-cancelled meanwhile: look again next time.
                    Err(_) => Mail::Wait,
                }
            }
            ApState::Stopped | ApState::Absent => Mail::Stop,
            ApState::Waiting | ApState::Running => Mail::Wait,
        }
    }

    /// The AP's CPU took INIT (its vCPU is reset): it waits from now on.
    /// False when the mailbox was stopped meanwhile (the AP must end).
    pub fn enter_wait(&self) -> bool {
        loop {
            let s = self.state.load(Ordering::Acquire);
            match decode(s) {
                ApState::Stopped | ApState::Absent => return false,
                ApState::Waiting => return true,
                _ => {
                    if self
                        .state
                        .compare_exchange(s, WAITING, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return true;
                    }
                }
            }
        }
    }

    /// A start-up IPI from another CPU of the partition.
    pub fn post_startup(&self, vector: u8) -> SipiResult {
        let new = START_PENDING | (vector as u32) << 8;
        match self
            .state
            .compare_exchange(WAITING, new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => SipiResult::Accepted,
            Err(s) => match decode(s) {
                ApState::Stopped | ApState::Absent => SipiResult::Gone,
                _ => SipiResult::Ignored,
            },
        }
    }

    /// INIT from another CPU of the partition. A waiting AP stays waiting (a
    /// pending start is cancelled); a running one is made to exit with `kick`
    /// (a physical INIT to its CPU), then `spin` is called until the AP
    /// reports it waits or `spin` returns false (time is up).
    pub fn post_init(&self, kick: impl FnOnce(), mut spin: impl FnMut() -> bool) -> InitResult {
        loop {
            let s = self.state.load(Ordering::Acquire);
            match decode(s) {
                ApState::Waiting => return InitResult::AlreadyWaiting,
                ApState::StartPending { .. } => {
                    if self
                        .state
                        .compare_exchange(s, WAITING, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return InitResult::AlreadyWaiting;
                    }
                }
                ApState::Stopped | ApState::Absent => return InitResult::Gone,
                ApState::Running => break,
            }
        }
        self.init_sent.store(true, Ordering::Release);
        kick();
        loop {
            match self.state() {
                ApState::Waiting | ApState::StartPending { .. } => return InitResult::Reset,
                ApState::Stopped | ApState::Absent => return InitResult::Gone,
                ApState::Running => {
                    if !spin() {
                        return InitResult::NoResponse;
                    }
                }
            }
        }
    }

    /// The AP's CPU had an INIT exit: true when an INIT was sent to it (or its
    /// partition ended, so it stops anyway); false for a repeat, which the AP
    /// ignores.
    pub fn take_init(&self) -> bool {
        matches!(self.state(), ApState::Stopped | ApState::Absent)
            || self.init_sent.swap(false, Ordering::AcqRel)
    }

    /// The partition ended: the AP must stop. Returns the state before, so
    /// the caller kicks an AP that was running guest code.
    pub fn stop(&self) -> ApState {
        let before = self.state.swap(STOPPED, Ordering::AcqRel);
        if before == ABSENT {
            self.state.store(ABSENT, Ordering::Release);
        }
        decode(before)
    }
}

fn decode(s: u32) -> ApState {
    match s & 0xff {
        RUNNING => ApState::Running,
        WAITING => ApState::Waiting,
        START_PENDING => ApState::StartPending {
            vector: (s >> 8) as u8,
        },
        ABSENT => ApState::Absent,
        _ => ApState::Stopped,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_ap_starts_waiting_and_takes_one_sipi() {
        let m = ApMailbox::new();
        assert_eq!(m.take(), Mail::Wait);
        assert_eq!(m.post_startup(0x20), SipiResult::Accepted);
        // The second SIPI of the INIT-SIPI-SIPI protocol is dropped.
        assert_eq!(m.post_startup(0x21), SipiResult::Ignored);
        assert_eq!(m.take(), Mail::Start { vector: 0x20 });
        assert_eq!(m.state(), ApState::Running);
        assert_eq!(
            m.post_startup(0x22),
            SipiResult::Ignored,
            "running: dropped"
        );
        assert_eq!(m.take(), Mail::Wait);
    }

    #[test]
    fn init_cancels_a_pending_start_and_resets_a_running_ap() {
        let m = ApMailbox::new();
        m.post_startup(0x20);
        let mut kicked = false;
        assert_eq!(
            m.post_init(|| kicked = true, || true),
            InitResult::AlreadyWaiting
        );
        assert!(!kicked, "a waiting AP needs no kick");
        assert_eq!(m.state(), ApState::Waiting);
        assert_eq!(m.post_startup(0x30), SipiResult::Accepted);
        assert_eq!(m.take(), Mail::Start { vector: 0x30 });
        // Running: the kick makes the AP exit; its CPU then reports waiting.
        assert!(
            !m.take_init(),
            "no INIT sent yet: an INIT exit now is a repeat"
        );
        let r = m.post_init(
            || {
                assert!(m.take_init(), "the INIT the sender just kicked with");
                assert!(!m.take_init(), "its repeat");
                assert!(m.enter_wait());
            },
            || panic!("the AP answered at once"),
        );
        assert_eq!(r, InitResult::Reset);
        assert_eq!(m.post_startup(0x31), SipiResult::Accepted);
    }

    #[test]
    fn an_ap_that_never_answers_times_out() {
        let m = ApMailbox::new();
        m.post_startup(1);
        m.take();
        let mut spins = 0;
        let r = m.post_init(
            || {},
            || {
                spins += 1;
                spins < 100
            },
        );
        assert_eq!((r, spins), (InitResult::NoResponse, 100));
    }

    #[test]
    fn stop_ends_waiting_and_running_aps() {
        let m = ApMailbox::new();
        assert_eq!(m.stop(), ApState::Waiting);
        assert_eq!(m.take(), Mail::Stop);
        assert!(m.take_init(), "a stopped AP takes the INIT that ends it");
        assert!(!m.enter_wait(), "a stopped AP does not wait");
        assert_eq!(m.post_startup(1), SipiResult::Gone);
        assert_eq!(m.post_init(|| panic!("no kick"), || true), InitResult::Gone);

        let r = ApMailbox::new();
        r.post_startup(2);
        r.take();
        assert_eq!(r.stop(), ApState::Running, "the caller kicks it");

        let a = ApMailbox::new();
        a.mark_absent();
        assert_eq!(a.stop(), ApState::Absent);
        assert_eq!(a.state(), ApState::Absent);
        assert_eq!(a.post_startup(1), SipiResult::Gone);
    }

    #[test]
    fn sender_and_ap_on_two_threads() {
        // The AP thread takes starts and answers INITs; the sender restarts it 200 times.
        let m = Arc::new(ApMailbox::new());
        let ap = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                let mut starts = std::vec::Vec::new();
                loop {
                    match m.take() {
                        Mail::Start { vector } => starts.push(vector),
                        Mail::Stop => return starts,
                        Mail::Wait => {}
                    }
                    // A running AP "takes the INIT" whenever the sender asked for it.
                    if m.state() == ApState::Running && KICK.load(Ordering::Acquire) {
                        KICK.store(false, Ordering::Release);
                        m.enter_wait();
                    }
                    std::hint::spin_loop();
                }
            })
        };
        static KICK: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
        for i in 0..200u32 {
            let r = m.post_init(|| KICK.store(true, Ordering::Release), || true);
            assert!(
                matches!(r, InitResult::Reset | InitResult::AlreadyWaiting),
                "{r:?}"
            );
            assert_eq!(m.post_startup(i as u8), SipiResult::Accepted);
            while m.state() != ApState::Running {
                std::hint::spin_loop();
            }
        }
        m.stop();
        let starts = ap.join().unwrap();
        assert_eq!(starts.len(), 200);
        assert!(starts.iter().enumerate().all(|(i, v)| *v == i as u8));
    }
}
