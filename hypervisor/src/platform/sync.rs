//! A minimal spinlock for host-mode code on several CPUs.
//!
//! Host mode runs with interrupts (or GIF) off and cannot sleep, so spinning is the only
//! option. The fatal-error path uses [`SpinLock::lock_or_steal`] so a CPU that faulted while
//! holding the console lock can still print why it stopped.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// Mutual exclusion by spinning on an atomic flag.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `locked`, so sharing the lock between CPUs is
// sound whenever the protected value may move between them.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above; the lock owns its value.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Spin until the lock is free, then hold it until the guard drops.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        loop {
            if let Some(g) = self.try_lock() {
                return g;
            }
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
    }

    /// Take the lock if it is free right now.
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| SpinGuard { lock: self })
    }

    /// For fatal paths only: spin `spins` times, then take the lock even if someone holds it
    /// (the holder may be this very CPU, interrupted by an exception). Output may interleave
    /// with the holder's, which beats losing the fatal message.
    pub fn lock_or_steal(&self, spins: u32) -> SpinGuard<'_, T> {
        for _ in 0..spins {
            if let Some(g) = self.try_lock() {
                return g;
            }
            core::hint::spin_loop();
        }
        self.locked.swap(true, Ordering::Acquire);
        SpinGuard { lock: self }
    }

    /// Whether some CPU holds the lock now (diagnostics only; may change at once).
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

/// Holds a [`SpinLock`]; releases it on drop.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
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
        self.lock.locked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::sync::Arc;
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

    #[test]
    fn steal_takes_a_held_lock() {
        let l = SpinLock::new(5);
        let held = l.lock();
        let stolen = l.lock_or_steal(10);
        assert_eq!(*stolen, 5);
        core::mem::forget(held);
    }
}
