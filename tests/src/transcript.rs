//! A serial transcript: the lines a booted image printed, with helpers to find what tests assert on.
//!
//! Conventions (from the project's shared rules): hypervisor lines start with `[hv] `, partition
//! console lines with `[<partition-name>] `, and the final line is `NEXUS RESULT: PASS` or
//! `NEXUS RESULT: FAIL (<why>)`.

use std::fmt;

/// The prefix of the line that carries an image's own verdict.
pub const RESULT_PREFIX: &str = "NEXUS RESULT: ";

/// The verdict an image printed on its `NEXUS RESULT:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// `FAIL (<why>)`; holds `<why>` (or the whole remainder when it is not parenthesised).
    Fail(String),
}

/// Lines of serial output, cleaned of carriage returns and terminal escape sequences.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    lines: Vec<String>,
}

impl Transcript {
    /// Splits raw serial bytes into clean lines (a trailing partial line is kept).
    pub fn from_bytes(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        Self {
            lines: text.lines().map(clean_line).collect(),
        }
    }

    /// Builds a transcript from lines that are already clean.
    pub fn from_lines(lines: Vec<String>) -> Self {
        Self { lines }
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The first line containing `needle`.
    pub fn find(&self, needle: &str) -> Option<&str> {
        self.lines
            .iter()
            .map(String::as_str)
            .find(|l| l.contains(needle))
    }

    /// Every line containing `needle`.
    pub fn find_all<'a>(&'a self, needle: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines
            .iter()
            .map(String::as_str)
            .filter(move |l| l.contains(needle))
    }

    /// How many lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.find_all(needle).count()
    }

    /// Index of the first line containing `needle`, for ordering checks.
    pub fn position(&self, needle: &str) -> Option<usize> {
        self.lines.iter().position(|l| l.contains(needle))
    }

    /// Lines printed by one partition (or `hv` for the hypervisor), without the `[name] ` prefix.
    pub fn partition<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let prefix = format!("[{name}] ");
        self.lines
            .iter()
            .filter_map(move |l| l.strip_prefix(prefix.as_str()))
    }

    /// Hypervisor lines (prefix `[hv] `), without the prefix.
    pub fn hypervisor(&self) -> impl Iterator<Item = &str> + '_ {
        self.partition("hv")
    }

    /// The text after `NEXUS RESULT: ` on the last result line, if any.
    pub fn result_line(&self) -> Option<&str> {
        self.lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix(RESULT_PREFIX))
    }

    /// The parsed verdict of the last result line; `None` when there is none or it is malformed.
    pub fn verdict(&self) -> Option<Verdict> {
        let rest = self.result_line()?.trim();
        if rest == "PASS" {
            return Some(Verdict::Pass);
        }
        let why = rest.strip_prefix("FAIL")?.trim();
        let why = why
            .strip_prefix('(')
            .and_then(|w| w.strip_suffix(')'))
            .unwrap_or(why);
        Some(Verdict::Fail(why.to_string()))
    }

    /// The value of a `key=value` counter on the last line that contains `key=`, e.g.
    /// `counter("exits")` on `[hv] vm exits=42 hlt=3` gives 42.
    pub fn counter(&self, key: &str) -> Option<u64> {
        let pat = format!("{key}=");
        self.lines.iter().rev().find_map(|l| {
            l.split_whitespace()
                .filter_map(|word| word.strip_prefix(pat.as_str()))
                .find_map(|v| v.trim_end_matches([',', ';']).parse().ok())
        })
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> &[String] {
        &self.lines[self.lines.len().saturating_sub(n)..]
    }
}

impl fmt::Display for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Removes carriage returns, ANSI/VT100 escape sequences (OVMF's console draws with them) and
/// other control characters from one line.
pub fn clean_line(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.peek() {
                // CSI: ESC [ parameters... final byte in 0x40..=0x7e
                Some('[') => {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                // Two-character escapes such as ESC c
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Transcript {
        Transcript::from_bytes(
            b"\x1b[2J\x1b[01;01HBdsDxe: loading Boot0001\r\n\
              [hv] NexusOS hypervisor 0.1.0\r\n\
              [hv] cpu vendor=AuthenticAMD svm=1\r\n\
              [guest-a] hello exits=3\r\n\
              [guest-b] hello\r\n\
              [hv] vm exits=42 hlt=3\r\n\
              NEXUS RESULT: FAIL (guest-b faulted)\r\n",
        )
    }

    #[test]
    fn cleans_escapes_and_carriage_returns() {
        let t = sample();
        assert_eq!(t.lines()[0], "BdsDxe: loading Boot0001");
        assert_eq!(clean_line("a\x1b[1;37;40mb\x1bc\r"), "ab");
    }

    #[test]
    fn splits_lines_by_partition() {
        let t = sample();
        let hv: Vec<_> = t.hypervisor().collect();
        assert_eq!(
            hv,
            [
                "NexusOS hypervisor 0.1.0",
                "cpu vendor=AuthenticAMD svm=1",
                "vm exits=42 hlt=3"
            ]
        );
        assert_eq!(t.partition("guest-b").collect::<Vec<_>>(), ["hello"]);
        assert_eq!(t.partition("nobody").count(), 0);
    }

    #[test]
    fn finds_counts_and_orders_lines() {
        let t = sample();
        assert_eq!(
            t.find("vendor="),
            Some("[hv] cpu vendor=AuthenticAMD svm=1")
        );
        assert_eq!(t.count("hello"), 2);
        assert!(t.position("[guest-a]") < t.position("[guest-b]"));
        assert_eq!(t.find("absent"), None);
    }

    #[test]
    fn reads_counters_from_the_last_line_that_has_them() {
        let t = sample();
        assert_eq!(t.counter("exits"), Some(42));
        assert_eq!(t.counter("hlt"), Some(3));
        assert_eq!(t.counter("svm"), Some(1));
        assert_eq!(t.counter("missing"), None);
    }

    #[test]
    fn parses_verdicts() {
        assert_eq!(
            sample().verdict(),
            Some(Verdict::Fail("guest-b faulted".into()))
        );
        let pass = Transcript::from_bytes(b"x\nNEXUS RESULT: PASS\n");
        assert_eq!(pass.verdict(), Some(Verdict::Pass));
        assert_eq!(Transcript::from_bytes(b"no result\n").verdict(), None);
        assert_eq!(
            Transcript::from_bytes(b"NEXUS RESULT: MAYBE\n").verdict(),
            None
        );
    }

    #[test]
    fn keeps_a_trailing_partial_line_and_gives_the_tail() {
        let t = Transcript::from_bytes(b"one\ntwo\nthr");
        assert_eq!(t.tail(2), ["two", "thr"]);
        assert_eq!(t.tail(10).len(), 3);
    }
}
