//! UEFI memory map, reduced to plain records and summarised for the console.
//!
//! Pure: the UEFI side converts `MemoryDescriptor`s into [`MapEntry`]s (see `uefi_env`), and
//! everything here runs in host tests over recorded maps.

use core::fmt::{self, Write};

/// Size of a UEFI page.
pub const PAGE_SIZE: u64 = 4096;

/// UEFI memory types (UEFI 2.10 §7.2, `EFI_MEMORY_TYPE`) that the platform layer names.
pub mod ty {
    pub const RESERVED: u32 = 0;
    pub const LOADER_CODE: u32 = 1;
    pub const LOADER_DATA: u32 = 2;
    pub const BOOT_SERVICES_CODE: u32 = 3;
    pub const BOOT_SERVICES_DATA: u32 = 4;
    pub const RUNTIME_SERVICES_CODE: u32 = 5;
    pub const RUNTIME_SERVICES_DATA: u32 = 6;
    pub const CONVENTIONAL: u32 = 7;
    pub const UNUSABLE: u32 = 8;
    pub const ACPI_RECLAIM: u32 = 9;
    pub const ACPI_NVS: u32 = 10;
    pub const MMIO: u32 = 11;
    pub const MMIO_PORT_SPACE: u32 = 12;
    pub const PAL_CODE: u32 = 13;
    pub const PERSISTENT: u32 = 14;
    pub const UNACCEPTED: u32 = 15;
    /// Number of spec-defined types; anything at or above is OEM/OS-specific.
    pub const COUNT: usize = 16;
}

/// Short readable name of a UEFI memory type.
pub fn type_name(t: u32) -> &'static str {
    const NAMES: [&str; ty::COUNT] = [
        "reserved",
        "loader-code",
        "loader-data",
        "boot-code",
        "boot-data",
        "runtime-code",
        "runtime-data",
        "conventional",
        "unusable",
        "acpi-reclaim",
        "acpi-nvs",
        "mmio",
        "mmio-port",
        "pal-code",
        "persistent",
        "unaccepted",
    ];
    NAMES.get(t as usize).copied().unwrap_or("oem/os-defined")
}

/// One memory map descriptor, reduced to what the hypervisor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntry {
    /// `EFI_MEMORY_TYPE` value (see [`ty`]).
    pub ty: u32,
    /// Physical start address (page aligned).
    pub base: u64,
    /// Length in 4 KiB pages.
    pub pages: u64,
}

impl MapEntry {
    pub const fn new(ty: u32, base: u64, pages: u64) -> Self {
        Self { ty, base, pages }
    }

    /// One past the last byte (saturating, so a corrupt descriptor cannot wrap).
    pub fn end(&self) -> u64 {
        self.base
            .saturating_add(self.pages.saturating_mul(PAGE_SIZE))
    }

    /// Whether this is RAM that a later OS may use (free, or firmware boot-time memory).
    pub fn is_ram(&self) -> bool {
        matches!(
            self.ty,
            ty::LOADER_CODE
                | ty::LOADER_DATA
                | ty::BOOT_SERVICES_CODE
                | ty::BOOT_SERVICES_DATA
                | ty::RUNTIME_SERVICES_CODE
                | ty::RUNTIME_SERVICES_DATA
                | ty::CONVENTIONAL
                | ty::ACPI_RECLAIM
                | ty::ACPI_NVS
                | ty::PERSISTENT
        )
    }
}

/// Per-type totals for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeTotal {
    pub entries: u32,
    pub pages: u64,
}

/// A free (conventional) region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub base: u64,
    pub pages: u64,
}

impl Region {
    pub fn end(&self) -> u64 {
        self.base
            .saturating_add(self.pages.saturating_mul(PAGE_SIZE))
    }
}

/// Counts by type, the largest free region and the top of RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryMapSummary {
    /// Totals for spec types 0..16; index [`ty::COUNT`] collects OEM/OS types.
    pub by_type: [TypeTotal; ty::COUNT + 1],
    pub entries: u32,
    /// Largest run of physically adjacent conventional entries.
    pub largest_free: Option<Region>,
    /// End of the highest RAM entry (the identity map must cover at least this).
    pub ram_top: u64,
    /// End of the highest entry of any type.
    pub map_top: u64,
}

impl MemoryMapSummary {
    /// Summarise entries given in any order.
    pub fn from_entries<I: IntoIterator<Item = MapEntry>>(entries: I) -> Self {
        let mut s = MemoryMapSummary {
            by_type: [TypeTotal::default(); ty::COUNT + 1],
            entries: 0,
            largest_free: None,
            ram_top: 0,
            map_top: 0,
        };
        let mut sorted_free = FreeRuns::default();
        for e in entries {
            s.entries += 1;
            let slot = (e.ty as usize).min(ty::COUNT);
            s.by_type[slot].entries += 1;
            s.by_type[slot].pages += e.pages;
            s.map_top = s.map_top.max(e.end());
            if e.is_ram() {
                s.ram_top = s.ram_top.max(e.end());
            }
            if e.ty == ty::CONVENTIONAL {
                sorted_free.add(e);
            }
        }
        s.largest_free = sorted_free.largest;
        s
    }

