//! Bounds-checked little-endian reads. Every read returns `Option`, so no
//! input can make the decoder index out of bounds.

pub fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

fn array<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    array(b, off).map(u16::from_le_bytes)
}

pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    array(b, off).map(u32::from_le_bytes)
}

pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    array(b, off).map(u64::from_le_bytes)
}

/// `(first, count)` pair of u32s, as usizes.
pub fn range_at(b: &[u8], off: usize) -> Option<(usize, usize)> {
    Some((u32_at(b, off)? as usize, u32_at(b, off + 4)? as usize))
}
