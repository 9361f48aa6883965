//! Linux for the primary partition: Debian 12's EFI-stub kernel and busybox (fetched with
//! `apt-get download` into `build/linux/debs/`, extracted, cached), `nexusctl` built static
//! for musl, and the initramfs (`build/linux/initrd.img`) that `nexus-e2e` writes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use nexus_e2e::esp::{self, EspContents};
use nexus_e2e::initramfs::Initramfs;
use nexus_e2e::linux::{direct_cmdline, shell_esp, LinuxBoot};
use nexus_e2e::{BuildDir, Disk};

use crate::{cargo, cmd, prereqs};

/// The metapackage that names the current kernel (`linux-image-6.1.0-<abi>-amd64`).
pub const KERNEL_META: &str = "linux-image-amd64";
/// busybox, statically linked: the initramfs's whole user space besides nexusctl.
pub const BUSYBOX: &str = "busybox-static";
/// Target of the tools inside the primary's Linux.
pub const LINUX_TARGET: &str = "x86_64-unknown-linux-musl";

/// What `fetch` found or made.
#[derive(Debug, Clone)]
pub struct Debian {
    pub kernel: PathBuf,
    pub busybox: PathBuf,
    /// The packages they came from (`build/linux/packages.txt`).
    pub packages: Vec<String>,
}

/// The kernel, busybox and nexusctl in `build/`, and the initramfs without a command:
/// everything the ESP's `NEXUS/VMLINUZ.EFI` and `NEXUS/INITRD.IMG` come from.
pub fn prepare(dir: &BuildDir) -> Result<()> {
    let nexusctl = cargo::build_release_bin("nexusctl", "nexusctl", LINUX_TARGET)?;
    fs::create_dir_all(dir.nexusctl().parent().expect("bin/ has a parent"))?;
    fs::copy(&nexusctl, dir.nexusctl()).with_context(|| {
        format!(
            "cannot copy {} to {}",
            nexusctl.display(),
            dir.nexusctl().display()
        )
    })?;
    fetch(dir)?;
    write_initrd(dir, None, &dir.initrd())
}

/// Writes an initramfs for the built kernel; with `exec`, its `/etc/nexus-exec` holds the
/// command that `/init` runs instead of a shell.
pub fn write_initrd(dir: &BuildDir, exec: Option<&str>, out: &Path) -> Result<()> {
    let spec = Initramfs::from_build(dir, exec);
    cmd::step(&format!("writing {}…", out.display()));
    spec.write(out).map_err(anyhow::Error::msg)?;
    Ok(())
}

/// How the primary's Linux is started without the hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// OVMF boots the kernel QEMU hands it (`-kernel -initrd -append`): fastest.
    Kernel,
    /// OVMF's UEFI shell runs `startup.nsh` from a FAT disk (after its 5 s countdown).
    Shell,
}

/// The command line the policy gives the primary (the kernel's), or a QEMU default.
pub fn primary_cmdline(policy: &nexus_policy::Policy) -> String {
    policy
        .primary()
        .and_then(|p| p.cmdline.clone())
        .unwrap_or_else(|| {
            format!(
                "initrd=\\{} console=ttyS0 panic=-1",
                esp::INITRD_IMG.replace('/', "\\")
            )
        })
}

/// Line prefixes of everything else that writes to the serial port beside the primary:
/// the hypervisor and the other partitions.
pub fn foreign_prefixes(policy: &nexus_policy::Policy) -> Vec<String> {
    let mut prefixes = vec!["[hv] ".to_string()];
    prefixes.extend(
        policy
            .partitions
            .iter()
            .filter(|p| p.role != nexus_policy::Role::Primary)
            .map(|p| format!("[{}] ", p.name)),
    );
    prefixes
}

/// Linux without the hypervisor, with `initrd`, as `via` says (the shell's ESP goes to
/// `build/esp-linux-shell/`).
pub fn plain_boot(
    dir: &BuildDir,
    policy: &nexus_policy::Policy,
    initrd: &Path,
    via: Via,
    extra_cmdline: &str,
) -> Result<LinuxBoot> {
    let cmdline = format!("{} {extra_cmdline}", primary_cmdline(policy))
        .trim_end()
        .to_string();
    Ok(match via {
        Via::Kernel => LinuxBoot::Direct {
            kernel: dir.kernel(),
            initrd: initrd.to_path_buf(),
            cmdline: direct_cmdline(&cmdline),
        },
        Via::Shell => {
            let esp = dir.root().join("esp-linux-shell");
            shell_esp(&esp, &dir.kernel(), initrd, &cmdline)
                .with_context(|| format!("cannot lay out {}", esp.display()))?;
            LinuxBoot::Shell(esp)
        }
    })
}

