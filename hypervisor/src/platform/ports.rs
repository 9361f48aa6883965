//! The machine's I/O ports as a [`PortIo`] for the drivers.

use super::instructions;
use nexus_drivers::port::PortIo;

/// Port I/O through `in`/`out` in host mode.
#[derive(Debug)]
pub struct HostPorts(());

impl HostPorts {
    /// # Safety
    /// Only for code running at CPL 0 in host mode, for devices the hypervisor owns (COM1 and
    /// the emulator exit ports); guests must not be driving the same registers.
    pub const unsafe fn new() -> Self {
        Self(())
    }
}

impl PortIo for HostPorts {
    fn read8(&mut self, port: u16) -> u8 {
        // SAFETY: `HostPorts::new`'s contract: CPL 0 and a device the hypervisor owns.
        unsafe { instructions::inb(port) }
    }

    fn write8(&mut self, port: u16, value: u8) {
        // SAFETY: as in `read8`.
        unsafe { instructions::outb(port, value) }
    }
}
