//! NMIs and waiting in host mode.
//!
//! Host mode runs with interrupts off, but an NMI still arrives: the hypervisor's own kick
//! (one CPU asking another to leave guest mode or to wake up), or one meant for the guest
//! (a primary's perf counter, watchdog or NMI IPI) that reached the CPU between two entries.
//! The host NMI handler only records it here, per CPU; the CPU's run loop then decides
//! (serve its mailbox, re-inject the NMI into its guest, or drop it). An NMI is never fatal.
//!
//! A CPU with nothing to do waits in [`wait_until`]: HLT with interrupts off, woken by an
//! NMI. The NMI handler restarts a context it interrupted between the wait's check and its
//! HLT (see [`resume_rip`]), so an NMI that lands in that window cannot be lost.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// CPUs the table can hold (APIC IDs are looked up, any 32-bit value).
pub const MAX_CPUS: usize = 256;
const FREE: u32 = u32::MAX;

static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(FREE) }; MAX_CPUS];
static PENDING: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// NMIs on CPUs that were never registered (before set-up, say).
static STRAY: AtomicU64 = AtomicU64::new(0);

/// The slot of the CPU with `apic_id`, registering it on first use; `None` when the table is
/// full.
pub fn register(apic_id: u32) -> Option<usize> {
    if let Some(i) = index_of(apic_id) {
        return Some(i);
    }
    (0..MAX_CPUS).find(|&i| {
        APIC_IDS[i]
            .compare_exchange(FREE, apic_id, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    })
}

/// The slot of a registered CPU.
pub fn index_of(apic_id: u32) -> Option<usize> {
    (0..MAX_CPUS).find(|&i| APIC_IDS[i].load(Ordering::Acquire) == apic_id)
}

/// Note an NMI on the CPU with `apic_id` (the host NMI handler, or a backend whose NMI VM
/// exit consumed the NMI).
pub fn record(apic_id: u32) {
    match index_of(apic_id) {
        Some(i) => {
            PENDING[i].fetch_add(1, Ordering::AcqRel);
        }
        None => {
            STRAY.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Take the NMIs recorded for slot `index` since the last call (how many).
pub fn take(index: usize) -> u32 {
    PENDING
        .get(index)
        .map_or(0, |p| p.swap(0, Ordering::AcqRel))
}

/// Whether an NMI is recorded for slot `index` and not taken yet.
pub fn pending(index: usize) -> bool {
    PENDING
        .get(index)
        .is_some_and(|p| p.load(Ordering::Acquire) != 0)
}

/// NMIs that arrived on CPUs the table does not know.
pub fn stray() -> u64 {
    STRAY.load(Ordering::Relaxed)
}

/// Where an interrupted host context resumes after an NMI: one stopped inside the idle
/// window (from its check of the wake-up word to its HLT, `restart..=hlt`) starts over at the
/// check, which now sees the NMI it was about to sleep through.
pub fn resume_rip(rip: u64, restart: u64, hlt: u64) -> u64 {
    if (restart..=hlt).contains(&rip) {
        restart
    } else {
        rip
    }
}

#[cfg(target_arch = "x86_64")]
extern "sysv64" {
    fn nexus_idle_wait(word: *const AtomicU32);
    fn nexus_idle_restart();
    fn nexus_idle_hlt();
}

/// The idle window's bounds (for the NMI handler): `(restart, hlt)`.
#[cfg(target_arch = "x86_64")]
pub fn idle_window() -> (u64, u64) {
    (
        nexus_idle_restart as *const () as u64,
        nexus_idle_hlt as *const () as u64,
    )
}

/// Wait in host mode (interrupts off) until `ready()`, halting between checks; an NMI to
/// slot `index` wakes the CPU. Returns how many NMIs arrived meanwhile (taken: the caller
/// decides what they meant).
///
/// # Safety
/// Host mode at CPL 0 on the CPU registered as `index`, with the hypervisor's IDT loaded (its
/// NMI handler records the NMI and restarts the idle window) and interrupts disabled.
#[cfg(target_arch = "x86_64")]
pub unsafe fn wait_until(index: usize, mut ready: impl FnMut() -> bool) -> u32 {
    let mut nmis = 0;
    let Some(word) = PENDING.get(index) else {
        return 0;
    };
    while !ready() {
        // SAFETY: the caller's contract; `word` is this CPU's pending counter, which its NMI
        // handler increments.
        unsafe { nexus_idle_wait(word) };
        nmis += take(index);
    }
    nmis
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmis_are_counted_per_cpu_and_taken_once() {
        let a = register(0x7001).unwrap();
        let b = register(0x7002).unwrap();
        assert_ne!(a, b);
        assert_eq!(register(0x7001), Some(a));
        record(0x7001);
        record(0x7001);
        assert!(pending(a));
        assert!(!pending(b));
        assert_eq!(take(a), 2);
        assert_eq!(take(a), 0);
        let before = stray();
        record(0x7fff_fff0);
        assert_eq!(stray(), before + 1);
    }

    #[test]
    fn an_nmi_inside_the_idle_window_restarts_it() {
        // window: check at 0x1000 .. hlt at 0x100a
        assert_eq!(resume_rip(0x1000, 0x1000, 0x100a), 0x1000);
        assert_eq!(resume_rip(0x1006, 0x1000, 0x100a), 0x1000);
        assert_eq!(resume_rip(0x100a, 0x1000, 0x100a), 0x1000);
        // woken by the NMI after the HLT, or elsewhere: resume where it was
        assert_eq!(resume_rip(0x100b, 0x1000, 0x100a), 0x100b);
        assert_eq!(resume_rip(0x0fff, 0x1000, 0x100a), 0x0fff);
    }
}
