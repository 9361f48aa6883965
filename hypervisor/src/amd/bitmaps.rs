//! The MSR permission map (8 KiB) and I/O permission map (12 KiB) that tell
//! SVM which RDMSR/WRMSR and IN/OUT exit. Built as plain bytes so the
//! construction is tested on the host; the backend copies them into
//! physically contiguous pages.

/// MSRPM size: two pages.
pub const MSRPM_SIZE: usize = 8192;
/// IOPM size: three pages (one bit per port, plus a tail for accesses that
/// straddle port 0xffff).
pub const IOPM_SIZE: usize = 12288;

/// Bit offset of `msr`'s read-intercept bit (write is the next bit); `None`
/// for MSRs outside the three mapped ranges (those always exit).
pub fn msr_bit(msr: u32) -> Option<usize> {
    let (base, first) = match msr {
        0x0000_0000..=0x0000_1fff => (0x0000, 0),
        0xc000_0000..=0xc000_1fff => (0x0800, 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000, 0xc001_0000),
        _ => return None,
    };
    Some(base * 8 + (msr - first) as usize * 2)
}

pub struct MsrBitmap(pub [u8; MSRPM_SIZE]);

impl MsrBitmap {
    /// Nothing intercepted (beyond MSRs outside the map).
    pub const fn pass_all() -> Self {
        MsrBitmap([0; MSRPM_SIZE])
    }

    /// Everything intercepted.
    pub const fn intercept_all() -> Self {
        MsrBitmap([0xff; MSRPM_SIZE])
    }

    pub fn set(&mut self, msr: u32, read: bool, write: bool) {
        if let Some(bit) = msr_bit(msr) {
            for (b, on) in [(bit, read), (bit + 1, write)] {
                if on {
                    self.0[b / 8] |= 1 << (b % 8);
                } else {
                    self.0[b / 8] &= !(1 << (b % 8));
                }
            }
        }
    }

    /// (read intercepted, write intercepted); MSRs outside the map always exit.
    pub fn get(&self, msr: u32) -> (bool, bool) {
        match msr_bit(msr) {
            Some(bit) => (
                self.0[bit / 8] & (1 << (bit % 8)) != 0,
                self.0[(bit + 1) / 8] & (1 << ((bit + 1) % 8)) != 0,
            ),
            None => (true, true),
        }
    }
}

pub struct IoBitmap(pub [u8; IOPM_SIZE]);

impl IoBitmap {
    pub const fn pass_all() -> Self {
        IoBitmap([0; IOPM_SIZE])
    }

    pub const fn intercept_all() -> Self {
        IoBitmap([0xff; IOPM_SIZE])
    }

    /// Intercept (or not) ports `first..=last`.
    pub fn set_range(&mut self, first: u16, last: u16, intercept: bool) {
        for port in first as usize..=last as usize {
            if intercept {
                self.0[port / 8] |= 1 << (port % 8);
            } else {
                self.0[port / 8] &= !(1 << (port % 8));
            }
        }
    }

    pub fn intercepted(&self, port: u16) -> bool {
        let p = port as usize;
        self.0[p / 8] & (1 << (p % 8)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_bits_follow_the_apm_layout() {
        assert_eq!(msr_bit(0), Some(0));
        assert_eq!(msr_bit(0x1fff), Some(0x3ffe));
        assert_eq!(msr_bit(0xc000_0080), Some(0x800 * 8 + 0x100)); // EFER
        assert_eq!(msr_bit(0xc001_0117), Some(0x1000 * 8 + 0x22e)); // VM_HSAVE_PA
        assert_eq!(msr_bit(0x2000), None);
        assert_eq!(msr_bit(0xc000_2000), None);
        assert_eq!(msr_bit(0x4000_0000), None);
    }

    #[test]
    fn msr_bitmap_sets_read_and_write_separately() {
        let mut m = MsrBitmap::pass_all();
        m.set(0xc000_0080, false, true);
        assert_eq!(m.get(0xc000_0080), (false, true));
        // EFER's write bit is bit 1 of byte 0x820... at 0x800 + 0x80*2/8 = 0x820
        assert_eq!(m.0[0x820], 0b10);
        assert_eq!(m.0.iter().filter(|b| **b != 0).count(), 1);
        assert_eq!(m.get(0xc000_0081), (false, false));
        assert_eq!(m.get(0x1234_5678), (true, true));
        let mut all = MsrBitmap::intercept_all();
        all.set(0x10, true, false);
        assert_eq!(all.get(0x10), (true, false));
        assert_eq!(all.get(0x11), (true, true));
    }

    #[test]
    fn io_bitmap_ranges() {
        let mut io = IoBitmap::pass_all();
        io.set_range(0xf4, 0xf7, true);
        assert!(io.intercepted(0xf4) && io.intercepted(0xf7));
        assert!(!io.intercepted(0xf3) && !io.intercepted(0xf8));
        assert_eq!(io.0[0xf4 / 8], 0xf0);
        let mut all = IoBitmap::intercept_all();
        all.set_range(0xffff, 0xffff, false);
        assert!(!all.intercepted(0xffff) && all.intercepted(0xfffe));
    }
}
