//! The serial console multiplexer: every CPU and every partition prints whole, prefixed lines.
//!
//! * Hypervisor logs: [`hv_println!`](crate::hv_println) → `[hv] <text>`; a multi-line message
//!   gets the prefix on every line.
//! * Partition consoles: a [`LineBuffer`] per partition collects the guest's bytes and emits
//!   `[<partition>] <line>` once a line is complete (or the buffer fills).
//! * The final verdict, `NEXUS RESULT: ...`, is printed unprefixed through [`Console::raw`].
//!
//! One [`SpinLock`] around the UART makes each line atomic across CPUs; it is a ticket lock,
//! so every CPU that prints gets its turn in order.
//!
//! Each partition's console output has a byte budget ([`ByteBudget`], a token bucket shared
//! by the partition's CPUs): [`BUDGET_BURST`] bytes at once, then [`BUDGET_PER_SEC`] per
//! second. Whole lines over the budget are dropped and counted; the count is reported as
//! `[hv] partition <name>: console output dropped (<N> bytes)` at most once a second and when
//! the partition stops. So a guest that floods its console (the hypercall or the emulated
//! COM1, review M4) holds the UART for a bounded share of the time and cannot stall other
//! partitions' output or their exits.

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

/// Console bytes a partition may print at once: more than a whole test run prints.
pub const BUDGET_BURST: u64 = 16 * 1024;
/// Console bytes per second a partition may print after its burst: a fifth of what COM1
/// carries at 115200 baud (11.5 KB/s), so four flooding partitions still leave room.
pub const BUDGET_PER_SEC: u64 = 2 * 1024;
/// How often a partition that keeps flooding gets its "dropped" line.
pub const DROP_REPORT_MS: u64 = 1000;

/// A token bucket of console bytes (in thousandths of a byte, so slow refills add up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteBudget {
    burst: u64,
    per_sec: u64,
    milli_tokens: u64,
    /// Time of the last refill; `None` until the first use (the bucket starts full).
    last_ms: Option<u64>,
    /// Bytes dropped since the last report.
    dropped: u64,
    last_report_ms: Option<u64>,
}

impl ByteBudget {
    /// A full bucket of `burst` bytes refilling at `per_sec` bytes per second.
    pub const fn new(burst: u64, per_sec: u64) -> Self {
        ByteBudget {
            burst,
            per_sec,
            milli_tokens: burst * 1000,
            last_ms: None,
            dropped: 0,
            last_report_ms: None,
        }
    }

    /// The partitions' budget: [`BUDGET_BURST`], [`BUDGET_PER_SEC`].
    pub const fn console() -> Self {
        Self::new(BUDGET_BURST, BUDGET_PER_SEC)
    }

    fn refill(&mut self, now_ms: u64) {
        let last = *self.last_ms.get_or_insert(now_ms);
        // CPUs' clocks may disagree a little: time never runs backwards here.
        let elapsed = now_ms.saturating_sub(last);
        if elapsed > 0 {
            let add = elapsed.saturating_mul(self.per_sec);
            self.milli_tokens = self
                .milli_tokens
                .saturating_add(add)
                .min(self.burst.saturating_mul(1000));
            self.last_ms = Some(now_ms);
        }
    }

    /// Whether `bytes` more may be printed at `now_ms`; they are taken from the bucket if
    /// so, counted as dropped if not.
    pub fn take(&mut self, now_ms: u64, bytes: u64) -> bool {
        self.refill(now_ms);
        let cost = bytes.saturating_mul(1000);
        if cost <= self.milli_tokens {
            self.milli_tokens -= cost;
            true
        } else {
            self.dropped = self.dropped.saturating_add(bytes);
            false
        }
    }

    /// Bytes dropped and not reported yet.
    pub fn unreported(&self) -> u64 {
        self.dropped
    }

    /// The dropped bytes to report now, if any: at most once per [`DROP_REPORT_MS`], or
    /// whenever `now` is set (the partition stops). Reporting resets the count.
    pub fn report(&mut self, now_ms: u64, now: bool) -> Option<u64> {
        if self.dropped == 0 {
            return None;
        }
        let due = match self.last_report_ms {
            None => true,
            Some(at) => now_ms.saturating_sub(at) >= DROP_REPORT_MS,
        };
        if !(due || now) {
            return None;
        }
        self.last_report_ms = Some(now_ms);
        Some(core::mem::take(&mut self.dropped))
    }
}

/// One partition's budget, shared by its CPUs.
pub type SharedBudget = SpinLock<ByteBudget>;

/// Budgets by partition name (a partition's CPUs find the same one). More partitions than
/// slots share the last slot, which only makes them stricter.
const BUDGET_SLOTS: usize = 16;
static BUDGET_NAMES: SpinLock<[([u8; NAME_MAX], usize); BUDGET_SLOTS]> =
    SpinLock::new([([0; NAME_MAX], 0); BUDGET_SLOTS]);
