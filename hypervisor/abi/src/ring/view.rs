//! Reading and writing a whole ring region.

use super::descriptor::{Descriptor, FLAG_DONE};
use super::header::RingHeader;
use super::payload::{RingReply, RingRequest};
use super::MAX_PAYLOAD;
use crate::numbers::Hypercall;
use crate::status::Status;

/// Offsets of the producer and consumer words in the header.
const PRODUCER_AT: usize = 32;
const CONSUMER_AT: usize = 36;

/// A read-only view of a validated ring region.
///
/// A hypervisor must not build this over memory the guest can change
/// concurrently: copy the region (or the header, descriptor and payload it
/// needs) first, so what was checked is what is used.
#[derive(Clone, Copy)]
pub struct Ring<'a> {
    header: RingHeader,
    bytes: &'a [u8],
}

fn open_header(bytes: &[u8]) -> Result<RingHeader, Status> {
    let header = RingHeader::decode(bytes)?;
    if header.ring_size as usize != bytes.len() {
        return Err(Status::BadRing);
    }
    Ok(header)
}

impl<'a> Ring<'a> {
    /// Validate the header against the region: `BadRing` if the header's
    /// size differs from the region's (see [`RingHeader::decode`] for more).
    pub fn new(bytes: &'a [u8]) -> Result<Ring<'a>, Status> {
        Ok(Ring {
            header: open_header(bytes)?,
            bytes,
        })
    }

    pub fn header(&self) -> &RingHeader {
        &self.header
    }

    /// Descriptor `slot`; `BadRing` past the capacity.
    pub fn descriptor(&self, slot: u32) -> Result<Descriptor, Status> {
        let range = self.header.descriptor_range(slot)?;
        Descriptor::decode(self.bytes.get(range).ok_or(Status::BadRing)?)
    }

    /// `len` bytes at `offset` in the data area; `BadRing` outside it.
    pub fn data(&self, offset: u32, len: u32) -> Result<&'a [u8], Status> {
        let range = self.header.data_range(offset, len)?;
        self.bytes.get(range).ok_or(Status::BadRing)
    }

    /// The request in `slot`, fully validated, for the hypervisor or service
    /// handling `call`.
    ///
    /// `InvalidArgument` when the descriptor is for another call or is
    /// already `DONE`; `BadRing` when the request, the reply buffer or a
    /// bulk span named by the request lies outside the data area; otherwise
    /// whatever the payload decoder reports.
    pub fn request(
        &self,
        slot: u32,
        call: Hypercall,
    ) -> Result<(Descriptor, RingRequest<'a>), Status> {
        let d = self.descriptor(slot)?;
        if d.call != call || d.is_done() {
            return Err(Status::InvalidArgument);
        }
        self.data(d.reply_offset, d.reply_capacity)?;
        let request = RingRequest::decode(call, self.data(d.req_offset, d.req_len)?)?;
        if let Some((offset, len)) = request.data_span() {
            self.data(offset, len)?;
        }
        Ok((d, request))
    }

    /// The reply in `slot`, for the guest once the call returned.
    ///
    /// `Busy` when not `DONE` yet; the descriptor's status when it is not
    /// success; `BadRing` for a reply outside the data area.
    pub fn reply(&self, slot: u32) -> Result<(Descriptor, RingReply<'a>), Status> {
        let d = self.descriptor(slot)?;
        if !d.is_done() {
            return Err(Status::Busy);
        }
        d.status.result()?;
        let bytes = self.data(d.reply_offset, d.reply_len)?;
        Ok((d, RingReply::decode(d.call, bytes)?))
    }
}

/// The part of the data area [`RingMut::submit_in_slot`] gives each slot:
/// the area split evenly between slots, each half request, half reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotArea {
    pub req_offset: u32,
    pub req_capacity: u32,
    pub reply_offset: u32,
    pub reply_capacity: u32,
}

/// A writable ring region.
///
/// Each side writes only its own fields: the guest the descriptor and its
/// request and the producer index; the service the reply, the descriptor's
/// status, `reply_len` and flags, and the consumer index.
pub struct RingMut<'a> {
    bytes: &'a mut [u8],
}