/// The hypervisor's ESP for `policy_file` with `initrd` as `NEXUS/INITRD.IMG`, laid out in
/// `build/esp-<name>/` (for runs whose initramfs holds a command).
pub fn hypervisor_boot(
    dir: &BuildDir,
    policy_file: &Path,
    initrd: &Path,
    name: &str,
) -> Result<LinuxBoot> {
    let mut contents = EspContents::from_policy(policy_file, dir).map_err(anyhow::Error::msg)?;
    contents.set_file(esp::INITRD_IMG, initrd.to_path_buf());
    let esp = dir.root().join(format!("esp-{name}"));
    contents
        .write_dir(&esp)
        .with_context(|| format!("cannot lay out {}", esp.display()))?;
    Ok(LinuxBoot::Hypervisor(Disk::Dir(esp)))
}

/// The kernel and busybox from Debian's packages, cached in `build/linux/`: a second run
/// finds them and downloads nothing.
pub fn fetch(dir: &BuildDir) -> Result<Debian> {
    let stamp = dir.linux_dir().join("packages.txt");
    if dir.kernel().is_file() && dir.busybox().is_file() && stamp.is_file() {
        let packages: Vec<String> = fs::read_to_string(&stamp)?
            .lines()
            .map(str::to_string)
            .collect();
        cmd::step(&format!(
            "Linux for the primary: cached in {} ({})",
            dir.linux_dir().display(),
            packages.join(", ")
        ));
        return Ok(Debian {
            kernel: dir.kernel(),
            busybox: dir.busybox(),
            packages,
        });
    }
    prereqs::ensure(
        "fetching Debian's kernel and busybox",
        prereqs::DEBIAN_FETCH,
    )?;
    ensure_package_lists()?;
    let kernel_package = kernel_package()?;
    let debs = dir.linux_dir().join("debs");
    fs::create_dir_all(&debs)?;
    let kernel_deb = download(&debs, &kernel_package)?;
    let busybox_deb = download(&debs, BUSYBOX)?;

    let unpack = dir.linux_dir().join("unpack");
    if unpack.exists() {
        fs::remove_dir_all(&unpack)?;
    }
    fs::create_dir_all(&unpack)?;
    cmd::step(&format!(
        "extracting the kernel from {}…",
        file_name(&kernel_deb)
    ));
    extract(&kernel_deb, &unpack, "./boot/vmlinuz-*")?;
    extract(&busybox_deb, &unpack, "./bin/busybox")?;
    let vmlinuz = single_match(&unpack.join("boot"), "vmlinuz-")?;
    check_efi_stub_kernel(&fs::read(&vmlinuz)?)
        .with_context(|| format!("{} is not an EFI-stub kernel", vmlinuz.display()))?;
    fs::copy(&vmlinuz, dir.kernel())?;
    fs::copy(unpack.join("bin/busybox"), dir.busybox())?;
    fs::remove_dir_all(&unpack)?;
    let packages = vec![file_name(&kernel_deb), file_name(&busybox_deb)];
    fs::write(&stamp, packages.join("\n") + "\n")?;
    for p in [dir.kernel(), dir.busybox()] {
        eprintln!(
            "    {:<28} {:>10} bytes",
            p.display(),
            fs::metadata(&p)?.len()
        );
    }
    Ok(Debian {
        kernel: dir.kernel(),
        busybox: dir.busybox(),
        packages,
    })
}