static BUDGETS: [SharedBudget; BUDGET_SLOTS] =
    [const { SpinLock::new(ByteBudget::console()) }; BUDGET_SLOTS];

/// The budget of partition `name` (cut as [`LineBuffer`] cuts it).
fn budget_of(name: &[u8]) -> &'static SharedBudget {
    let mut names = BUDGET_NAMES.lock();
    let slot = names
        .iter()
        .position(|(n, len)| *len > 0 && &n[..*len] == name)
        .or_else(|| names.iter().position(|(_, len)| *len == 0));
    match slot {
        Some(i) => {
            if names[i].1 == 0 {
                names[i].0[..name.len()].copy_from_slice(name);
                names[i].1 = name.len().max(1);
            }
            &BUDGETS[i]
        }
        None => &BUDGETS[BUDGET_SLOTS - 1],
    }
}

/// Collects one partition's console bytes into whole lines.
///
/// The partition's owner (the vCPU exit handler) calls [`LineBuffer::push`] for every byte the
/// guest writes; completed lines go to the console as `[<name>] <line>`, within the
/// partition's byte budget (see the module documentation).
pub struct LineBuffer {
    name: [u8; NAME_MAX],
    name_len: usize,
    buf: [u8; LINE_MAX],
    len: usize,
    budget: &'static SharedBudget,
}

impl LineBuffer {
    /// A buffer for partition `name` (cut to [`NAME_MAX`] bytes at a character boundary),
    /// drawing on that partition's console budget.
    pub fn new(name: &str) -> Self {
        let mut b = Self::with_budget(name, &BUDGETS[0]);
        b.budget = budget_of(&b.name[..b.name_len]);
        b
    }

    /// A buffer for `name` drawing on `budget` (tests give each buffer its own).
    pub fn with_budget(name: &str, budget: &'static SharedBudget) -> Self {
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
            budget,
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
        self.push_with(console, byte, super::clock::now_ms);
    }

    /// [`LineBuffer::push`] at time `now_ms` (tests drive the clock).
    pub fn push_at<P: PortIo>(&mut self, console: &Console<P>, byte: u8, now_ms: u64) {
        self.push_with(console, byte, || now_ms);
    }

    /// The clock is read only when a line goes out, not for every byte.
    fn push_with<P: PortIo>(&mut self, console: &Console<P>, byte: u8, now: impl Fn() -> u64) {
        match byte {
            b'\n' => self.emit(console, now()),
            b'\r' => {}
            b if b < 0x20 || b == 0x7f => self.put(console, b'?', now),
            b => self.put(console, b, now),
        }
    }

    /// Print what is buffered, if anything, as a line, and report bytes the budget dropped
    /// (when the partition stops).
    pub fn flush<P: PortIo>(&mut self, console: &Console<P>) {
        self.flush_at(console, super::clock::now_ms());
    }

    /// [`LineBuffer::flush`] at time `now_ms`.
    pub fn flush_at<P: PortIo>(&mut self, console: &Console<P>, now_ms: u64) {
        if self.len > 0 {
            self.emit(console, now_ms);
        }
        let dropped = self.budget.lock().report(now_ms, true);
        if let Some(n) = dropped {
            self.report_dropped(console, n);
        }
    }

    /// Print the buffer as one line, even an empty one (the guest wrote a bare newline), if
    /// the budget allows; a due "dropped" report goes first.
    fn emit<P: PortIo>(&mut self, console: &Console<P>, now_ms: u64) {
        let (allowed, dropped) = {
            let mut b = self.budget.lock();
            // The line and its line end.
            let allowed = b.take(now_ms, self.len as u64 + 1);
            (allowed, b.report(now_ms, false))
        };
        if let Some(n) = dropped {
            self.report_dropped(console, n);
        }
        if allowed {
            let text = match core::str::from_utf8(&self.buf[..self.len]) {
                Ok(t) => t,
                // A line cut inside a multi-byte character: print the valid prefix.
                Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
            };
            console.println(self.name(), format_args!("{text}"));
        }
        self.len = 0;
    }

    fn report_dropped<P: PortIo>(&self, console: &Console<P>, bytes: u64) {
        console.println(
            "hv",
            format_args!(
                "partition {}: console output dropped ({bytes} bytes)",
                self.name()
            ),
        );
    }

    /// Bytes still to be accounted for: waiting for the end of their line, or dropped by the
    /// budget and not reported yet. When it is not 0, [`LineBuffer::flush`] has something
    /// to print.
    pub fn pending(&self) -> usize {
        self.len + self.budget.lock().unreported() as usize
    }

