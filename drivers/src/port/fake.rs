//! A simulated 16550 on a fake port space, for driver tests.

use super::PortIo;
use std::collections::VecDeque;
use std::vec::Vec;

/// Simulates the registers of one 16550 at `base`; any other port floats to 0xFF.
#[derive(Debug, Default)]
pub struct Fake16550 {
    base: u16,
    present: bool,
    dll: u8,
    dlm: u8,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    last_fcr: Option<u8>,
    rx: VecDeque<u8>,
    tx: Vec<u8>,
    /// LSR polls left that report the transmitter busy, before each byte.
    busy_polls: u32,
    busy_left: u32,
    lsr_reads: u32,
    writes: u32,
}

impl Fake16550 {
    pub fn new(base: u16) -> Self {
        Self {
            base,
            present: true,
            ..Default::default()
        }
    }

    /// No device at all: every read returns 0xFF and writes vanish.
    pub fn absent() -> Self {
        Self {
            present: false,
            ..Default::default()
        }
    }

    /// Make the transmitter report busy for `n` LSR polls before each byte.
    pub fn set_busy_polls(&mut self, n: u32) {
        self.busy_polls = n;
        self.busy_left = n;
    }

    pub fn push_rx(&mut self, b: u8) {
        self.rx.push_back(b);
    }

    pub fn divisor(&self) -> u16 {
        u16::from_le_bytes([self.dll, self.dlm])
    }
    pub fn lcr(&self) -> u8 {
        self.lcr
    }
    pub fn ier(&self) -> u8 {
        self.ier
    }
    pub fn mcr(&self) -> u8 {
        self.mcr
    }
    pub fn last_fcr(&self) -> Option<u8> {
        self.last_fcr
    }
    pub fn transmitted(&self) -> &[u8] {
        &self.tx
    }
    pub fn lsr_reads(&self) -> u32 {
        self.lsr_reads
    }
    pub fn writes(&self) -> u32 {
        self.writes
    }

    fn dlab(&self) -> bool {
        self.lcr & 0x80 != 0
    }
    fn loopback(&self) -> bool {
        self.mcr & 0x10 != 0
    }
}

impl PortIo for Fake16550 {
    fn read8(&mut self, port: u16) -> u8 {
        if !self.present || port < self.base || port > self.base + 7 {
            return 0xFF;
        }
        match port - self.base {
            0 if self.dlab() => self.dll,
            0 => self.rx.pop_front().unwrap_or(0),
            1 if self.dlab() => self.dlm,
            1 => self.ier,
            2 => 0xC1, // IIR: FIFOs enabled, no interrupt pending
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                self.lsr_reads += 1;
                let thre = if self.busy_left == 0 {
                    0x60
                } else {
                    self.busy_left -= 1;
                    0
                };
                thre | u8::from(!self.rx.is_empty())
            }
            6 => 0,
            _ => self.scr,
        }
    }

    fn write8(&mut self, port: u16, value: u8) {
        self.writes += 1;
        if !self.present || port < self.base || port > self.base + 7 {
            return;
        }
        match port - self.base {
            0 if self.dlab() => self.dll = value,
            0 if self.loopback() => self.rx.push_back(value),
            0 => {
                assert_eq!(self.busy_left, 0, "byte written while transmitter busy");
                self.tx.push(value);
                self.busy_left = self.busy_polls;
            }
            1 if self.dlab() => self.dlm = value,
            1 => self.ier = value,
            2 => self.last_fcr = Some(value),
            3 => self.lcr = value,
            4 => self.mcr = value,
            7 => self.scr = value,
            _ => {}
        }
    }
}
