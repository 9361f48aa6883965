//! Turning generated token bytes into the text pieces a client sees: UTF-8 sequences split
//! across tokens are joined, and text that might be the start of a stop string is held back
//! until it is known not to be one (a stop string is never emitted, not even in part).
//! Engine-independent and pure; buffers are reused so the per-token path does not allocate
//! once they have grown.

/// Accumulates token bytes and releases complete, stop-checked text.
#[derive(Debug, Default)]
pub struct PieceStream {
    stops: Vec<String>,
    /// Bytes of an incomplete UTF-8 sequence from the previous token.
    partial: Vec<u8>,
    /// Decoded text not yet released (may be a stop-string prefix).
    pending: String,
    /// Bytes of `pending` already released.
    released: usize,
}

/// What a call to [`PieceStream::push`] or [`PieceStream::finish`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Release<'a> {
    /// Text to emit now (possibly empty).
    Text(&'a str),
    /// A stop string was reached; this text precedes it and generation must end.
    Stop(&'a str),
}

impl PieceStream {
    pub fn new(stops: &[String]) -> Self {
        PieceStream {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..Default::default()
        }
    }

    /// Reset for a new generation, keeping allocations.
    pub fn reset(&mut self, stops: &[String]) {
        self.stops.clear();
        self.stops
            .extend(stops.iter().filter(|s| !s.is_empty()).cloned());
        self.partial.clear();
        self.pending.clear();
        self.released = 0;
    }

    /// Add one token's bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Release<'_> {
        // Compact: drop text already released so `pending` stays short.
        if self.released > 0 {
            self.pending.drain(..self.released);
            self.released = 0;
        }
        self.partial.extend_from_slice(bytes);
        decode_into(&mut self.partial, &mut self.pending, false);

        if let Some(at) = self.first_stop() {
            self.pending.truncate(at);
            self.released = at;
            return Release::Stop(&self.pending[..at]);
        }
        let hold = self.held_suffix_len();
        let end = self.pending.len() - hold;
        self.released = end;
        Release::Text(&self.pending[..end])
    }

    /// Generation ended without a stop string: release everything still held
    /// (an incomplete UTF-8 tail becomes U+FFFD).
    pub fn finish(&mut self) -> &str {
        if self.released > 0 {
            self.pending.drain(..self.released);
            self.released = 0;
        }
        decode_into(&mut self.partial, &mut self.pending, true);
        self.released = self.pending.len();
        &self.pending
    }

    fn first_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of a stop string.
    fn held_suffix_len(&self) -> usize {
        let p = self.pending.as_str();
        let mut best = 0;
        for s in &self.stops {
            let max = (s.len() - 1).min(p.len());
            for len in (best + 1..=max).rev() {
                let start = p.len() - len;
                if p.is_char_boundary(start) && s.starts_with(&p[start..]) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

/// Move the valid UTF-8 prefix of `bytes` into `out`; invalid sequences become U+FFFD; an
/// incomplete sequence at the end stays in `bytes` unless `flush`.
fn decode_into(bytes: &mut Vec<u8>, out: &mut String, flush: bool) {
    let mut consumed = 0;
    loop {
        match std::str::from_utf8(&bytes[consumed..]) {
            Ok(s) => {
                out.push_str(s);
                consumed = bytes.len();
                break;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // `valid_up_to` bytes were just validated, so this cannot fail.
                out.push_str(std::str::from_utf8(&bytes[consumed..consumed + valid]).unwrap_or(""));
                consumed += valid;
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        consumed += n;
                    }
                    None if flush => {
                        out.push('\u{FFFD}');
                        consumed = bytes.len();
                        break;
                    }
                    None => break,
                }
            }
        }
    }
    bytes.drain(..consumed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], tokens: &[&[u8]]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut s = PieceStream::new(&stops);
        let mut out = String::new();
        for t in tokens {
            match s.push(t) {
                Release::Text(x) => out.push_str(x),
                Release::Stop(x) => {
                    out.push_str(x);
                    return (out, true);
                }
            }
        }
        out.push_str(s.finish());
        (out, false)
    }

    #[test]
    fn joins_utf8_split_across_tokens() {
        let e = "é".as_bytes();
        let crab = "🦀".as_bytes();
        assert_eq!(
            run(
                &[],
                &[b"caf", &e[..1], &e[1..], b" ", &crab[..2], &crab[2..]]
            ),
            ("café 🦀".into(), false)
        );
    }

    #[test]
    fn invalid_and_truncated_utf8_become_replacement_chars() {
        assert_eq!(run(&[], &[b"a\xffb"]), ("a\u{FFFD}b".into(), false));
        assert_eq!(run(&[], &[b"x\xe2\x82"]), ("x\u{FFFD}".into(), false));
    }

    #[test]
    fn stop_string_is_not_emitted_even_when_split() {
        assert_eq!(
            run(&["\nUser:"], &[b"Hello", b"\nUs", b"er:", b" more"]),
            ("Hello".into(), true)
        );
        // A prefix that turns out not to be a stop string is released intact.
        assert_eq!(
            run(&["\nUser:"], &[b"a\nUs", b"ual", b" end"]),
            ("a\nUsual end".into(), false)
        );
        // Held text is released at the end.
        assert_eq!(run(&["STOP"], &[b"go ST"]), ("go ST".into(), false));
        // The earliest of several stops wins.
        assert_eq!(run(&["b", "a"], &[b"xxab"]), ("xx".into(), true));
    }

    #[test]
    fn held_text_is_released_as_soon_as_it_cannot_be_a_stop() {
        let stops = vec!["<end>".to_string()];
        let mut s = PieceStream::new(&stops);
        assert_eq!(s.push(b"hi <"), Release::Text("hi "));
        assert_eq!(s.push(b"e"), Release::Text(""));
        assert_eq!(s.push(b"x"), Release::Text("<ex"));
        assert_eq!(s.push(b" <en"), Release::Text(" "));
        assert_eq!(s.push(b"d>"), Release::Stop(""));
    }
}
