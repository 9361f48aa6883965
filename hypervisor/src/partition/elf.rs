//! Loading a static x86-64 ELF guest image into its partition's memory.
//!
//! Two kinds of image are accepted:
//! - `ET_EXEC` linked at its partition's address: every `PT_LOAD` must be
//!   identity-linked (virtual = physical) and lie inside the partition;
//! - `ET_DYN` (static PIE, what `x86_64-unknown-none` builds by default):
//!   placed at the start of the partition's first region and relocated
//!   (`R_X86_64_RELATIVE` only), so one image serves several partitions.
//!
//! The image is never trusted for offsets or sizes: anything malformed is an
//! error naming what is wrong, and nothing is written unless every segment
//! and relocation checks out.

use super::PartitionConfig;
use crate::mem::{PhysMem, PAGE_SIZE};

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const DT_NULL: u64 = 0;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const DT_RELAENT: u64 = 9;
const DT_REL: u64 = 17;
const R_X86_64_NONE: u32 = 0;
const R_X86_64_RELATIVE: u32 = 8;
/// Most program headers read (the test guest has 9).
const MAX_PHDRS: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Not a little-endian ELF64 x86-64 executable or static PIE.
    NotElf64X86,
    /// A header, segment or table lies outside the file.
    Truncated,
    /// Too many program headers.
    TooManySegments,
    /// Segment `index` loads outside the partition's memory.
    OutsidePartition { index: usize, addr: u64, size: u64 },
    /// Segment `index` of an `ET_EXEC` image has virtual != physical address.
    NotIdentityLinked { index: usize },
    /// No loadable segment, or the entry point is not inside one.
    BadEntry { entry: u64 },
    /// A relocation of a kind the loader does not apply.
    UnsupportedRelocation { kind: u32 },
    /// A relocation target outside the loaded image.
    BadRelocation { offset: u64 },
}

