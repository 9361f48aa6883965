//! The serial console multiplexer: every CPU and every partition prints whole, prefixed lines.
//!
//! * Hypervisor logs: [`hv_println!`](crate::hv_println) → `[hv] <text>`; a multi-line message
//!   gets the prefix on every line.
//! * Partition consoles: a [`LineBuffer`] per partition collects the guest's bytes and emits
//!   `[<partition>] <line>` once a line is complete (or the buffer fills).
//! * The final verdict, `NEXUS RESULT: ...`, is printed unprefixed through [`Console::raw`].
//!
//! One [`SpinLock`] around the UART makes each line atomic across CPUs.

use super::sync::SpinLock;
use core::fmt::{self, Write};
use nexus_drivers::port::PortIo;
use nexus_drivers::uart16550::Uart16550;

/// Longest partition console line kept before it is flushed anyway.
pub const LINE_MAX: usize = 160;
/// Longest partition name used as a prefix (longer names are cut).
pub const NAME_MAX: usize = 32;
/// How long the fatal path waits for the lock before taking it anyway.
const STEAL_SPINS: u32 = 10_000_000;

/// A serial console shared by all CPUs.
pub struct Console<P: PortIo> {
    uart: SpinLock<Option<Uart16550<P>>>,
}

impl<P: PortIo> Console<P> {
    /// A console with no UART yet: output is dropped until [`Console::install`].
    pub const fn new() -> Self {
        Self {
            uart: SpinLock::new(None),
        }
    }

    /// Attach an initialised UART.
    pub fn install(&self, uart: Uart16550<P>) {
        *self.uart.lock() = Some(uart);
    }

    /// Whether a UART is attached.
    pub fn is_ready(&self) -> bool {
        self.uart.lock().is_some()
    }

    /// Print `args` with `[prefix] ` before every line, ending with a newline.
    pub fn println(&self, prefix: &str, args: fmt::Arguments<'_>) {
        let mut g = self.uart.lock();
        if let Some(uart) = g.as_mut() {
            let _ = write_prefixed(uart, prefix, args);
        }
    }

    /// Print one line without a prefix (the `NEXUS RESULT:` line).
    pub fn raw(&self, args: fmt::Arguments<'_>) {
        let mut g = self.uart.lock();
        if let Some(uart) = g.as_mut() {
            let _ = uart.write_fmt(args);
            let _ = uart.write_str("\n");
        }
    }

    /// Like [`Console::println`] but usable from exception handlers and panics: takes the lock
    /// even when a faulting CPU still holds it.
    pub fn println_fatal(&self, prefix: &str, args: fmt::Arguments<'_>) {
        let mut g = self.uart.lock_or_steal(STEAL_SPINS);
        if let Some(uart) = g.as_mut() {
            let _ = write_prefixed(uart, prefix, args);
        }
    }

    /// Like [`Console::raw`] for the fatal path (see [`Console::println_fatal`]).
    pub fn raw_fatal(&self, args: fmt::Arguments<'_>) {
        let mut g = self.uart.lock_or_steal(STEAL_SPINS);
        if let Some(uart) = g.as_mut() {
            let _ = uart.write_fmt(args);
            let _ = uart.write_str("\n");
        }
    }

    /// Run `f` with the UART (tests and diagnostics).
    pub fn with_uart<R>(&self, f: impl FnOnce(Option<&mut Uart16550<P>>) -> R) -> R {
        let mut g = self.uart.lock();
        f(g.as_mut())
    }
}

impl<P: PortIo> Default for Console<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes `[prefix] ` at the start of each line of `args`, and a final newline. An empty
/// message still prints one prefixed (empty) line.
fn write_prefixed<W: Write>(out: &mut W, prefix: &str, args: fmt::Arguments<'_>) -> fmt::Result {
    let mut w = PrefixWriter {
        out,
        prefix,
        at_line_start: true,
        wrote: false,
    };
    w.write_fmt(args)?;
    if !w.wrote {
        w.start_line()?;
        w.at_line_start = false;
    }
    if !w.at_line_start {
        w.out.write_str("\n")?;
    }
    Ok(())
}

