//! Reading and writing a guest's memory on its behalf (hypercall buffers,
//! instruction bytes), with every address checked.
//!
//! Guest-virtual addresses are translated through the guest's own 4-level
//! page tables; every guest-physical address (page-table entries included)
//! is translated through the partition's second-level tables (NPT or EPT,
//! the ones the processor walks), so the hypervisor can never be made to
//! touch memory the partition itself could not touch.

use super::second_level::SecondLevel;
use super::{PhysMem, PAGE_SIZE};
use crate::exit::Access;

const P: u64 = 1;
const PS: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// How the guest translates virtual addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paging {
    /// Paging off: virtual = physical.
    None,
    /// 4-level long-mode paging rooted at this CR3.
    Long { cr3: u64 },
    /// 5-level long-mode paging (CR4.LA57) rooted at this CR3.
    Long5 { cr3: u64 },
}

impl Paging {
    /// Long-mode paging from the guest's CR3 and CR4 (bit 12: LA57).
    pub const fn long(cr3: u64, cr4: u64) -> Paging {
        if cr4 & (1 << 12) != 0 {
            Paging::Long5 { cr3 }
        } else {
            Paging::Long { cr3 }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMemError {
    /// The guest's page tables do not map this virtual address.
    NotMapped { gva: u64 },
    /// The guest-physical address is outside the partition (or read-only
    /// for a write).
    OutsidePartition { gpa: u64 },
}

/// A partition's memory seen through its page tables.
pub struct GuestMemory<'a, M: PhysMem> {
    /// The partition's NPT or EPT.
    pub second_level: &'a dyn SecondLevel<M>,
    pub mem: &'a mut M,
    pub paging: Paging,
}

impl<M: PhysMem> GuestMemory<'_, M> {
    /// Guest-physical → host-physical, refusing what the partition cannot access.
    fn host(&mut self, gpa: u64, write: bool) -> Result<u64, GuestMemError> {
        let access = if write { Access::WRITE } else { Access::READ };
        self.second_level
            .host_address(self.mem, gpa, access)
            .map_err(|d| GuestMemError::OutsidePartition { gpa: d.gpa })
    }

    /// Guest-virtual → guest-physical through the guest's own tables.
    pub fn translate(&mut self, gva: u64) -> Result<u64, GuestMemError> {
        let (cr3, levels) = match self.paging {
            Paging::None => return Ok(gva),
            Paging::Long { cr3 } => (cr3, 4),
            Paging::Long5 { cr3 } => (cr3, 5),
        };
        let mut table = cr3 & ADDR_MASK;
        for level in (0..levels).rev() {
            let idx = (gva >> (12 + 9 * level)) & 0x1ff;
            let hpa = self.host(table + idx * 8, false)?;
            let mut raw = [0u8; 8];
            self.mem.read(hpa, &mut raw);
            let e = u64::from_le_bytes(raw);
            if e & P == 0 {
                return Err(GuestMemError::NotMapped { gva });
            }
            if level == 0 || (level <= 2 && e & PS != 0) {
                let size = PAGE_SIZE << (9 * level);
                return Ok((e & ADDR_MASK & !(size - 1)) | (gva & (size - 1)));
            }
            table = e & ADDR_MASK;
        }
        Err(GuestMemError::NotMapped { gva })
    }

    /// Whether all of `[gva, gva+len)` is accessible (for `write`, writable).
    pub fn check(&mut self, gva: u64, len: usize, write: bool) -> Result<(), GuestMemError> {
        self.copy(gva, len, write, |_, _, _, _| {})
    }

    /// Copy `buf.len()` bytes from guest-virtual `gva`.
    pub fn read(&mut self, gva: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
        self.copy(gva, buf.len(), false, |mem, hpa, off, n| {
            mem.read(hpa, &mut buf[off..off + n])
        })
    }

    /// Copy `data` to guest-virtual `gva`.
    pub fn write(&mut self, gva: u64, data: &[u8]) -> Result<(), GuestMemError> {
        self.copy(gva, data.len(), true, |mem, hpa, off, n| {
            mem.write(hpa, &data[off..off + n])
        })
    }

    /// Page by page: translate, check, then move the bytes. Nothing is copied
    /// unless every page of the span is accessible.
    fn copy(
        &mut self,
        gva: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(&mut M, u64, usize, usize),
    ) -> Result<(), GuestMemError> {
        if gva.checked_add(len as u64).is_none() {
            return Err(GuestMemError::NotMapped { gva });
        }
        // First pass checks, second pass copies.
        for pass in 0..2 {
            let mut off = 0usize;
            while off < len {
                let va = gva + off as u64;
                let n = ((PAGE_SIZE - va % PAGE_SIZE) as usize).min(len - off);
                let gpa = self.translate(va)?;
                let hpa = self.host(gpa, write)?;
                if pass == 1 {
                    f(self.mem, hpa, off, n);
                }
                off += n;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
