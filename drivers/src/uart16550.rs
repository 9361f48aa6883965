//! 16550 UART: initialisation, baud rate, FIFO and polled transmit.
//!
//! Polled only (no interrupts): the hypervisor logs from any CPU at any time, including
//! from exception handlers, so the driver never waits on an interrupt.

use crate::port::PortIo;
use core::fmt;

/// I/O base of COM1 on PC-compatible machines.
pub const COM1: u16 = 0x3F8;
/// I/O base of COM2.
pub const COM2: u16 = 0x2F8;
/// Registers a UART occupies from its base.
pub const PORTS: u16 = 8;

/// Input clock of the 16550 divided by 16: the baud rate at divisor 1.
pub const MAX_BAUD: u32 = 115_200;

/// Register offsets from the I/O base.
mod reg {
    /// Transmit holding / receive buffer (DLAB=0), divisor low (DLAB=1).
    pub const DATA: u16 = 0;
    /// Interrupt enable (DLAB=0), divisor high (DLAB=1).
    pub const IER: u16 = 1;
    /// FIFO control (write only).
    pub const FCR: u16 = 2;
    /// Line control.
    pub const LCR: u16 = 3;
    /// Modem control.
    pub const MCR: u16 = 4;
    /// Line status.
    pub const LSR: u16 = 5;
    /// Scratch register.
    pub const SCR: u16 = 7;
}

/// Line control: divisor latch access bit.
const LCR_DLAB: u8 = 0x80;
/// Line control: 8 data bits, no parity, 1 stop bit.
const LCR_8N1: u8 = 0x03;
/// FIFO control: enable, clear both FIFOs, receive trigger at 14 bytes.
const FCR_ENABLE_CLEAR_14: u8 = 0xC7;
/// Modem control: DTR, RTS and OUT2 (OUT2 gates the IRQ line on PCs).
const MCR_NORMAL: u8 = 0x0B;
/// Modem control: loopback with OUT1/OUT2/RTS, used by the self test.
const MCR_LOOPBACK: u8 = 0x1E;
/// Line status: data ready.
const LSR_DATA_READY: u8 = 0x01;
/// Line status: transmit holding register empty.
const LSR_THR_EMPTY: u8 = 0x20;

/// How many line-status polls a byte may wait for the transmitter before it is dropped.
/// Bounded so a missing or wedged UART cannot hang the hypervisor.
pub const TX_SPIN_LIMIT: u32 = 1_000_000;

/// Why a UART operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UartError {
    /// The requested baud rate is zero, above 115200, or not 115200 divided by an integer.
    UnsupportedBaud(u32),
    /// The loopback self test read back `got` instead of `sent`: no working UART at this base.
    SelfTestFailed { sent: u8, got: u8 },
    /// The transmitter stayed busy for [`TX_SPIN_LIMIT`] polls.
    TransmitTimeout,
}

impl fmt::Display for UartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UartError::UnsupportedBaud(b) => {
                write!(f, "unsupported baud rate {b} (must divide {MAX_BAUD})")
            }
            UartError::SelfTestFailed { sent, got } => {
                write!(f, "UART loopback test sent {sent:#04x}, read {got:#04x}")
            }
            UartError::TransmitTimeout => write!(f, "UART transmitter stayed busy"),
        }
    }
}

/// Divisor for `baud`, or an error when the rate cannot be produced exactly.
pub fn divisor_for(baud: u32) -> Result<u16, UartError> {
    if baud == 0 || baud > MAX_BAUD || !MAX_BAUD.is_multiple_of(baud) {
        return Err(UartError::UnsupportedBaud(baud));
    }
    // MAX_BAUD / baud <= 115200 fits u16 only when baud >= 2; 115200/1 overflows.
    u16::try_from(MAX_BAUD / baud).map_err(|_| UartError::UnsupportedBaud(baud))
}

/// A 16550-compatible UART at an I/O base, driven by polling.
#[derive(Debug)]
pub struct Uart16550<P: PortIo> {
    ports: P,
    base: u16,
}

impl<P: PortIo> Uart16550<P> {
    /// A driver for the UART at `base`; touches no register until [`Self::init`].
    pub const fn new(ports: P, base: u16) -> Self {
        Self { ports, base }
    }

