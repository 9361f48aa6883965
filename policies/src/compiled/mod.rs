//! The compiled policy: a compact, checksummed, little-endian binary form
//! that the hypervisor decodes in place, without an allocator.
//!
//! [`CompiledPolicy::decode`] checks the whole blob once (magic, version,
//! length, CRC-32, every section bound, string, enum code and index) and
//! never panics on any input; after that the accessors cannot fail. Byte
//! layout: [`mod@format`] and docs/policy.md.

mod crc32;
mod error;
pub mod format;
mod reader;
mod view;

pub use crc32::{crc32, Crc32};
pub use error::DecodeError;
pub use view::{
    ClassCounts, CpuEntry, GpuInfo, MachineCpu, MachineView, MemoryView, PartitionView, PciDevice,
    Records, VramView,
};

use crate::groups::GroupSet;
use crate::limits::{HV_MEMORY_ALIGN, MAX_PARTITIONS, PAGE_SIZE, PHYS_ADDR_LIMIT};
use crate::types::{CoreClass, MemoryType, Role};
use format::*;
use reader::{range_at, u16_at, u32_at, u64_at, u8_at};

/// Where one section lies in the blob.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Section {
    offset: usize,
    count: usize,
    size: usize,
}

/// A decoded (validated) compiled policy borrowing the blob it came from.
#[derive(Clone, Copy, Debug)]
pub struct CompiledPolicy<'a> {
    bytes: &'a [u8],
    sections: [Section; SECTION_COUNT],
    minor: u16,
}

/// Checksum of a blob with its CRC field taken as zero.
pub fn checksum(bytes: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(bytes.get(..HDR_CRC).unwrap_or(bytes));
    crc.update(&[0; 4]);
    crc.update(bytes.get(HDR_CRC + 4..).unwrap_or(&[]));
    crc.finish()
}

