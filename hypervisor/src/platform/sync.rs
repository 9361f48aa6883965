//! A minimal fair spinlock for host-mode code on several CPUs.
//!
//! Host mode runs with interrupts (or GIF) off and cannot sleep, so spinning is the only
//! option. The lock is a ticket lock: CPUs get it in the order they asked for it, so a CPU
//! that takes it over and over (a guest flooding its console, one line per acquisition)
//! cannot starve the others; each waiter is served after at most one turn of every CPU
//! ahead of it (review M4). The fatal-error path uses [`SpinLock::lock_or_steal`] so a CPU
//! that faulted while holding the console lock can still print why it stopped.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

/// Mutual exclusion by spinning on a ticket counter, first come first served.
pub struct SpinLock<T> {
    /// The next ticket to hand out.
    next: AtomicU32,
    /// The ticket whose holder owns the lock now.
    serving: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by the tickets, so sharing the lock between CPUs is
// sound whenever the protected value may move between them.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above; the lock owns its value.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            next: AtomicU32::new(0),
            serving: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Take a ticket and spin until it is served, then hold the lock until the guard drops.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        while !self.served(ticket) {
            relax();
        }
        SpinGuard { lock: self, ticket }
    }

    /// Whether `ticket`'s turn has come (or passed: a stolen lock serves several at once).
    fn served(&self, ticket: u32) -> bool {
        self.serving.load(Ordering::Acquire).wrapping_sub(ticket) as i32 >= 0
    }

    /// Take the lock if it is free right now (nobody holds it or waits for it).
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        let serving = self.serving.load(Ordering::Acquire);
        self.next
            .compare_exchange(
                serving,
                serving.wrapping_add(1),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()
            .map(|_| SpinGuard {
                lock: self,
                ticket: serving,
            })
    }

    /// For fatal paths only: spin `spins` times, then go ahead even if someone holds the lock
    /// (the holder may be this very CPU, interrupted by an exception). The thief takes a
    /// ticket without waiting for it; its release serves every ticket up to its own, so the
    /// CPUs queued behind a holder that never releases go on, and a holder that does release
    /// later changes nothing (a release never moves the counter backwards or past the
    /// tickets handed out). Output may interleave with the holder's, which beats losing the
    /// fatal message.
    pub fn lock_or_steal(&self, spins: u32) -> SpinGuard<'_, T> {
        for _ in 0..spins {
            if let Some(g) = self.try_lock() {
                return g;
            }
            core::hint::spin_loop();
        }
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        SpinGuard { lock: self, ticket }
    }

    /// Whether some CPU holds the lock now (diagnostics only; may change at once).
    pub fn is_locked(&self) -> bool {
        self.queued() > 0
    }

    /// Holders and waiters: tickets handed out and not yet released (diagnostics, tests).
    pub fn queued(&self) -> u32 {
        self.next
            .load(Ordering::Relaxed)
            .wrapping_sub(self.serving.load(Ordering::Relaxed))
    }
}

/// One turn of a waiting loop. In host mode every CPU runs one thread and nothing preempts
/// the holder; the host tests run threads an OS may deschedule, and a ticket lock whose next
/// holder is not running stalls everyone behind it, so there the waiter gives up its slice.
fn relax() {
    core::hint::spin_loop();
    #[cfg(test)]
    std::thread::yield_now();
}

/// Holds a [`SpinLock`]; releases it (serves the ticket after its own) on drop.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
    ticket: u32,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves this CPU holds the lock, so no one else accesses the value.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only access through this guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        // serving = max(serving, ticket + 1), wrapping: normally serving == ticket; after a
        // steal it may be ahead (the late holder) or behind (the thief skipping a stuck one).
        let next = self.ticket.wrapping_add(1);
        let _ = self
            .lock
            .serving
            .fetch_update(Ordering::Release, Ordering::Relaxed, |s| {
                (next.wrapping_sub(s) as i32 > 0).then_some(next)
            });
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::vec::Vec;

    #[test]
    fn excludes_and_releases() {
        let l = SpinLock::new(1);
        {
            let mut g = l.lock();
            *g += 1;
            assert!(l.try_lock().is_none(), "held lock must not be taken twice");
            assert!(l.is_locked());
        }
        assert!(!l.is_locked());
        assert_eq!(*l.lock(), 2);
        assert!(l.try_lock().is_some());
    }

    #[test]
    fn threads_never_lose_increments() {
        let l = Arc::new(SpinLock::new(0u64));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                thread::spawn(move || {
                    for _ in 0..10_000 {
                        // A non-atomic read-modify-write that races without the lock.
                        let mut g = l.lock();
                        let v = *g;
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*l.lock(), 40_000);
    }

    /// Waiters are served in the order they asked: a CPU that releases and asks again at
    /// once (a flooding guest) goes behind everyone already waiting.
    #[test]
    fn waiters_are_served_first_come_first_served() {
        let l = Arc::new(SpinLock::new(()));
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = l.lock();
        let mut threads = Vec::new();
        for id in 0..3 {
            let (l2, o) = (l.clone(), order.clone());
            threads.push(thread::spawn(move || {
                let _g = l2.lock();
                o.lock().unwrap().push(id);
            }));
            // Wait until this thread holds its ticket before starting the next one.
            while l.queued() < id + 2 {
                thread::yield_now();
            }
        }
        // The holder (a flooder) releases and asks again: it is served last.
        drop(held);
        let again = l.lock();
        order.lock().unwrap().push(99);
        drop(again);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 99]);
        assert!(!l.is_locked());
    }

    #[test]
    fn try_lock_does_not_jump_the_queue() {
        let l = Arc::new(SpinLock::new(()));
        let held = l.lock();
        let l2 = l.clone();
        let waiter = thread::spawn(move || drop(l2.lock()));
        while l.queued() < 2 {
            thread::yield_now();
        }
        drop(held);
        // Until the waiter has had its turn, nobody can take the lock without a ticket.
        waiter.join().unwrap();
        assert!(l.try_lock().is_some());
    }

    #[test]
    fn steal_from_a_stuck_holder_unblocks_the_queue() {
        let l = Arc::new(SpinLock::new(5));
        let held = l.lock();
        let l2 = l.clone();
        let waiter = thread::spawn(move || *l2.lock() + 1);
        while l.queued() < 2 {
            thread::yield_now();
        }
        let stolen = l.lock_or_steal(10);
        assert_eq!(*stolen, 5);
        // The holder never releases (its CPU faulted); the thief's release serves the queue.
        core::mem::forget(held);
        drop(stolen);
        assert_eq!(waiter.join().unwrap(), 6);
        assert!(!l.is_locked());
        assert_eq!(*l.lock(), 5);
    }

    #[test]
    fn a_late_release_after_a_steal_breaks_nothing() {
        let l = SpinLock::new(());
        let held = l.lock();
        let stolen = l.lock_or_steal(10);
        drop(stolen);
        // The holder was only slow: its release comes after the thief's and must not
        // move the counter past the tickets handed out.
        drop(held);
        assert_eq!(l.queued(), 0);
        {
            let _g = l.lock();
            assert!(l.try_lock().is_none(), "exclusion holds again");
        }
        assert!(l.try_lock().is_some());
    }
}
