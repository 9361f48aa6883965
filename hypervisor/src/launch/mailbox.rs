//! Requests one CPU posts to another CPU's vCPU: the software INIT and start-up IPI the
//! hypervisor emulates (for the primary's APs and for a test partition's APs), the end of a
//! partition, and a firmware proxy run (see `launch::proxy`).
//!
//! The sender sets the request bits and then kicks the target with an NMI (see
//! `platform::nmi`); the target takes all pending requests at once, before its next guest
//! entry or while it waits in host mode, and applies them in architectural order: INIT
//! before start-up, so an INIT and a SIPI posted back to back start the vCPU at the SIPI's
//! vector. A start-up IPI reaches a vCPU only while it waits for one (as on hardware, where
//! a SIPI to a running CPU is ignored); two SIPIs taken together count once.
//!
//! A CPU the primary does not own is never reset by the primary's INIT, but it keeps the
//! same rule for a firmware proxy run: a broadcast INIT *arms* it ([`Mailbox::arm_proxy`]),
//! and only the first broadcast start-up IPI after that posts a proxy run. The second SIPI
//! of INIT-SIPI-SIPI, and any SIPI without an INIT before it, is ignored, so the
//! firmware's wake-up code runs once per wake-up, as on a real AP.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

const INIT: u32 = 1 << 0;
const STARTUP: u32 = 1 << 1;
const STOP: u32 = 1 << 2;
const PROXY: u32 = 1 << 3;
const RUN: u32 = 1 << 4;
/// What a parked CPU waits for; the rest is for a vCPU.
const PARKED: u32 = PROXY | RUN;

/// The requests taken in one go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    pub init: bool,
    /// A start-up IPI with this vector.
    pub startup: Option<u8>,
    /// The partition ended: the vCPU stops.
    pub stop: bool,
    /// Run the primary's firmware on this (otherwise idle) CPU from this SIPI vector until it
    /// halts.
    pub proxy: Option<u8>,
    /// Run this CPU's managed partition (`partition_start`).
    pub run: bool,
}

impl Requests {
    pub fn any(&self) -> bool {
        self.init || self.startup.is_some() || self.stop || self.proxy.is_some() || self.run
    }
}

/// One vCPU's mailbox.
#[derive(Debug, Default)]
pub struct Mailbox {
    bits: AtomicU32,
    startup_vector: AtomicU32,
    proxy_vector: AtomicU32,
    /// A broadcast INIT came since the last proxy run was posted (not a request: nothing
    /// wakes for it).
    proxy_armed: AtomicBool,
}

impl Mailbox {
    pub const fn new() -> Self {
        Mailbox {
            bits: AtomicU32::new(0),
            startup_vector: AtomicU32::new(0),
            proxy_vector: AtomicU32::new(0),
            proxy_armed: AtomicBool::new(false),
        }
    }

    pub fn post_init(&self) {
        self.bits.fetch_or(INIT, Ordering::AcqRel);
    }

    pub fn post_startup(&self, vector: u8) {
        // The vector is stored before the bit that publishes it.
        self.startup_vector.store(vector as u32, Ordering::Release);
        self.bits.fetch_or(STARTUP, Ordering::AcqRel);
    }

    pub fn post_stop(&self) {
        self.bits.fetch_or(STOP, Ordering::AcqRel);
    }

    /// A managed partition's new run: drop what earlier runs left for the vCPU (a stop that
    /// came after its vCPU had left, an INIT or start-up IPI it never took), then post the
    /// run. Only while the CPU is parked (its partition is stopped).
    pub fn post_run(&self) {
        self.bits.fetch_and(PROXY, Ordering::AcqRel);
        self.bits.fetch_or(RUN, Ordering::AcqRel);
    }

    /// A broadcast INIT from the primary reached this CPU, which it does not own: the next
    /// broadcast start-up IPI may run a firmware proxy here.
    pub fn arm_proxy(&self) {
        self.proxy_armed.store(true, Ordering::Release);
    }

