//! Paths of the hypervisor's files on the ESP (pure; the reading is in `esp`).
//!
//! Layout shared with `cargo xtask build`: `\NEXUS\POLICY.BIN` and `\NEXUS\<IMAGE>.ELF`,
//! where `<IMAGE>` is a partition's `image` field in upper case (FAT is case-insensitive).

use core::fmt::{self, Write};

/// The compiled policy.
pub const POLICY_PATH: &str = "\\NEXUS\\POLICY.BIN";

/// Longest image name accepted (FAT long names allow more; the policy keeps them short).
pub const IMAGE_NAME_MAX: usize = 48;

/// A path on the ESP, built without allocation.
#[derive(Clone, PartialEq, Eq)]
pub struct EspPath {
    buf: [u8; 64],
    len: usize,
}

impl Default for EspPath {
    fn default() -> Self {
        Self {
            buf: [0; 64],
            len: 0,
        }
    }
}

impl EspPath {
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Debug for EspPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for EspPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Write for EspPath {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self
            .len
            .checked_add(s.len())
            .filter(|&e| e <= self.buf.len())
            .ok_or(fmt::Error)?;
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Why an image name cannot become a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadImageName {
    Empty,
    TooLong(usize),
    /// Only ASCII letters, digits, `-` and `_` are allowed (no separators, dots or spaces).
    BadChar(char),
}

impl fmt::Display for BadImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadImageName::Empty => write!(f, "empty image name"),
            BadImageName::TooLong(n) => {
                write!(f, "image name is {n} bytes (at most {IMAGE_NAME_MAX})")
            }
            BadImageName::BadChar(c) => {
                write!(
                    f,
                    "image name contains {c:?} (only letters, digits, '-' and '_')"
                )
            }
        }
    }
}

/// `\NEXUS\<NAME>.ELF` for a partition's `image` field.
pub fn image_path(name: &str) -> Result<EspPath, BadImageName> {
    if name.is_empty() {
        return Err(BadImageName::Empty);
    }
    if name.len() > IMAGE_NAME_MAX {
        return Err(BadImageName::TooLong(name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(BadImageName::BadChar(c));
    }
    let mut p = EspPath::default();
    // Fits: 7 + 48 + 4 < 64.
    let _ = p.write_str("\\NEXUS\\");
    for c in name.chars() {
        let _ = p.write_char(c.to_ascii_uppercase());
    }
    let _ = p.write_str(".ELF");
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_map_to_upper_case_elf_paths() {
        assert_eq!(
            image_path("test-guest").unwrap().as_str(),
            "\\NEXUS\\TEST-GUEST.ELF"
        );
        assert_eq!(image_path("a_1").unwrap().as_str(), "\\NEXUS\\A_1.ELF");
        assert_eq!(
            image_path(&"x".repeat(IMAGE_NAME_MAX))
                .unwrap()
                .as_str()
                .len(),
            7 + IMAGE_NAME_MAX + 4
        );
    }

    #[test]
    fn path_tricks_are_refused() {
        assert_eq!(image_path(""), Err(BadImageName::Empty));
        assert_eq!(
            image_path("..\\EFI\\BOOT\\BOOTX64"),
            Err(BadImageName::BadChar('.'))
        );
        assert_eq!(image_path("a/b"), Err(BadImageName::BadChar('/')));
        assert_eq!(image_path("a b"), Err(BadImageName::BadChar(' ')));
        assert_eq!(image_path(&"x".repeat(49)), Err(BadImageName::TooLong(49)));
        assert_eq!(
            image_path("é").unwrap_err().to_string(),
            "image name contains 'é' (only letters, digits, '-' and '_')"
        );
    }
}
