//! `keep_alive`: how long a model stays loaded after its last request.
//!
//! Accepts what Ollama accepts: a JSON number of seconds (negative: forever), or a
//! Go duration string such as `"5m"`, `"1h30m"`, `"1.5s"`, `"300ms"`, `"-1"` (a bare
//! number in a string is seconds). `0` unloads as soon as the request ends.

use std::time::{Duration, Instant};

/// How long a model stays resident after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    /// Never expires (negative values).
    Forever,
    /// Expires this long after the last request ended; zero unloads at once.
    For(Duration),
}

impl Default for KeepAlive {
    /// Ollama's default: five minutes.
    fn default() -> Self {
        KeepAlive::For(Duration::from_secs(300))
    }
}

impl KeepAlive {
    /// True when the model should be unloaded as soon as it is idle.
    pub fn unloads_now(&self) -> bool {
        matches!(self, KeepAlive::For(d) if d.is_zero())
    }

    /// When a model last used at `now` expires (`None`: never).
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        match self {
            KeepAlive::Forever => None,
            // A duration too large to represent is as good as forever.
            KeepAlive::For(d) => now.checked_add(*d),
        }
    }

    /// From a JSON value (`keep_alive` in a request body).
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        match v {
            serde_json::Value::Number(n) => {
                let secs = n
                    .as_f64()
                    .ok_or_else(|| format!("keep_alive {n} is not a number of seconds"))?;
                Ok(Self::from_seconds(secs))
            }
            serde_json::Value::String(s) => Self::parse(s),
            other => Err(format!(
                "keep_alive must be a number of seconds or a duration string such as \"5m\", not {other}"
            )),
        }
    }

    fn from_seconds(secs: f64) -> Self {
        // Negative means forever, as does anything too large to represent.
        if secs < 0.0 || !secs.is_finite() || secs > u64::MAX as f64 {
            KeepAlive::Forever
        } else {
            KeepAlive::For(Duration::from_secs_f64(secs))
        }
    }

    /// Parse a Go-style duration (`"1h30m"`, `"-1s"`, `"0"`) or a bare number of seconds.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("keep_alive is an empty string".into());
        }
        if let Ok(secs) = t.parse::<f64>() {
            return Ok(Self::from_seconds(secs));
        }
        let bad = || {
            format!(
                "keep_alive {s:?} is not a duration (examples: \"5m\", \"1h30m\", \"10s\", \"-1\")"
            )
        };
        let (negative, mut rest) = match t.as_bytes()[0] {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total = 0f64; // seconds
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            if num_len == 0 {
                return Err(bad());
            }
            let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" | "μs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total += value * scale;
        }
        if negative && total > 0.0 {
            return Ok(KeepAlive::Forever);
        }
        Ok(Self::from_seconds(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secs(s: u64) -> KeepAlive {
        KeepAlive::For(Duration::from_secs(s))
    }

    #[test]
    fn go_durations() {
        assert_eq!(KeepAlive::parse("5m").unwrap(), secs(300));
        assert_eq!(KeepAlive::parse("1h30m").unwrap(), secs(5400));
        assert_eq!(
            KeepAlive::parse("1.5s").unwrap(),
            KeepAlive::For(Duration::from_millis(1500))
        );
        assert_eq!(
            KeepAlive::parse("300ms").unwrap(),
            KeepAlive::For(Duration::from_millis(300))
        );
        assert_eq!(KeepAlive::parse("0").unwrap(), secs(0));
        assert_eq!(KeepAlive::parse("0s").unwrap(), secs(0));
        assert_eq!(KeepAlive::parse("-1").unwrap(), KeepAlive::Forever);
        assert_eq!(KeepAlive::parse("-1m").unwrap(), KeepAlive::Forever);
        assert_eq!(KeepAlive::parse("3600").unwrap(), secs(3600));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "5x", "m", "1h-", "abc", "--1", "1..2s"] {
            assert!(KeepAlive::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(KeepAlive::from_json(&json!(true)).is_err());
        assert!(KeepAlive::from_json(&json!([1])).is_err());
    }

    #[test]
    fn json_numbers_are_seconds() {
        assert_eq!(KeepAlive::from_json(&json!(10)).unwrap(), secs(10));
        assert_eq!(KeepAlive::from_json(&json!(0)).unwrap(), secs(0));
        assert_eq!(
            KeepAlive::from_json(&json!(-1)).unwrap(),
            KeepAlive::Forever
        );
        assert_eq!(KeepAlive::from_json(&json!("2m")).unwrap(), secs(120));
    }

    #[test]
    fn zero_unloads_and_forever_has_no_deadline() {
        let now = Instant::now();
        assert!(secs(0).unloads_now());
        assert!(!secs(1).unloads_now());
        assert_eq!(KeepAlive::Forever.deadline(now), None);
        assert_eq!(secs(5).deadline(now), Some(now + Duration::from_secs(5)));
    }
}