struct PrefixWriter<'a, W: Write> {
    out: &'a mut W,
    prefix: &'a str,
    at_line_start: bool,
    wrote: bool,
}

impl<W: Write> PrefixWriter<'_, W> {
    fn start_line(&mut self) -> fmt::Result {
        self.out.write_char('[')?;
        self.out.write_str(self.prefix)?;
        self.out.write_str("] ")
    }
}

impl<W: Write> Write for PrefixWriter<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for piece in s.split_inclusive('\n') {
            if self.at_line_start {
                self.start_line()?;
            }
            self.out.write_str(piece)?;
            self.at_line_start = piece.ends_with('\n');
            self.wrote = true;
        }
        Ok(())
    }
}

/// Collects one partition's console bytes into whole lines.
///
/// The partition's owner (the vCPU exit handler) calls [`LineBuffer::push`] for every byte the
/// guest writes; completed lines go to the console as `[<name>] <line>`.
pub struct LineBuffer {
    name: [u8; NAME_MAX],
    name_len: usize,
    buf: [u8; LINE_MAX],
    len: usize,
}

impl LineBuffer {
    /// A buffer for partition `name` (cut to [`NAME_MAX`] bytes at a character boundary).
    pub fn new(name: &str) -> Self {
        let mut cut = name.len().min(NAME_MAX);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut n = [0u8; NAME_MAX];
        n[..cut].copy_from_slice(&name.as_bytes()[..cut]);
        Self {
            name: n,
            name_len: cut,
            buf: [0; LINE_MAX],
            len: 0,
        }
    }

    /// The prefix name.
    pub fn name(&self) -> &str {
        // Built from a `&str` cut at a char boundary.
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    /// Add one byte from the guest; prints the line on `\n` or when the buffer is full.
    /// `\r` is dropped; other control bytes and invalid UTF-8 are shown as `?` so a guest
    /// cannot inject terminal escapes or forge another partition's prefix on a new line.
    pub fn push<P: PortIo>(&mut self, console: &Console<P>, byte: u8) {
        match byte {
            b'\n' => self.emit(console),
            b'\r' => {}
            b if b < 0x20 || b == 0x7f => self.put(console, b'?'),
            b => self.put(console, b),
        }
    }

    /// Print what is buffered, if anything, as a line (e.g. when the partition stops).
    pub fn flush<P: PortIo>(&mut self, console: &Console<P>) {
        if self.len > 0 {
            self.emit(console);
        }
    }

    /// Print the buffer as one line, even an empty one (the guest wrote a bare newline).
    fn emit<P: PortIo>(&mut self, console: &Console<P>) {
        let text = match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(t) => t,
            // A line cut inside a multi-byte character: print the valid prefix.
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        };
        console.println(self.name(), format_args!("{text}"));
        self.len = 0;
    }

    /// Bytes waiting for the end of their line.
    pub fn pending(&self) -> usize {
        self.len
    }

