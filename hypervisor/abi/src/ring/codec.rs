//! Little-endian payload encoding: fixed-width integers, length-prefixed
//! strings and byte blobs, counted lists. No padding, no alignment.
//!
//! Encoders check the same limits decoders do, so whatever encodes decodes.

use core::fmt;
use core::marker::PhantomData;

use crate::status::Status;

/// Writes into a caller-provided buffer. Past the end it keeps counting
/// instead of writing, so the length a value needs is known afterwards.
pub struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    pub fn new(buf: &'b mut [u8]) -> Writer<'b> {
        Writer { buf, pos: 0 }
    }

    /// Bytes written (or, past the end, that would have been written).
    pub fn len(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// `Ok(len)` if everything fit, `BufferTooSmall` otherwise.
    pub fn finish(&self) -> Result<usize, Status> {
        if self.pos <= self.buf.len() {
            Ok(self.pos)
        } else {
            Err(Status::BufferTooSmall)
        }
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        let end = self.pos.saturating_add(bytes.len());
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
    }

    pub fn u8(&mut self, v: u8) {
        self.raw(&[v]);
    }

    pub fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }

    pub fn u16(&mut self, v: u16) {
        self.raw(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.raw(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.raw(&v.to_le_bytes());
    }

    pub fn i32(&mut self, v: i32) {
        self.raw(&v.to_le_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.raw(&v.to_le_bytes());
    }

    /// A string: `u16` length, then UTF-8 bytes. `LimitExceeded` above `max`.
    pub fn str(&mut self, s: &str, max: usize) -> Result<(), Status> {
        if s.len() > max || s.len() > u16::MAX as usize {
            return Err(Status::LimitExceeded);
        }
        self.u16(s.len() as u16);
        self.raw(s.as_bytes());
        Ok(())
    }

    /// A non-empty string (names): `InvalidArgument` when empty.
    pub fn name(&mut self, s: &str, max: usize) -> Result<(), Status> {
        if s.is_empty() {
            return Err(Status::InvalidArgument);
        }
        self.str(s, max)
    }

    /// A byte blob: `u32` length, then the bytes. `LimitExceeded` above `max`.
    pub fn blob(&mut self, b: &[u8], max: usize) -> Result<(), Status> {
        if b.len() > max || b.len() > u32::MAX as usize {
            return Err(Status::LimitExceeded);
        }
        self.u32(b.len() as u32);
        self.raw(b);
        Ok(())
    }
}

/// Reads from a borrowed buffer; every read is bounds-checked.
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// `InvalidArgument` if bytes are left over.
    pub fn finish(&self) -> Result<(), Status> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(Status::InvalidArgument)
        }
    }

    /// The next `n` bytes; `InvalidArgument` when the payload is truncated.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], Status> {
        let end = self.pos.checked_add(n).ok_or(Status::InvalidArgument)?;
        let bytes = self.buf.get(self.pos..end).ok_or(Status::InvalidArgument)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Status> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.raw(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, Status> {
        Ok(self.array::<1>()?[0])
    }

    /// 0 or 1; anything else is `InvalidArgument`.
    pub fn bool(&mut self) -> Result<bool, Status> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Status::InvalidArgument),
        }
    }

    pub fn u16(&mut self) -> Result<u16, Status> {
        self.array().map(u16::from_le_bytes)
    }

    pub fn u32(&mut self) -> Result<u32, Status> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, Status> {
        self.array().map(u64::from_le_bytes)
    }

    pub fn i32(&mut self) -> Result<i32, Status> {
        self.array().map(i32::from_le_bytes)
    }

    pub fn i64(&mut self) -> Result<i64, Status> {
        self.array().map(i64::from_le_bytes)
    }

    /// A string written by [`Writer::str`]: `LimitExceeded` above `max`,
    /// `InvalidArgument` when truncated or not UTF-8.
    pub fn str(&mut self, max: usize) -> Result<&'a str, Status> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(Status::LimitExceeded);
        }
        core::str::from_utf8(self.raw(len)?).map_err(|_| Status::InvalidArgument)
    }

    /// A non-empty string (names).
    pub fn name(&mut self, max: usize) -> Result<&'a str, Status> {
        let s = self.str(max)?;
        if s.is_empty() {
            return Err(Status::InvalidArgument);
        }
        Ok(s)
    }

    /// A blob written by [`Writer::blob`].
    pub fn blob(&mut self, max: usize) -> Result<&'a [u8], Status> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(Status::LimitExceeded);
        }
        self.raw(len)
    }
}

