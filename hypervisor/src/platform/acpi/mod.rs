//! ACPI discovery through the `acpi` crate: the CPUs and I/O APICs of the MADT, and the
//! IOMMU tables (DMAR on Intel, IVRS on AMD) when present.
//!
//! [`discover`] is generic over the crate's `AcpiHandler`, so host tests run it on synthetic
//! tables in a buffer (see `fixture`); on the machine it uses [`IdentityMapped`], since the
//! UEFI environment (and later the hypervisor's own page tables) maps physical memory 1:1.

mod bytes;
pub mod dmar;
#[cfg(test)]
mod fixture;
pub mod ivrs;
pub mod madt_hide;

use ::acpi::madt::{Madt, MadtEntry};
use ::acpi::sdt::{SdtHeader, Signature};
use ::acpi::{AcpiError, AcpiHandler, AcpiTable, AcpiTables, PhysicalMapping};
use alloc::vec::Vec;
use core::fmt::{self, Write};
use core::ptr::NonNull;

/// One processor the MADT lists (Local APIC or Local x2APIC entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MadtCpu {
    /// ACPI processor UID.
    pub uid: u32,
    pub apic_id: u32,
    /// Flags bit 0: usable now.
    pub enabled: bool,
    /// Flags bit 1: may be brought online later (hot-plug).
    pub online_capable: bool,
    /// Listed through a Local x2APIC entry.
    pub x2apic: bool,
}

/// One I/O APIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApic {
    pub id: u8,
    pub address: u32,
    pub gsi_base: u32,
}

/// What ACPI tells the hypervisor about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiSummary {
    /// ACPI revision from the RSDP (0 = ACPI 1.0 with an RSDT, otherwise XSDT).
    pub revision: u8,
    /// OEM ID of the MADT (or of the first table).
    pub oem_id: [u8; 6],
    /// Signatures of all tables the root table lists, in order.
    pub tables: Vec<[u8; 4]>,
    pub local_apic_address: u32,
    /// MADT flags bit 0: legacy 8259 PICs present.
    pub pcat_compat: bool,
    pub cpus: Vec<MadtCpu>,
    pub io_apics: Vec<IoApic>,
    pub dmar: Option<dmar::DmarInfo>,
    pub ivrs: Option<ivrs::IvrsInfo>,
    /// Physical address and length of the MADT (for [`madt_hide`]).
    pub madt_at: (u64, usize),
}

impl AcpiSummary {
    /// CPUs that are usable now.
    pub fn enabled_cpus(&self) -> impl Iterator<Item = &MadtCpu> {
        self.cpus.iter().filter(|c| c.enabled)
    }

    /// The enabled CPU with this APIC ID, if any.
    pub fn cpu_by_apic_id(&self, apic_id: u32) -> Option<&MadtCpu> {
        self.enabled_cpus().find(|c| c.apic_id == apic_id)
    }
}

/// Why ACPI discovery failed.
#[derive(Debug)]
pub enum AcpiFailure {
    /// The firmware's configuration table has no ACPI RSDP.
    NoRsdp,
    /// The `acpi` crate rejected the RSDP or root table.
    Tables(AcpiError),
    /// There is no valid MADT, so the CPUs cannot be enumerated.
    NoMadt(AcpiError),
}

impl fmt::Display for AcpiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcpiFailure::NoRsdp => write!(f, "no ACPI RSDP in the UEFI configuration table"),
            AcpiFailure::Tables(e) => write!(f, "invalid ACPI RSDP/XSDT: {e:?}"),
            AcpiFailure::NoMadt(e) => write!(f, "no usable ACPI MADT: {e:?}"),
        }
    }
}

/// A DMAR table as the `acpi` crate sees it: the header, the rest read as bytes.
#[repr(C, packed)]
struct RawDmar {
    header: SdtHeader,
}

// SAFETY: `RawDmar` is exactly the SDT header that starts every DMAR table.
unsafe impl AcpiTable for RawDmar {
    const SIGNATURE: Signature = Signature::DMAR;
    fn header(&self) -> &SdtHeader {
        &self.header
    }
}

/// An IVRS table as the `acpi` crate sees it: the header, the rest read as bytes.
#[repr(C, packed)]
struct RawIvrs {
    header: SdtHeader,
}

