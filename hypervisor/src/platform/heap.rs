//! The hypervisor's heap: a fixed pool of `EfiReservedMemoryType` pages (an OS neither reclaims nor maps them).
//!
//! Runtime-services data, not the loader's `EfiLoaderData`: the hypervisor outlives the boot
//! loader phase (blue-pill start, no ExitBootServices by us), and an OS booted later must
//! never reclaim memory the hypervisor still uses. The allocator never calls firmware after
//! [`init`], so every CPU may allocate, also in host mode after the BSP returned to firmware.

use linked_list_allocator::LockedHeap;

/// Heap size in 4 KiB pages (4 MiB): policy, ACPI summaries, per-partition bookkeeping.
/// Guest images and page tables use whole pages from the page pool, not the heap.
pub const HEAP_PAGES: usize = 1024;

/// The global allocator (installed only on the UEFI target; host tests use std's).
#[cfg_attr(target_os = "uefi", global_allocator)]
pub static HEAP: LockedHeap = LockedHeap::empty();

/// Physical base of the heap pool (0 before `init`).
static BASE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The heap pool as `(base, bytes)`; `(0, 0)` before `init`.
pub fn range() -> (u64, u64) {
    match BASE.load(core::sync::atomic::Ordering::Acquire) {
        0 => (0, 0),
        b => (b, (HEAP_PAGES * 4096) as u64),
    }
}

/// Allocate the heap pool from the firmware and hand it to the allocator; returns its
/// physical base. Call once on the BSP, before anything allocates.
#[cfg(target_os = "uefi")]
pub fn init() -> uefi::Result<u64> {
    use uefi::boot::{self, AllocateType, MemoryType};
    let pool = boot::allocate_pages(AllocateType::AnyPages, MemoryType::RESERVED, HEAP_PAGES)?;
    // SAFETY: the firmware just gave us these pages for good; nothing else refers to them,
    // and `init` runs once before any allocation.
    unsafe { HEAP.lock().init(pool.as_ptr(), HEAP_PAGES * 4096) };
    BASE.store(pool.as_ptr() as u64, core::sync::atomic::Ordering::Release);
    Ok(pool.as_ptr() as u64)
}

/// Bytes in use and free, for the boot log.
pub fn usage() -> (usize, usize) {
    let h = HEAP.lock();
    (h.used(), h.free())
}