    /// Total pages of one type.
    pub fn pages_of(&self, t: u32) -> u64 {
        self.by_type[(t as usize).min(ty::COUNT)].pages
    }

    /// Pages a later OS can use as RAM (free plus boot-time memory).
    pub fn usable_pages(&self) -> u64 {
        [
            ty::CONVENTIONAL,
            ty::LOADER_CODE,
            ty::LOADER_DATA,
            ty::BOOT_SERVICES_CODE,
            ty::BOOT_SERVICES_DATA,
        ]
        .iter()
        .map(|&t| self.pages_of(t))
        .sum()
    }
}

/// Finds the largest run of adjacent conventional entries without allocating: entries are
/// usually sorted, so runs are merged while they stay contiguous.
#[derive(Default)]
struct FreeRuns {
    current: Option<Region>,
    largest: Option<Region>,
}

impl FreeRuns {
    fn add(&mut self, e: MapEntry) {
        let run = match self.current {
            Some(r) if r.end() == e.base => Region {
                base: r.base,
                pages: r.pages + e.pages,
            },
            _ => Region {
                base: e.base,
                pages: e.pages,
            },
        };
        self.current = Some(run);
        if self.largest.is_none_or(|l| run.pages > l.pages) {
            self.largest = Some(run);
        }
    }
}

/// Whether `[base, base + size)` lies entirely in conventional (free) memory, allowing it to
/// span adjacent conventional descriptors. Used to check that a partition's region can be
/// claimed with `AllocatePages(AllocateAddress)`.
pub fn is_free_range(entries: &[MapEntry], base: u64, size: u64) -> bool {
    let Some(end) = base.checked_add(size) else {
        return false;
    };
    if size == 0 {
        return false;
    }
    // Walk forward from `base`, each step needing a conventional descriptor that covers `cursor`.
    let mut cursor = base;
    while cursor < end {
        match entries
            .iter()
            .find(|e| e.ty == ty::CONVENTIONAL && e.base <= cursor && cursor < e.end())
        {
            Some(e) => cursor = e.end(),
            None => return false,
        }
    }
    true
}

/// Whether `[base, base + size)` is RAM of any kind (including memory the firmware still uses).
pub fn is_ram_range(entries: &[MapEntry], base: u64, size: u64) -> bool {
    let Some(end) = base.checked_add(size) else {
        return false;
    };
    let mut cursor = base;
    while cursor < end {
        match entries
            .iter()
            .find(|e| e.is_ram() && e.base <= cursor && cursor < e.end())
        {
            Some(e) => cursor = e.end(),
            None => return false,
        }
    }
    size != 0
}

/// `pages` as MiB with one decimal, in integer arithmetic.
pub struct Mib(pub u64);

impl fmt::Display for Mib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pages = self.0;
        // 256 pages per MiB. Formatted into a buffer first so width/alignment apply.
        let mut buf = StackStr::<32>::new();
        write!(buf, "{}.{}", pages / 256, (pages % 256) * 10 / 256)?;
        f.pad(buf.as_str())
    }
}

