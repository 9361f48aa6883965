//! VMX MSR bitmap and I/O bitmaps (SDM Vol. 3C 25.6.4, 25.6.9).
//!
//! MSR bitmap (one 4 KiB page): read-low at byte 0 (MSRs 0..=0x1FFF),
//! read-high at 1024 (0xC0000000..=0xC0001FFF), write-low at 2048, write-high
//! at 3072. A set bit makes the access exit; MSRs outside both ranges always exit.
//! I/O bitmap A covers ports 0..=0x7FFF, B covers 0x8000..=0xFFFF.

pub type Page = [u8; 4096];

/// Byte offset and bit of `msr` in the read half; None if the MSR is outside
/// both ranges (such accesses always exit).
const fn msr_slot(msr: u32) -> Option<(usize, u8)> {
    let (base, index) = match msr {
        0..=0x1FFF => (0usize, msr),
        0xC000_0000..=0xC000_1FFF => (1024usize, msr - 0xC000_0000),
        _ => return None,
    };
    Some((base + (index / 8) as usize, (index % 8) as u8))
}

/// Bit index (0..32768) in the MSR bitmap page for a read or write of `msr`.
pub const fn msr_bit(msr: u32, write: bool) -> Option<usize> {
    match msr_slot(msr) {
        Some((byte, bit)) => Some((byte + if write { 2048 } else { 0 }) * 8 + bit as usize),
        None => None,
    }
}

/// Which I/O bitmap (false = A, true = B) and bit index hold `port`.
pub const fn port_bit(port: u16) -> (bool, usize) {
    (port >= 0x8000, (port & 0x7fff) as usize)
}

/// Make reads and/or writes of `msr` exit (`true`) or pass through (`false`).
/// Returns false for an MSR the bitmap cannot express (it always exits).
pub fn set_msr(bitmap: &mut Page, msr: u32, read: bool, write: bool) -> bool {
    let Some((byte, bit)) = msr_slot(msr) else {
        return false;
    };
    for (offset, on) in [(0, read), (2048, write)] {
        if on {
            bitmap[byte + offset] |= 1 << bit;
        } else {
            bitmap[byte + offset] &= !(1 << bit);
        }
    }
    true
}

/// Does an access to `msr` exit under this bitmap?
pub fn msr_exits(bitmap: &Page, msr: u32, write: bool) -> bool {
    match msr_slot(msr) {
        Some((byte, bit)) => bitmap[byte + if write { 2048 } else { 0 }] & (1 << bit) != 0,
        None => true,
    }
}

/// Make accesses to `port` exit (`true`) or pass through.
pub fn set_port(a: &mut Page, b: &mut Page, port: u16, exit: bool) {
    let page = if port < 0x8000 { a } else { b };
    let index = (port & 0x7fff) as usize;
    if exit {
        page[index / 8] |= 1 << (index % 8);
    } else {
        page[index / 8] &= !(1 << (index % 8));
    }
}

/// Does an access of `size` bytes at `port` exit? Any covered port exiting
/// makes the access exit; wrapping past 0xFFFF always exits (SDM 26.1.3).
pub fn port_exits(a: &Page, b: &Page, port: u16, size: u8) -> bool {
    (0..size as u32).any(|i| {
        let p = port as u32 + i;
        if p > 0xffff {
            return true;
        }
        let page = if p < 0x8000 { a } else { b };
        let index = (p & 0x7fff) as usize;
        page[index / 8] & (1 << (index % 8)) != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_bitmap_layout() {
        let mut m = [0u8; 4096];
        assert!(set_msr(&mut m, 0x277, true, false)); // IA32_PAT read only
        assert_eq!(m[0x277 / 8], 1 << (0x277 % 8));
        assert!(msr_exits(&m, 0x277, false));
        assert!(!msr_exits(&m, 0x277, true));
        assert!(set_msr(&mut m, 0xC000_0080, false, true)); // EFER write
        assert_eq!(m[3072 + 0x80 / 8], 1 << (0x80 % 8));
        assert!(msr_exits(&m, 0xC000_0080, true));
        assert!(!msr_exits(&m, 0xC000_0080, false));
        assert!(set_msr(&mut m, 0x277, false, false));
        assert!(!msr_exits(&m, 0x277, false));
    }

    #[test]
    fn bit_indexes_match_the_page_layout() {
        let mut m = [0u8; 4096];
        set_msr(&mut m, 0xC000_0080, false, true);
        let bit = msr_bit(0xC000_0080, true).unwrap();
        assert_eq!(m[bit / 8], 1 << (bit % 8));
        assert_eq!(msr_bit(0x10, false), Some(0x10));
        assert_eq!(msr_bit(0x4000_0000, false), None);
        assert_eq!(port_bit(0x3f8), (false, 0x3f8));
        assert_eq!(port_bit(0x8900), (true, 0x900));
    }

    #[test]
    fn msrs_outside_ranges_always_exit() {
        let mut m = [0u8; 4096];
        assert!(!set_msr(&mut m, 0x4000_0000, false, false));
        assert!(msr_exits(&m, 0x4000_0000, false));
        assert!(msr_exits(&m, 0xC001_0000, true));
        assert!(m.iter().all(|&b| b == 0));
    }

    #[test]
    fn io_bitmaps() {
        let (mut a, mut b) = ([0u8; 4096], [0u8; 4096]);
        set_port(&mut a, &mut b, 0x3f8, true);
        set_port(&mut a, &mut b, 0x8900, true);
        assert_eq!(a[0x3f8 / 8], 1 << (0x3f8 % 8));
        assert_eq!(b[0x900 / 8], 1 << (0x900 % 8));
        assert!(port_exits(&a, &b, 0x3f8, 1));
        assert!(!port_exits(&a, &b, 0x3f9, 1));
        assert!(port_exits(&a, &b, 0x3f6, 4), "dword access covering 0x3f8");
        assert!(port_exits(&a, &b, 0xffff, 2), "wrap-around exits");
        set_port(&mut a, &mut b, 0x3f8, false);
        assert!(!port_exits(&a, &b, 0x3f8, 1));
    }
}
