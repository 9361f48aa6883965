//! The start-up code's pages: real-mode code (`trampoline.S`) copied into a page below
//! 1 MiB that the firmware gives the probe, and the slots it fills (layout in `report.rs`).

use crate::report::{Slots, CODE_MAX, SLOTS};
use uefi::boot::{self, AllocateType, MemoryType};

core::arch::global_asm!(include_str!("trampoline.S"));

extern "C" {
    fn nexus_probe_trampoline();
    fn nexus_probe_trampoline_end();
}

/// One page of start-up code.
pub struct Trampoline {
    page: u64,
}

/// Highest address of a page a start-up IPI can name (vector 0xff).
const BELOW_1MIB: u64 = 0xf_ffff;

impl Trampoline {
    /// Allocate a page below 1 MiB and place the code in it; `None` when the firmware has
    /// no such page or the code does not fit.
    pub fn place() -> Option<Trampoline> {
        let start = nexus_probe_trampoline as *const () as usize;
        let end = nexus_probe_trampoline_end as *const () as usize;
        let len = end.checked_sub(start)?;
        if len > CODE_MAX {
            return None;
        }
        let page = boot::allocate_pages(
            AllocateType::MaxAddress(BELOW_1MIB),
            MemoryType::LOADER_DATA,
            1,
        )
        .ok()?;
        let at = page.as_ptr();
        // Page 0 holds the real-mode interrupt vectors: a start-up IPI cannot name it.
        if at as u64 == 0 {
            return None;
        }
        // SAFETY: the page was just allocated for us (4096 bytes); the code is `len` bytes
        // of this image's text.
        unsafe {
            core::ptr::write_bytes(at, 0, 4096);
            core::ptr::copy_nonoverlapping(start as *const u8, at, len);
        }
        Some(Trampoline { page: at as u64 })
    }

    pub fn address(&self) -> u64 {
        self.page
    }

    /// The start-up IPI vector that starts a CPU here.
    pub fn vector(&self) -> u8 {
        (self.page >> 12) as u8
    }

    /// The slots as they are now.
    pub fn slots(&self) -> Slots {
        let mut s = [0u32; 256];
        for (i, w) in s.iter_mut().enumerate() {
            // SAFETY: the 256 slots lie inside the page (0x400..0x800).
            *w = unsafe {
                core::ptr::read_volatile((self.page as usize + SLOTS + 4 * i) as *const u32)
            };
        }
        Slots(s)
    }
}