    fn put<P: PortIo>(&mut self, console: &Console<P>, b: u8) {
        if self.len == LINE_MAX {
            self.emit(console);
        }
        self.buf[self.len] = b;
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;
    use std::sync::{Arc, Mutex};
    use std::vec::Vec;

    /// A UART that is always ready and records what is sent (shared so tests can read it).
    #[derive(Default, Clone)]
    struct Wire(Arc<Mutex<Vec<u8>>>);
    impl PortIo for Wire {
        fn read8(&mut self, port: u16) -> u8 {
            if port == 0x3F8 + 5 {
                0x60 // transmitter empty
            } else {
                0
            }
        }
        fn write8(&mut self, port: u16, value: u8) {
            if port == 0x3F8 {
                self.0.lock().unwrap().push(value);
            }
        }
    }

    fn console() -> (Console<Wire>, Wire) {
        let wire = Wire::default();
        let c = Console::new();
        c.install(Uart16550::new(wire.clone(), 0x3F8));
        (c, wire)
    }

    fn text(w: &Wire) -> String {
        String::from_utf8(w.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn every_line_gets_the_prefix_and_crlf() {
        let (c, w) = console();
        c.println("hv", format_args!("one {}\ntwo", 1));
        c.println("hv", format_args!("three\n"));
        c.println("hv", format_args!(""));
        assert_eq!(
            text(&w),
            "[hv] one 1\r\n[hv] two\r\n[hv] three\r\n[hv] \r\n"
        );
    }

    #[test]
    fn concurrent_printers_never_interleave_within_a_line() {
        let (c, w) = console();
        let c = Arc::new(c);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        // Written in several pieces, as format_args! does.
                        c.println("hv", format_args!("cpu {t} line {i} {}", "x".repeat(t + 1)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let out = text(&w);
        let lines: Vec<&str> = out.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 800);
        for l in &lines {
            let rest = l
                .strip_prefix("[hv] cpu ")
                .unwrap_or_else(|| panic!("torn line {l:?}"));
            let mut f = rest.split(' ');
            let t: usize = f.next().unwrap().parse().unwrap();
            assert_eq!(f.next(), Some("line"), "{l:?}");
            let _i: usize = f.next().unwrap().parse().unwrap();
            assert_eq!(f.next(), Some("x".repeat(t + 1).as_str()), "{l:?}");
            assert_eq!(f.next(), None, "{l:?}");
        }
    }

    #[test]
    fn raw_has_no_prefix() {
        let (c, w) = console();
        c.raw(format_args!("NEXUS RESULT: {}", "PASS"));
        assert_eq!(text(&w), "NEXUS RESULT: PASS\r\n");
    }

    #[test]
    fn without_uart_output_is_dropped() {
        let c: Console<Wire> = Console::new();
        assert!(!c.is_ready());
        c.println("hv", format_args!("lost"));
        c.println_fatal("hv", format_args!("lost too"));
    }

    #[test]
    fn fatal_print_gets_through_a_held_lock() {
        let (c, w) = console();
        let held = c.uart.lock();
        // Simulates an exception on the CPU that holds the lock.
        c.println_fatal("hv", format_args!("#GP at rip=0x1000"));
        drop(held);
        assert_eq!(text(&w), "[hv] #GP at rip=0x1000\r\n");
    }

    #[test]
    fn partition_lines_are_buffered_until_newline() {
        let (c, w) = console();
        let mut a = LineBuffer::new("guest-a");
        let mut b = LineBuffer::new("guest-b");
        for &byte in b"hel" {
            a.push(&c, byte);
        }
        for &byte in b"other\r\n" {
            b.push(&c, byte);
        }
        for &byte in b"lo\n" {
            a.push(&c, byte);
        }
        assert_eq!(text(&w), "[guest-b] other\r\n[guest-a] hello\r\n");
        assert_eq!(a.pending(), 0);
        // Flushing an empty buffer prints nothing; a bare newline prints an empty line.
        a.flush(&c);
        b.push(&c, b'\n');
        assert_eq!(
            text(&w),
            "[guest-b] other\r\n[guest-a] hello\r\n[guest-b] \r\n"
        );
    }

    #[test]
    fn control_bytes_are_neutralised_and_long_lines_split() {
        let (c, w) = console();
        let mut p = LineBuffer::new("p");
        for &byte in b"a\x1b[2Jb" {
            p.push(&c, byte);
        }
        p.flush(&c);
        for _ in 0..LINE_MAX + 3 {
            p.push(&c, b'x');
        }
        p.flush(&c);
        let out = text(&w);
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines[0], "[p] a?[2Jb");
        assert_eq!(lines[1].len(), 4 + LINE_MAX);
        assert_eq!(lines[2], "[p] xxx");
    }

    #[test]
    fn long_names_are_cut_at_char_boundary() {
        let name = "é".repeat(20); // 40 bytes
        let b = LineBuffer::new(&name);
        assert_eq!(b.name(), "é".repeat(16));
    }
}