// SAFETY: `RawIvrs` is exactly the SDT header that starts every IVRS table.
unsafe impl AcpiTable for RawIvrs {
    const SIGNATURE: Signature = Signature::IVRS;
    fn header(&self) -> &SdtHeader {
        &self.header
    }
}

/// A signature's four bytes (its `as_str` would panic on non-UTF-8 firmware data).
fn signature_bytes(s: Signature) -> [u8; 4] {
    // SAFETY: `Signature` is `#[repr(transparent)]` over `[u8; 4]`.
    unsafe { core::mem::transmute::<Signature, [u8; 4]>(s) }
}

/// The whole table behind a mapping, as bytes.
fn table_bytes<H: AcpiHandler, T>(m: &PhysicalMapping<H, T>) -> &[u8] {
    // SAFETY: the acpi crate mapped `region_length` bytes (the table's own length, checked
    // against its checksum) starting at `virtual_start`, valid while the mapping lives.
    unsafe {
        core::slice::from_raw_parts(m.virtual_start().as_ptr().cast::<u8>(), m.region_length())
    }
}

/// Read the MADT, DMAR and IVRS behind the RSDP at `rsdp`.
///
/// # Safety
/// `rsdp` must be the physical address the firmware gave for the RSDP, and `handler` must map
/// physical memory so the tables it points to can be read.
pub unsafe fn discover<H: AcpiHandler>(
    handler: H,
    rsdp: usize,
) -> Result<AcpiSummary, AcpiFailure> {
    if rsdp == 0 {
        return Err(AcpiFailure::NoRsdp);
    }
    // SAFETY: the caller vouches for `rsdp` and `handler`.
    let tables = unsafe { AcpiTables::from_rsdp(handler, rsdp) }.map_err(AcpiFailure::Tables)?;
    let mut summary = AcpiSummary {
        revision: tables.revision(),
        oem_id: [b' '; 6],
        tables: tables
            .headers()
            .map(|h| signature_bytes(h.signature))
            .collect(),
        local_apic_address: 0,
        pcat_compat: false,
        cpus: Vec::new(),
        io_apics: Vec::new(),
        dmar: None,
        ivrs: None,
        madt_at: (0, 0),
    };

    let madt = tables.find_table::<Madt>().map_err(AcpiFailure::NoMadt)?;
    summary.madt_at = (madt.physical_start() as u64, madt.region_length());
    let madt_ref = madt.get();
    summary.oem_id = madt_ref.header.oem_id;
    summary.local_apic_address = madt_ref.local_apic_address;
    summary.pcat_compat = madt_ref.supports_8259();
    for entry in madt_ref.entries() {
        match entry {
            MadtEntry::LocalApic(e) => {
                let flags = e.flags;
                summary.cpus.push(MadtCpu {
                    uid: u32::from(e.processor_id),
                    apic_id: u32::from(e.apic_id),
                    enabled: flags & 1 != 0,
                    online_capable: flags & 2 != 0,
                    x2apic: false,
                });
            }
            MadtEntry::LocalX2Apic(e) => {
                let (flags, apic_id, uid) = (e.flags, e.x2apic_id, e.processor_uid);
                summary.cpus.push(MadtCpu {
                    uid,
                    apic_id,
                    enabled: flags & 1 != 0,
                    online_capable: flags & 2 != 0,
                    x2apic: true,
                });
            }
            MadtEntry::IoApic(e) => summary.io_apics.push(IoApic {
                id: e.io_apic_id,
                address: e.io_apic_address,
                gsi_base: e.global_system_interrupt_base,
            }),
            _ => {}
        }
    }
    drop(madt);

    if let Ok(m) = tables.find_table::<RawDmar>() {
        summary.dmar = dmar::parse(table_bytes(&m));
    }
    if let Ok(m) = tables.find_table::<RawIvrs>() {
        summary.ivrs = ivrs::parse(table_bytes(&m));
    }
    Ok(summary)
}

/// Physical memory is mapped 1:1 (UEFI boot environment, and the hypervisor's host map).
#[derive(Debug, Clone, Copy)]
pub struct IdentityMapped;

/// Stand-in for a table pointer of 0 (malformed root tables): reads as zeros, so the table's
/// signature check fails and the crate skips it instead of dereferencing a null pointer.
static ZERO_PAGE: [u8; 4096] = [0; 4096];

