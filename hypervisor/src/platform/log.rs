//! The hypervisor's global serial console on COM1 and the `hv_println!` macro.

use super::console::Console;
use super::ports::HostPorts;
use nexus_drivers::uart16550::{Uart16550, UartError, COM1};

/// Baud rate of the console.
pub const BAUD: u32 = 115_200;

/// The one console every CPU prints to.
pub static CONSOLE: Console<HostPorts> = Console::new();

/// Program COM1 and attach it to [`CONSOLE`]. Call once, on the BSP, before any logging.
///
/// Does not use the loopback self test: some firmware (and Bochs' file backend) keeps COM1 in a
/// mode where loopback is unreliable, while plain transmit works.
pub fn init_serial() -> Result<(), UartError> {
    // SAFETY: we run at CPL 0 in the UEFI boot environment; COM1 is the hypervisor's console
    // from now on (OVMF's own serial writes go through the same UART and stay line-compatible).
    let mut uart = Uart16550::new(unsafe { HostPorts::new() }, COM1);
    uart.init(BAUD)?;
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
