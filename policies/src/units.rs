//! Human-readable byte sizes and addresses ("4GiB", "0x1_0000_0000"), both
//! directions, without allocation.

use core::fmt;

const UNITS: [(&str, u32); 5] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10), ("B", 0)];

/// Why a size string was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// Not `<number>[ ]<unit>` with unit B, KiB, MiB, GiB or TiB.
    Syntax,
    /// The value does not fit in 64 bits.
    Overflow,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::Syntax => f.write_str(
                "expected an integer or a size like \"16MiB\", \"4GiB\", \"0x4000_0000\" \
                 (units B, KiB, MiB, GiB, TiB)",
            ),
            SizeError::Overflow => f.write_str("size does not fit in 64 bits"),
        }
    }
}

/// Parses "4GiB", "4 GiB", "16MiB", "0x4000_0000", "4096", "1_024KiB".
/// Decimal units (GB, MB) are refused on purpose: they are ambiguous.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    // Hex numbers carry no unit; everything else is digits then an optional unit.
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return parse_digits(hex, 16);
    }
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let value = parse_digits(number, 10)?;
    let shift = match unit.trim_start() {
        "" => 0,
        unit => {
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .ok_or(SizeError::Syntax)?
                .1
        }
    };
    value.checked_mul(1u64 << shift).ok_or(SizeError::Overflow)
}

fn parse_digits(digits: &str, radix: u32) -> Result<u64, SizeError> {
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') {
        return Err(SizeError::Syntax);
    }
    let mut value: u64 = 0;
    for c in digits.chars().filter(|c| *c != '_') {
        let d = c.to_digit(radix).ok_or(SizeError::Syntax)?;
        value = value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or(SizeError::Overflow)?;
    }
    Ok(value)
}

/// Displays a byte count with the largest binary unit that divides it
/// exactly ("4GiB", "1536MiB"), or in hex bytes when none does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v == 0 {
            return f.pad("0B");
        }
        for (name, shift) in UNITS {
            if shift > 0 && v.trailing_zeros() >= shift {
                return pad_fmt(f, format_args!("{}{}", v >> shift, name));
            }
        }
        pad_fmt(f, format_args!("{}B", v))
    }
}

/// Displays an address as hex with `_` every four digits ("0x1_0000_0000").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr(pub u64);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 2 + 16 + 3];
        let mut len = 0;
        let digits = if self.0 == 0 {
            1
        } else {
            (64 - self.0.leading_zeros()).div_ceil(4) as usize
        };
        buf[0] = b'0';
        buf[1] = b'x';
        len += 2;
        for i in (0..digits).rev() {
            let nibble = ((self.0 >> (i * 4)) & 0xf) as usize;
            buf[len] = b"0123456789abcdef"[nibble];
            len += 1;
            if i > 0 && i % 4 == 0 {
                buf[len] = b'_';
                len += 1;
            }
        }
        // Only ASCII was written above.
        f.pad(core::str::from_utf8(&buf[..len]).unwrap_or("0x?"))
    }
}

/// Formats into a small stack buffer so width/alignment flags apply to the
/// whole text (used by the report's columns).
fn pad_fmt(f: &mut fmt::Formatter<'_>, args: fmt::Arguments<'_>) -> fmt::Result {
    struct Buf {
        bytes: [u8; 48],
        len: usize,
    }
    impl fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
            self.bytes
                .get_mut(self.len..end)
                .ok_or(fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let mut buf = Buf {
        bytes: [0; 48],
        len: 0,
    };
    fmt::write(&mut buf, args)?;
    f.pad(core::str::from_utf8(&buf.bytes[..buf.len]).map_err(|_| fmt::Error)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("4 GiB"), Ok(4 << 30));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1_024KiB"), Ok(1 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("12B"), Ok(12));
        assert_eq!(parse_size("0x4000_0000"), Ok(0x4000_0000));
        assert_eq!(parse_size("0X10"), Ok(16));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        for bad in [
            "", "GiB", "4GB", "4 gib", "4G", "0x", "0xg", "_1", "1_", "-1", "1.5GiB",
        ] {
            assert_eq!(parse_size(bad), Err(SizeError::Syntax), "{bad:?}");
        }
        assert_eq!(parse_size("16777216TiB"), Err(SizeError::Overflow));
        assert_eq!(
            parse_size("0x1_0000_0000_0000_0000"),
            Err(SizeError::Overflow)
        );
    }

    #[test]
    fn prints_sizes_and_addresses() {
        assert_eq!(Size(4 << 30).to_string(), "4GiB");
        assert_eq!(Size(1536 << 20).to_string(), "1536MiB");
        assert_eq!(Size(60 << 30).to_string(), "60GiB");
        assert_eq!(Size(4097).to_string(), "4097B");
        assert_eq!(Size(0).to_string(), "0B");
        assert_eq!(format!("{:>8}", Size(2 << 20)), "    2MiB");
        assert_eq!(Addr(0x1_0000_0000).to_string(), "0x1_0000_0000");
        assert_eq!(Addr(0).to_string(), "0x0");
        assert_eq!(Addr(0x4000_0000).to_string(), "0x4000_0000");
        assert_eq!(Addr(0xfff).to_string(), "0xfff");
        assert_eq!(Addr(u64::MAX).to_string(), "0xffff_ffff_ffff_ffff");
    }
}