    /// A broadcast start-up IPI: posts a firmware proxy run and disarms when armed; `false`
    /// (nothing posted) otherwise.
    pub fn post_proxy(&self, vector: u8) -> bool {
        if !self.proxy_armed.swap(false, Ordering::AcqRel) {
            return false;
        }
        self.proxy_vector.store(vector as u32, Ordering::Release);
        self.bits.fetch_or(PROXY, Ordering::AcqRel);
        true
    }

    /// Whether anything is posted and not taken.
    pub fn pending(&self) -> bool {
        self.bits.load(Ordering::Acquire) != 0
    }

    /// Take everything posted so far except a proxy or run request, which stays for the
    /// parked CPU (a vCPU's run loop looks at the others only).
    pub fn take_for_vcpu(&self) -> Requests {
        let bits = self.bits.fetch_and(PARKED, Ordering::AcqRel) & !PARKED;
        self.decode(bits)
    }

    /// Whether anything but a proxy or run request is posted.
    pub fn pending_for_vcpu(&self) -> bool {
        self.bits.load(Ordering::Acquire) & !PARKED != 0
    }

    /// Take the requests a parked CPU serves (proxy, run), leaving what is for a vCPU: an
    /// INIT or start-up IPI sent to a managed partition's AP before it took its run.
    pub fn take_parked(&self) -> Requests {
        let bits = self.bits.fetch_and(!PARKED, Ordering::AcqRel) & PARKED;
        self.decode(bits)
    }

    /// Whether a proxy or run request is posted.
    pub fn pending_parked(&self) -> bool {
        self.bits.load(Ordering::Acquire) & PARKED != 0
    }

    fn decode(&self, bits: u32) -> Requests {
        Requests {
            init: bits & INIT != 0,
            startup: (bits & STARTUP != 0)
                .then(|| self.startup_vector.load(Ordering::Acquire) as u8),
            stop: bits & STOP != 0,
            proxy: (bits & PROXY != 0).then(|| self.proxy_vector.load(Ordering::Acquire) as u8),
            run: bits & RUN != 0,
        }
    }

    /// Take everything posted so far.
    pub fn take(&self) -> Requests {
        let bits = self.bits.swap(0, Ordering::AcqRel);
        self.decode(bits)
    }
}

/// What a vCPU does with the requests it took, given whether it waits for a start-up IPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apply {
    /// Nothing changes.
    Nothing,
    /// Reset to the INIT state and wait for a start-up IPI.
    Reset,
    /// (Reset if `reset`, then) start at the vector.
    Start { reset: bool, vector: u8 },
    /// Stop the vCPU.
    Stop,
}

