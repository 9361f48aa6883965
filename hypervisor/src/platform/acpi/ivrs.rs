//! AMD I/O virtualization reporting structure (IVRS): the IOMMUs (IVHD blocks) and memory
//! definitions (IVMD blocks).
//!
//! Layout from the AMD IOMMU specification: a 48-byte fixed part, then blocks with an 8-bit
//! type and a 16-bit length at offset 2.

use super::bytes::{u16_at, u32_at, u64_at, SubTables};
use alloc::vec::Vec;
use core::fmt;

const FIRST_BLOCK: usize = 48;

/// One IOMMU (an IVHD block of type 0x10, 0x11 or 0x40).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ivhd {
    pub block_type: u8,
    /// PCI device ID (bus/device/function) of the IOMMU itself.
    pub device_id: u16,
    /// Physical base of the IOMMU's MMIO registers.
    pub base: u64,
    pub segment: u16,
}

/// What the IVRS table says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvrsInfo {
    /// IVinfo: bits 14:8 physical address size, 21:15 virtual address size.
    pub iv_info: u32,
    pub ivhds: Vec<Ivhd>,
    /// IVMD blocks (types 0x20..=0x22), counted.
    pub ivmds: u32,
    pub truncated_at: Option<usize>,
}

/// Parse a whole IVRS table (header included). `None` if it is too short for the fixed part.
pub fn parse(table: &[u8]) -> Option<IvrsInfo> {
    let iv_info = u32_at(table, 36)?;
    if table.len() < FIRST_BLOCK {
        return None;
    }
    let mut info = IvrsInfo {
        iv_info,
        ivhds: Vec::new(),
        ivmds: 0,
        truncated_at: None,
    };
    for b in SubTables::new(table, FIRST_BLOCK, false) {
        match b {
            Ok((off, ty @ (0x10 | 0x11 | 0x40), body)) => {
                if body.len() < 20 {
                    info.truncated_at = Some(off);
                    break;
                }
                info.ivhds.push(Ivhd {
                    block_type: ty as u8,
                    device_id: u16_at(body, 4)?,
                    base: u64_at(body, 8)?,
                    segment: u16_at(body, 16)?,
                });
            }
            Ok((_, 0x20..=0x22, _)) => info.ivmds += 1,
            Ok(_) => {}
            Err(off) => {
                info.truncated_at = Some(off);
                break;
            }
        }
    }
    Some(info)
}

impl IvrsInfo {
    /// Physical address bits the IOMMUs support (IVinfo bits 14:8).
    pub fn phys_addr_bits(&self) -> u32 {
        (self.iv_info >> 8) & 0x7f
    }
}

impl fmt::Display for IvrsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IVRS: {} IOMMU(s), {} memory definition(s), {} physical address bits",
            self.ivhds.len(),
            self.ivmds,
            self.phys_addr_bits()
        )?;
        for h in &self.ivhds {
            write!(
                f,
                "\n  IVHD type {:#04x} device {:02x}:{:02x}.{} segment {} registers {:#x}",
                h.block_type,
                h.device_id >> 8,
                (h.device_id >> 3) & 0x1f,
                h.device_id & 7,
                h.segment,
                h.base
            )?;
        }
        if let Some(off) = self.truncated_at {
            write!(f, "\n  (malformed block at offset {off}; rest ignored)")?;
        }
        Ok(())
    }
}
