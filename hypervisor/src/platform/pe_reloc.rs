//! PE32+ base relocations, for moving the loaded hypervisor image (pure; used by `relocate`).
//!
//! The firmware loads the hypervisor as `EfiLoaderCode`, which the OS booted later reclaims.
//! `relocate` copies the loaded image into reserved pages and re-applies the image's
//! base relocations for the new address; this module does the second part on a byte slice
//! laid out as loaded (sections at their RVAs), so host tests can check it.

/// Why relocations could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeError {
    /// No `MZ`/`PE\0\0` signature where expected.
    NotPe,
    /// Not a PE32+ (64-bit) optional header.
    NotPe32Plus,
    /// The image has no base-relocation directory (it cannot be moved).
    NoRelocations,
    /// A header, directory, block or target lies outside the image.
    OutOfBounds { at: usize },
    /// A relocation type other than ABSOLUTE (0) or DIR64 (10).
    UnsupportedType { kind: u16, at: usize },
}

impl core::fmt::Display for PeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PeError::NotPe => write!(f, "not a PE image"),
            PeError::NotPe32Plus => write!(f, "not a PE32+ image"),
            PeError::NoRelocations => write!(f, "the image has no base relocations"),
            PeError::OutOfBounds { at } => write!(f, "relocation data out of bounds at {at:#x}"),
            PeError::UnsupportedType { kind, at } => {
                write!(f, "unsupported relocation type {kind} at {at:#x}")
            }
        }
    }
}

const IMAGE_REL_BASED_ABSOLUTE: u16 = 0;
const IMAGE_REL_BASED_DIR64: u16 = 10;
const PE32_PLUS: u16 = 0x20b;
const DIR_BASERELOC: usize = 5;

fn u16_at(b: &[u8], at: usize) -> Result<u16, PeError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(PeError::OutOfBounds { at })
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, PeError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(PeError::OutOfBounds { at })
}

/// Where the optional header starts, after checking the signatures and the PE32+ magic.
fn optional_header(image: &[u8]) -> Result<usize, PeError> {
    if image.get(..2) != Some(b"MZ") {
        return Err(PeError::NotPe);
    }
    let pe = u32_at(image, 0x3c)? as usize;
    if image.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err(PeError::NotPe);
    }
    let opt = pe + 24;
    if u16_at(image, opt)? != PE32_PLUS {
        return Err(PeError::NotPe32Plus);
    }
    Ok(opt)
}

/// Add `delta` to every DIR64 relocation target of the loaded image in `image` (and to the
/// optional header's ImageBase). Returns how many targets were patched. Everything is
/// checked first, so on error the image is unchanged. Does not allocate: it runs before the
/// hypervisor's heap exists.
pub fn apply(image: &mut [u8], delta: u64) -> Result<usize, PeError> {
    walk(image, None)?;
    let patched = walk(image, Some(delta))?;
    let base_at = optional_header(image)? + 24;
    if let Some(b) = image.get_mut(base_at..base_at + 8) {
        let v = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        b.copy_from_slice(&v.wrapping_add(delta).to_le_bytes());
    }
    Ok(patched)
}