impl<'a> RingMut<'a> {
    /// Lay out a fresh ring over the whole region with `capacity` descriptors
    /// (a power of two up to 64): header and zeroed table, indices at 0.
    pub fn init(bytes: &'a mut [u8], capacity: u32) -> Result<RingMut<'a>, Status> {
        let size = u32::try_from(bytes.len()).map_err(|_| Status::BadRing)?;
        let header = RingHeader::new(size, capacity)?;
        bytes[..header.data_offset as usize].fill(0);
        header.encode(bytes)?;
        Ok(RingMut { bytes })
    }

    /// Open an initialised ring.
    pub fn open(bytes: &'a mut [u8]) -> Result<RingMut<'a>, Status> {
        open_header(bytes)?;
        Ok(RingMut { bytes })
    }

    /// A read-only view (validates the header again: the peer may have
    /// changed its index).
    pub fn ring(&self) -> Result<Ring<'_>, Status> {
        Ring::new(self.bytes)
    }

    pub fn header(&self) -> Result<RingHeader, Status> {
        open_header(self.bytes)
    }

    /// Service side: `len` writable bytes at `offset` in the data area (the
    /// bulk span of a `tensor_transfer` or `tensor_stream` to the ring);
    /// `BadRing` outside it.
    pub fn data_mut(&mut self, offset: u32, len: u32) -> Result<&mut [u8], Status> {
        let range = self.header()?.data_range(offset, len)?;
        self.bytes.get_mut(range).ok_or(Status::BadRing)
    }

    /// The standard data-area split for `slot`.
    pub fn slot_area(&self, slot: u32) -> Result<SlotArea, Status> {
        let h = self.header()?;
        h.descriptor_range(slot)?;
        let per_slot = (h.data_size / h.capacity) & !7;
        let half = (per_slot / 2) & !7;
        let start = slot * per_slot;
        Ok(SlotArea {
            req_offset: start,
            req_capacity: half.min(MAX_PAYLOAD),
            reply_offset: start + half,
            reply_capacity: (per_slot - half).min(MAX_PAYLOAD),
        })
    }

    fn write_word(&mut self, at: usize, v: u32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn write_descriptor(
        &mut self,
        h: &RingHeader,
        slot: u32,
        d: &Descriptor,
    ) -> Result<(), Status> {
        let range = h.descriptor_range(slot)?;
        d.encode(&mut self.bytes[range])?;
        Ok(())
    }

    /// Guest side: write `request` at `req_offset` of the data area, point
    /// descriptor `slot` at it and at a reply buffer, and count it in the
    /// producer index. `Busy` when `capacity` requests are pending;
    /// `BadRing` when a span leaves the data area; `LimitExceeded` for
    /// payloads or reply buffers above [`MAX_PAYLOAD`].
    pub fn submit(
        &mut self,
        slot: u32,
        request_id: u64,
        request: &RingRequest<'_>,
        req_offset: u32,
        reply_offset: u32,
        reply_capacity: u32,
    ) -> Result<Descriptor, Status> {
        let h = self.header()?;
        h.descriptor_range(slot)?;
        if h.pending() >= h.capacity {
            return Err(Status::Busy);
        }
        let len = request.encoded_len()?;
        let len = u32::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_PAYLOAD)
            .ok_or(Status::LimitExceeded)?;
        if reply_capacity > MAX_PAYLOAD {
            return Err(Status::LimitExceeded);
        }
        let req_range = h.data_range(req_offset, len)?;
        h.data_range(reply_offset, reply_capacity)?;
        request.encode(&mut self.bytes[req_range])?;
        let d = Descriptor::new(
            request_id,
            request.call(),
            req_offset,
            len,
            reply_offset,
            reply_capacity,
        );
        self.write_descriptor(&h, slot, &d)?;
        self.write_word(PRODUCER_AT, h.producer.wrapping_add(1));
        Ok(d)
    }

    /// [`RingMut::submit`] using the slot's [`SlotArea`].
    pub fn submit_in_slot(
        &mut self,
        slot: u32,
        request_id: u64,
        request: &RingRequest<'_>,
    ) -> Result<Descriptor, Status> {
        let a = self.slot_area(slot)?;
        if request.encoded_len()? > a.req_capacity as usize {
            return Err(Status::BufferTooSmall);
        }
        self.submit(
            slot,
            request_id,
            request,
            a.req_offset,
            a.reply_offset,
            a.reply_capacity,
        )
    }

    /// Service side: complete `slot` with a reply or a failure status, set
    /// `DONE` and count it in the consumer index. A reply larger than the
    /// reply buffer completes with `BufferTooSmall` and `reply_len` = the
    /// size needed. Answers the descriptor written; its status and
    /// `reply_len` are what the call returns in RAX and RDX.
    ///
    /// `InvalidArgument` when the slot is already done, the reply is for
    /// another call, or `result` is `Err(Success)`; `BadRing` when nothing is
    /// pending or the reply buffer leaves the data area.
    pub fn complete(
        &mut self,
        slot: u32,
        result: Result<&RingReply<'_>, Status>,
    ) -> Result<Descriptor, Status> {
        let h = self.header()?;
        let mut d = self.ring()?.descriptor(slot)?;
        if d.is_done() {
            return Err(Status::InvalidArgument);
        }
        if h.pending() == 0 {
            return Err(Status::BadRing);
        }
        let reply_range = h.data_range(d.reply_offset, d.reply_capacity)?;
        let (status, len) = match result {
            Ok(reply) if reply.call() != d.call => return Err(Status::InvalidArgument),
            Ok(reply) => {
                let len = reply.encoded_len()?;
                match u32::try_from(len) {
                    Ok(l) if l <= d.reply_capacity => {
                        reply.encode(&mut self.bytes[reply_range])?;
                        (Status::Success, l)
                    }
                    _ => (
                        Status::BufferTooSmall,
                        u32::try_from(len).unwrap_or(u32::MAX),
                    ),
                }
            }
            Err(Status::Success) => return Err(Status::InvalidArgument),
            Err(status) => (status, 0),
        };
        d.status = status;
        d.reply_len = len;
        d.flags |= FLAG_DONE;
        self.write_descriptor(&h, slot, &d)?;
        self.write_word(CONSUMER_AT, h.consumer.wrapping_add(1));
        Ok(d)
    }
}