impl AcpiHandler for IdentityMapped {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let (virt, mapped) = match NonNull::new(physical_address as *mut T) {
            Some(p) => (p, size),
            None => (
                NonNull::from(&ZERO_PAGE).cast::<T>(),
                size.min(ZERO_PAGE.len()),
            ),
        };
        // SAFETY: identity mapping: the physical range is readable at the same address, as
        // the caller of `discover` guaranteed.
        unsafe { PhysicalMapping::new(physical_address, virt, size, mapped, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Starts every line it is given with `acpi: `, so nested summaries read like the rest.
struct AcpiLines<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for AcpiLines<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for (i, part) in s.split('\n').enumerate() {
            if i > 0 {
                self.0.write_str("\nacpi: ")?;
            }
            self.0.write_str(part)?;
        }
        Ok(())
    }
}

fn ascii(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes).unwrap_or("?")
}

impl fmt::Display for AcpiSummary {
    /// Several lines; the console prefixes each one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acpi: revision {} oem \"{}\" tables:",
            self.revision,
            ascii(&self.oem_id).trim_end()
        )?;
        for t in &self.tables {
            write!(f, " {}", ascii(t))?;
        }
        let enabled = self.enabled_cpus().count();
        write!(
            f,
            "\nacpi: MADT local APIC {:#x}, {} CPU(s) ({} enabled), {} I/O APIC(s), 8259 {}",
            self.local_apic_address,
            self.cpus.len(),
            enabled,
            self.io_apics.len(),
            if self.pcat_compat {
                "present"
            } else {
                "absent"
            }
        )?;
        for (i, c) in self.cpus.iter().enumerate() {
            write!(
                f,
                "\nacpi:   cpu {i}: uid {} apic-id {} {}{}",
                c.uid,
                c.apic_id,
                if c.enabled {
                    "enabled"
                } else if c.online_capable {
                    "online-capable"
                } else {
                    "disabled"
                },
                if c.x2apic { " (x2apic)" } else { "" }
            )?;
        }
        for a in &self.io_apics {
            write!(
                f,
                "\nacpi:   I/O APIC id {} at {:#x}, GSI base {}",
                a.id, a.address, a.gsi_base
            )?;
        }
        match &self.dmar {
            Some(d) => write!(AcpiLines(f), "\n{d}")?,
            None => write!(f, "\nacpi: DMAR absent")?,
        }
        match &self.ivrs {
            Some(i) => write!(AcpiLines(f), "\n{i}"),
            None => write!(f, "\nacpi: IVRS absent"),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::fixture::*;
    use super::*;
    use std::string::ToString;
    use std::vec;

    fn qemu_like() -> Vec<Vec<u8>> {
        vec![
            sdt(b"FACP", 3, &[0; 8]),
            madt(&[
                lapic(0, 0, 1),
                lapic(1, 1, 1),
                lapic(2, 2, 0), // disabled
                lapic(3, 3, 2), // online-capable
                ioapic(0, 0xFEC0_0000, 0),
                iso(0, 2),
            ]),
            sdt(b"HPET", 1, &[0; 20]),
        ]
    }

    #[test]
    fn madt_cpus_and_io_apics() {
        let (h, rsdp) = FakePhys::new(&qemu_like());
        // SAFETY: the fake handler maps only its own buffer.
        let s = unsafe { discover(h, rsdp) }.unwrap();
        assert_eq!(s.revision, 2);
        assert_eq!(&s.oem_id, b"NEXUS ");
        assert_eq!(s.tables, vec![*b"FACP", *b"APIC", *b"HPET"]);
        assert_eq!(s.local_apic_address, 0xFEE0_0000);
        assert!(s.pcat_compat);
        assert_eq!(s.cpus.len(), 4);
        assert_eq!(
            s.enabled_cpus().map(|c| c.apic_id).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert!(s.cpus[3].online_capable && !s.cpus[3].enabled);
        assert_eq!(s.cpu_by_apic_id(1).map(|c| c.uid), Some(1));
        assert_eq!(s.cpu_by_apic_id(2), None, "disabled CPUs are not usable");
        assert_eq!(
            s.io_apics,
            vec![IoApic {
                id: 0,
                address: 0xFEC0_0000,
                gsi_base: 0
            }]
        );
        assert_eq!((s.dmar.clone(), s.ivrs.clone()), (None, None));
    }

    #[test]
    fn x2apic_entries_carry_32_bit_ids() {
        let (h, rsdp) = FakePhys::new(&[madt(&[lapic(0, 0, 1), x2apic(300, 0x1_0000, 1)])]);
        // SAFETY: the fake handler maps only its own buffer.
        let s = unsafe { discover(h, rsdp) }.unwrap();
        assert_eq!(
            s.cpus[1],
            MadtCpu {
                uid: 300,
                apic_id: 0x1_0000,
                enabled: true,
                online_capable: false,
                x2apic: true
            }
        );
    }

    #[test]
    fn summary_text_lists_every_cpu() {
        let (h, rsdp) = FakePhys::new(&qemu_like());
        // SAFETY: the fake handler maps only its own buffer.
        let text = unsafe { discover(h, rsdp) }.unwrap().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "acpi: revision 2 oem \"NEXUS\" tables: FACP APIC HPET"
        );
        assert_eq!(
            lines[1],
            "acpi: MADT local APIC 0xfee00000, 4 CPU(s) (2 enabled), 1 I/O APIC(s), 8259 present"
        );
        assert_eq!(lines[2], "acpi:   cpu 0: uid 0 apic-id 0 enabled");
        assert_eq!(lines[4], "acpi:   cpu 2: uid 2 apic-id 2 disabled");
        assert_eq!(lines[5], "acpi:   cpu 3: uid 3 apic-id 3 online-capable");
        assert_eq!(lines[6], "acpi:   I/O APIC id 0 at 0xfec00000, GSI base 0");
        assert_eq!(lines[7], "acpi: DMAR absent");
        assert_eq!(lines[8], "acpi: IVRS absent");
    }

    #[test]
    fn dmar_units_and_reserved_regions() {
        let mut tables = qemu_like();
        tables.push(dmar(
            38,
            1,
            &[
                drhd(0, 0, 0xFED9_0000),
                drhd(1, 0, 0xFED9_1000),
                rmrr(0, 0x7B80_0000, 0x7FFF_FFFF),
            ],
        ));
        let (h, rsdp) = FakePhys::new(&tables);
        // SAFETY: the fake handler maps only its own buffer.
        let s = unsafe { discover(h, rsdp) }.unwrap();
        let d = s.dmar.as_ref().unwrap();
        assert_eq!(d.haw, 38);
        assert_eq!(d.drhds.len(), 2);
        assert_eq!(
            d.drhds[1],
            dmar::Drhd {
                segment: 0,
                register_base: 0xFED9_1000,
                include_all: true
            }
        );
        assert_eq!(
            d.rmrrs,
            vec![dmar::Rmrr {
                segment: 0,
                base: 0x7B80_0000,
                limit: 0x7FFF_FFFF
            }]
        );
        assert_eq!(d.truncated_at, None);
        let text = s.to_string();
        assert!(text.contains(
            "acpi: DMAR: host address width 39 bits, 2 remapping unit(s), 1 reserved region(s), interrupt remapping"
        ), "{text}");
        assert!(
            text.contains("  DRHD segment 0 registers 0xfed91000 (all devices)"),
            "{text}"
        );
    }

    #[test]
    fn ivrs_iommus() {
        let mut tables = qemu_like();
        tables.push(ivrs(0x30 << 8, &[ivhd(0x0002, 0xFEB8_0000, 0), ivmd()]));
        let (h, rsdp) = FakePhys::new(&tables);
        // SAFETY: the fake handler maps only its own buffer.
        let s = unsafe { discover(h, rsdp) }.unwrap();
        let i = s.ivrs.as_ref().unwrap();
        assert_eq!(
            i.ivhds,
            vec![ivrs::Ivhd {
                block_type: 0x10,
                device_id: 2,
                base: 0xFEB8_0000,
                segment: 0
            }]
        );
        assert_eq!(i.ivmds, 1);
        assert_eq!(i.phys_addr_bits(), 0x30);
        assert!(s
            .to_string()
            .contains("IVHD type 0x10 device 00:00.2 segment 0 registers 0xfeb80000"));
    }

    fn recorded(text: &str) -> Vec<u8> {
        let hex: std::string::String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.trim().chars())
            .collect();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn recorded_qemu_dmar_and_ivrs_parse() {
        let dmar_bytes = recorded(include_str!("../testdata/qemu-q35-intel-iommu.dmar.hex"));
        assert_eq!(&dmar_bytes[..4], b"DMAR");
        assert_eq!(dmar_bytes.len(), 0x78, "length field of the recorded table");
        let d = dmar::parse(&dmar_bytes).unwrap();
        assert_eq!((d.haw, d.flags), (38, 1));
        assert_eq!(
            d.drhds,
            vec![dmar::Drhd {
                segment: 0,
                register_base: 0xfed9_0000,
                include_all: false
            }]
        );
        assert!(d.rmrrs.is_empty());
        assert_eq!(d.truncated_at, None);

        let ivrs_bytes = recorded(include_str!("../testdata/qemu-q35-amd-iommu.ivrs.hex"));
        assert_eq!(&ivrs_bytes[..4], b"IVRS");
        let i = ivrs::parse(&ivrs_bytes).unwrap();
        assert_eq!(i.phys_addr_bits(), 40);
        assert_eq!(
            i.ivhds,
            vec![ivrs::Ivhd {
                block_type: 0x10,
                device_id: 0x18,
                base: 0xfed8_0000,
                segment: 0
            }]
        );
        assert_eq!(i.truncated_at, None);

        // Through the acpi crate too, with every nested line prefixed.
        let (h, rsdp) = FakePhys::new(&[madt(&[lapic(0, 0, 1)]), dmar_bytes, ivrs_bytes]);
        // SAFETY: the fake handler maps only its own buffer.
        let text = unsafe { discover(h, rsdp) }.unwrap().to_string();
        assert!(
            text.contains("\nacpi: DMAR: host address width 39 bits, 1 remapping unit(s)"),
            "{text}"
        );
        assert!(
            text.contains("\nacpi:   DRHD segment 0 registers 0xfed90000\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\nacpi:   IVHD type 0x10 device 00:03.0 segment 0 registers 0xfed80000"
            ),
            "{text}"
        );
    }

    #[test]
    fn malformed_structures_stop_parsing_without_panicking() {
        // A DRHD claiming length 2 (shorter than its own header).
        let mut bad = drhd(0, 0, 0xFED9_0000);
        bad[2] = 2;
        let t = dmar(38, 0, &[drhd(0, 0, 0x1000), bad]);
        let d = dmar::parse(&t).unwrap();
        assert_eq!(d.drhds.len(), 1);
        assert_eq!(d.truncated_at, Some(48 + 16));
        // An IVHD running past the end of the table.
        let mut long = ivhd(0, 0, 0);
        long[2] = 200;
        let i = ivrs::parse(&ivrs(0, &[long])).unwrap();
        assert!(i.ivhds.is_empty());
        assert_eq!(i.truncated_at, Some(48));
        // Too short for the fixed part at all.
        assert_eq!(dmar::parse(&[0; 40]), None);
        assert_eq!(ivrs::parse(&[0; 30]), None);
    }

    #[test]
    fn bad_checksums_are_reported() {
        let (mut h, rsdp) = FakePhys::new(&qemu_like());
        h.poke(rsdp + 1, b'X'); // breaks the RSDP signature
                                // SAFETY: the fake handler maps only its own buffer.
        let e = unsafe { discover(h, rsdp) }.unwrap_err();
        assert!(matches!(e, AcpiFailure::Tables(_)), "{e}");
        assert_eq!(
            // SAFETY: address 0 is rejected before any mapping.
            unsafe { discover(FakePhys::new(&[]).0, 0) }
                .unwrap_err()
                .to_string(),
            "no ACPI RSDP in the UEFI configuration table"
        );
    }

    #[test]
    fn missing_madt_is_an_error() {
        let (h, rsdp) = FakePhys::new(&[sdt(b"FACP", 3, &[0; 8])]);
        // SAFETY: the fake handler maps only its own buffer.
        let e = unsafe { discover(h, rsdp) }.unwrap_err();
        assert!(e.to_string().starts_with("no usable ACPI MADT"), "{e}");
    }
}