    /// I/O base this driver talks to.
    pub const fn base(&self) -> u16 {
        self.base
    }

    fn write_reg(&mut self, reg: u16, value: u8) {
        self.ports.write8(self.base + reg, value);
    }

    fn read_reg(&mut self, reg: u16) -> u8 {
        self.ports.read8(self.base + reg)
    }

    /// Program the UART: interrupts off, `baud` with 8N1, FIFOs on and cleared,
    /// DTR/RTS/OUT2 set.
    pub fn init(&mut self, baud: u32) -> Result<(), UartError> {
        let divisor = divisor_for(baud)?;
        self.write_reg(reg::IER, 0x00);
        self.write_reg(reg::LCR, LCR_DLAB);
        let [lo, hi] = divisor.to_le_bytes();
        self.write_reg(reg::DATA, lo);
        self.write_reg(reg::IER, hi);
        self.write_reg(reg::LCR, LCR_8N1);
        self.write_reg(reg::FCR, FCR_ENABLE_CLEAR_14);
        self.write_reg(reg::MCR, MCR_NORMAL);
        Ok(())
    }

    /// Check a UART is really there: a byte sent in loopback mode must come back.
    /// Leaves the modem control register in normal mode afterwards.
    pub fn self_test(&mut self) -> Result<(), UartError> {
        const PATTERN: u8 = 0xAE;
        self.write_reg(reg::MCR, MCR_LOOPBACK);
        self.write_reg(reg::DATA, PATTERN);
        // Give the loopback path time to deliver the byte.
        let mut got = 0;
        for _ in 0..1000 {
            if self.read_reg(reg::LSR) & LSR_DATA_READY != 0 {
                got = self.read_reg(reg::DATA);
                break;
            }
        }
        self.write_reg(reg::MCR, MCR_NORMAL);
        if got == PATTERN {
            Ok(())
        } else {
            Err(UartError::SelfTestFailed { sent: PATTERN, got })
        }
    }

    /// The divisor currently programmed (reads the latch; used to verify `init`).
    pub fn read_divisor(&mut self) -> u16 {
        let lcr = self.read_reg(reg::LCR);
        self.write_reg(reg::LCR, lcr | LCR_DLAB);
        let lo = self.read_reg(reg::DATA);
        let hi = self.read_reg(reg::IER);
        self.write_reg(reg::LCR, lcr);
        u16::from_le_bytes([lo, hi])
    }

