//! [`PhysMem`] over the identity-mapped host address space (UEFI target).

use super::{PhysMem, PAGE_SIZE};

/// Physical memory reached through identity-mapped pointers; frames come from
/// a pool of reserved pages handed over by the platform.
pub struct IdentityMem {
    next: u64,
    end: u64,
}

impl IdentityMem {
    /// # Safety
    /// `[pool_start, pool_start + pages * 4096)` must be reserved memory owned
    /// by the hypervisor, identity mapped and writable, and used for nothing
    /// else. Every address later passed to `table`/`read`/`write` must be
    /// identity mapped and valid for that access.
    pub unsafe fn new(pool_start: u64, pages: u64) -> Self {
        IdentityMem {
            next: pool_start,
            end: pool_start + pages * PAGE_SIZE,
        }
    }

    /// Frames still available in the pool.
    pub fn frames_left(&self) -> u64 {
        (self.end - self.next) / PAGE_SIZE
    }
}

impl PhysMem for IdentityMem {
    fn alloc_frame(&mut self) -> Option<u64> {
        if self.next >= self.end {
            return None;
        }
        let pa = self.next;
        self.next += PAGE_SIZE;
        // SAFETY: the frame lies in the pool the caller of `new` vouched for.
        unsafe { core::ptr::write_bytes(pa as *mut u8, 0, PAGE_SIZE as usize) };
        Some(pa)
    }

    fn table(&mut self, pa: u64) -> &mut [u64; 512] {
        // SAFETY: callers pass page-aligned frames of valid memory (see `new`).
        unsafe { &mut *(pa as *mut [u64; 512]) }
    }

    fn read(&mut self, pa: u64, buf: &mut [u8]) {
        // SAFETY: identity map; the caller checked the range lies in memory it may read.
        unsafe { core::ptr::copy_nonoverlapping(pa as *const u8, buf.as_mut_ptr(), buf.len()) };
    }

    fn write(&mut self, pa: u64, data: &[u8]) {
        // SAFETY: identity map; the caller checked the range lies in memory it may write.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), pa as *mut u8, data.len()) };
    }
}
