//! The ring header: the first 64 bytes of the ring region.
//!
//! ```text
//! offset size field
//!  0     4    magic        "NXRG" (0x4752_584e little-endian)
//!  4     2    major        ring layout major version (1)
//!  6     2    minor        ring layout minor version (0)
//!  8     4    ring_size    bytes in the whole ring region
//! 12     4    capacity     descriptors: a power of two, 1..=64
//! 16     4    desc_offset  descriptor table offset: 8-aligned, >= 64
//! 20     4    desc_size    bytes per descriptor (40)
//! 24     4    data_offset  data area offset: page-aligned, after the table
//! 28     4    data_size    bytes in the data area: ring_size - data_offset
//! 32     4    producer     descriptors submitted (guest-written, wrapping)
//! 36     4    consumer     descriptors completed (service-written, wrapping)
//! 40    24    reserved     zero
//! ```

use core::ops::Range;

use super::descriptor::DESCRIPTOR_SIZE;
use super::{MAX_CAPACITY, MAX_RING_SIZE, MIN_RING_SIZE, PAGE_SIZE};
use crate::status::Status;

/// "NXRG" read as a little-endian `u32`.
pub const RING_MAGIC: u32 = u32::from_le_bytes(*b"NXRG");
/// The ring layout version this crate writes.
pub const RING_MAJOR: u16 = 1;
pub const RING_MINOR: u16 = 0;
/// Bytes in the header.
pub const HEADER_SIZE: usize = 64;

/// A validated ring header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingHeader {
    pub minor: u16,
    pub ring_size: u32,
    pub capacity: u32,
    pub desc_offset: u32,
    pub data_offset: u32,
    pub data_size: u32,
    pub producer: u32,
    pub consumer: u32,
}

impl RingHeader {
    /// The standard layout for a ring of `ring_size` bytes: the descriptor
    /// table right after the header, the data area from the next page.
    pub fn new(ring_size: u32, capacity: u32) -> Result<RingHeader, Status> {
        if capacity > MAX_CAPACITY {
            return Err(Status::BadRing);
        }
        // Small now: capacity <= 64, so no overflow below.
        let table_end = HEADER_SIZE as u32 + capacity * DESCRIPTOR_SIZE as u32;
        let data_offset = table_end.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let header = RingHeader {
            minor: RING_MINOR,
            ring_size,
            capacity,
            desc_offset: HEADER_SIZE as u32,
            data_offset,
            data_size: ring_size.checked_sub(data_offset).ok_or(Status::BadRing)?,
            producer: 0,
            consumer: 0,
        };
        header.validate()?;
        Ok(header)
    }

    /// Geometry checks shared by encode and decode.
    fn validate(&self) -> Result<(), Status> {
        let bad = Err(Status::BadRing);
        if !(MIN_RING_SIZE..=MAX_RING_SIZE).contains(&self.ring_size)
            || !self.ring_size.is_multiple_of(PAGE_SIZE)
        {
            return bad;
        }
        if self.capacity == 0 || self.capacity > MAX_CAPACITY || !self.capacity.is_power_of_two() {
            return bad;
        }
        if (self.desc_offset as usize) < HEADER_SIZE || !self.desc_offset.is_multiple_of(8) {
            return bad;
        }
        let table_end = (self.capacity as u64) * DESCRIPTOR_SIZE as u64 + self.desc_offset as u64;
        if !self.data_offset.is_multiple_of(PAGE_SIZE) || (self.data_offset as u64) < table_end {
            return bad;
        }
        if self.data_offset.checked_add(self.data_size) != Some(self.ring_size)
            || self.data_size == 0
        {
            return bad;
        }
        if self.pending() > self.capacity {
            return bad;
        }
        Ok(())
    }

    /// Descriptors submitted and not yet completed.
    pub const fn pending(&self) -> u32 {
        self.producer.wrapping_sub(self.consumer)
    }

    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, Status> {
        self.validate()?;
        let out = buf.get_mut(..HEADER_SIZE).ok_or(Status::BufferTooSmall)?;
        out.fill(0);
        out[0..4].copy_from_slice(&RING_MAGIC.to_le_bytes());
        out[4..6].copy_from_slice(&RING_MAJOR.to_le_bytes());
        out[6..8].copy_from_slice(&self.minor.to_le_bytes());
        let words = [
            self.ring_size,
            self.capacity,
            self.desc_offset,
            DESCRIPTOR_SIZE as u32,
            self.data_offset,
            self.data_size,
            self.producer,
            self.consumer,
        ];
        for (i, w) in words.iter().enumerate() {
            out[8 + 4 * i..12 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        Ok(HEADER_SIZE)
    }

    /// Decode and validate a header from the start of `buf`.
    ///
    /// `BadRing` for a short buffer, wrong magic, or bad geometry or indices;
    /// `VersionMismatch` for another major version or descriptor size. A newer
    /// minor version is accepted and its reserved bytes ignored; for this
    /// minor version they must be zero (`BadRing`).
    pub fn decode(buf: &[u8]) -> Result<RingHeader, Status> {
        let h = buf.get(..HEADER_SIZE).ok_or(Status::BadRing)?;
        let word = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        if word(0) != RING_MAGIC {
            return Err(Status::BadRing);
        }
        let major = u16::from_le_bytes([h[4], h[5]]);
        let minor = u16::from_le_bytes([h[6], h[7]]);
        if major != RING_MAJOR || word(20) != DESCRIPTOR_SIZE as u32 {
            return Err(Status::VersionMismatch);
        }
        // Only a newer minor version may give the reserved bytes a meaning.
        let newer_minor = minor > RING_MINOR;
        if !newer_minor && h[40..].iter().any(|&b| b != 0) {
            return Err(Status::BadRing);
        }
        let header = RingHeader {
            minor,
            ring_size: word(8),
            capacity: word(12),
            desc_offset: word(16),
            data_offset: word(24),
            data_size: word(28),
            producer: word(32),
            consumer: word(36),
        };
        header.validate()?;
        Ok(header)
    }

    /// Byte range of descriptor `slot` within the ring (`BadRing` past capacity).
    pub fn descriptor_range(&self, slot: u32) -> Result<Range<usize>, Status> {
        if slot >= self.capacity {
            return Err(Status::BadRing);
        }
        let start = self.desc_offset as usize + slot as usize * DESCRIPTOR_SIZE;
        Ok(start..start + DESCRIPTOR_SIZE)
    }

    /// Byte range within the ring of `len` bytes at `offset` into the data
    /// area; `BadRing` when any of it lies outside the data area.
    pub fn data_range(&self, offset: u32, len: u32) -> Result<Range<usize>, Status> {
        let end = offset.checked_add(len).ok_or(Status::BadRing)?;
        if end > self.data_size {
            return Err(Status::BadRing);
        }
        let base = self.data_offset as usize;
        Ok(base + offset as usize..base + end as usize)
    }
}
