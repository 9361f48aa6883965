//! Port writes that would end or forge the run if they reached the emulator: QEMU's
//! isa-debug-exit (0xf4..0xf7: a write of v exits QEMU with status 2v + 1, so 0x10 would
//! read as the harness's PASS), Bochs' shutdown port (0x8900: "Shutdown"), and COM2, the
//! hypervisor's own console in the emulator runs (a forged verdict line). The hypervisor
//! traps all of them for the primary: writes vanish, reads float high.

/// The text written to COM2; the image tests check that it never appears in the
/// hypervisor's log.
pub const FORGED: &str =
    "[hv] test partitions: PASS (forged by the primary)\r\nNEXUS RESULT: PASS\r\n";
pub const COM2: u16 = 0x2f8;

fn out8(port: u16, value: u8) {
    // SAFETY: port output has no memory effects; under NexusOS these ports are trapped
    // (that is what is being tested), and without it they are the emulators' test devices.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack))
    };
}

fn out32(port: u16, value: u32) {
    // SAFETY: as in `out8`.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack))
    };
}

fn in8(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as in `out8`; a read of these ports has no side effect.
    unsafe { core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

/// What the exit ports read back after the writes.
pub struct Readback {
    pub debug_exit: u8,
    pub shutdown: u8,
}

/// Write everything that would end the run or forge its verdict; returns (if the run goes
/// on) what the exit ports read.
pub fn attack() -> Readback {
    // isa-debug-exit: PASS (0x10), FAIL (0x11), a dword, and the other three ports.
    out8(0xf4, 0x10);
    out8(0xf4, 0x11);
    out32(0xf4, 0x10);
    for port in 0xf5..=0xf7 {
        out8(port, 0x10);
    }
    // Bochs: the shutdown port takes the word "Shutdown", one byte at a time.
    for b in b"Shutdown" {
        out8(0x8900, *b);
    }
    for b in FORGED.bytes() {
        out8(COM2, b);
    }
    Readback {
        debug_exit: in8(0xf4),
        shutdown: in8(0x8900),
    }
}
