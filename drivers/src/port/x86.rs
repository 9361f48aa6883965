//! Real port I/O with the `in`/`out` instructions.

use super::PortIo;

/// Access to the machine's I/O ports through `in`/`out`.
///
/// Only constructible through [`RawPorts::new`], whose caller promises that it owns the
/// devices it will touch.
#[derive(Debug)]
pub struct RawPorts(());

impl RawPorts {
    /// # Safety
    /// The caller must run at a privilege level allowed to use port I/O (CPL 0 or an
    /// I/O permission bitmap that grants the ports), and must make sure nothing else
    /// drives the same device registers concurrently in a conflicting way.
    pub const unsafe fn new() -> Self {
        Self(())
    }
}

impl PortIo for RawPorts {
    fn read8(&mut self, port: u16) -> u8 {
        let value: u8;
        // SAFETY: `RawPorts::new`'s contract grants port access; `in` touches no memory.
        unsafe {
            core::arch::asm!("in al, dx", in("dx") port, out("al") value,
                options(nomem, nostack, preserves_flags));
        }
        value
    }

    fn write8(&mut self, port: u16, value: u8) {
        // SAFETY: `RawPorts::new`'s contract grants port access; `out` touches no memory.
        unsafe {
            core::arch::asm!("out dx, al", in("dx") port, in("al") value,
                options(nomem, nostack, preserves_flags));
        }
    }
}