/// apt's package lists must know the kernel: `apt-get update` as root, else the command.
fn ensure_package_lists() -> Result<()> {
    let policy = cmd::output(Command::new("apt-cache").args(["policy", KERNEL_META]))?;
    if has_candidate(&String::from_utf8_lossy(&policy.stdout)) {
        return Ok(());
    }
    if !prereqs::is_root() {
        bail!(
            "apt knows no {KERNEL_META} (its package lists are missing); run:\n    sudo apt-get update"
        );
    }
    cmd::step("apt's package lists are missing: apt-get update…");
    cmd::run(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let policy = cmd::output(Command::new("apt-cache").args(["policy", KERNEL_META]))?;
    if !has_candidate(&String::from_utf8_lossy(&policy.stdout)) {
        bail!("apt-get update ran, but apt still offers no {KERNEL_META} (is this Debian 12 with its main archive?)");
    }
    Ok(())
}

/// Whether `apt-cache policy` output offers a version to install.
pub fn has_candidate(policy: &str) -> bool {
    policy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .any(|v| !v.trim().is_empty() && v.trim() != "(none)")
}

/// The concrete kernel package the metapackage depends on.
fn kernel_package() -> Result<String> {
    let out = cmd::output(Command::new("apt-cache").args(["depends", KERNEL_META]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    kernel_from_depends(&text).with_context(|| {
        format!("`apt-cache depends {KERNEL_META}` names no linux-image package:\n{text}")
    })
}

/// `linux-image-6.1.0-57-amd64` from `apt-cache depends linux-image-amd64` output.
pub fn kernel_from_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|p| p.trim().trim_start_matches('<').trim_end_matches('>'))
        .find(|p| p.starts_with("linux-image-") && p != &KERNEL_META)
        .map(str::to_string)
}

/// `apt-get download PACKAGE` into `debs` unless a `.deb` of it is there already.
fn download(debs: &Path, package: &str) -> Result<PathBuf> {
    if let Ok(found) = single_match_deb(debs, package) {
        return Ok(found);
    }
    cmd::step(&format!("downloading {package} (apt-get download)…"));
    let mut apt = Command::new("apt-get");
    if prereqs::is_root() {
        // apt's download user cannot write into build/; root downloads directly.
        apt.args(["-o", "APT::Sandbox::User=root"]);
    }
    cmd::run(apt.args(["download", package]).current_dir(debs))?;
    single_match_deb(debs, package)
}

fn single_match_deb(debs: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = fs::read_dir(debs)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = file_name(p);
            name.starts_with(&prefix) && name.ends_with(".deb")
        })
        .collect();
    found.sort();
    found
        .pop()
        .with_context(|| format!("no {package}_*.deb in {}", debs.display()))
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x --wildcards PATTERN`: only the files needed (the
/// kernel package also holds ~400 MB of modules that the initramfs does without).
fn extract(deb: &Path, into: &Path, pattern: &str) -> Result<()> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start dpkg-deb")?;
    let tar_in = dpkg.stdout.take().expect("piped");
    let tar = Command::new("tar")
        .args(["-x", "-C"])
        .arg(into)
        .args(["--wildcards", pattern])
        .stdin(Stdio::from(tar_in))
        .output()
        .context("cannot start tar")?;
    let dpkg_status = dpkg.wait()?;
    if !dpkg_status.success() || !tar.status.success() {
        bail!(
            "extracting {pattern} from {} failed (dpkg-deb {dpkg_status}, tar {}): {}",
            deb.display(),
            tar.status,
            String::from_utf8_lossy(&tar.stderr).trim()
        );
    }
    Ok(())
}

fn single_match(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| file_name(p).starts_with(prefix))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one {prefix}* in {}, found {found:?}",
            dir.display()
        ),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// An x86 bzImage with the EFI stub: a PE image (`MZ`, PE header) carrying the Linux boot
/// header (`HdrS` at 0x202).
pub fn check_efi_stub_kernel(bytes: &[u8]) -> Result<()> {
    if bytes.get(..2) != Some(b"MZ") {
        bail!("no MZ header (not a PE image)");
    }
    let pe = bytes
        .get(0x3c..0x40)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    if pe.and_then(|o| bytes.get(o..o + 4)) != Some(b"PE\0\0") {
        bail!("no PE signature (no EFI stub)");
    }
    if bytes.get(0x202..0x206) != Some(b"HdrS") {
        bail!("no Linux boot header (HdrS at 0x202)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_cmdline_comes_from_the_policy() {
        let policy = crate::policy::load(&crate::paths::default_policy()).unwrap();
        assert_eq!(
            primary_cmdline(&policy),
            "initrd=\\NEXUS\\INITRD.IMG console=ttyS0 panic=-1"
        );
        let mut none = policy.clone();
        none.partitions[0].cmdline = None;
        assert!(primary_cmdline(&none).starts_with("initrd=\\NEXUS\\INITRD.IMG "));
        assert_eq!(
            foreign_prefixes(&policy),
            ["[hv] ", "[hypercalls] ", "[isolation] ", "[isolation-hv] "]
        );
    }

    #[test]
    fn finds_the_concrete_kernel_package() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            kernel_from_depends(text).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        let virtual_dep = "linux-image-amd64\n  Depends: <linux-image-6.1.0-9-amd64>\n  Recommends: firmware-linux-free\n";
        assert_eq!(
            kernel_from_depends(virtual_dep).as_deref(),
            Some("linux-image-6.1.0-9-amd64")
        );
        assert_eq!(kernel_from_depends("E: No packages found\n"), None);
    }

    #[test]
    fn reads_apt_cache_policy() {
        assert!(has_candidate(
            "linux-image-amd64:\n  Installed: (none)\n  Candidate: 6.1.192-3\n"
        ));
        assert!(!has_candidate(
            "linux-image-amd64:\n  Installed: (none)\n  Candidate: (none)\n"
        ));
        assert!(!has_candidate(""));
    }

    #[test]
    fn recognises_an_efi_stub_kernel() {
        let mut k = vec![0u8; 0x300];
        k[..2].copy_from_slice(b"MZ");
        k[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        k[0x80..0x84].copy_from_slice(b"PE\0\0");
        k[0x202..0x206].copy_from_slice(b"HdrS");
        check_efi_stub_kernel(&k).unwrap();
        let mut no_stub = k.clone();
        no_stub[0x80] = 0;
        assert!(check_efi_stub_kernel(&no_stub)
            .unwrap_err()
            .to_string()
            .contains("PE"));
        let mut no_hdrs = k.clone();
        no_hdrs[0x202] = 0;
        assert!(check_efi_stub_kernel(&no_hdrs).is_err());
        assert!(check_efi_stub_kernel(b"\x7fELF").is_err());
    }
}
