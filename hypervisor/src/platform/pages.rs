//! The hypervisor's page allocator: whole 4 KiB pages from one pool of `EfiReservedMemoryType` memory.
//!
//! The pool is allocated from the firmware once, on the BSP, at start ([`init`]); after that
//! allocation never calls firmware, so any CPU may allocate, also in host mode after the BSP
//! has returned to the firmware. A bitmap with first-fit search keeps it simple and lets
//! pages be freed (partition restarts). All pages are identity mapped.

use super::sync::SpinLock;

/// Page size.
pub const PAGE: u64 = 4096;
/// Pool size in pages (32 MiB): host page tables, per-CPU stacks, control blocks, nested
/// page tables, permission maps.
pub const POOL_PAGES: usize = 8192;
const WORDS: usize = POOL_PAGES / 64;

/// Which pages of `[base, base + POOL_PAGES * 4 KiB)` are in use.
#[derive(Debug)]
pub struct PageBitmap {
    base: u64,
    pages: usize,
    used: [u64; WORDS],
}

impl PageBitmap {
    /// A bitmap over `pages` pages at `base` (page aligned; `pages` at most [`POOL_PAGES`]).
    pub const fn new(base: u64, pages: usize) -> Self {
        let pages = if pages > POOL_PAGES {
            POOL_PAGES
        } else {
            pages
        };
        Self {
            base,
            pages,
            used: [0; WORDS],
        }
    }

