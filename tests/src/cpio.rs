//! A writer for the `newc` cpio format, the one the Linux kernel unpacks as an initramfs
//! (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! Each entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex fields), the
//! NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes; the archive ends
//! with an entry named `TRAILER!!!` and is padded to a 512-byte block. Parent directories are
//! added before their first entry, because the kernel's unpacker does not create them.
//! Timestamps are 0 and owners root, so the same inputs give the same bytes.

use std::collections::BTreeSet;

/// File type bits of `c_mode`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

pub const MAGIC: &str = "070701";
pub const HEADER_LEN: usize = 110;
pub const TRAILER: &str = "TRAILER!!!";

/// An archive being written.
#[derive(Debug, Default)]
pub struct Cpio {
    out: Vec<u8>,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    pub fn new() -> Self {
        Self::default()
    }

    /// A directory (`mode` holds the permission bits, e.g. 0o755).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), String> {
        let path = check_path(path)?;
        if self.dirs.contains(path) {
            return Ok(());
        }
        self.parents(path)?;
        self.dirs.insert(path.to_string());
        self.entry(path, S_IFDIR | (mode & 0o7777), 2, (0, 0), b"");
        Ok(())
    }

    /// A regular file with `data`.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), String> {
        let path = self.leaf(path)?;
        self.entry(&path, S_IFREG | (mode & 0o7777), 1, (0, 0), data);
        Ok(())
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), String> {
        if target.is_empty() || target.contains('\0') {
            return Err(format!("symlink {path:?}: bad target {target:?}"));
        }
        let path = self.leaf(path)?;
        self.entry(&path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes());
        Ok(())
    }

    /// A character device node (`/dev/console` is 5:1).
    pub fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), String> {
        let path = self.leaf(path)?;
        self.entry(&path, S_IFCHR | (mode & 0o7777), 1, (major, minor), b"");
        Ok(())
    }

    /// The archive with its trailer, padded to a 512-byte block.
    pub fn finish(mut self) -> Vec<u8> {
        self.header(TRAILER, 0, 0, 1, (0, 0), 0);
        let padded = self.out.len().next_multiple_of(512);
        self.out.resize(padded, 0);
        self.out
    }

    /// Checks a non-directory path and adds its parents.
    fn leaf(&mut self, path: &str) -> Result<String, String> {
        let path = check_path(path)?;
        if self.dirs.contains(path) {
            return Err(format!("{path:?} is already a directory"));
        }
        self.parents(path)?;
        Ok(path.to_string())
    }

    fn parents(&mut self, path: &str) -> Result<(), String> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755)?;
        }
        Ok(())
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let ino = self.next_ino;
        self.header(name, ino, mode, nlink, rdev, data.len());
        self.out.extend_from_slice(data);
        self.pad4();
    }

    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        size: usize,
    ) {
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            size as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1, // with the NUL
            0,                     // check (only for the 070702 format)
        ];
        self.out.extend_from_slice(MAGIC.as_bytes());
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad4();
    }

    fn pad4(&mut self) {
        let padded = self.out.len().next_multiple_of(4);
        self.out.resize(padded, 0);
    }
}