/// Where the image went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// Entry point (relocated).
    pub entry: u64,
    /// Lowest and highest (exclusive) loaded addresses.
    pub start: u64,
    pub end: u64,
    pub segments: usize,
    pub relocations: usize,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, ElfError> {
    let s = b
        .get(off..off.checked_add(2).ok_or(ElfError::Truncated)?)
        .ok_or(ElfError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, ElfError> {
    let s = b
        .get(off..off.checked_add(4).ok_or(ElfError::Truncated)?)
        .ok_or(ElfError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, ElfError> {
    let s = b
        .get(off..off.checked_add(8).ok_or(ElfError::Truncated)?)
        .ok_or(ElfError::Truncated)?;
    let mut a = [0; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

#[derive(Clone, Copy, Default)]
struct Phdr {
    kind: u32,
    offset: u64,
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

/// The relocation table of a PIE: file offset and entry count.
struct Rela {
    offset: usize,
    count: usize,
}

/// Validate `image` and copy its segments into `mem` (see the module doc).
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
    let pie = match u16_at(image, 16)? {
        ET_EXEC => false,
        ET_DYN => true,
        _ => return Err(ElfError::NotElf64X86),
    };
    let entry = u64_at(image, 24)?;
    let phoff = u64_at(image, 32)? as usize;
    let phentsize = u16_at(image, 54)? as usize;
    let phnum = u16_at(image, 56)? as usize;
    if phentsize < 56 {
        return Err(ElfError::NotElf64X86);
    }
    if phnum > MAX_PHDRS {
        return Err(ElfError::TooManySegments);
    }
    let mut ph = [Phdr::default(); MAX_PHDRS];
    for (i, p) in ph.iter_mut().enumerate().take(phnum) {
        let base = phoff
            .checked_add(i * phentsize)
            .ok_or(ElfError::Truncated)?;
        *p = Phdr {
            kind: u32_at(image, base)?,
            offset: u64_at(image, base + 8)?,
            vaddr: u64_at(image, base + 16)?,
            paddr: u64_at(image, base + 24)?,
            filesz: u64_at(image, base + 32)?,
            memsz: u64_at(image, base + 40)?,
        };
    }
    let ph = &ph[..phnum];
    let loads = || {
        ph.iter()
            .enumerate()
            .filter(|(_, p)| p.kind == PT_LOAD && p.memsz > 0)
    };

    // Where the image goes: a PIE at the partition's first region.
    let bias = if pie {
        let low = loads()
            .map(|(_, p)| p.vaddr)
            .min()
            .ok_or(ElfError::BadEntry { entry })?;
        let first = partition
            .regions()
            .first()
            .ok_or(ElfError::OutsidePartition {
                index: 0,
                addr: low,
                size: 0,
            })?;
        first.start.wrapping_sub(low & !(PAGE_SIZE - 1))
    } else {
        0
    };

    // Pass 1: check everything.
    let mut loaded = Loaded {
        entry: entry.wrapping_add(bias),
        start: u64::MAX,
        end: 0,
        segments: 0,
        relocations: 0,
    };
    let mut entry_ok = false;
    for (i, s) in loads() {
        if !pie && s.vaddr != s.paddr {
            return Err(ElfError::NotIdentityLinked { index: i });
        }
        let file_end = s.offset.checked_add(s.filesz).ok_or(ElfError::Truncated)?;
        if s.filesz > s.memsz || file_end > image.len() as u64 {
            return Err(ElfError::Truncated);
        }
        let at = s.vaddr.wrapping_add(bias);
        if !partition.owns(at, s.memsz) {
            return Err(ElfError::OutsidePartition {
                index: i,
                addr: at,
                size: s.memsz,
            });
        }
        entry_ok |= s.vaddr <= entry && entry - s.vaddr < s.memsz;
        loaded.start = loaded.start.min(at);
        loaded.end = loaded.end.max(at + s.memsz);
        loaded.segments += 1;
    }
    if !entry_ok {
        return Err(ElfError::BadEntry { entry });
    }
    let rela = if pie { relocations(image, ph)? } else { None };
    if let Some(r) = &rela {
        for k in 0..r.count {
            let e = r.offset + k * 24;
            let (offset, info) = (u64_at(image, e)?, u64_at(image, e + 8)?);
            match info as u32 {
                R_X86_64_NONE => {}
                R_X86_64_RELATIVE => {
                    let target = offset.wrapping_add(bias);
                    let inside = loads().any(|(_, s)| {
                        s.vaddr <= offset
                            && offset.saturating_add(8) <= s.vaddr.saturating_add(s.memsz)
                    });
                    if !inside || !partition.owns(target, 8) {
                        return Err(ElfError::BadRelocation { offset });
                    }
                }
                kind => return Err(ElfError::UnsupportedRelocation { kind }),
            }
        }
    }

    // Pass 2: copy file bytes, zero the rest (.bss), relocate.
    let zeros = [0u8; 256];
    for (_, s) in loads() {
        let at = s.vaddr.wrapping_add(bias);
        mem.write(
            at,
            &image[s.offset as usize..(s.offset + s.filesz) as usize],
        );
        let mut z = at + s.filesz;
        let end = at + s.memsz;
        while z < end {
            let n = (end - z).min(zeros.len() as u64);
            mem.write(z, &zeros[..n as usize]);
            z += n;
        }
    }
    if let Some(r) = &rela {
        for k in 0..r.count {
            let e = r.offset + k * 24;
            let (offset, info, addend) = (
                u64_at(image, e)?,
                u64_at(image, e + 8)?,
                u64_at(image, e + 16)?,
            );
            if info as u32 == R_X86_64_RELATIVE {
                mem.write(
                    offset.wrapping_add(bias),
                    &addend.wrapping_add(bias).to_le_bytes(),
                );
                loaded.relocations += 1;
            }
        }
    }
    Ok(loaded)
}

/// Find the `DT_RELA` table through `PT_DYNAMIC`.
fn relocations(image: &[u8], ph: &[Phdr]) -> Result<Option<Rela>, ElfError> {
    let Some(dynamic) = ph.iter().find(|p| p.kind == PT_DYNAMIC) else {
        return Ok(None);
    };
    let (mut rela, mut size, mut ent) = (None, 0u64, 24u64);
    let mut off = dynamic.offset as usize;
    let end = dynamic.offset.saturating_add(dynamic.filesz) as usize;
    while off + 16 <= end {
        let (tag, val) = (u64_at(image, off)?, u64_at(image, off + 8)?);
        match tag {
            DT_NULL => break,
            DT_RELA => rela = Some(val),
            DT_RELASZ => size = val,
            DT_RELAENT => ent = val,
            DT_REL => return Err(ElfError::UnsupportedRelocation { kind: 0 }),
            _ => {}
        }
        off += 16;
    }
    let Some(vaddr) = rela else { return Ok(None) };
    if ent != 24 {
        return Err(ElfError::UnsupportedRelocation { kind: 0 });
    }
    // The table's virtual address → file offset, through its segment.
    let seg = ph
        .iter()
        .find(|p| {
            p.kind == PT_LOAD
                && p.vaddr <= vaddr
                && vaddr.saturating_add(size) <= p.vaddr.saturating_add(p.filesz)
        })
        .ok_or(ElfError::Truncated)?;
    let offset = seg.offset.saturating_add(vaddr - seg.vaddr) as usize;
    if offset.saturating_add(size as usize) > image.len() {
        return Err(ElfError::Truncated);
    }
    Ok(Some(Rela {
        offset,
        count: (size / 24) as usize,
    }))
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
                segments: 2,
                relocations: 0
            }
        );
        let mut buf = [0u8; 16];
        mem.read(0x4000_0000, &mut buf[..4]);
        assert_eq!(&buf[..4], b"code");
        mem.read(0x4000_1000, &mut buf);
        assert_eq!(buf[0], b'd');
        assert_eq!(&buf[1..], &[0u8; 15]);
    }

    /// A static PIE: one segment at vaddr 0 holding code at 0x10, a RELA
    /// table at 0x100 (one RELATIVE entry patching 0x200 with 0x10, plus
    /// one `kind` entry), a dynamic table at 0x180 and a pointer slot at 0x200.
    fn pie(kind: u32) -> Vec<u8> {
        let seg_off = 0x1000u64;
        let mut seg = std::vec![0u8; 0x208];
        seg[0x10..0x14].copy_from_slice(b"code");
        let mut rela = Vec::new();
        for (off, info, add) in [(0x200u64, 8u64, 0x10u64), (0x200, kind as u64, 0)] {
            rela.extend_from_slice(&off.to_le_bytes());
            rela.extend_from_slice(&info.to_le_bytes());
            rela.extend_from_slice(&add.to_le_bytes());
        }
        seg[0x100..0x130].copy_from_slice(&rela);
        let dynamic: [(u64, u64); 4] = [(7, 0x100), (8, 48), (9, 24), (0, 0)];
        for (i, (t, v)) in dynamic.iter().enumerate() {
            seg[0x180 + i * 16..0x188 + i * 16].copy_from_slice(&t.to_le_bytes());
            seg[0x188 + i * 16..0x190 + i * 16].copy_from_slice(&v.to_le_bytes());
        }
        let mut out = std::vec![0u8; seg_off as usize];
        out[0..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        out[16..18].copy_from_slice(&3u16.to_le_bytes());
        out[18..20].copy_from_slice(&62u16.to_le_bytes());
        out[24..32].copy_from_slice(&0x10u64.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&2u16.to_le_bytes());
        let phdr = |kind: u32, off: u64, vaddr: u64, size: u64| {
            let mut ph = [0u8; 56];
            ph[0..4].copy_from_slice(&kind.to_le_bytes());
            ph[8..16].copy_from_slice(&off.to_le_bytes());
            ph[16..24].copy_from_slice(&vaddr.to_le_bytes());
            ph[24..32].copy_from_slice(&vaddr.to_le_bytes());
            ph[32..40].copy_from_slice(&size.to_le_bytes());
            ph[40..48].copy_from_slice(&size.to_le_bytes());
            ph
        };
        out[64..120].copy_from_slice(&phdr(1, seg_off, 0, seg.len() as u64));
        out[120..176].copy_from_slice(&phdr(2, seg_off + 0x180, 0x180, 64));
        out.extend_from_slice(&seg);
        out
    }

    #[test]
    fn static_pie_is_placed_at_the_partition_and_relocated() {
        let mut mem = FakeMem::new(0x1_0000_0000);
        for base in [0x4000_0000u64, 0x4100_0000] {
            let p = test_partition(base, 0x100_0000);
            let l = load(&pie(0), &p, &mut mem).unwrap();
            assert_eq!((l.entry, l.start, l.relocations), (base + 0x10, base, 1));
            let mut ptr = [0u8; 8];
            mem.read(base + 0x200, &mut ptr);
            assert_eq!(u64::from_le_bytes(ptr), base + 0x10);
            let mut code = [0u8; 4];
            mem.read(base + 0x10, &mut code);
            assert_eq!(&code, b"code");
        }
        let p = test_partition(0x4200_0000, 0x100_0000);
        assert_eq!(
            load(&pie(1), &p, &mut mem),
            Err(ElfError::UnsupportedRelocation { kind: 1 })
        );
        let mut ptr = [0u8; 8];
        mem.read(0x4200_0200, &mut ptr);
        assert_eq!(ptr, [0; 8], "nothing written for a refused image");
    }

    #[test]
    fn corrupted_images_never_panic_nor_escape_the_partition() {
        let p = test_partition(0x4000_0000, 0x100_0000);
        let good = pie(0);
        // Headers, program headers, the RELA table and the dynamic table.
        for i in (0..0x100).chain(0x1100..0x11c0) {
            for v in [0x00, 0xff, 0x80, 0x41] {
                let mut img = good.clone();
                img[i] = v;
                let mut mem = FakeMem::new(0x1_0000_0000);
                if let Ok(l) = load(&img, &p, &mut mem) {
                    assert!(p.owns(l.start, l.end - l.start), "byte {i} = {v:#x}: {l:?}");
                    assert!(l.start <= l.entry && l.entry < l.end);
                }
            }
        }
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