    fn is_used(&self, i: usize) -> bool {
        self.used[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, v: bool) {
        if v {
            self.used[i / 64] |= 1 << (i % 64);
        } else {
            self.used[i / 64] &= !(1 << (i % 64));
        }
    }

    /// First-fit run of `n` free pages, aligned to `align_pages` (a power of two, ≥ 1).
    pub fn alloc(&mut self, n: usize, align_pages: usize) -> Option<u64> {
        if n == 0 || !align_pages.is_power_of_two() {
            return None;
        }
        let first_aligned = |i: usize| -> usize {
            // Align the physical page number, not the index.
            let pfn = (self.base / PAGE) as usize + i;
            i + (pfn.next_multiple_of(align_pages) - pfn)
        };
        let mut start = first_aligned(0);
        while start + n <= self.pages {
            match (start..start + n).find(|&i| self.is_used(i)) {
                None => {
                    for i in start..start + n {
                        self.set(i, true);
                    }
                    return Some(self.base + start as u64 * PAGE);
                }
                Some(busy) => start = first_aligned(busy + 1),
            }
        }
        None
    }

    /// Return `n` pages at `pa`. Returns false (and changes nothing) if the range is not
    /// entirely inside the pool and allocated.
    pub fn free(&mut self, pa: u64, n: usize) -> bool {
        if pa < self.base || !(pa - self.base).is_multiple_of(PAGE) {
            return false;
        }
        let start = ((pa - self.base) / PAGE) as usize;
        if start.checked_add(n).is_none_or(|end| end > self.pages)
            || !(start..start + n).all(|i| self.is_used(i))
        {
            return false;
        }
        for i in start..start + n {
            self.set(i, false);
        }
        true
    }

    /// Pages in use.
    pub fn used(&self) -> usize {
        self.used.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Pages in the pool.
    pub fn capacity(&self) -> usize {
        self.pages
    }

    /// Whether `pa` lies in the pool.
    pub fn contains(&self, pa: u64) -> bool {
        pa >= self.base && pa < self.base + self.pages as u64 * PAGE
    }

    /// The pool as `(base, bytes)`, for hiding it from the primary partition.
    pub fn range(&self) -> (u64, u64) {
        (self.base, self.pages as u64 * PAGE)
    }
}

static POOL: SpinLock<Option<PageBitmap>> = SpinLock::new(None);

/// Allocate the pool from the firmware (`EfiReservedMemoryType`). BSP only, once.
///
/// `at = Some((base, bytes))` (the policy's `[machine] hypervisor_memory`) claims exactly
/// that range (`AllocatePages(AllocateAddress)`) and makes its first [`POOL_PAGES`] pages the
/// pool; the firmware refuses when any page of it is not free. `None` lets the firmware
/// choose 32 MiB. Returns the claimed range, which is all hypervisor memory.
#[cfg(target_os = "uefi")]
pub fn init(at: Option<(u64, u64)>) -> uefi::Result<(u64, u64)> {
    use uefi::boot::{self, AllocateType, MemoryType};
    let (kind, pages) = match at {
        Some((base, bytes)) => (AllocateType::Address(base), (bytes / PAGE) as usize),
        None => (AllocateType::AnyPages, POOL_PAGES),
    };
    let p = boot::allocate_pages(kind, MemoryType::RESERVED, pages)?;
    let bitmap = PageBitmap::new(p.as_ptr() as u64, pages);
    let claimed = (p.as_ptr() as u64, pages as u64 * PAGE);
    *POOL.lock() = Some(bitmap);
    *CLAIMED.lock() = claimed;
    Ok(claimed)
}

/// The whole range [`init`] claimed (the pool plus any part of `hypervisor_memory` past
/// [`POOL_PAGES`]); `(0, 0)` before.
static CLAIMED: SpinLock<(u64, u64)> = SpinLock::new((0, 0));

/// What [`init`] claimed, `(base, bytes)`: hidden from the primary partition as a whole.
pub fn claimed_range() -> (u64, u64) {
    *CLAIMED.lock()
}

/// `n` zeroed, identity-mapped pages, aligned to `align_pages`; `None` when the pool is
/// exhausted or not set up. Any CPU, any time after [`init`].
pub fn alloc_aligned(n: usize, align_pages: usize) -> Option<u64> {
    let pa = POOL.lock().as_mut()?.alloc(n, align_pages)?;
    // SAFETY: the pages were just taken from the pool, which the firmware gave the
    // hypervisor for good; physical memory is identity mapped; nobody else holds them.
    unsafe { core::ptr::write_bytes(pa as *mut u8, 0, n * PAGE as usize) };
    Some(pa)
}

/// `n` zeroed, identity-mapped, page-aligned pages (see [`alloc_aligned`]).
pub fn alloc(n: usize) -> Option<u64> {
    alloc_aligned(n, 1)
}

/// Give pages back. Returns false when they were not allocated from the pool.
///
/// # Safety
/// Nothing may use the pages afterwards (no live references, not mapped into a guest).
pub unsafe fn free(pa: u64, n: usize) -> bool {
    POOL.lock().as_mut().is_some_and(|b| b.free(pa, n))
}

/// `(used, capacity)` in pages, for the log.
pub fn usage() -> (usize, usize) {
    POOL.lock()
        .as_ref()
        .map_or((0, 0), |b| (b.used(), b.capacity()))
}

/// The pool as `(base, bytes)`; `(0, 0)` before [`init`].
pub fn pool_range() -> (u64, u64) {
    POOL.lock().as_ref().map_or((0, 0), |b| b.range())
}

/// [`PhysMem`](crate::mem::PhysMem) over the pool: page-table builders (the host identity
/// map) take their frames from here and write them through the identity map.
pub struct PoolFrames(());

impl PoolFrames {
    /// # Safety
    /// Physical memory must be identity mapped (UEFI, or the host map), and every address
    /// later passed to `table`/`read`/`write` must be valid memory the caller may access.
    pub unsafe fn new() -> Self {
        Self(())
    }
}

impl crate::mem::PhysMem for PoolFrames {
    fn alloc_frame(&mut self) -> Option<u64> {
        alloc(1)
    }

    fn table(&mut self, pa: u64) -> &mut [u64; 512] {
        // SAFETY: `PoolFrames::new`'s contract: identity map, valid page-table frames.
        unsafe { &mut *(pa as *mut [u64; 512]) }
    }

    fn read(&mut self, pa: u64, buf: &mut [u8]) {
        // SAFETY: as in `table`.
        unsafe { core::ptr::copy_nonoverlapping(pa as *const u8, buf.as_mut_ptr(), buf.len()) };
    }

    fn write(&mut self, pa: u64, data: &[u8]) {
        // SAFETY: as in `table`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), pa as *mut u8, data.len()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x1000_0000;

    #[test]
    fn first_fit_and_reuse_after_free() {
        let mut b = PageBitmap::new(BASE, 16);
        let a = b.alloc(4, 1).unwrap();
        let c = b.alloc(2, 1).unwrap();
        assert_eq!((a, c), (BASE, BASE + 4 * PAGE));
        assert_eq!(b.used(), 6);
        assert!(b.free(a, 4));
        assert_eq!(b.alloc(3, 1), Some(BASE), "freed run is reused first");
        assert_eq!(
            b.alloc(2, 1),
            Some(BASE + 6 * PAGE),
            "a 1-page hole is skipped for 2 pages"
        );
    }

    #[test]
    fn alignment_follows_physical_addresses() {
        // A pool that starts one page past a 2 MiB boundary.
        let mut b = PageBitmap::new(0x20_1000, 1024);
        b.alloc(1, 1).unwrap();
        let big = b.alloc(2, 512).unwrap();
        assert_eq!(big % (2 << 20), 0);
        assert_eq!(big, 0x40_0000);
        assert!(b.alloc(1, 3).is_none(), "alignment must be a power of two");
    }

    #[test]
    fn exhaustion_and_bad_frees() {
        let mut b = PageBitmap::new(BASE, 4);
        assert!(b.alloc(5, 1).is_none());
        assert!(b.alloc(0, 1).is_none());
        let a = b.alloc(4, 1).unwrap();
        assert!(b.alloc(1, 1).is_none());
        assert!(!b.free(a + 1, 1), "unaligned");
        assert!(!b.free(BASE - PAGE, 1), "below the pool");
        assert!(!b.free(a, 5), "past the pool");
        assert!(b.free(a + PAGE, 1));
        assert!(!b.free(a + PAGE, 1), "double free");
        assert_eq!(b.used(), 3);
        assert!(b.contains(BASE + 3 * PAGE) && !b.contains(BASE + 4 * PAGE));
    }

    #[test]
    fn capacity_is_capped_at_the_bitmap_size() {
        let b = PageBitmap::new(BASE, POOL_PAGES + 100);
        assert_eq!(b.capacity(), POOL_PAGES);
        assert_eq!(b.range(), (BASE, POOL_PAGES as u64 * PAGE));
    }
}