/// The architectural order: a stop wins; INIT resets; a SIPI starts a vCPU that waits (after
/// the INIT taken with it, or from before); a SIPI to a running vCPU is ignored.
pub fn apply(r: &Requests, waiting_for_sipi: bool) -> Apply {
    if r.stop {
        return Apply::Stop;
    }
    match (r.init, r.startup) {
        (true, Some(vector)) => Apply::Start {
            reset: true,
            vector,
        },
        (true, None) => Apply::Reset,
        (false, Some(vector)) if waiting_for_sipi => Apply::Start {
            reset: false,
            vector,
        },
        _ => Apply::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_taken_once_with_their_vectors() {
        let m = Mailbox::new();
        assert!(!m.pending());
        assert_eq!(m.take(), Requests::default());
        m.post_init();
        m.post_startup(0x9a);
        m.post_startup(0x9a);
        assert!(m.pending());
        let r = m.take();
        assert_eq!(
            r,
            Requests {
                init: true,
                startup: Some(0x9a),
                ..Requests::default()
            }
        );
        assert!(!m.pending());
        m.arm_proxy();
        assert!(m.post_proxy(0x87));
        m.post_stop();
        assert!(m.pending_for_vcpu());
        let r = m.take_for_vcpu();
        assert!(
            r.stop && r.proxy.is_none(),
            "a vCPU leaves the proxy request"
        );
        assert!(m.pending() && !m.pending_for_vcpu());
        m.post_stop();
        let r = m.take();
        assert_eq!(r.proxy, Some(0x87));
        assert!(r.stop && !r.init && r.startup.is_none());
    }

    /// A managed partition's run: a parked CPU takes only the run (and a proxy), leaving an
    /// early INIT/SIPI for its vCPU; a new run drops what an earlier one left behind.
    #[test]
    fn a_run_is_for_the_parked_cpu_and_starts_clean() {
        let m = Mailbox::new();
        m.post_stop(); // left over: the partition's first CPU stopped this one after it left
        m.post_init();
        m.post_run();
        assert!(m.pending_parked());
        let r = m.take_parked();
        assert!(r.run && !r.stop && !r.init, "{r:?}");
        assert!(!m.pending(), "the stale stop and INIT are gone");
        // The run's first CPU starts this AP before it took its run.
        m.post_run();
        m.post_init();
        m.post_startup(0x9a);
        let r = m.take_parked();
        assert!(r.run && !r.init);
        assert!(!m.pending_parked() && m.pending_for_vcpu());
        let r = m.take_for_vcpu();
        assert!(r.init && r.startup == Some(0x9a) && !r.run);
        // A vCPU never takes a run.
        m.post_run();
        assert!(!m.pending_for_vcpu());
        assert_eq!(m.take_for_vcpu(), Requests::default());
        assert!(m.take().run);
    }

    #[test]
    fn a_proxy_runs_once_per_broadcast_init() {
        let m = Mailbox::new();
        // a start-up IPI with no INIT before it: ignored, nothing to wake for
        assert!(!m.post_proxy(0x87));
        assert!(!m.pending());
        // INIT arms without waking anyone; the first SIPI posts, the second is ignored
        m.arm_proxy();
        assert!(!m.pending(), "arming is not a request");
        assert!(m.post_proxy(0x87));
        assert!(!m.post_proxy(0x87));
        assert_eq!(m.take().proxy, Some(0x87));
        assert!(!m.pending(), "one run for INIT-SIPI-SIPI");
        // the next wake-up works the same
        m.arm_proxy();
        assert!(m.post_proxy(0x88));
        assert_eq!(m.take().proxy, Some(0x88));
    }

    #[test]
    fn init_then_sipi_starts_a_running_vcpu_a_lone_sipi_does_not() {
        let init_sipi = Requests {
            init: true,
            startup: Some(0x20),
            ..Requests::default()
        };
        assert_eq!(
            apply(&init_sipi, false),
            Apply::Start {
                reset: true,
                vector: 0x20
            }
        );
        let sipi = Requests {
            startup: Some(0x20),
            ..Requests::default()
        };
        assert_eq!(apply(&sipi, false), Apply::Nothing, "ignored while running");
        assert_eq!(
            apply(&sipi, true),
            Apply::Start {
                reset: false,
                vector: 0x20
            }
        );
        let init = Requests {
            init: true,
            ..Requests::default()
        };
        assert_eq!(apply(&init, false), Apply::Reset);
        assert_eq!(apply(&init, true), Apply::Reset);
        let stop = Requests {
            stop: true,
            ..init_sipi
        };
        assert_eq!(apply(&stop, true), Apply::Stop);
        assert_eq!(apply(&Requests::default(), true), Apply::Nothing);
    }

    #[test]
    fn concurrent_posts_are_never_lost() {
        extern crate std;
        use std::sync::Arc;
        let m = Arc::new(Mailbox::new());
        let sender = {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    m.post_init();
                    while m.pending() {
                        core::hint::spin_loop();
                    }
                }
            })
        };
        let mut taken = 0;
        while taken < 10_000 {
            if m.take().init {
                taken += 1;
            }
        }
        sender.join().unwrap();
        assert_eq!(taken, 10_000);
    }
}