/// A relative path without empty, `.` or `..` components, NULs or a trailing slash; a
/// leading `/` is dropped (archive names are relative to the root).
fn check_path(path: &str) -> Result<&str, String> {
    let rel = path.strip_prefix('/').unwrap_or(path);
    let ok = !rel.is_empty()
        && !rel.contains('\0')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && rel.len() < 4096;
    ok.then_some(rel)
        .ok_or_else(|| format!("bad archive path {path:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};

    /// One parsed entry: (name, mode, nlink, rdev, data).
    type Entry = (String, u32, u32, (u32, u32), Vec<u8>);

    /// Reads an archive back, checking magic and 4-byte alignment of every header and data.
    fn parse(bytes: &[u8]) -> Vec<Entry> {
        let mut at = 0;
        let mut entries = Vec::new();
        loop {
            assert_eq!(at % 4, 0, "header at {at} not 4-byte aligned");
            let h = &bytes[at..at + HEADER_LEN];
            assert_eq!(&h[..6], MAGIC.as_bytes());
            let field = |i: usize| {
                let s = std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let (mode, nlink, size, namesize) = (field(1), field(4), field(6), field(11));
            let name_start = at + HEADER_LEN;
            let name_end = name_start + namesize as usize;
            assert_eq!(bytes[name_end - 1], 0, "name is NUL-terminated");
            let name = String::from_utf8(bytes[name_start..name_end - 1].to_vec()).unwrap();
            let data_start = name_end.next_multiple_of(4);
            let data_end = data_start + size as usize;
            let data = bytes[data_start..data_end].to_vec();
            at = data_end.next_multiple_of(4);
            if name == TRAILER {
                assert_eq!(bytes.len() % 512, 0);
                assert!(
                    bytes[at..].iter().all(|&b| b == 0),
                    "only padding after the trailer"
                );
                return entries;
            }
            entries.push((name, mode, nlink, (field(9), field(10)), data));
        }
    }

    fn sample() -> Vec<u8> {
        let mut c = Cpio::new();
        c.file("/bin/busybox", 0o755, b"\x7fELF...").unwrap();
        c.symlink("bin/sh", "/bin/busybox").unwrap();
        c.char_device("dev/console", 0o600, 5, 1).unwrap();
        c.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        c.dir("tmp", 0o1777).unwrap();
        c.file("etc/a/b/c.txt", 0o644, b"abc").unwrap();
        c.finish()
    }

    #[test]
    fn first_header_is_byte_exact() {
        let mut c = Cpio::new();
        c.file("init", 0o755, b"hi").unwrap();
        let bytes = c.finish();
        let want = concat!(
            "070701", "00000001", // magic, inode
            "000081ED", "00000000", "00000000", // mode (file 0755), uid, gid
            "00000001", "00000000", "00000002", // nlink, mtime, size
            "00000000", "00000000", "00000000", "00000000", // dev, rdev (major, minor)
            "00000005", "00000000", // name size with NUL, check
        );
        assert_eq!(&bytes[..HEADER_LEN], want.as_bytes());
        // Name "init\0" (header + 5 = 115, padded to 116), then data "hi" padded to 4.
        assert_eq!(&bytes[110..116], b"init\0\0");
        assert_eq!(&bytes[116..120], b"hi\0\0");
        assert_eq!(&bytes[120..126], MAGIC.as_bytes());
    }

    #[test]
    fn entries_round_trip_with_parents_first_and_a_trailer() {
        let entries = parse(&sample());
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                "tmp",
                "etc",
                "etc/a",
                "etc/a/b",
                "etc/a/b/c.txt"
            ]
        );
        let get = |n: &str| entries.iter().find(|e| e.0 == n).unwrap();
        assert_eq!(get("bin").1, 0o040755);
        assert_eq!(get("bin").2, 2);
        assert_eq!(get("bin/busybox").1, 0o100755);
        assert_eq!(get("bin/busybox").4, b"\x7fELF...");
        assert_eq!(get("bin/sh").1, 0o120777);
        assert_eq!(get("bin/sh").4, b"/bin/busybox");
        assert_eq!(get("dev/console").1, 0o020600);
        assert_eq!(get("dev/console").3, (5, 1));
        assert_eq!(get("tmp").1, 0o041777);
        assert_eq!(get("etc/a/b/c.txt").4, b"abc");
    }

    #[test]
    fn refuses_bad_paths_and_file_over_directory() {
        let mut c = Cpio::new();
        for bad in ["", "/", "a//b", "a/../b", "./a", "a/", "a\0b"] {
            assert!(c.file(bad, 0o644, b"").is_err(), "{bad:?}");
        }
        c.dir("etc", 0o755).unwrap();
        assert!(c.file("etc", 0o644, b"").is_err());
        assert!(c.symlink("x", "").is_err());
        c.dir("etc", 0o755).unwrap(); // again: no second entry
        assert_eq!(parse(&c.finish()).len(), 1);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nexus-e2e-cpio-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// GNU cpio reads what the kernel reads; needs the `cpio` package.
    fn gnu_cpio(args: &[&str], dir: &std::path::Path, input: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                // Never a silent pass: without cpio this test cannot check anything.
                panic!(
                    "cannot run cpio ({e}): `cargo xtask test` installs it (apt-get install cpio)"
                )
            });
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "cpio {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    #[test]
    fn gnu_cpio_lists_and_extracts_it() {
        let dir = scratch("gnu");
        let listing = gnu_cpio(&["-t", "--quiet"], &dir, &sample());
        let names: Vec<String> = String::from_utf8(listing.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(names.len(), 11, "{names:?}");
        assert!(names.contains(&"dev/console".to_string()));

        // Extract an archive without device nodes and compare what lands on disk.
        let mut c = Cpio::new();
        c.file("bin/tool", 0o755, b"tool bytes").unwrap();
        c.symlink("bin/alias", "tool").unwrap();
        c.file("etc/nexus-exec", 0o644, b"nproc\n").unwrap();
        gnu_cpio(
            &["-i", "-d", "--quiet", "--no-absolute-filenames"],
            &dir,
            &c.finish(),
        );
        assert_eq!(std::fs::read(dir.join("bin/tool")).unwrap(), b"tool bytes");
        assert_eq!(
            std::fs::read(dir.join("etc/nexus-exec")).unwrap(),
            b"nproc\n"
        );
        assert_eq!(
            std::fs::read_link(dir.join("bin/alias")).unwrap(),
            PathBuf::from("tool")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let _ = std::fs::remove_dir_all(dir);
    }
}
