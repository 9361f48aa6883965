//! The hypervisor's global serial console and the `hv_println!` macro.
//!
//! The console is COM2 when the machine has one, else COM1. On COM2 it is the hypervisor's
//! alone: the primary's port accesses to it are trapped (writes dropped, reads all-ones, so
//! its OS finds no UART there), and the firmware's and the OS's own console on COM1 never
//! interleave with the hypervisor's lines, nor can a guest forge them. On a machine with
//! COM1 only, the two share it (the primary still owns COM1).

use super::console::Console;
use super::ports::HostPorts;
use core::sync::atomic::{AtomicU16, Ordering};
use nexus_drivers::uart16550::{Uart16550, UartError, COM1, COM2};

/// Baud rate of the console.
pub const BAUD: u32 = 115_200;

/// The one console every CPU prints to.
pub static CONSOLE: Console<HostPorts> = Console::new();

/// I/O base of the UART [`CONSOLE`] uses (0 before [`init_serial`]).
static CONSOLE_PORT: AtomicU16 = AtomicU16::new(0);

/// The console's I/O base, when it is a UART of the hypervisor's own (COM2): the primary
/// must not reach it.
pub fn own_console_port() -> Option<u16> {
    let port = CONSOLE_PORT.load(Ordering::Acquire);
    (port != 0 && port != COM1).then_some(port)
}

/// Program the console UART (COM2 when present, else COM1) and attach it to [`CONSOLE`].
/// Call once, on the BSP, before any logging.
///
/// Presence is checked with the scratch register, not the loopback self test: some firmware
/// (and Bochs' file backend) keeps a UART in a mode where loopback is unreliable, while plain
/// transmit works.
pub fn init_serial() -> Result<(), UartError> {
    // SAFETY: we run at CPL 0 in the UEFI boot environment; reading and writing COM2's
    // scratch register has no other effect (an absent port reads all-ones).
    let mut com2 = Uart16550::new(unsafe { HostPorts::new() }, COM2);
    let base = if com2.scratch_probe() { COM2 } else { COM1 };
    // SAFETY: as above; this UART is the hypervisor's console from now on (on COM1, OVMF's own
    // serial writes go through the same UART).
    let mut uart = Uart16550::new(unsafe { HostPorts::new() }, base);
    uart.init(BAUD)?;
    CONSOLE_PORT.store(base, Ordering::Release);
    CONSOLE.install(uart);
    // The firmware's last line may lack its newline; start the hypervisor's lines clean.
    CONSOLE.raw(format_args!(""));
    Ok(())
}

/// Print a hypervisor log line (`[hv] ...`) on the serial console.
#[macro_export]
macro_rules! hv_println {
    ($($arg:tt)*) => {
        $crate::platform::log::CONSOLE.println("hv", format_args!($($arg)*))
    };
}

/// Print the final verdict line, unprefixed, e.g. `NEXUS RESULT: PASS`.
pub fn print_result(pass: bool, why: core::fmt::Arguments<'_>) {
    if pass {
        CONSOLE.raw(format_args!("NEXUS RESULT: PASS"));
    } else {
        CONSOLE.raw(format_args!("NEXUS RESULT: FAIL ({why})"));
    }
}
