//! `/proc/self/pagemap`: which physical frame (guest-physical, inside a partition) backs a
//! virtual page. One little-endian u64 per page; Linux shows frame numbers only to
//! `CAP_SYS_ADMIN` and zero to everyone else (Documentation/admin-guide/mm/pagemap.rst).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::PAGE_SIZE;

/// Bytes per pagemap entry.
pub const ENTRY_SIZE: u64 = 8;
const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const PFN_MASK: u64 = (1 << 55) - 1;

/// What one pagemap entry says about its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// In memory at this frame number (physical address = frame x 4096).
    Present(u64),
    /// In memory, but the frame number is hidden (the reader lacks `CAP_SYS_ADMIN`).
    Hidden,
    /// Swapped out.
    Swapped,
    /// Not in memory.
    Absent,
}

impl Frame {
    /// Decodes one entry.
    pub fn from_entry(entry: u64) -> Frame {
        let pfn = entry & PFN_MASK;
        if entry & PRESENT != 0 {
            if pfn == 0 {
                Frame::Hidden
            } else {
                Frame::Present(pfn)
            }
        } else if entry & SWAPPED != 0 {
            Frame::Swapped
        } else {
            Frame::Absent
        }
    }

    /// The physical address of the page's first byte, when known.
    pub fn address(self) -> Option<u64> {
        match self {
            Frame::Present(pfn) => Some(pfn * PAGE_SIZE as u64),
            _ => None,
        }
    }
}

/// Byte offset of the entry for the page holding `vaddr`.
pub fn entry_offset(vaddr: usize) -> u64 {
    (vaddr / PAGE_SIZE) as u64 * ENTRY_SIZE
}

/// Reads the entry for `vaddr` from this process's pagemap.
pub fn frame_of(vaddr: usize) -> io::Result<Frame> {
    let file = File::open("/proc/self/pagemap")?;
    let mut entry = [0u8; ENTRY_SIZE as usize];
    file.read_exact_at(&mut entry, entry_offset(vaddr))?;
    Ok(Frame::from_entry(u64::from_le_bytes(entry)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_present_hidden_swapped_and_absent_entries() {
        assert_eq!(Frame::from_entry(PRESENT | 0x1234), Frame::Present(0x1234));
        // Bit 55 (soft-dirty), 56 (exclusive), 61 (file-page) are not part of the frame.
        let flags = (1 << 55) | (1 << 56) | (1 << 61);
        assert_eq!(
            Frame::from_entry(PRESENT | flags | 0x7f_ffff_ffff_ffff),
            Frame::Present(0x7f_ffff_ffff_ffff)
        );
        assert_eq!(Frame::from_entry(PRESENT), Frame::Hidden);
        assert_eq!(Frame::from_entry(PRESENT | (1 << 55)), Frame::Hidden);
        assert_eq!(Frame::from_entry(SWAPPED | 0x55), Frame::Swapped);
        assert_eq!(Frame::from_entry(0), Frame::Absent);
        assert_eq!(Frame::Present(0x1234).address(), Some(0x123_4000));
        assert_eq!(Frame::Hidden.address(), None);
    }

    #[test]
    fn entries_are_eight_bytes_per_page() {
        assert_eq!(entry_offset(0), 0);
        assert_eq!(entry_offset(4095), 0);
        assert_eq!(entry_offset(4096), 8);
        assert_eq!(entry_offset(0x7fff_0000_1234), 0x7_fff0_0001 * 8);
    }

    #[test]
    fn reads_this_process_pagemap() {
        // A page of this test's stack is present; whether its frame shows depends on
        // CAP_SYS_ADMIN, but it is never absent or swapped while in use.
        let local = [1u8; 64];
        let frame = frame_of(local.as_ptr() as usize).expect("/proc/self/pagemap is readable");
        assert!(
            matches!(frame, Frame::Present(_) | Frame::Hidden),
            "{frame:?}"
        );
    }
}
