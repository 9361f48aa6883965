//! The primary's initramfs: Debian's static busybox with its applet links, the project's
//! `/init` script (`guest-images/linux/init`), `nexusctl`, `/dev/console`, and optionally
//! `/etc/nexus-exec`, the command `/init` runs instead of an interactive shell.
//!
//! Uncompressed: under QEMU TCG the kernel's gzip inflation costs more than reading the larger
//! file (measured when the issue was filed).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::Cpio;
use crate::BuildDir;

/// Where `/init` reads the command it runs (then powers off).
pub const EXEC_FILE: &str = "etc/nexus-exec";

/// `guest-images/linux/init` of this repository.
pub fn init_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-images/linux/init")
}

/// What goes into the archive.
#[derive(Debug, Clone)]
pub struct Initramfs {
    pub busybox: PathBuf,
    pub nexusctl: PathBuf,
    pub init: PathBuf,
    /// A shell command line for `/init` to run (`sh /etc/nexus-exec`) before powering off.
    pub exec: Option<String>,
}

impl Initramfs {
    /// The built busybox and nexusctl of `build`, this repository's `/init`.
    pub fn from_build(build: &BuildDir, exec: Option<&str>) -> Self {
        Self {
            busybox: build.busybox(),
            nexusctl: build.nexusctl(),
            init: init_script(),
            exec: exec.map(str::to_string),
        }
    }

    /// The archive's bytes.
    pub fn build(&self) -> Result<Vec<u8>, String> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let busybox = read(&self.busybox)?;
        let nexusctl = read(&self.nexusctl)?;
        let init = read(&self.init)?;
        let applets = applets(&self.busybox)?;

        let mut c = Cpio::new();
        for dir in [
            "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "root",
        ] {
            c.dir(dir, 0o755)?;
        }
        c.dir("tmp", 0o1777)?;
        // The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
        c.char_device("dev/console", 0o600, 5, 1)?;
        c.file("bin/busybox", 0o755, &busybox)?;
        for applet in &applets {
            c.symlink(applet, "/bin/busybox")?;
        }
        c.file("init", 0o755, &init)?;
        c.file("bin/nexusctl", 0o755, &nexusctl)?;
        if let Some(exec) = &self.exec {
            let mut text = exec.clone();
            text.push('\n');
            c.file(EXEC_FILE, 0o644, text.as_bytes())?;
        }
        Ok(c.finish())
    }

    /// Writes the archive to `out` (through a temporary file beside it).
    pub fn write(&self, out: &Path) -> Result<(), String> {
        let bytes = self.build()?;
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let tmp = out.with_extension("partial");
        std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, out)
            .map_err(|e| format!("cannot move {} to {}: {e}", tmp.display(), out.display()))
    }
}

/// Install paths of busybox's applets (`busybox --list-full`: `bin/sh`, `sbin/poweroff`,
/// ...), without `bin/busybox` itself and `linuxrc` (the initramfs has its own `/init`).
pub fn applets(busybox: &Path) -> Result<Vec<String>, String> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| format!("cannot run {} --list-full: {e}", busybox.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --list-full failed ({}): {}",
            busybox.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(parse_applets(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_applets(list: &str) -> Vec<String> {
    list.lines()
        .map(|l| l.trim().trim_start_matches('/'))
        .filter(|l| !l.is_empty() && *l != "bin/busybox" && *l != "linuxrc")
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_list_keeps_install_paths() {
        let list = "bin/sh\nsbin/poweroff\nusr/bin/nproc\nlinuxrc\nbin/busybox\n\n/sbin/init\n";
        assert_eq!(
            parse_applets(list),
            ["bin/sh", "sbin/poweroff", "usr/bin/nproc", "sbin/init"]
        );
    }

    #[test]
    fn init_script_marks_init_runs_the_command_and_powers_off() {
        let init = std::fs::read_to_string(init_script()).expect("guest-images/linux/init");
        assert!(init.starts_with("#!/bin/sh\n"));
        for needle in [
            "nexus-init: reached /init after",
            "/proc/uptime",
            "/etc/nexus-exec",
            "NEXUS EXEC BEGIN",
            "NEXUS EXEC STATUS: ",
            "poweroff -f",
            "cttyhack",
        ] {
            assert!(init.contains(needle), "init lacks {needle:?}");
        }
    }

    #[test]
    fn archive_holds_busybox_links_init_nexusctl_and_the_command() {
        let dir = std::env::temp_dir().join(format!("nexus-e2e-initramfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A stand-in busybox: a script that prints an applet list like the real one.
        let busybox = dir.join("busybox");
        std::fs::write(
            &busybox,
            "#!/bin/sh\nprintf 'bin/sh\\nsbin/poweroff\\nusr/bin/nproc\\n'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&busybox, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("nexusctl"), b"\x7fELF nexusctl").unwrap();
        let spec = Initramfs {
            busybox: busybox.clone(),
            nexusctl: dir.join("nexusctl"),
            init: init_script(),
            exec: Some("nproc; nexusctl info".into()),
        };
        let out = dir.join("initrd.img");
        spec.write(&out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for name in [
            "bin/busybox\0",
            "bin/sh\0",
            "sbin/poweroff\0",
            "usr/bin/nproc\0",
            "init\0",
            "bin/nexusctl\0",
            "dev/console\0",
            "etc/nexus-exec\0",
        ] {
            assert!(text.contains(name), "no {name:?}");
        }
        assert!(text.contains("nproc; nexusctl info\n"));
        assert!(text.contains("\x7fELF nexusctl"));
        assert!(!dir.join("initrd.partial").exists());

        let plain = Initramfs {
            exec: None,
            ..spec.clone()
        }
        .build()
        .unwrap();
        assert!(!String::from_utf8_lossy(&plain).contains("etc/nexus-exec\0"));
        let missing = Initramfs {
            nexusctl: dir.join("absent"),
            ..spec
        }
        .build()
        .unwrap_err();
        assert!(missing.contains("absent"), "{missing}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
