//! Intel VT-d DMA remapping table (DMAR): the remapping hardware units and reserved regions.
//!
//! Layout from the VT-d specification, chapter 8: a 48-byte fixed part, then remapping
//! structures with a 16-bit type and 16-bit length.

use super::bytes::{u16_at, u64_at, u8_at, SubTables};
use alloc::vec::Vec;
use core::fmt;

/// Offset of the first remapping structure.
const FIRST_STRUCT: usize = 48;
const TYPE_DRHD: u16 = 0;
const TYPE_RMRR: u16 = 1;

/// One DMA remapping hardware unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drhd {
    pub segment: u16,
    /// Physical base of the unit's register set.
    pub register_base: u64,
    /// INCLUDE_PCI_ALL: the unit covers every device of the segment not claimed by others.
    pub include_all: bool,
}

/// A reserved memory region that devices use for DMA behind the OS's back (e.g. USB legacy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rmrr {
    pub segment: u16,
    pub base: u64,
    /// Last byte of the region (inclusive, as the table stores it).
    pub limit: u64,
}

/// What the DMAR table says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarInfo {
    /// Host address width minus one, as stored (width = value + 1).
    pub haw: u8,
    pub flags: u8,
    pub drhds: Vec<Drhd>,
    pub rmrrs: Vec<Rmrr>,
    /// Structures of other types (ATSR, RHSA, ANDD, SATC ...), counted only.
    pub other: u32,
    /// Offset of a malformed structure, when parsing stopped early.
    pub truncated_at: Option<usize>,
}

/// Parse a whole DMAR table (header included). `None` if it is too short for the fixed part.
pub fn parse(table: &[u8]) -> Option<DmarInfo> {
    let haw = u8_at(table, 36)?;
    let flags = u8_at(table, 37)?;
    if table.len() < FIRST_STRUCT {
        return None;
    }
    let mut info = DmarInfo {
        haw,
        flags,
        drhds: Vec::new(),
        rmrrs: Vec::new(),
        other: 0,
        truncated_at: None,
    };
    for s in SubTables::new(table, FIRST_STRUCT, true) {
        match s {
            Ok((_, TYPE_DRHD, body)) if body.len() >= 16 => info.drhds.push(Drhd {
                include_all: u8_at(body, 4)? & 1 != 0,
                segment: u16_at(body, 6)?,
                register_base: u64_at(body, 8)?,
            }),
            Ok((_, TYPE_RMRR, body)) if body.len() >= 24 => info.rmrrs.push(Rmrr {
                segment: u16_at(body, 6)?,
                base: u64_at(body, 8)?,
                limit: u64_at(body, 16)?,
            }),
            Ok((off, TYPE_DRHD | TYPE_RMRR, _)) => {
                // A known structure too short for its fixed fields.
                info.truncated_at = Some(off);
                break;
            }
            Ok(_) => info.other += 1,
            Err(off) => {
                info.truncated_at = Some(off);
                break;
            }
        }
    }
    Some(info)
}

impl fmt::Display for DmarInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DMAR: host address width {} bits, {} remapping unit(s), {} reserved region(s){}",
            u32::from(self.haw) + 1,
            self.drhds.len(),
            self.rmrrs.len(),
            if self.flags & 1 != 0 {
                ", interrupt remapping"
            } else {
                ""
            }
        )?;
        for d in &self.drhds {
            write!(
                f,
                "\n  DRHD segment {} registers {:#x}{}",
                d.segment,
                d.register_base,
                if d.include_all { " (all devices)" } else { "" }
            )?;
        }
        for r in &self.rmrrs {
            write!(
                f,
                "\n  RMRR segment {} {:#x}..={:#x}",
                r.segment, r.base, r.limit
            )?;
        }
        if let Some(off) = self.truncated_at {
            write!(f, "\n  (malformed structure at offset {off}; rest ignored)")?;
        }
        Ok(())
    }
}