impl<'a> CompiledPolicy<'a> {
    /// Checks and wraps a compiled policy.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let actual = bytes.len();
        if actual < HEADER_LEN {
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                actual,
            });
        }
        if bytes.get(HDR_MAGIC..HDR_MAGIC + 8) != Some(&MAGIC[..]) {
            return Err(DecodeError::BadMagic);
        }
        let major = u16_at(bytes, HDR_MAJOR).unwrap_or(0);
        let minor = u16_at(bytes, HDR_MINOR).unwrap_or(0);
        if major != VERSION_MAJOR {
            return Err(DecodeError::UnsupportedVersion { major, minor });
        }
        let stated = u32_at(bytes, HDR_TOTAL_LEN).unwrap_or(0) as usize;
        if stated > actual || stated < HEADER_LEN {
            return Err(DecodeError::Truncated {
                needed: stated.max(HEADER_LEN),
                actual,
            });
        }
        if stated < actual {
            return Err(DecodeError::TrailingBytes { stated, actual });
        }
        let stored = u32_at(bytes, HDR_CRC).unwrap_or(0);
        let computed = checksum(bytes);
        if stored != computed {
            return Err(DecodeError::BadChecksum { stored, computed });
        }

        let count = u16_at(bytes, HDR_SECTION_COUNT).unwrap_or(0) as usize;
        if count < SECTION_COUNT {
            return Err(DecodeError::TooFewSections { count });
        }
        let table_end = HEADER_LEN + count * SECTION_ENTRY_LEN;
        if table_end > actual {
            return Err(DecodeError::Truncated {
                needed: table_end,
                actual,
            });
        }
        let mut sections = [Section::default(); SECTION_COUNT];
        for (i, section) in sections.iter_mut().enumerate() {
            let entry = HEADER_LEN + i * SECTION_ENTRY_LEN;
            let read = |off| u32_at(bytes, entry + off).map(|v| v as usize).unwrap_or(0);
            let s = Section {
                offset: read(0),
                count: read(4),
                size: read(8),
            };
            if s.size < RECORD_SIZE[i] {
                return Err(DecodeError::RecordTooSmall {
                    section: i,
                    size: s.size,
                });
            }
            let end = s
                .count
                .checked_mul(s.size)
                .and_then(|len| len.checked_add(s.offset));
            match end {
                Some(end) if s.offset >= table_end && end <= actual => *section = s,
                _ => return Err(DecodeError::SectionOutOfBounds { section: i }),
            }
        }
        let policy = CompiledPolicy {
            bytes,
            sections,
            minor,
        };
        policy.check()?;
        Ok(policy)
    }

    /// `(major, minor)` of the blob's format.
    pub fn version(&self) -> (u16, u16) {
        (VERSION_MAJOR, self.minor)
    }

    /// The raw bytes this policy was decoded from.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn machine(&self) -> MachineView<'a> {
        MachineView::new(*self)
    }

    /// Partitions in policy order.
    pub fn partitions(&self) -> Records<'a, PartitionView<'a>> {
        Records::new(*self, 0, self.count(SEC_PARTITIONS), PartitionView::new)
    }

    pub fn partition_count(&self) -> usize {
        self.count(SEC_PARTITIONS)
    }

    pub fn partition(&self, index: usize) -> Option<PartitionView<'a>> {
        (index < self.partition_count()).then(|| PartitionView::new(*self, index))
    }

    pub fn partition_by_name(&self, name: &str) -> Option<PartitionView<'a>> {
        self.partitions().find(|p| p.name() == name)
    }

    /// All VRAM regions, in card order.
    pub fn vram_regions(&self) -> Records<'a, VramView<'a>> {
        Records::new(*self, 0, self.count(SEC_VRAM), VramView::new)
    }

    // --- internals shared with the views ---

    fn count(&self, section: usize) -> usize {
        self.sections.get(section).map_or(0, |s| s.count)
    }

    /// Record `index` of `section`; empty (reads give defaults) when out of
    /// range, which `check` has already ruled out.
    fn record(&self, section: usize, index: usize) -> &'a [u8] {
        let Some(s) = self.sections.get(section) else {
            return &[];
        };
        if index >= s.count {
            return &[];
        }
        let start = s.offset + index * s.size;
        self.bytes.get(start..start + s.size).unwrap_or(&[])
    }

    /// The string a string reference at `off` in `rec` names: `Ok(None)` when
    /// absent, `Err` when it points outside the string section or is not UTF-8.
    fn string(&self, rec: &[u8], off: usize) -> Result<Option<&'a str>, ()> {
        let (Some(start), Some(len)) = (u32_at(rec, off), u32_at(rec, off + 4)) else {
            return Err(());
        };
        if start == STR_ABSENT && len == 0 {
            return Ok(None);
        }
        let strings = self.sections[SEC_STRINGS];
        let table = self
            .bytes
            .get(strings.offset..strings.offset + strings.count)
            .ok_or(())?;
        let (start, len) = (start as usize, len as usize);
        let bytes = table
            .get(start..start.checked_add(len).ok_or(())?)
            .ok_or(())?;
        core::str::from_utf8(bytes).map(Some).map_err(|_| ())
    }

    /// A `(first, count)` range at `off` in `rec`, if it lies inside `section`.
    fn sub_range(&self, rec: &[u8], off: usize, section: usize) -> Option<(usize, usize)> {
        let (first, count) = range_at(rec, off)?;
        (first.checked_add(count)? <= self.count(section)).then_some((first, count))
    }

    /// Regions are non-empty, page aligned, inside the physical address space
    /// and pairwise disjoint: isolation rests on this, so it is checked again
    /// here rather than trusted (quadratic, but a policy has a handful).
    fn check_regions(&self) -> Result<(), DecodeError> {
        let span = |i: usize| {
            let rec = self.record(SEC_MEMORY, i);
            let base = u64_at(rec, R_BASE).unwrap_or(u64::MAX);
            let size = u64_at(rec, R_SIZE).unwrap_or(0);
            (base, base.checked_add(size), size)
        };
        for i in 0..self.count(SEC_MEMORY) {
            let (base, end, size) = span(i);
            let aligned = base % PAGE_SIZE == 0 && size % PAGE_SIZE == 0;
            let Some(end) = end.filter(|&e| size > 0 && aligned && e <= PHYS_ADDR_LIMIT) else {
                return Err(DecodeError::BadRegion { index: i });
            };
            for j in 0..i {
                let (other_base, other_end, _) = span(j);
                if base < other_end.unwrap_or(0) && other_base < end {
                    return Err(DecodeError::Overlap {
                        first: j,
                        second: i,
                    });
                }
            }
        }
        // The hypervisor's own memory: aligned, in range, clear of every region (the
        // regions are sane by now).
        if let Some((hv_base, hv_size)) = self.machine().hypervisor_memory() {
            let aligned = hv_base % HV_MEMORY_ALIGN == 0 && hv_size % HV_MEMORY_ALIGN == 0;
            let Some(hv_end) = hv_base
                .checked_add(hv_size)
                .filter(|&e| aligned && e <= PHYS_ADDR_LIMIT)
            else {
                return Err(DecodeError::BadHypervisorMemory);
            };
            for i in 0..self.count(SEC_MEMORY) {
                let (base, end, _) = span(i);
                if base < hv_end && hv_base < end.unwrap_or(0) {
                    return Err(DecodeError::HypervisorMemoryOverlap { index: i });
                }
            }
        }
        Ok(())
    }

    /// Everything `decode` promises beyond the section bounds.
    fn check(&self) -> Result<(), DecodeError> {
        let machines = self.count(SEC_MACHINE);
        if machines != 1 {
            return Err(DecodeError::MachineCount { count: machines });
        }
        let m = self.record(SEC_MACHINE, 0);
        let flags = u32_at(m, M_FLAGS).unwrap_or(u32::MAX);
        let string = |section, index, rec: &[u8], off, required: bool| match self.string(rec, off) {
            Err(()) => Err(DecodeError::BadString { section, index }),
            Ok(None) if required => Err(DecodeError::MissingString { section, index }),
            Ok(_) => Ok(()),
        };
        if flags & !MF_ALL != 0 {
            return Err(DecodeError::BadFlags {
                section: SEC_MACHINE,
                index: 0,
            });
        }
        string(SEC_MACHINE, 0, m, M_NAME, true)?;
        string(SEC_MACHINE, 0, m, M_GPU_NAME, flags & MF_GPU != 0)?;

        for i in 0..self.count(SEC_MACHINE_CPUS) {
            let rec = self.record(SEC_MACHINE_CPUS, i);
            if u8_at(rec, MC_CLASS)
                .and_then(CoreClass::from_code)
                .is_none()
            {
                return Err(DecodeError::BadCode {
                    section: SEC_MACHINE_CPUS,
                    index: i,
                });
            }
        }
        for i in 0..self.count(SEC_MACHINE_PCI) {
            string(
                SEC_MACHINE_PCI,
                i,
                self.record(SEC_MACHINE_PCI, i),
                MP_NAME,
                false,
            )?;
        }

        let partitions = self.count(SEC_PARTITIONS);
        if partitions > MAX_PARTITIONS {
            return Err(DecodeError::TooManyPartitions { count: partitions });
        }
        for i in 0..partitions {
            let rec = self.record(SEC_PARTITIONS, i);
            let sec = SEC_PARTITIONS;
            string(sec, i, rec, P_NAME, true)?;
            string(sec, i, rec, P_IMAGE, false)?;
            string(sec, i, rec, P_CMDLINE, false)?;
            let Some(role) = u8_at(rec, P_ROLE).and_then(Role::from_code) else {
                return Err(DecodeError::BadCode {
                    section: sec,
                    index: i,
                });
            };
            if rec.len() >= P_BOOT + STR_REF_LEN {
                string(sec, i, rec, P_BOOT, false)?;
                // The hypervisor builds a UEFI file path from it: re-check the rule.
                if let Ok(Some(path)) = self.string(rec, P_BOOT) {
                    if role != Role::Primary || crate::boot::check_boot_path(path).is_err() {
                        return Err(DecodeError::BadBoot { index: i });
                    }
                }
            }
            let flags = u8_at(rec, P_FLAGS).unwrap_or(u8::MAX);
            let groups = u32_at(rec, P_GROUPS).and_then(GroupSet::from_bits);
            if flags & !PF_ALL != 0 || groups.is_none() {
                return Err(DecodeError::BadFlags {
                    section: sec,
                    index: i,
                });
            }
            for (off, target) in [(P_CPUS, SEC_CPUS), (P_MEMORY, SEC_MEMORY), (P_PCI, SEC_PCI)] {
                if self.sub_range(rec, off, target).is_none() {
                    return Err(DecodeError::IndexOutOfRange {
                        section: sec,
                        index: i,
                    });
                }
            }
        }
        for i in 0..self.count(SEC_CPUS) {
            let rec = self.record(SEC_CPUS, i);
            let ok = match u8_at(rec, C_KIND) {
                Some(CPU_KIND_APIC_ID) => true,
                Some(CPU_KIND_CLASS_COUNT) => {
                    u8_at(rec, C_CLASS).and_then(CoreClass::from_code).is_some()
                }
                _ => false,
            };
            if !ok {
                return Err(DecodeError::BadCode {
                    section: SEC_CPUS,
                    index: i,
                });
            }
        }
        for i in 0..self.count(SEC_MEMORY) {
            let rec = self.record(SEC_MEMORY, i);
            if u8_at(rec, R_TYPE).and_then(MemoryType::from_code).is_none() {
                return Err(DecodeError::BadCode {
                    section: SEC_MEMORY,
                    index: i,
                });
            }
            if self.sub_range(rec, R_SHARED, SEC_SHARED_WITH).is_none() {
                return Err(DecodeError::IndexOutOfRange {
                    section: SEC_MEMORY,
                    index: i,
                });
            }
        }
        self.check_regions()?;
        for i in 0..self.count(SEC_SHARED_WITH) {
            let target = u16_at(self.record(SEC_SHARED_WITH, i), 0).map_or(usize::MAX, usize::from);
            if target >= partitions {
                return Err(DecodeError::IndexOutOfRange {
                    section: SEC_SHARED_WITH,
                    index: i,
                });
            }
        }
        for i in 0..self.count(SEC_VRAM) {
            let rec = self.record(SEC_VRAM, i);
            string(SEC_VRAM, i, rec, V_NAME, true)?;
            let owner = u16_at(rec, V_OWNER).map_or(usize::MAX, usize::from);
            if owner >= partitions {
                return Err(DecodeError::IndexOutOfRange {
                    section: SEC_VRAM,
                    index: i,
                });
            }
        }
        Ok(())
    }
}
