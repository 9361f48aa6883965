//! Ring descriptors: one request and its reply.
//!
//! ```text
//! offset size field
//!  0     8    request_id      chosen by the guest, echoed untouched
//!  8     2    call            hypercall number of the request
//! 10     2    flags           bit 0 DONE (service-written); others zero
//! 12     4    status          i32 status code (service-written)
//! 16     4    req_offset      request payload, offset into the data area
//! 20     4    req_len         request payload length (<= 65536)
//! 24     4    reply_offset    reply buffer, offset into the data area
//! 28     4    reply_capacity  reply buffer length (<= 65536)
//! 32     4    reply_len       reply bytes written, or needed on BufferTooSmall
//! 36     4    reserved        zero
//! ```

use crate::numbers::Hypercall;
use crate::status::Status;

use super::MAX_PAYLOAD;

/// Bytes per descriptor.
pub const DESCRIPTOR_SIZE: usize = 40;

/// Descriptor flag: the service has completed the request.
pub const FLAG_DONE: u16 = 1 << 0;
/// Every flag this version defines.
pub const KNOWN_FLAGS: u16 = FLAG_DONE;

/// A descriptor, checked for field-level validity (its offsets are checked
/// against a ring's data area by [`super::RingHeader::data_range`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub request_id: u64,
    pub call: Hypercall,
    pub flags: u16,
    pub status: Status,
    pub req_offset: u32,
    pub req_len: u32,
    pub reply_offset: u32,
    pub reply_capacity: u32,
    pub reply_len: u32,
}

impl Descriptor {
    /// A fresh (not done) descriptor for a request.
    pub const fn new(
        request_id: u64,
        call: Hypercall,
        req_offset: u32,
        req_len: u32,
        reply_offset: u32,
        reply_capacity: u32,
    ) -> Descriptor {
        Descriptor {
            request_id,
            call,
            flags: 0,
            status: Status::Success,
            req_offset,
            req_len,
            reply_offset,
            reply_capacity,
            reply_len: 0,
        }
    }

    pub const fn is_done(&self) -> bool {
        self.flags & FLAG_DONE != 0
    }

    fn validate(&self) -> Result<(), Status> {
        if !self.call.uses_ring() || self.flags & !KNOWN_FLAGS != 0 {
            return Err(Status::InvalidArgument);
        }
        if self.req_len > MAX_PAYLOAD || self.reply_capacity > MAX_PAYLOAD {
            return Err(Status::LimitExceeded);
        }
        if self.is_done()
            && self.reply_len > self.reply_capacity
            && self.status != Status::BufferTooSmall
        {
            return Err(Status::BadRing);
        }
        Ok(())
    }

    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, Status> {
        self.validate()?;
        let out = buf
            .get_mut(..DESCRIPTOR_SIZE)
            .ok_or(Status::BufferTooSmall)?;
        out[0..8].copy_from_slice(&self.request_id.to_le_bytes());
        out[8..10].copy_from_slice(&(self.call.number() as u16).to_le_bytes());
        out[10..12].copy_from_slice(&self.flags.to_le_bytes());
        out[12..16].copy_from_slice(&self.status.code().to_le_bytes());
        let words = [
            self.req_offset,
            self.req_len,
            self.reply_offset,
            self.reply_capacity,
            self.reply_len,
            0,
        ];
        for (i, w) in words.iter().enumerate() {
            out[16 + 4 * i..20 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        Ok(DESCRIPTOR_SIZE)
    }

    /// Decode a descriptor from the start of `buf`.
    ///
    /// `BadRing` when truncated or when a completed reply claims more bytes
    /// than its buffer; `InvalidArgument` for a call that is not an AI call,
    /// unknown flags or a non-zero reserved word; `LimitExceeded` for lengths
    /// above [`MAX_PAYLOAD`].
    pub fn decode(buf: &[u8]) -> Result<Descriptor, Status> {
        let d = buf.get(..DESCRIPTOR_SIZE).ok_or(Status::BadRing)?;
        let word = |at: usize| u32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[0..8]);
        let number = u16::from_le_bytes([d[8], d[9]]);
        let call = Hypercall::from_number(number as u64).ok_or(Status::InvalidArgument)?;
        if word(36) != 0 {
            return Err(Status::InvalidArgument);
        }
        let desc = Descriptor {
            request_id: u64::from_le_bytes(id),
            call,
            flags: u16::from_le_bytes([d[10], d[11]]),
            status: Status::from_code(word(12) as i32),
            req_offset: word(16),
            req_len: word(20),
            reply_offset: word(24),
            reply_capacity: word(28),
            reply_len: word(32),
        };
        desc.validate()?;
        Ok(desc)
    }
}
