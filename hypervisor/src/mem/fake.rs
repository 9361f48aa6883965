//! A sparse in-memory stand-in for physical memory, for host tests.

extern crate std;

use super::{PhysMem, PAGE_SIZE};
use std::boxed::Box;
use std::collections::BTreeMap;

/// Physical memory made of 4 KiB pages created on first touch; frames are
/// handed out from `next_frame` upward.
pub struct FakeMem {
    pages: BTreeMap<u64, Box<[u64; 512]>>,
    next_frame: u64,
    pub frames_allocated: usize,
    /// Refuse allocations after this many (to test exhaustion).
    pub frame_limit: usize,
}

impl FakeMem {
    pub fn new(frame_base: u64) -> Self {
        FakeMem {
            pages: BTreeMap::new(),
            next_frame: frame_base,
            frames_allocated: 0,
            frame_limit: usize::MAX,
        }
    }

    fn page(&mut self, pa: u64) -> &mut [u64; 512] {
        self.pages
            .entry(pa & !(PAGE_SIZE - 1))
            .or_insert_with(|| Box::new([0; 512]))
    }

    fn bytes(&mut self, pa: u64) -> &mut [u8; 4096] {
        let page = self.page(pa);
        // SAFETY: [u64; 512] and [u8; 4096] have the same size, and u8 has no
        // alignment or validity requirements.
        unsafe { &mut *(page as *mut [u64; 512] as *mut [u8; 4096]) }
    }
}

impl PhysMem for FakeMem {
    fn alloc_frame(&mut self) -> Option<u64> {
        if self.frames_allocated >= self.frame_limit {
            return None;
        }
        let pa = self.next_frame;
        self.next_frame += PAGE_SIZE;
        self.frames_allocated += 1;
        *self.page(pa) = [0; 512];
        Some(pa)
    }

    fn table(&mut self, pa: u64) -> &mut [u64; 512] {
        self.page(pa)
    }

    fn read(&mut self, pa: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let a = pa + done as u64;
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - off).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&self.bytes(a)[off..off + n]);
            done += n;
        }
    }

    fn write(&mut self, pa: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let a = pa + done as u64;
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE_SIZE as usize - off).min(data.len() - done);
            self.bytes(a)[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }
}
