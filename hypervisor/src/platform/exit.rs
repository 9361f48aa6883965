//! Ending an emulator run with a result code.
//!
//! QEMU: `-device isa-debug-exit,iobase=0xf4,iosize=4`; writing v makes QEMU exit with status
//! `(v << 1) | 1`: 0x10 → 33 (PASS), 0x11 → 35 (FAIL). Bochs: the string "Shutdown" written to
//! port 0x8900 ends the simulation. On real hardware both writes go nowhere and return.

use super::instructions;

/// isa-debug-exit I/O port.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Value for PASS (QEMU exit status 33).
pub const DEBUG_EXIT_PASS: u32 = 0x10;
/// Value for FAIL (QEMU exit status 35).
pub const DEBUG_EXIT_FAIL: u32 = 0x11;
/// Bochs shutdown port.
pub const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

/// QEMU process exit status for a debug-exit value.
pub const fn qemu_status(value: u32) -> u32 {
    (value << 1) | 1
}

/// Tell QEMU (isa-debug-exit) to exit with PASS or FAIL, then Bochs to shut down.
/// Returns only when neither device is present (real hardware).
pub fn exit_emulator(pass: bool) {
    exit_qemu(pass);
    bochs_shutdown();
}

/// Write the PASS/FAIL value to isa-debug-exit. Returns if no such device exists.
pub fn exit_qemu(pass: bool) {
    let v = if pass {
        DEBUG_EXIT_PASS
    } else {
        DEBUG_EXIT_FAIL
    };
    // SAFETY: port 0xf4 is unused on PCs except by QEMU's debug-exit device, which the test
    // configuration adds precisely for this write; we run at CPL 0.
    unsafe { instructions::outl(DEBUG_EXIT_PORT, v) };
}

/// Write "Shutdown" to Bochs' shutdown port. Returns if not under Bochs.
pub fn bochs_shutdown() {
    for &b in b"Shutdown" {
        // SAFETY: port 0x8900 is Bochs' APM/shutdown port and unused on real PCs; CPL 0.
        unsafe { instructions::outb(BOCHS_SHUTDOWN_PORT, b) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_statuses_match_the_harness_convention() {
        assert_eq!(qemu_status(DEBUG_EXIT_PASS), 33);
        assert_eq!(qemu_status(DEBUG_EXIT_FAIL), 35);
    }
}
