//! The primary partition's `boot` path: the EFI application the hypervisor chain-loads from
//! its own volume after the hand-over (`\NEXUS\VMLINUZ.EFI`, a boot loader such as GRUB).
//!
//! One rule, checked by validation on the host and again by the compiled-policy decoder
//! (the hypervisor turns the path into a UEFI file device path, so it must never see a
//! malformed one). `no_std`, no allocation.

use core::fmt;

use crate::limits::MAX_BOOT_PATH_LEN;

/// What is wrong with a `boot` path, in the order the checks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootPathError {
    Empty,
    /// Longer than [`MAX_BOOT_PATH_LEN`] bytes.
    TooLong {
        len: usize,
    },
    /// The byte at `offset` is not printable ASCII (0x20..=0x7e).
    NotPrintable {
        offset: usize,
    },
    /// A `/`: UEFI file paths separate components with backslashes.
    ForwardSlash {
        offset: usize,
    },
    /// Does not start with `\` (the root of the volume).
    NotAbsolute,
    /// `\\` or a trailing `\`.
    EmptyComponent {
        offset: usize,
    },
    /// A `.` or `..` component.
    DotComponent {
        offset: usize,
    },
    /// A character FAT file names cannot hold (`"*:<>?|`).
    ReservedCharacter {
        offset: usize,
        ch: char,
    },
}

/// Checks `path` against the rule in docs/policy.md (`boot`).
pub fn check_boot_path(path: &str) -> Result<(), BootPathError> {
    use BootPathError::*;
    if path.is_empty() {
        return Err(Empty);
    }
    if path.len() > MAX_BOOT_PATH_LEN {
        return Err(TooLong { len: path.len() });
    }
    if let Some(offset) = path.bytes().position(|b| !(0x20..0x7f).contains(&b)) {
        return Err(NotPrintable { offset });
    }
    if let Some(offset) = path.find('/') {
        return Err(ForwardSlash { offset });
    }
    let Some(rest) = path.strip_prefix('\\') else {
        return Err(NotAbsolute);
    };
    let mut offset = 1;
    for component in rest.split('\\') {
        match component {
            "" => return Err(EmptyComponent { offset }),
            "." | ".." => return Err(DotComponent { offset }),
            _ => {}
        }
        if let Some((i, ch)) = component
            .char_indices()
            .find(|(_, c)| "\"*:<>?|".contains(*c))
        {
            return Err(ReservedCharacter {
                offset: offset + i,
                ch,
            });
        }
        offset += component.len() + 1;
    }
    Ok(())
}

impl fmt::Display for BootPathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BootPathError::*;
        match *self {
            Empty => f.write_str("is empty"),
            TooLong { len } => write!(f, "is {len} bytes long; at most {MAX_BOOT_PATH_LEN}"),
            NotPrintable { offset } => {
                write!(
                    f,
                    "has a byte that is not printable ASCII at offset {offset}"
                )
            }
            ForwardSlash { offset } => write!(
                f,
                "has '/' at offset {offset}; UEFI paths separate folders with '\\' \
                 (e.g. '\\NEXUS\\VMLINUZ.EFI')"
            ),
            NotAbsolute => f.write_str(
                "must start with '\\' (a path from the root of the hypervisor's volume, \
                 e.g. '\\NEXUS\\VMLINUZ.EFI')",
            ),
            EmptyComponent { offset } => write!(
                f,
                "has an empty component at offset {offset} (two backslashes in a row or a \
                 trailing backslash)"
            ),
            DotComponent { offset } => write!(
                f,
                "has a '.' or '..' component at offset {offset}; name the file directly"
            ),
            ReservedCharacter { offset, ch } => write!(
                f,
                "has {ch:?} at offset {offset}, which FAT file names cannot hold"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BootPathError::*;

    #[test]
    fn accepts_absolute_backslash_paths() {
        for ok in [
            "\\NEXUS\\VMLINUZ.EFI",
            "\\EFI\\Garuda\\grubx64.efi",
            "\\a",
            "\\dir with spaces\\x.efi",
            "\\...\\x", // three dots is a valid FAT long name
        ] {
            assert_eq!(check_boot_path(ok), Ok(()), "{ok}");
        }
        let longest = format!("\\{}", "a".repeat(MAX_BOOT_PATH_LEN - 1));
        assert_eq!(check_boot_path(&longest), Ok(()));
    }

    #[test]
    fn refuses_each_malformed_path_with_its_reason() {
        let too_long = format!("\\{}", "a".repeat(MAX_BOOT_PATH_LEN));
        for (bad, why) in [
            ("", Empty),
            (too_long.as_str(), TooLong { len: 256 }),
            ("\\NEXUS\\VML\tINUZ", NotPrintable { offset: 10 }),
            ("\\NEXUS\\VMLINÜZ", NotPrintable { offset: 12 }),
            ("\\NEXUS/VMLINUZ.EFI", ForwardSlash { offset: 6 }),
            ("NEXUS\\VMLINUZ.EFI", NotAbsolute),
            ("\\NEXUS\\\\VMLINUZ.EFI", EmptyComponent { offset: 7 }),
            ("\\NEXUS\\", EmptyComponent { offset: 7 }),
            ("\\", EmptyComponent { offset: 1 }),
            ("\\NEXUS\\..\\x.efi", DotComponent { offset: 7 }),
            ("\\.\\x.efi", DotComponent { offset: 1 }),
            ("\\NEXUS\\a:b", ReservedCharacter { offset: 8, ch: ':' }),
            ("\\NEXUS\\*.efi", ReservedCharacter { offset: 7, ch: '*' }),
        ] {
            assert_eq!(check_boot_path(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(
            ForwardSlash { offset: 6 }.to_string(),
            "has '/' at offset 6; UEFI paths separate folders with '\\' (e.g. '\\NEXUS\\VMLINUZ.EFI')"
        );
        assert_eq!(
            TooLong { len: 300 }.to_string(),
            "is 300 bytes long; at most 255"
        );
    }
}
