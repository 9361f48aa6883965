//! Physical memory as the hypervisor sees it.
//!
//! The hypervisor runs on identity-mapped page tables (the firmware's, then
//! its own), so a host-physical address is also a host pointer. All raw
//! access goes through [`PhysMem`] so that page-table builders and guest
//! memory readers stay pure and are tested on the host against
//! [`fake::FakeMem`].

#[cfg(test)]
pub mod fake;
pub mod guest;
pub mod identity;
pub mod ram_only;
pub mod scrub;
pub mod second_level;

pub const PAGE_SIZE: u64 = 4096;
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;
pub const HUGE_PAGE_SIZE: u64 = 1 << 30;

/// A half-open physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub const fn new(start: u64, size: u64) -> Self {
        Range {
            start,
            end: start.saturating_add(size),
        }
    }

    pub const fn size(&self) -> u64 {
        self.end - self.start
    }

    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether `[addr, addr+len)` lies fully inside.
    pub const fn contains_span(&self, addr: u64, len: u64) -> bool {
        match addr.checked_add(len) {
            Some(end) => self.start <= addr && end <= self.end,
            None => false,
        }
    }

    pub const fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Access to physical memory and a source of zeroed page frames.
pub trait PhysMem {
    /// A zeroed, 4 KiB-aligned page frame for page tables or control blocks.
    fn alloc_frame(&mut self) -> Option<u64>;
    /// The page-table page at `pa` (4 KiB aligned, previously allocated or
    /// known to be valid memory).
    fn table(&mut self, pa: u64) -> &mut [u64; 512];
    /// Copy bytes out of physical memory.
    fn read(&mut self, pa: u64, buf: &mut [u8]);
    /// Copy bytes into physical memory.
    fn write(&mut self, pa: u64, data: &[u8]);
}