/// A value with a payload encoding.
pub trait Payload<'a>: Sized {
    /// Append the encoding; fails only on a limit or invariant the decoder
    /// would also reject.
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status>;
    /// Read one value, validating every field.
    fn read(r: &mut Reader<'a>) -> Result<Self, Status>;

    /// Encode into `buf`, answering the length used (`BufferTooSmall` when it
    /// does not fit; [`Payload::encoded_len`] tells how much is needed).
    fn encode(&self, buf: &mut [u8]) -> Result<usize, Status> {
        let mut w = Writer::new(buf);
        self.write(&mut w)?;
        w.finish()
    }

    /// The length [`Payload::encode`] needs.
    fn encoded_len(&self) -> Result<usize, Status> {
        let mut w = Writer::new(&mut []);
        self.write(&mut w)?;
        Ok(w.len())
    }

    /// Decode a whole buffer: trailing bytes are `InvalidArgument`.
    fn decode(buf: &'a [u8]) -> Result<Self, Status> {
        let mut r = Reader::new(buf);
        let v = Self::read(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

/// A counted list: `u16` count, then the items back to back.
///
/// Decoding validates every item and borrows the encoded bytes; building one
/// for encoding borrows a slice of items. Either way [`List::iter`] yields
/// the items, and lists compare equal when their items do.
#[derive(Clone, Copy)]
pub struct List<'a, T> {
    repr: Repr<'a, T>,
}

#[derive(Clone, Copy)]
enum Repr<'a, T> {
    Items(&'a [T]),
    Encoded { count: u16, bytes: &'a [u8] },
}

impl<'a, T: Payload<'a> + Copy> List<'a, T> {
    pub const fn new(items: &'a [T]) -> List<'a, T> {
        List {
            repr: Repr::Items(items),
        }
    }

    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Items(items) => items.len(),
            Repr::Encoded { count, .. } => count as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> ListIter<'a, T> {
        match self.repr {
            Repr::Items(items) => ListIter {
                items,
                reader: Reader::new(&[]),
                left: 0,
                _t: PhantomData,
            },
            Repr::Encoded { count, bytes } => ListIter {
                items: &[],
                reader: Reader::new(bytes),
                left: count,
                _t: PhantomData,
            },
        }
    }

    /// Write with `max` items at most (`LimitExceeded` above).
    pub fn write(&self, w: &mut Writer<'_>, max: usize) -> Result<(), Status> {
        if self.len() > max || self.len() > u16::MAX as usize {
            return Err(Status::LimitExceeded);
        }
        w.u16(self.len() as u16);
        for item in self.iter() {
            item.write(w)?;
        }
        Ok(())
    }

    /// Read and validate a list of `max` items at most.
    pub fn read(r: &mut Reader<'a>, max: usize) -> Result<List<'a, T>, Status> {
        let count = r.u16()?;
        if count as usize > max {
            return Err(Status::LimitExceeded);
        }
        let start = r.clone();
        for _ in 0..count {
            T::read(r)?;
        }
        let used = start.remaining() - r.remaining();
        let mut start = start;
        let bytes = start.raw(used)?;
        Ok(List {
            repr: Repr::Encoded { count, bytes },
        })
    }
}

/// Iterator over a [`List`].
pub struct ListIter<'a, T> {
    items: &'a [T],
    reader: Reader<'a>,
    left: u16,
    _t: PhantomData<T>,
}

impl<'a, T: Payload<'a> + Copy> Iterator for ListIter<'a, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if let Some((first, rest)) = self.items.split_first() {
            self.items = rest;
            return Some(*first);
        }
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated when the list was read, so this succeeds; stop rather
        // than panic if it ever does not.
        T::read(&mut self.reader).ok()
    }
}

impl<'a, T: Payload<'a> + Copy + PartialEq> PartialEq for List<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<'a, T: Payload<'a> + Copy + fmt::Debug> fmt::Debug for List<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Strings as list items (for argument vectors): at most [`super::MAX_TEXT`] bytes.
impl<'a> Payload<'a> for &'a str {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.str(self, super::MAX_TEXT)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        r.str(super::MAX_TEXT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_counts_past_the_end() {
        let mut buf = [0u8; 4];
        let mut w = Writer::new(&mut buf);
        w.u32(0x0403_0201);
        assert_eq!(w.finish(), Ok(4));
        w.u16(7);
        assert_eq!(w.len(), 6);
        assert_eq!(w.finish(), Err(Status::BufferTooSmall));
        assert_eq!(buf, [1, 2, 3, 4]);
    }

    #[test]
    fn reader_rejects_truncation_bad_utf8_and_limits() {
        assert_eq!(Reader::new(&[1, 2, 3]).u32(), Err(Status::InvalidArgument));
        assert_eq!(
            Reader::new(&[2, 0, 0xff, 0xfe]).str(10),
            Err(Status::InvalidArgument)
        );
        assert_eq!(
            Reader::new(&[5, 0, b'a']).str(10),
            Err(Status::InvalidArgument)
        );
        assert_eq!(Reader::new(&[11, 0]).str(10), Err(Status::LimitExceeded));
        assert_eq!(Reader::new(&[0, 0]).name(10), Err(Status::InvalidArgument));
        assert_eq!(Reader::new(&[2]).bool(), Err(Status::InvalidArgument));
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff]).blob(100),
            Err(Status::LimitExceeded)
        );
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff]).blob(usize::MAX),
            Err(Status::InvalidArgument)
        );
        let mut r = Reader::new(&[1, 0, b'x', 9]);
        assert_eq!(r.str(10), Ok("x"));
        assert_eq!(r.finish(), Err(Status::InvalidArgument));
    }

    #[test]
    fn writer_limits_match_reader_limits() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.str("abcdef", 5), Err(Status::LimitExceeded));
        assert_eq!(w.name("", 5), Err(Status::InvalidArgument));
        assert_eq!(w.blob(&[0; 9], 8), Err(Status::LimitExceeded));
    }

    #[test]
    fn list_round_trips_and_borrows() {
        let argv = ["ls", "-l", "/tmp"];
        let list = List::new(&argv);
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        list.write(&mut w, 8).unwrap();
        let n = w.finish().unwrap();
        let mut r = Reader::new(&buf[..n]);
        let back: List<&str> = List::read(&mut r, 8).unwrap();
        r.finish().unwrap();
        assert_eq!(back, list);
        assert_eq!(back.iter().collect::<Vec<_>>(), argv);
        assert_eq!(
            List::<&str>::read(&mut Reader::new(&buf[..n]), 2).unwrap_err(),
            Status::LimitExceeded
        );
        assert_eq!(
            List::<&str>::read(&mut Reader::new(&buf[..n - 1]), 8).unwrap_err(),
            Status::InvalidArgument
        );
    }
}
