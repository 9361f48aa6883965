//! Loading a static x86-64 ELF guest image into its partition's memory.
//!
//! Every `PT_LOAD` segment must lie inside the partition's regions and be
//! identity-linked (virtual = physical), since test guests run on identity
//! page tables. Any malformed image is an error naming what is wrong; the
//! image is never trusted for offsets or sizes.

use super::PartitionConfig;
use crate::mem::PhysMem;

const PT_LOAD: u32 = 1;
const EM_X86_64: u16 = 62;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Not a little-endian ELF64 x86-64 executable.
    NotElf64X86,
    /// A header or segment lies outside the file.
    Truncated,
    /// Segment `index` loads outside the partition's memory.
    OutsidePartition { index: usize, addr: u64, size: u64 },
    /// Segment `index` has virtual address != physical address.
    NotIdentityLinked { index: usize },
    /// No loadable segment, or the entry point is not inside one.
    BadEntry { entry: u64 },
}

/// Where the image went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub entry: u64,
    /// Lowest and highest (exclusive) loaded addresses.
    pub start: u64,
    pub end: u64,
    pub segments: usize,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, ElfError> {
    let s = b.get(off..off + 2).ok_or(ElfError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, ElfError> {
    let s = b.get(off..off + 4).ok_or(ElfError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, ElfError> {
    let s = b.get(off..off + 8).ok_or(ElfError::Truncated)?;
    let mut a = [0; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

struct Segment {
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

/// Validate `image` and copy its segments into `mem`; returns the entry point.
/// Nothing is written unless every segment checks out.
pub fn load(
    image: &[u8],
    partition: &PartitionConfig,
    mem: &mut impl PhysMem,
) -> Result<Loaded, ElfError> {
    if image.get(0..4) != Some(b"\x7fELF".as_slice())
        || image.get(4) != Some(&2) // ELFCLASS64
        || image.get(5) != Some(&1) // little endian
        || u16_at(image, 18)? != EM_X86_64
    {
        return Err(ElfError::NotElf64X86);
    }
    let entry = u64_at(image, 24)?;
    let phoff = u64_at(image, 32)? as usize;
    let phentsize = u16_at(image, 54)? as usize;
    let phnum = u16_at(image, 56)? as usize;
    if phentsize < 56 {
        return Err(ElfError::NotElf64X86);
    }
    let segment = |i: usize| -> Result<Option<Segment>, ElfError> {
        let base = phoff
            .checked_add(i.checked_mul(phentsize).ok_or(ElfError::Truncated)?)
            .ok_or(ElfError::Truncated)?;
        if u32_at(image, base)? != PT_LOAD {
            return Ok(None);
        }
        Ok(Some(Segment {
            offset: u64_at(image, base + 8)?,
            vaddr: u64_at(image, base + 16)?,
            paddr: u64_at(image, base + 24)?,
            filesz: u64_at(image, base + 32)?,
            memsz: u64_at(image, base + 40)?,
        }))
    };

    // Pass 1: check everything.
    let mut loaded = Loaded {
        entry,
        start: u64::MAX,
        end: 0,
        segments: 0,
    };
    let mut entry_ok = false;
    for i in 0..phnum {
        let Some(s) = segment(i)? else { continue };
        if s.memsz == 0 {
            continue;
        }
        if s.vaddr != s.paddr {
            return Err(ElfError::NotIdentityLinked { index: i });
        }
        let file_end = s.offset.checked_add(s.filesz).ok_or(ElfError::Truncated)?;
        if s.filesz > s.memsz || file_end > image.len() as u64 {
            return Err(ElfError::Truncated);
        }
        if !partition.owns(s.paddr, s.memsz) {
            return Err(ElfError::OutsidePartition {
                index: i,
                addr: s.paddr,
                size: s.memsz,
            });
        }
        entry_ok |= s.paddr <= entry && entry < s.paddr + s.memsz;
        loaded.start = loaded.start.min(s.paddr);
        loaded.end = loaded.end.max(s.paddr + s.memsz);
        loaded.segments += 1;
    }
    if !entry_ok {
        return Err(ElfError::BadEntry { entry });
    }
    // Pass 2: copy file bytes, zero the rest (.bss).
    let zeros = [0u8; 256];
    for i in 0..phnum {
        let Some(s) = segment(i)? else { continue };
        if s.memsz == 0 {
            continue;
        }
        let data = &image[s.offset as usize..(s.offset + s.filesz) as usize];
        mem.write(s.paddr, data);
        let mut at = s.paddr + s.filesz;
        let end = s.paddr + s.memsz;
        while at < end {
            let n = (end - at).min(zeros.len() as u64);
            mem.write(at, &zeros[..n as usize]);
            at += n;
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::fake::FakeMem;
    use crate::partition::plan::tests::test_partition;
    use std::vec::Vec;

    /// A minimal ELF64 with the given (paddr, vaddr, file bytes, memsz) segments.
    fn elf(entry: u64, segs: &[(u64, u64, &[u8], u64)]) -> Vec<u8> {
        let phoff = 64u64;
        let mut data_off = phoff + 56 * segs.len() as u64;
        let mut out = std::vec![0u8; 64];
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[6] = 1;
        out[16..18].copy_from_slice(&2u16.to_le_bytes());
        out[18..20].copy_from_slice(&62u16.to_le_bytes());
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[32..40].copy_from_slice(&phoff.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        let mut payload = Vec::new();
        for (paddr, vaddr, bytes, memsz) in segs {
            let mut ph = [0u8; 56];
            ph[0..4].copy_from_slice(&1u32.to_le_bytes());
            ph[8..16].copy_from_slice(&data_off.to_le_bytes());
            ph[16..24].copy_from_slice(&vaddr.to_le_bytes());
            ph[24..32].copy_from_slice(&paddr.to_le_bytes());
            ph[32..40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            ph[40..48].copy_from_slice(&memsz.to_le_bytes());
            out.extend_from_slice(&ph);
            payload.extend_from_slice(bytes);
            data_off += bytes.len() as u64;
        }
        out.extend_from_slice(&payload);
        out
    }

    #[test]
    fn loads_segments_and_zeroes_bss() {
        let p = test_partition(0x4000_0000, 0x100_0000);
        let mut mem = FakeMem::new(0x1_0000_0000);
        mem.write(0x4000_1000, &[0xaa; 16]); // stale bytes where .bss goes
        let img = elf(
            0x4000_0010,
            &[
                (0x4000_0000, 0x4000_0000, b"code", 0x10 + 4),
                (0x4000_1000, 0x4000_1000, b"d", 16),
            ],
        );
        let l = load(&img, &p, &mut mem).unwrap();
        assert_eq!(
            l,
            Loaded {
                entry: 0x4000_0010,
                start: 0x4000_0000,
                end: 0x4000_1010,
                segments: 2
            }
        );
        let mut buf = [0u8; 16];
        mem.read(0x4000_0000, &mut buf[..4]);
        assert_eq!(&buf[..4], b"code");
        mem.read(0x4000_1000, &mut buf);
        assert_eq!(buf[0], b'd');
        assert_eq!(&buf[1..], &[0u8; 15]);
    }

    #[test]
    fn refuses_images_outside_the_partition_or_malformed() {
        let p = test_partition(0x4000_0000, 0x100_0000);
        let mut mem = FakeMem::new(0x1_0000_0000);
        let outside = elf(0x4100_0000, &[(0x40ff_f000, 0x40ff_f000, b"x", 0x2000)]);
        assert_eq!(
            load(&outside, &p, &mut mem),
            Err(ElfError::OutsidePartition {
                index: 0,
                addr: 0x40ff_f000,
                size: 0x2000
            })
        );
        let not_identity = elf(
            0x4000_0000,
            &[(0x4000_0000, 0xffff_8000_0000_0000, b"x", 1)],
        );
        assert_eq!(
            load(&not_identity, &p, &mut mem),
            Err(ElfError::NotIdentityLinked { index: 0 })
        );
        let bad_entry = elf(0x5000_0000, &[(0x4000_0000, 0x4000_0000, b"x", 1)]);
        assert_eq!(
            load(&bad_entry, &p, &mut mem),
            Err(ElfError::BadEntry { entry: 0x5000_0000 })
        );
        let good = elf(0x4000_0000, &[(0x4000_0000, 0x4000_0000, b"abc", 3)]);
        assert_eq!(
            load(&good[..good.len() - 1], &p, &mut mem),
            Err(ElfError::Truncated)
        );
        assert_eq!(load(&good[..40], &p, &mut mem), Err(ElfError::Truncated));
        assert_eq!(
            load(b"MZ\x90\x00", &p, &mut mem),
            Err(ElfError::NotElf64X86)
        );
        // nothing was written by the refused loads
        let mut b = [0u8; 1];
        mem.read(0x40ff_f000, &mut b);
        assert_eq!(b, [0]);
    }
}