    fn put<P: PortIo>(&mut self, console: &Console<P>, b: u8, now: impl Fn() -> u64) {
        if self.len == LINE_MAX {
            self.emit(console, now());
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

    /// A budget of its own for one test's buffer.
    fn own_budget(burst: u64, per_sec: u64) -> &'static SharedBudget {
        std::boxed::Box::leak(std::boxed::Box::new(SpinLock::new(ByteBudget::new(
            burst, per_sec,
        ))))
    }

    fn line_at(b: &mut LineBuffer, c: &Console<Wire>, text: &str, now: u64) {
        for &byte in text.as_bytes() {
            b.push_at(c, byte, now);
        }
        b.push_at(c, b'\n', now);
    }

    #[test]
    fn budget_starts_full_refills_with_time_and_counts_drops() {
        let mut b = ByteBudget::new(100, 10);
        assert!(b.take(5_000, 60));
        assert!(b.take(5_000, 40));
        assert!(!b.take(5_000, 1), "empty");
        assert_eq!(b.unreported(), 1);
        // 10 bytes a second: after 450 ms, 4.5 bytes.
        assert!(!b.take(5_450, 5));
        assert!(b.take(5_450, 4));
        assert!(!b.take(5_499, 1), "0.5 + 0.49 bytes is not a byte yet");
        assert!(b.take(5_500, 1), "fractions add up");
        // Never above the burst, however long it was quiet.
        assert!(!b.take(1_000_000, 101));
        assert!(b.take(1_000_000, 100));
        // A clock that runs backwards (another CPU) refills nothing, breaks nothing.
        assert!(!b.take(999_000, 1));
        assert_eq!(b.unreported(), 1 + 5 + 1 + 101 + 1);
    }

    #[test]
    fn drops_are_reported_once_a_second_and_at_the_end() {
        // An empty bucket that never refills: everything is dropped.
        let mut b = ByteBudget::new(0, 0);
        assert_eq!(b.report(0, false), None, "nothing dropped");
        assert!(!b.take(0, 20));
        assert_eq!(
            b.report(0, false),
            Some(20),
            "the first drop is reported at once"
        );
        assert!(!b.take(10, 5));
        assert_eq!(b.report(10, false), None, "not again within a second");
        assert!(!b.take(900, 5));
        assert_eq!(b.report(1_000, false), Some(10));
        assert!(!b.take(1_100, 7));
        assert_eq!(b.report(1_100, true), Some(7), "the partition stops: now");
        assert_eq!(b.report(5_000, true), None);
    }

    /// Review M4: a flooding partition prints its burst, then whole lines are dropped and
    /// counted in a `[hv]` line; another partition printing meanwhile is not affected.
    #[test]
    fn a_flooding_partition_is_cut_to_its_budget_and_told_so() {
        let (c, w) = console();
        let mut flood = LineBuffer::with_budget("flood", own_budget(100, 10));
        let mut quiet = LineBuffer::with_budget("quiet", own_budget(100, 10));
        let line = "x".repeat(19); // 20 bytes with its line end
        for i in 0..50 {
            line_at(&mut flood, &c, &line, 1_000 + i);
            if i == 25 {
                line_at(&mut quiet, &c, "still here", 1_000 + i);
            }
        }
        assert!(flood.pending() > 0, "a report is still due");
        flood.flush_at(&c, 1_050);
        assert_eq!(flood.pending(), 0);
        let out = text(&w);
        let lines: Vec<&str> = out.split_terminator("\r\n").collect();
        let printed = lines.iter().filter(|l| l.starts_with("[flood] ")).count();
        assert_eq!(
            printed, 5,
            "100 bytes of burst, 0.5 bytes refilled: {lines:?}"
        );
        assert!(lines.contains(&"[quiet] still here"), "{lines:?}");
        let reports: Vec<u64> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("[hv] partition flood: console output dropped ("))
            .map(|r| r.strip_suffix(" bytes)").unwrap().parse().unwrap())
            .collect();
        assert_eq!(
            reports,
            [20, 880],
            "at the first drop, then at the stop: {lines:?}"
        );
        assert!(!out.contains("partition quiet: console"), "{out}");
    }

    #[test]
    fn a_partitions_cpus_share_one_budget() {
        let a = LineBuffer::new("shared-budget-test");
        let b = LineBuffer::new("shared-budget-test");
        let other = LineBuffer::new("another-partition-test");
        assert!(core::ptr::eq(a.budget, b.budget));
        assert!(!core::ptr::eq(a.budget, other.budget));
    }

    #[test]
    fn long_names_are_cut_at_char_boundary() {
        let name = "é".repeat(20); // 40 bytes
        let b = LineBuffer::new(&name);
        assert_eq!(b.name(), "é".repeat(16));
    }
}
