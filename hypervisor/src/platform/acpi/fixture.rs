//! Synthetic ACPI tables in a host buffer, and an `AcpiHandler` that maps "physical"
//! addresses into it, so `discover` runs on the host exactly as on the machine.

extern crate std;

use ::acpi::{AcpiHandler, PhysicalMapping};
use core::ptr::NonNull;
use std::rc::Rc;
use std::vec::Vec;

/// Where the fake physical memory starts (the BIOS area, like real firmware).
pub const BASE: usize = 0xE_0000;

/// A fake physical memory holding RSDP, XSDT and the given tables.
#[derive(Clone)]
pub struct FakePhys {
    mem: Rc<Vec<u8>>,
}

impl FakePhys {
    /// Lay out RSDP (offset 0), XSDT (0x40) and `tables` after it; returns the handler and
    /// the RSDP's physical address.
    pub fn new(tables: &[Vec<u8>]) -> (Self, usize) {
        let mut mem = std::vec![0u8; 0x40];
        let xsdt_at = 0x40;
        let mut addrs = Vec::new();
        let mut next = xsdt_at + align8(36 + 8 * tables.len());
        for t in tables {
            addrs.push((BASE + next) as u64);
            next += align8(t.len());
        }
        let mut xsdt_body = Vec::new();
        for a in &addrs {
            xsdt_body.extend_from_slice(&a.to_le_bytes());
        }
        let xsdt = sdt(b"XSDT", 1, &xsdt_body);
        mem.extend_from_slice(&xsdt);
        for t in tables {
            mem.resize(align8(mem.len()), 0);
            mem.extend_from_slice(t);
        }
        mem.resize(align8(mem.len()) + 64, 0);
        rsdp(&mut mem[..36], (BASE + xsdt_at) as u64);
        (Self { mem: Rc::new(mem) }, BASE)
    }

    /// Corrupt a byte (to test checksum handling).
    pub fn poke(&mut self, phys: usize, value: u8) {
        Rc::make_mut(&mut self.mem)[phys - BASE] = value;
    }
}

impl AcpiHandler for FakePhys {
    unsafe fn map_physical_region<T>(&self, pa: usize, size: usize) -> PhysicalMapping<Self, T> {
        assert!(
            pa >= BASE && pa + size <= BASE + self.mem.len(),
            "map outside fake memory: {pa:#x}+{size}"
        );
        let virt = NonNull::new(self.mem.as_ptr().wrapping_add(pa - BASE) as *mut T).unwrap();
        // SAFETY: the range lies inside the buffer, which the Rc keeps alive with the handler.
        unsafe { PhysicalMapping::new(pa, virt, size, size, self.clone()) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

fn checksum_fix(bytes: &mut [u8], at: usize) {
    bytes[at] = 0;
    let sum = bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    bytes[at] = 0u8.wrapping_sub(sum);
}

fn rsdp(out: &mut [u8], xsdt: u64) {
    out[0..8].copy_from_slice(b"RSD PTR ");
    out[9..15].copy_from_slice(b"NEXUS ");
    out[15] = 2; // revision: ACPI 2.0+
    out[20..24].copy_from_slice(&36u32.to_le_bytes());
    out[24..32].copy_from_slice(&xsdt.to_le_bytes());
    checksum_fix(&mut out[..20], 8);
    checksum_fix(&mut out[..36], 32);
}

/// A system description table with a valid header and checksum.
pub fn sdt(sig: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = 36 + body.len();
    let mut t = std::vec![0u8; 36];
    t[0..4].copy_from_slice(sig);
    t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    t[8] = revision;
    t[10..16].copy_from_slice(b"NEXUS ");
    t[16..24].copy_from_slice(b"TESTTABL");
    t.extend_from_slice(body);
    checksum_fix(&mut t, 9);
    t
}

/// A MADT with local APIC address 0xFEE00000, PC-AT compatible, and `entries`.
pub fn madt(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0xFEE0_0000u32.to_le_bytes());
    body.extend_from_slice(&1u32.to_le_bytes());
    for e in entries {
        body.extend_from_slice(e);
    }
    sdt(b"APIC", 4, &body)
}

pub fn lapic(uid: u8, apic_id: u8, flags: u32) -> Vec<u8> {
    let mut e = std::vec![0u8, 8, uid, apic_id];
    e.extend_from_slice(&flags.to_le_bytes());
    e
}

pub fn x2apic(uid: u32, apic_id: u32, flags: u32) -> Vec<u8> {
    let mut e = std::vec![9u8, 16, 0, 0];
    e.extend_from_slice(&apic_id.to_le_bytes());
    e.extend_from_slice(&flags.to_le_bytes());
    e.extend_from_slice(&uid.to_le_bytes());
    e
}

pub fn ioapic(id: u8, address: u32, gsi_base: u32) -> Vec<u8> {
    let mut e = std::vec![1u8, 12, id, 0];
    e.extend_from_slice(&address.to_le_bytes());
    e.extend_from_slice(&gsi_base.to_le_bytes());
    e
}

/// Interrupt source override (type 2): must be skipped, not misread as a CPU.
pub fn iso(bus_irq: u8, gsi: u32) -> Vec<u8> {
    let mut e = std::vec![2u8, 10, 0, bus_irq];
    e.extend_from_slice(&gsi.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e
}

/// DMAR body after the header: HAW, flags, reserved, then structures.
pub fn dmar(haw: u8, flags: u8, structs: &[Vec<u8>]) -> Vec<u8> {
    let mut body = std::vec![haw, flags];
    body.extend_from_slice(&[0; 10]);
    for s in structs {
        body.extend_from_slice(s);
    }
    sdt(b"DMAR", 1, &body)
}

pub fn drhd(flags: u8, segment: u16, base: u64) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&0u16.to_le_bytes());
    s.extend_from_slice(&16u16.to_le_bytes());
    s.push(flags);
    s.push(0);
    s.extend_from_slice(&segment.to_le_bytes());
    s.extend_from_slice(&base.to_le_bytes());
    s
}

pub fn rmrr(segment: u16, base: u64, limit: u64) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&1u16.to_le_bytes());
    s.extend_from_slice(&24u16.to_le_bytes());
    s.extend_from_slice(&0u16.to_le_bytes());
    s.extend_from_slice(&segment.to_le_bytes());
    s.extend_from_slice(&base.to_le_bytes());
    s.extend_from_slice(&limit.to_le_bytes());
    s
}

/// IVRS body after the header: IVinfo, reserved, then blocks.
pub fn ivrs(iv_info: u32, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&iv_info.to_le_bytes());
    body.extend_from_slice(&[0; 8]);
    for b in blocks {
        body.extend_from_slice(b);
    }
    sdt(b"IVRS", 2, &body)
}

/// IVHD type 0x10 with no device entries (24 bytes).
pub fn ivhd(device_id: u16, base: u64, segment: u16) -> Vec<u8> {
    let mut b = std::vec![0x10u8, 0];
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&device_id.to_le_bytes());
    b.extend_from_slice(&0x40u16.to_le_bytes());
    b.extend_from_slice(&base.to_le_bytes());
    b.extend_from_slice(&segment.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b
}

/// IVMD type 0x20 (32 bytes).
pub fn ivmd() -> Vec<u8> {
    let mut b = std::vec![0x20u8, 0];
    b.extend_from_slice(&32u16.to_le_bytes());
    b.resize(32, 0);
    b
}