    /// Send one raw byte, waiting (bounded) for the transmit holding register.
    pub fn send_byte(&mut self, byte: u8) -> Result<(), UartError> {
        for _ in 0..TX_SPIN_LIMIT {
            if self.read_reg(reg::LSR) & LSR_THR_EMPTY != 0 {
                self.write_reg(reg::DATA, byte);
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(UartError::TransmitTimeout)
    }

    /// Send bytes, turning `\n` into `\r\n` for terminals. Stops at the first timeout.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), UartError> {
        for &b in bytes {
            if b == b'\n' {
                self.send_byte(b'\r')?;
            }
            self.send_byte(b)?;
        }
        Ok(())
    }

    /// A received byte, if one is waiting.
    pub fn try_receive(&mut self) -> Option<u8> {
        if self.read_reg(reg::LSR) & LSR_DATA_READY != 0 {
            Some(self.read_reg(reg::DATA))
        } else {
            None
        }
    }

    /// Scratch register round trip; a cheap presence probe that changes no line state.
    pub fn scratch_probe(&mut self) -> bool {
        self.write_reg(reg::SCR, 0x5A);
        let a = self.read_reg(reg::SCR);
        self.write_reg(reg::SCR, 0xA5);
        let b = self.read_reg(reg::SCR);
        a == 0x5A && b == 0xA5
    }

    /// Give the port accessor back.
    pub fn into_inner(self) -> P {
        self.ports
    }
}

impl<P: PortIo> fmt::Write for Uart16550<P> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.send(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::fake::Fake16550;
    use core::fmt::Write;

    #[test]
    fn divisors() {
        assert_eq!(divisor_for(115_200), Ok(1));
        assert_eq!(divisor_for(38_400), Ok(3));
        assert_eq!(divisor_for(9_600), Ok(12));
        assert_eq!(divisor_for(50), Ok(2304));
        assert_eq!(divisor_for(0), Err(UartError::UnsupportedBaud(0)));
        assert_eq!(
            divisor_for(230_400),
            Err(UartError::UnsupportedBaud(230_400))
        );
        assert_eq!(divisor_for(7), Err(UartError::UnsupportedBaud(7)));
        // 115200 / 1 = 115200 does not fit the 16-bit latch.
        assert_eq!(divisor_for(1), Err(UartError::UnsupportedBaud(1)));
    }

    #[test]
    fn init_programs_line_fifo_and_modem() {
        let mut uart = Uart16550::new(Fake16550::new(COM1), COM1);
        uart.init(38_400).unwrap();
        assert_eq!(uart.read_divisor(), 3);
        let fake = uart.into_inner();
        assert_eq!(fake.divisor(), 3);
        assert_eq!(
            fake.lcr(),
            LCR_8N1,
            "DLAB must be cleared after setting the divisor"
        );
        assert_eq!(fake.ier(), 0, "interrupts stay off");
        assert_eq!(fake.last_fcr(), Some(FCR_ENABLE_CLEAR_14));
        assert_eq!(fake.mcr(), MCR_NORMAL);
        assert!(fake.transmitted().is_empty(), "init must not transmit");
    }

    #[test]
    fn init_rejects_bad_baud_without_touching_hardware() {
        let mut uart = Uart16550::new(Fake16550::new(COM1), COM1);
        assert_eq!(uart.init(1234), Err(UartError::UnsupportedBaud(1234)));
        assert_eq!(uart.into_inner().writes(), 0);
    }

    #[test]
    fn transmit_waits_for_empty_holding_register() {
        let mut fake = Fake16550::new(COM1);
        fake.set_busy_polls(5);
        let mut uart = Uart16550::new(fake, COM1);
        uart.init(115_200 / 2).unwrap();
        uart.send(b"hi").unwrap();
        let fake = uart.into_inner();
        assert_eq!(fake.transmitted(), b"hi");
        assert!(
            fake.lsr_reads() >= 10,
            "each byte polled LSR through the busy period"
        );
    }

    #[test]
    fn newline_becomes_crlf_and_fmt_write_works() {
        let mut uart = Uart16550::new(Fake16550::new(0x2F8), 0x2F8);
        uart.init(115_200 / 4).unwrap();
        write!(uart, "a {}\nb", 42).unwrap();
        assert_eq!(uart.into_inner().transmitted(), b"a 42\r\nb");
    }

    #[test]
    fn stuck_transmitter_times_out_instead_of_hanging() {
        let mut fake = Fake16550::new(COM1);
        fake.set_busy_polls(u32::MAX);
        let mut uart = Uart16550::new(fake, COM1);
        assert_eq!(uart.send_byte(b'x'), Err(UartError::TransmitTimeout));
        assert!(uart.into_inner().transmitted().is_empty());
    }

    #[test]
    fn self_test_passes_on_loopback_and_fails_without_device() {
        let mut uart = Uart16550::new(Fake16550::new(COM1), COM1);
        uart.init(115_200 / 1152).unwrap();
        uart.self_test().unwrap();
        let fake = uart.into_inner();
        assert_eq!(fake.mcr(), MCR_NORMAL, "self test restores normal mode");
        assert!(
            fake.transmitted().is_empty(),
            "loopback bytes never reach the line"
        );

        // No device: the bus floats to 0xFF.
        let mut absent = Uart16550::new(Fake16550::absent(), COM1);
        assert_eq!(
            absent.self_test(),
            Err(UartError::SelfTestFailed {
                sent: 0xAE,
                got: 0xFF
            })
        );
        assert!(!absent.scratch_probe());
    }

    #[test]
    fn receive_and_scratch() {
        let mut fake = Fake16550::new(COM1);
        fake.push_rx(b'q');
        let mut uart = Uart16550::new(fake, COM1);
        assert_eq!(uart.try_receive(), Some(b'q'));
        assert_eq!(uart.try_receive(), None);
        assert!(uart.scratch_probe());
    }
}