/// A tiny fixed-capacity string for formatting without allocation.
struct StackStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackStr<N> {
    fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Write for StackStr<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self
            .len
            .checked_add(s.len())
            .filter(|&e| e <= N)
            .ok_or(fmt::Error)?;
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl fmt::Display for MemoryMapSummary {
    /// Several lines; the console prefixes each one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "memory map: {} entries, usable RAM {} MiB, RAM top {:#x}, map top {:#x}",
            self.entries,
            Mib(self.usable_pages()),
            self.ram_top,
            self.map_top
        )?;
        writeln!(
            f,
            "  {:<16} {:>7} {:>10} {:>10}",
            "type", "entries", "pages", "MiB"
        )?;
        for (i, t) in self.by_type.iter().enumerate() {
            if t.entries == 0 {
                continue;
            }
            writeln!(
                f,
                "  {:<16} {:>7} {:>10} {:>10}",
                type_name(i as u32),
                t.entries,
                t.pages,
                Mib(t.pages)
            )?;
        }
        match self.largest_free {
            Some(r) => write!(
                f,
                "largest free region: {:#x}..{:#x} ({} pages, {} MiB)",
                r.base,
                r.end(),
                r.pages,
                Mib(r.pages)
            ),
            None => write!(f, "largest free region: none"),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    /// Shape of OVMF's map at -m 256M (abridged, in firmware order).
    const OVMF_256M: &[MapEntry] = &[
        MapEntry::new(ty::BOOT_SERVICES_CODE, 0x0, 1),
        MapEntry::new(ty::CONVENTIONAL, 0x1000, 0x9f),
        MapEntry::new(ty::CONVENTIONAL, 0x10_0000, 0x700),
        MapEntry::new(ty::ACPI_NVS, 0x80_0000, 8),
        MapEntry::new(ty::CONVENTIONAL, 0x80_8000, 0x8),
        MapEntry::new(ty::CONVENTIONAL, 0x81_0000, 0xf0),
        MapEntry::new(ty::LOADER_CODE, 0x90_0000, 0x20),
        MapEntry::new(ty::CONVENTIONAL, 0x92_0000, 0xe000),
        MapEntry::new(ty::CONVENTIONAL, 0xe92_0000, 0x100),
        MapEntry::new(ty::BOOT_SERVICES_DATA, 0xea2_0000, 0x1000),
        MapEntry::new(ty::RUNTIME_SERVICES_DATA, 0xfa2_0000, 0x100),
        MapEntry::new(ty::ACPI_RECLAIM, 0xfb2_0000, 0x10),
        MapEntry::new(ty::RESERVED, 0xfb3_0000, 0x4d0),
        MapEntry::new(ty::MMIO, 0xffc0_0000, 0x400),
    ];

    #[test]
    fn totals_by_type_and_tops() {
        let s = MemoryMapSummary::from_entries(OVMF_256M.iter().copied());
        assert_eq!(s.entries, 14);
        assert_eq!(
            s.pages_of(ty::CONVENTIONAL),
            0x9f + 0x700 + 0x8 + 0xf0 + 0xe000 + 0x100
        );
        assert_eq!(s.by_type[ty::CONVENTIONAL as usize].entries, 6);
        assert_eq!(s.pages_of(ty::MMIO), 0x400);
        assert_eq!(s.ram_top, 0xfb3_0000, "reserved and MMIO are not RAM");
        assert_eq!(s.map_top, 0x1_0000_0000);
    }

    #[test]
    fn largest_free_region_merges_adjacent_conventional_entries() {
        let s = MemoryMapSummary::from_entries(OVMF_256M.iter().copied());
        // 0x92_0000 + 0xe000 pages = 0xe92_0000, which the next entry continues.
        assert_eq!(
            s.largest_free,
            Some(Region {
                base: 0x92_0000,
                pages: 0xe100
            })
        );
        // 0x80_8000 (8 pages) runs into 0x81_0000 too, but that run is small.
        let none = MemoryMapSummary::from_entries([MapEntry::new(ty::MMIO, 0, 1)]);
        assert_eq!(none.largest_free, None);
    }

    #[test]
    fn oem_types_are_collected_not_dropped() {
        let s = MemoryMapSummary::from_entries([
            MapEntry::new(0x7000_0001, 0x1000, 3),
            MapEntry::new(0x8000_0000, 0x4000, 2),
        ]);
        assert_eq!(
            s.by_type[ty::COUNT],
            TypeTotal {
                entries: 2,
                pages: 5
            }
        );
        assert!(s.to_string().contains("oem/os-defined"));
    }

    #[test]
    fn summary_text() {
        let s = MemoryMapSummary::from_entries(OVMF_256M.iter().copied());
        let text = s.to_string();
        let mut lines = text.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("memory map: 14 entries, usable RAM "));
        assert!(
            text.contains("  conventional           6      59799      233.5"),
            "{text}"
        );
        assert!(
            text.contains("  mmio                   1       1024        4.0"),
            "{text}"
        );
        assert!(
            text.ends_with("largest free region: 0x920000..0xea20000 (57600 pages, 225.0 MiB)"),
            "{text}"
        );
        assert!(
            !text.contains("persistent"),
            "types without entries are not listed"
        );
    }

    #[test]
    fn free_and_ram_ranges() {
        let m = OVMF_256M;
        assert!(is_free_range(m, 0x100_0000, 0x10_0000));
        // Spans the two adjacent conventional entries at 0xe92_0000.
        assert!(is_free_range(m, 0xe80_0000, 0x20_0000));
        // Runs into boot-services data.
        assert!(!is_free_range(m, 0xe80_0000, 0x30_0000));
        // Crosses the ACPI NVS hole at 0x80_0000.
        assert!(!is_free_range(m, 0x70_0000, 0x20_0000));
        assert!(!is_free_range(m, 0x100_0000, 0));
        assert!(
            !is_free_range(m, u64::MAX - 0xfff, 0x2000),
            "overflow is rejected"
        );
        assert!(is_ram_range(m, 0xe80_0000, 0x30_0000));
        assert!(!is_ram_range(m, 0xfb3_0000, 0x1000));
    }

    #[test]
    fn mib_formatting() {
        assert_eq!(Mib(256).to_string(), "1.0");
        assert_eq!(Mib(384).to_string(), "1.5");
        assert_eq!(Mib(0).to_string(), "0.0");
        assert_eq!(Mib(65536).to_string(), "256.0");
        assert_eq!(
            std::format!("[{:>6}]", Mib(384)),
            "[   1.5]",
            "width applies"
        );
    }
}
