//! x86 port I/O behind a trait, so drivers can be tested with a fake port space.

#[cfg(target_arch = "x86_64")]
pub mod x86;

#[cfg(test)]
pub mod fake;

/// Byte-wide access to the x86 I/O port space.
///
/// Implementations decide how a port is reached: real `in`/`out` instructions
/// ([`x86::RawPorts`]) or a recording fake in tests.
pub trait PortIo {
    /// Read one byte from `port`.
    fn read8(&mut self, port: u16) -> u8;
    /// Write one byte to `port`.
    fn write8(&mut self, port: u16, value: u8);
}

impl<P: PortIo + ?Sized> PortIo for &mut P {
    fn read8(&mut self, port: u16) -> u8 {
        (**self).read8(port)
    }
    fn write8(&mut self, port: u16, value: u8) {
        (**self).write8(port, value)
    }
}
