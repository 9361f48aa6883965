//! Checks for the programs and files the build and the tests need, and installs missing Debian
//! packages when running as root (otherwise prints the exact command and fails).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::cmd;

/// How to tell whether a requirement is met.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// An executable of this name on PATH.
    Program(&'static str),
    /// A file at this path.
    File(&'static str),
    /// A custom check (for files whose path varies by version).
    Check(fn() -> bool),
}

/// One thing the project needs and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    pub what: &'static str,
    pub probe: Probe,
    pub package: &'static str,
}

const fn req(what: &'static str, probe: Probe, package: &'static str) -> Requirement {
    Requirement {
        what,
        probe,
        package,
    }
}

/// Booting images in QEMU with OVMF.
pub const QEMU: &[Requirement] = &[
    req(
        "qemu-system-x86_64",
        Probe::Program("qemu-system-x86_64"),
        "qemu-system-x86",
    ),
    req(
        "OVMF firmware code",
        Probe::File("/usr/share/OVMF/OVMF_CODE.fd"),
        "ovmf",
    ),
    req(
        "OVMF firmware variables",
        Probe::File("/usr/share/OVMF/OVMF_VARS.fd"),
        "ovmf",
    ),
];

/// Making FAT images of the ESP.
pub const MTOOLS: &[Requirement] = &[
    req("mformat", Probe::Program("mformat"), "mtools"),
    req("mmd", Probe::Program("mmd"), "mtools"),
    req("mcopy", Probe::Program("mcopy"), "mtools"),
];

/// Booting images in Bochs (VMX path) with the 2 MiB OVMF image.
pub const BOCHS: &[Requirement] = &[
    req("bochs", Probe::Program("bochs"), "bochs"),
    req(
        "Bochs BIOS",
        Probe::File("/usr/share/bochs/BIOS-bochs-latest"),
        "bochsbios",
    ),
    req(
        "VGA BIOS",
        Probe::File("/usr/share/vgabios/vgabios.bin"),
        "vgabios",
    ),
    req(
        "OVMF 2 MiB image",
        Probe::File("/usr/share/ovmf/OVMF.fd"),
        "ovmf",
    ),
];

/// Fetching Debian's kernel and busybox for the primary's Linux (`cargo xtask build` with a
/// policy that boots `\NEXUS\VMLINUZ.EFI`).
pub const DEBIAN_FETCH: &[Requirement] = &[
    req("apt-get", Probe::Program("apt-get"), "apt"),
    req("apt-cache", Probe::Program("apt-cache"), "apt"),
    req("dpkg-deb", Probe::Program("dpkg-deb"), "dpkg"),
    req("tar", Probe::Program("tar"), "tar"),
];

/// The initramfs writer's round-trip test reads archives back with GNU cpio.
pub const CPIO: &[Requirement] = &[req("cpio", Probe::Program("cpio"), "cpio")];

/// Building the AI crate (llama.cpp through cmake, bindings through libclang).
pub const AI_BUILD: &[Requirement] = &[
    req("cmake", Probe::Program("cmake"), "cmake"),
    req("C++ compiler", Probe::Program("c++"), "g++"),
    req("libclang", Probe::Check(has_libclang), "libclang-dev"),
];

/// The Rust targets the images are built for (also listed in rust-toolchain.toml): the
/// hypervisor, the bare-metal test guests, and the static tools of the primary's Linux
/// (musl needs no Debian package: the target ships its own C library and linker setup).
pub const RUST_TARGETS: &[&str] = &[
    "x86_64-unknown-uefi",
    "x86_64-unknown-none",
    "x86_64-unknown-linux-musl",
];

impl Requirement {
    pub fn is_met(&self) -> bool {
        match self.probe {
            Probe::Program(name) => on_path(name),
            Probe::File(path) => Path::new(path).is_file(),
            Probe::Check(f) => f(),
        }
    }
}

/// The requirements in `reqs` that are not met.
pub fn missing(reqs: &[Requirement]) -> Vec<Requirement> {
    reqs.iter().filter(|r| !r.is_met()).copied().collect()
}

