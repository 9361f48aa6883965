//! Bounds-checked little-endian reads for table parsers (firmware tables can be malformed).

pub fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Walks `(type, length)`-prefixed sub-structures from `start`; `type_len` says whether the
/// type field is one byte (IVRS) or two (DMAR), the length field follows at offset 2.
/// Yields `(offset, type, body)`, or stops with `Err(offset)` at a structure whose length is too
/// small or runs past the end.
pub struct SubTables<'a> {
    bytes: &'a [u8],
    off: usize,
    wide_type: bool,
    failed: bool,
}

impl<'a> SubTables<'a> {
    pub fn new(bytes: &'a [u8], start: usize, wide_type: bool) -> Self {
        Self {
            bytes,
            off: start,
            wide_type,
            failed: false,
        }
    }
}

impl<'a> Iterator for SubTables<'a> {
    type Item = Result<(usize, u16, &'a [u8]), usize>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.off >= self.bytes.len() {
            return None;
        }
        let off = self.off;
        let ty = if self.wide_type {
            u16_at(self.bytes, off)
        } else {
            u8_at(self.bytes, off).map(u16::from)
        };
        let len = u16_at(self.bytes, off + 2).map(usize::from);
        match (ty, len) {
            (Some(ty), Some(len)) if len >= 4 && off + len <= self.bytes.len() => {
                self.off = off + len;
                Some(Ok((off, ty, &self.bytes[off..off + len])))
            }
            _ => {
                self.failed = true;
                Some(Err(off))
            }
        }
    }
}
