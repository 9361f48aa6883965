//! `say!`: one `probe: ` line on the firmware's console (ConOut, which OVMF sends to COM1),
//! ending with the probe's time once it has one (`[+1234 ms]`, TSC since the calibration:
//! emulated time under Bochs, the host's under QEMU TCG).

use crate::report::Text;
use core::fmt::{self, Write};

/// Longest line; longer ones are cut.
const LINE: usize = 400;

pub fn line(args: fmt::Arguments<'_>) {
    let mut t = Text::<LINE>::new();
    let _ = t.write_str("probe: ");
    let _ = t.write_fmt(args);
    if let Some(ms) = crate::time::since_start_ms() {
        let _ = write!(t, "  [+{ms} ms]");
    }
    let _ = t.write_str("\r\n");
    uefi::system::with_stdout(|out| {
        let _ = out.write_str(t.as_str());
    });
}

#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::line(format_args!($($arg)*))
    };
}