/// Debian packages that provide `reqs`, without repeats, in order.
fn packages(reqs: &[Requirement]) -> Vec<&'static str> {
    let mut pkgs: Vec<&str> = Vec::new();
    for r in reqs {
        if !pkgs.contains(&r.package) {
            pkgs.push(r.package);
        }
    }
    pkgs
}

/// The `apt-get install` command line for `reqs`.
pub fn install_command(reqs: &[Requirement]) -> String {
    format!("apt-get install -y {}", packages(reqs).join(" "))
}

/// Makes sure `reqs` (needed for `purpose`) are met: as root, installs the missing packages
/// with apt-get; otherwise fails with the command to run.
pub fn ensure(purpose: &str, reqs: &[Requirement]) -> Result<()> {
    let missing = missing(reqs);
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|r| r.what).collect();
    if !is_root() {
        bail!(
            "{purpose} needs {} (not found); install with:\n    sudo {}",
            names.join(", "),
            install_command(&missing)
        );
    }
    cmd::step(&format!(
        "installing {} for {purpose} (missing: {})…",
        packages(&missing).join(" "),
        names.join(", ")
    ));
    let noninteractive = [("DEBIAN_FRONTEND", "noninteractive")];
    cmd::run(Command::new("apt-get").arg("update").envs(noninteractive))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages(&missing))
            .envs(noninteractive),
    )?;
    let still = self::missing(reqs);
    if !still.is_empty() {
        let names: Vec<&str> = still.iter().map(|r| r.what).collect();
        bail!(
            "installed {} but still cannot find {}",
            packages(&missing).join(" "),
            names.join(", ")
        );
    }
    Ok(())
}

/// Adds the image targets with rustup when they are missing.
pub fn ensure_rust_targets() -> Result<()> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(crate::paths::root())
        .output()
    else {
        // Without rustup (e.g. a distribution's cargo) there is nothing to add targets with;
        // the build's own error will name a missing target.
        return Ok(());
    };
    let installed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = RUST_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if !missing.is_empty() {
        cmd::step(&format!("adding Rust targets {}…", missing.join(" ")));
        cmd::run(
            Command::new("rustup")
                .args(["target", "add"])
                .args(&missing)
                .current_dir(crate::paths::root()),
        )?;
    }
    Ok(())
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let p = dir.join(name);
            p.is_file() && is_executable(&p)
        })
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// libclang as clang-sys finds it: `LIBCLANG_PATH`, or a `libclang*.so*` in the usual folders.
fn has_libclang() -> bool {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("LIBCLANG_PATH")
        .map(Into::into)
        .into_iter()
        .collect();
    dirs.push("/usr/lib/x86_64-linux-gnu".into());
    dirs.push("/usr/lib".into());
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("llvm-"))
                })
                .map(|p| p.join("lib")),
        );
    }
    dirs.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("libclang")
                    && !name.starts_with("libclang-cpp")
                    && name.contains(".so")
            })
        })
    })
}

/// Whether this process runs as root (uid 0), read from /proc so no libc binding is needed.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1))
            == Some("0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_command_lists_each_package_once() {
        assert_eq!(
            install_command(QEMU),
            "apt-get install -y qemu-system-x86 ovmf"
        );
        assert_eq!(install_command(MTOOLS), "apt-get install -y mtools");
    }

    #[test]
    fn rust_targets_are_the_toolchain_files() {
        let text = std::fs::read_to_string(crate::paths::root().join("rust-toolchain.toml"))
            .expect("rust-toolchain.toml");
        let file: toml::Table = toml::from_str(&text).expect("valid TOML");
        let listed: Vec<&str> = file["toolchain"]["targets"]
            .as_array()
            .expect("targets list")
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        assert_eq!(listed, RUST_TARGETS);
    }

    #[test]
    fn probes_find_what_exists_and_miss_what_does_not() {
        assert!(req("sh", Probe::Program("sh"), "dash").is_met());
        assert!(!req("x", Probe::Program("nexus-no-such-program"), "x").is_met());
        assert!(req("passwd", Probe::File("/etc/passwd"), "base-files").is_met());
        assert!(!req("x", Probe::File("/nonexistent/file"), "x").is_met());
        let missing = missing(&[
            req("a", Probe::File("/nonexistent/a"), "pa"),
            req("b", Probe::Program("sh"), "pb"),
        ]);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].package, "pa");
    }
}