/// Walk the base-relocation blocks, checking every entry; with `Some(delta)`, also add
/// `delta` to each DIR64 target. Returns the number of DIR64 targets.
fn walk(image: &mut [u8], delta: Option<u64>) -> Result<usize, PeError> {
    let opt = optional_header(image)?;
    let count = u32_at(image, opt + 108)? as usize;
    if count <= DIR_BASERELOC {
        return Err(PeError::NoRelocations);
    }
    let dir = opt + 112 + DIR_BASERELOC * 8;
    let (rva, size) = (
        u32_at(image, dir)? as usize,
        u32_at(image, dir + 4)? as usize,
    );
    if rva == 0 || size == 0 {
        return Err(PeError::NoRelocations);
    }
    let end = rva
        .checked_add(size)
        .filter(|&e| e <= image.len())
        .ok_or(PeError::OutOfBounds { at: dir })?;
    let mut targets = 0;
    let mut block = rva;
    while block + 8 <= end {
        let page = u32_at(image, block)? as usize;
        let block_size = u32_at(image, block + 4)? as usize;
        if block_size < 8 || block + block_size > end {
            return Err(PeError::OutOfBounds { at: block });
        }
        for e in (block + 8..block + block_size).step_by(2) {
            let entry = u16_at(image, e)?;
            let (kind, offset) = (entry >> 12, usize::from(entry & 0xfff));
            match kind {
                IMAGE_REL_BASED_ABSOLUTE => {}
                IMAGE_REL_BASED_DIR64 => {
                    let at = page + offset;
                    let Some(t) = image.get_mut(at..at + 8) else {
                        return Err(PeError::OutOfBounds { at });
                    };
                    if let Some(delta) = delta {
                        let v =
                            u64::from_le_bytes([t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]]);
                        t.copy_from_slice(&v.wrapping_add(delta).to_le_bytes());
                    }
                    targets += 1;
                }
                _ => return Err(PeError::UnsupportedType { kind, at: e }),
            }
        }
        block += block_size;
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const PE: usize = 0x80;
    const OPT: usize = PE + 24;

    /// A loaded PE32+ image of 0x3000 bytes whose data page holds two absolute pointers
    /// (to 0x1_4000_1000 and 0x1_4000_2008 at the link base 0x1_4000_0000) and whose
    /// relocation block lists them plus an ABSOLUTE padding entry.
    fn image() -> Vec<u8> {
        let mut img = vec![0u8; 0x3000];
        img[..2].copy_from_slice(b"MZ");
        img[0x3c..0x40].copy_from_slice(&(PE as u32).to_le_bytes());
        img[PE..PE + 4].copy_from_slice(b"PE\0\0");
        img[OPT..OPT + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        img[OPT + 24..OPT + 32].copy_from_slice(&0x1_4000_0000u64.to_le_bytes());
        img[OPT + 108..OPT + 112].copy_from_slice(&16u32.to_le_bytes());
        let dir = OPT + 112 + 5 * 8;
        img[dir..dir + 4].copy_from_slice(&0x2800u32.to_le_bytes());
        img[dir + 4..dir + 8].copy_from_slice(&14u32.to_le_bytes());
        img[0x2000..0x2008].copy_from_slice(&0x1_4000_1000u64.to_le_bytes());
        img[0x2010..0x2018].copy_from_slice(&0x1_4000_2008u64.to_le_bytes());
        let block = 0x2800;
        img[block..block + 4].copy_from_slice(&0x2000u32.to_le_bytes());
        img[block + 4..block + 8].copy_from_slice(&14u32.to_le_bytes());
        img[block + 8..block + 10].copy_from_slice(&(0xa000u16).to_le_bytes());
        img[block + 10..block + 12].copy_from_slice(&(0xa010u16).to_le_bytes());
        img[block + 12..block + 14].copy_from_slice(&0u16.to_le_bytes());
        img
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn dir64_targets_and_image_base_move_by_delta() {
        let mut img = image();
        let delta = 0x7e00_0000u64.wrapping_sub(0x1_4000_0000);
        assert_eq!(apply(&mut img, delta), Ok(2));
        assert_eq!(u64_at(&img, 0x2000), 0x7e00_1000);
        assert_eq!(u64_at(&img, 0x2010), 0x7e00_2008);
        assert_eq!(u64_at(&img, OPT + 24), 0x7e00_0000);
        assert_eq!(u64_at(&img, 0x2008), 0, "untouched between targets");
    }

    #[test]
    fn moving_there_and_back_is_the_identity() {
        let original = image();
        let mut img = original.clone();
        apply(&mut img, 0x1234_5000).unwrap();
        apply(&mut img, 0u64.wrapping_sub(0x1234_5000)).unwrap();
        assert_eq!(img, original);
    }

    #[test]
    fn bad_images_are_refused_unchanged() {
        let mut img = image();
        img[0] = b'X';
        assert_eq!(apply(&mut img, 1), Err(PeError::NotPe));

        let mut img = image();
        img[OPT] = 0x0b;
        img[OPT + 1] = 0x01;
        assert_eq!(apply(&mut img, 1), Err(PeError::NotPe32Plus));

        let mut img = image();
        let dir = OPT + 112 + 5 * 8;
        img[dir..dir + 8].fill(0);
        assert_eq!(apply(&mut img, 1), Err(PeError::NoRelocations));

        // A HIGHLOW (type 3) entry: refused, and nothing was patched before it.
        let mut img = image();
        img[0x2800 + 10..0x2800 + 12].copy_from_slice(&0x3010u16.to_le_bytes());
        let before = img.clone();
        assert_eq!(
            apply(&mut img, 1),
            Err(PeError::UnsupportedType {
                kind: 3,
                at: 0x280a
            })
        );
        assert_eq!(img, before);

        // A target past the end of the image.
        let mut img = image();
        img[0x2800..0x2804].copy_from_slice(&0x2ff8u32.to_le_bytes());
        assert_eq!(
            apply(&mut img, 1),
            Err(PeError::OutOfBounds { at: 0x2ff8 + 0x10 })
        );
    }
}
