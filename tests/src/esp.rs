//! The EFI system partition NexusOS boots from, as a directory and as a FAT disk image.
//!
//! Layout (a project-wide convention): `EFI/BOOT/BOOTX64.EFI` is the hypervisor,
//! `NEXUS/POLICY.BIN` the compiled policy, `NEXUS/<IMAGE>.ELF` each guest image a partition
//! names, and, when the primary's `boot` names it, `NEXUS/VMLINUZ.EFI` (Debian's EFI-stub
//! kernel) with `NEXUS/INITRD.IMG` (the initramfs its command line names), or
//! `NEXUS/<NAME>.EFI`, an EFI application built from `guest-images/<name>` (the primary
//! probe, `NEXUS/PRIMARY-PROBE.EFI`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::describe;
use crate::BuildDir;

/// Path of the hypervisor inside the ESP.
pub const BOOT_EFI: &str = "EFI/BOOT/BOOTX64.EFI";
/// Path of the compiled policy inside the ESP.
pub const POLICY_BIN: &str = "NEXUS/POLICY.BIN";
/// Path of the primary's Linux kernel inside the ESP (policy: `boot = '\NEXUS\VMLINUZ.EFI'`).
pub const KERNEL_EFI: &str = "NEXUS/VMLINUZ.EFI";
/// Path of its initramfs (policy cmdline: `initrd=\NEXUS\INITRD.IMG`).
pub const INITRD_IMG: &str = "NEXUS/INITRD.IMG";

/// What the primary's `boot` becomes on the ESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrimaryBoot {
    /// As the policy says: with `boot = '\NEXUS\VMLINUZ.EFI'` the ESP gets the kernel and
    /// initramfs from the build folder.
    AsPolicy,
    /// The test-harness run: `boot` dropped before compiling, so the hypervisor returns to
    /// the firmware after the test partitions report (`cargo xtask run --harness`).
    Harness,
}

/// The ESP path a policy `boot` path names: `\NEXUS\VMLINUZ.EFI` -> `NEXUS/VMLINUZ.EFI`.
pub fn esp_path_of_boot(boot: &str) -> String {
    boot.trim_start_matches('\\').replace('\\', "/")
}

/// Whether the policy's primary boots the project's kernel (`\NEXUS\VMLINUZ.EFI`, which
/// xtask builds), rather than nothing or a loader already on the target machine's ESP.
pub fn boots_project_kernel(policy: &nexus_policy::Policy) -> bool {
    policy
        .primary()
        .and_then(|p| p.boot.as_deref())
        .is_some_and(|b| esp_path_of_boot(b).eq_ignore_ascii_case(KERNEL_EFI))
}

/// ESP path of a built EFI application: `primary-probe` -> `NEXUS/PRIMARY-PROBE.EFI`.
pub fn efi_app_path(name: &str) -> String {
    format!("NEXUS/{}.EFI", name.to_ascii_uppercase())
}

/// When the policy's primary boots `\NEXUS\<NAME>.EFI` and the build has that EFI
/// application (`build/efi/<name>.efi`; FAT names are case-insensitive): its ESP path and
/// built file.
pub fn boots_built_app(
    policy: &nexus_policy::Policy,
    build: &BuildDir,
) -> Option<(String, PathBuf)> {
    let boot = esp_path_of_boot(policy.primary()?.boot.as_deref()?);
    fs::read_dir(build.efi_dir()).ok()?.flatten().find_map(|e| {
        let rel = efi_app_path(e.file_name().to_str()?.strip_suffix(".efi")?);
        rel.eq_ignore_ascii_case(&boot).then(|| (rel, e.path()))
    })
}

/// Bochs detects a flat disk's geometry only when its size is a whole number of cylinders of
/// 16 heads x 63 sectors x 512 bytes.
pub const CYLINDER_BYTES: u64 = 16 * 63 * 512;
/// Smallest image: 130 cylinders (about 64 MiB) leaves FAT32 enough clusters.
pub const MIN_CYLINDERS: u64 = 130;

/// ESP path of a guest image: `test-guest` -> `NEXUS/TEST-GUEST.ELF`.
pub fn image_path(image: &str) -> String {
    format!("NEXUS/{}.ELF", image.to_ascii_uppercase())
}

/// What goes on the ESP.
#[derive(Debug, Clone)]
pub struct EspContents {
    /// The hypervisor's `.efi` file.
    pub hypervisor: PathBuf,
    /// The compiled policy.
    pub policy: Vec<u8>,
    /// Guest images: (image name as the policy writes it, ELF file).
    pub images: Vec<(String, PathBuf)>,
    /// Other files: (path inside the ESP, source file), e.g. the primary's kernel.
    pub files: Vec<(String, PathBuf)>,
}

impl EspContents {
    /// The ESP for `policy_file` from built outputs: the hypervisor and each image a partition
    /// names (`build/images/<name>.elf`), with the policy validated and compiled. Errors are the
    /// policy crate's precise message, or name the missing image.
    pub fn from_policy(policy_file: &Path, build: &BuildDir) -> Result<Self, String> {
        Self::from_policy_with(policy_file, build, PrimaryBoot::AsPolicy)
    }

    /// As [`Self::from_policy`], with the primary's `boot` as `boot` says. When the policy
    /// boots `\NEXUS\VMLINUZ.EFI`, the kernel and initramfs come from `build/linux/`; any
    /// other boot path names a loader already on the target machine's ESP (Garuda's GRUB).
    pub fn from_policy_with(
        policy_file: &Path,
        build: &BuildDir,
        boot: PrimaryBoot,
    ) -> Result<Self, String> {
        let mut policy = nexus_policy::load_file(policy_file).map_err(|e| e.to_string())?;
        if boot == PrimaryBoot::Harness {
            for p in &mut policy.partitions {
                p.boot = None;
            }
        }
        let mut images: Vec<(String, PathBuf)> = Vec::new();
        for name in policy.partitions.iter().filter_map(|p| p.image.as_deref()) {
            if images.iter().any(|(n, _)| n == name) {
                continue;
            }
            let elf = build.image_elf(name);
            if !elf.is_file() {
                return Err(format!(
                    "{}: a partition names image {name:?}, but {} was not built (images are the \
                     folders of guest-images/; built: {})",
                    policy_file.display(),
                    elf.display(),
                    build.built_images().join(", ")
                ));
            }
            images.push((name.to_string(), elf));
        }
        let mut files = Vec::new();
        if boots_project_kernel(&policy) {
            for (rel, src) in [(KERNEL_EFI, build.kernel()), (INITRD_IMG, build.initrd())] {
                if !src.is_file() {
                    return Err(format!(
                        "{}: the primary boots {KERNEL_EFI}, but {} is missing (`cargo xtask \
                         build` fetches Debian's kernel and writes the initramfs)",
                        policy_file.display(),
                        src.display()
                    ));
                }
                files.push((rel.to_string(), src));
            }
        } else if let Some(app) = boots_built_app(&policy, build) {
            files.push(app);
        }
        Ok(Self {
            hypervisor: build.hypervisor_efi(),
            policy: nexus_policy::compile(&policy),
            images,
            files,
        })
    }

    /// Puts `src` at `rel` inside the ESP, replacing what was to go there (e.g. an
    /// initramfs with a command for `cargo xtask run --exec`).
    pub fn set_file(&mut self, rel: &str, src: PathBuf) {
        self.files.retain(|(r, _)| r != rel);
        self.files.push((rel.to_string(), src));
    }

    /// (path inside the ESP, source file) for every file copied from disk.
    fn files(&self) -> Vec<(String, &Path)> {
        let mut files = vec![(BOOT_EFI.to_string(), self.hypervisor.as_path())];
        files.extend(
            self.images
                .iter()
                .map(|(name, path)| (image_path(name), path.as_path())),
        );
        files.extend(
            self.files
                .iter()
                .map(|(rel, path)| (rel.clone(), path.as_path())),
        );
        files
    }

    /// Writes the layout into `dir`, replacing whatever was there.
    pub fn write_dir(&self, dir: &Path) -> io::Result<()> {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        let put = |rel: &str, write: &dyn Fn(&Path) -> io::Result<()>| {
            let dest = dir.join(rel);
            fs::create_dir_all(dest.parent().expect("ESP paths have a folder"))?;
            write(&dest).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot write {}: {e}", dest.display()))
            })
        };
        for (rel, src) in self.files() {
            put(&rel, &|dest| fs::copy(src, dest).map(drop))?;
        }
        put(POLICY_BIN, &|dest| fs::write(dest, &self.policy))
    }

    /// Makes a FAT32 disk image at `img` with mtools: no partition table ("superfloppy"), which
    /// OVMF, Bochs and UEFI firmware on removable media boot from. Its size is a whole number of
    /// Bochs cylinders. The image is built beside `img` and renamed into place when complete.
    pub fn write_fat_image(&self, img: &Path) -> Result<(), String> {
        let mut content = self.policy.len() as u64;
        for (_, src) in self.files() {
            content += fs::metadata(src)
                .map_err(|e| format!("cannot read {}: {e}", src.display()))?
                .len();
        }
        let cylinders = fat_cylinders(content);
        let tmp = img.with_extension("img.partial");
        let file =
            fs::File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        file.set_len(cylinders * CYLINDER_BYTES)
            .map_err(|e| format!("cannot size {}: {e}", tmp.display()))?;
        drop(file);

        let policy_tmp = img.with_extension("policy.bin");
        fs::write(&policy_tmp, &self.policy)
            .map_err(|e| format!("cannot write {}: {e}", policy_tmp.display()))?;
        let i = tmp.to_string_lossy().into_owned();
        let sectors = (cylinders * CYLINDER_BYTES / 512).to_string();
        mtools(
            "mformat",
            &[
                "-i", &i, "-F", "-h", "16", "-s", "63", "-T", &sectors, "-v", "NEXUSOS", "::",
            ],
        )?;
        let mut copies = self.files();
        copies.push((POLICY_BIN.to_string(), policy_tmp.as_path()));
        // Every folder a file needs, parents first (a sorted set puts `EFI` before `EFI/BOOT`).
        let folders: std::collections::BTreeSet<String> = copies
            .iter()
            .flat_map(|(rel, _)| {
                let parts: Vec<&str> = rel.split('/').collect();
                (1..parts.len())
                    .map(|n| format!("::/{}", parts[..n].join("/")))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut mmd = vec!["-i", &i];
        mmd.extend(folders.iter().map(String::as_str));
        mtools("mmd", &mmd)?;
        for (rel, src) in copies {
            let src = src.to_string_lossy();
            mtools("mcopy", &["-i", &i, "-o", &src, &format!("::/{rel}")])?;
        }
        let _ = fs::remove_file(&policy_tmp);
        fs::rename(&tmp, img)
            .map_err(|e| format!("cannot move {} to {}: {e}", tmp.display(), img.display()))
    }
}

/// Cylinders for an image holding `content` bytes: room for the files twice over plus 16 MiB,
/// never fewer than [`MIN_CYLINDERS`].
pub fn fat_cylinders(content: u64) -> u64 {
    (content * 2 + (16 << 20))
        .div_ceil(CYLINDER_BYTES)
        .max(MIN_CYLINDERS)
}

/// Runs one mtools program; failure reports the command line and its stderr.
fn mtools(program: &str, args: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new(program);
    // mtools refuses images whose size does not match its idea of the geometry unless told.
    cmd.args(args).env("MTOOLS_SKIP_CHECK", "1");
    let out = cmd.output().map_err(|e| {
        format!(
            "cannot run `{}`: {e} (is the `mtools` package installed?)",
            describe(&cmd)
        )
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nexus-e2e-esp-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn contents(dir: &Path) -> EspContents {
        fs::write(dir.join("hv.efi"), b"MZ hypervisor").unwrap();
        fs::write(dir.join("guest.elf"), b"\x7fELF guest").unwrap();
        fs::write(dir.join("vmlinuz"), b"MZ kernel").unwrap();
        EspContents {
            hypervisor: dir.join("hv.efi"),
            policy: b"policy bytes".to_vec(),
            images: vec![("test-guest".into(), dir.join("guest.elf"))],
            files: vec![(KERNEL_EFI.into(), dir.join("vmlinuz"))],
        }
    }

    fn repo_policy(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../policies")
            .join(name)
    }

    #[test]
    fn takes_the_images_the_default_policy_names_from_the_build() {
        let dir = scratch("policy");
        let build = BuildDir::new(&dir);
        fs::create_dir_all(build.images_dir()).unwrap();
        let policy = repo_policy("qemu-dev.toml");

        let err = EspContents::from_policy(&policy, &build).unwrap_err();
        assert!(
            err.contains("\"test-guest\"") && err.contains("was not built"),
            "{err}"
        );

        fs::write(build.image_elf("test-guest"), b"elf").unwrap();
        fs::write(build.image_elf("unused"), b"elf").unwrap();
        fs::create_dir_all(build.linux_dir()).unwrap();
        fs::write(build.kernel(), b"MZ").unwrap();
        fs::write(build.initrd(), b"070701").unwrap();
        let esp = EspContents::from_policy(&policy, &build).unwrap();
        assert_eq!(
            esp.images,
            [("test-guest".to_string(), build.image_elf("test-guest"))]
        );
        assert_eq!(esp.hypervisor, build.hypervisor_efi());
        assert!(!esp.policy.is_empty());
        assert_eq!(build.built_images(), ["test-guest", "unused"]);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn reports_an_invalid_policy_with_the_policy_crates_message() {
        let dir = scratch("badpolicy");
        let bad = dir.join("bad.toml");
        fs::write(&bad, "[machine]\nname = \"x\"\nmemory = \"1GiB\"\n").unwrap();
        let err = EspContents::from_policy(&bad, &BuildDir::new(&dir)).unwrap_err();
        assert!(err.contains("bad.toml") && err.contains("primary"), "{err}");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn names_images_in_upper_case() {
        assert_eq!(image_path("test-guest"), "NEXUS/TEST-GUEST.ELF");
    }

    #[test]
    fn lays_out_the_directory_and_replaces_old_content() {
        let dir = scratch("dir");
        let esp = dir.join("esp");
        fs::create_dir_all(esp.join("stale")).unwrap();
        contents(&dir).write_dir(&esp).unwrap();
        assert_eq!(fs::read(esp.join(BOOT_EFI)).unwrap(), b"MZ hypervisor");
        assert_eq!(fs::read(esp.join(POLICY_BIN)).unwrap(), b"policy bytes");
        assert_eq!(
            fs::read(esp.join("NEXUS/TEST-GUEST.ELF")).unwrap(),
            b"\x7fELF guest"
        );
        assert!(!esp.join("stale").exists());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn image_sizes_are_whole_bochs_cylinders() {
        assert_eq!(CYLINDER_BYTES, 516_096);
        assert_eq!(fat_cylinders(0), MIN_CYLINDERS);
        let big = 100 << 20;
        assert!(fat_cylinders(big) * CYLINDER_BYTES >= 2 * big);
    }

    #[test]
    fn fat_image_holds_every_file() {
        if Command::new("mcopy").arg("--version").output().is_err() {
            // Never a silent pass: this host lacks mtools, so the test cannot check anything.
            panic!(
                "mtools is not installed: `cargo xtask test` installs it (apt-get install mtools)"
            );
        }
        let dir = scratch("img");
        let img = dir.join("esp.img");
        contents(&dir).write_fat_image(&img).unwrap();
        assert_eq!(fs::metadata(&img).unwrap().len() % CYLINDER_BYTES, 0);
        let read = |rel: &str| {
            let out = Command::new("mtype")
                .args(["-i", img.to_str().unwrap(), &format!("::/{rel}")])
                .env("MTOOLS_SKIP_CHECK", "1")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{rel}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        assert_eq!(read(BOOT_EFI), b"MZ hypervisor");
        assert_eq!(read(POLICY_BIN), b"policy bytes");
        assert_eq!(read("NEXUS/TEST-GUEST.ELF"), b"\x7fELF guest");
        assert_eq!(read(KERNEL_EFI), b"MZ kernel");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_policy_that_boots_the_kernel_gets_kernel_and_initramfs() {
        let dir = scratch("linux");
        let build = BuildDir::new(&dir);
        fs::create_dir_all(build.images_dir()).unwrap();
        fs::write(build.image_elf("test-guest"), b"elf").unwrap();
        let policy = repo_policy("qemu-dev.toml");
        let err = EspContents::from_policy(&policy, &build).unwrap_err();
        assert!(err.contains("vmlinuz is missing"), "{err}");

        fs::create_dir_all(build.linux_dir()).unwrap();
        fs::write(build.kernel(), b"MZ kernel").unwrap();
        fs::write(build.initrd(), b"070701").unwrap();
        let esp = EspContents::from_policy(&policy, &build).unwrap();
        assert_eq!(
            esp.files,
            [
                (KERNEL_EFI.to_string(), build.kernel()),
                (INITRD_IMG.to_string(), build.initrd())
            ]
        );
        let compiled = nexus_policy::compiled::CompiledPolicy::decode(&esp.policy).unwrap();
        assert_eq!(
            compiled.partition(0).unwrap().boot(),
            Some("\\NEXUS\\VMLINUZ.EFI")
        );

        // The harness drops `boot` (and needs no kernel); an exec run swaps the initramfs.
        let harness = EspContents::from_policy_with(&policy, &build, PrimaryBoot::Harness).unwrap();
        assert!(harness.files.is_empty());
        let compiled = nexus_policy::compiled::CompiledPolicy::decode(&harness.policy).unwrap();
        assert_eq!(compiled.partition(0).unwrap().boot(), None);
        let mut exec = esp;
        exec.set_file(INITRD_IMG, dir.join("exec.img"));
        assert_eq!(exec.files.len(), 2);
        assert_eq!(
            exec.files[1],
            (INITRD_IMG.to_string(), dir.join("exec.img"))
        );
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_policy_that_boots_a_built_efi_app_gets_it() {
        let dir = scratch("efiapp");
        let build = BuildDir::new(&dir);
        fs::create_dir_all(build.images_dir()).unwrap();
        fs::write(build.image_elf("test-guest"), b"elf").unwrap();
        let policy = repo_policy("qemu-probe.toml");
        // Not built: the ESP has no such file, and the hypervisor reports the missing
        // loader at boot; nothing else is added in its place.
        let esp = EspContents::from_policy(&policy, &build).unwrap();
        assert!(esp.files.is_empty());
        fs::create_dir_all(build.efi_dir()).unwrap();
        fs::write(build.efi_app("primary-probe"), b"MZ probe").unwrap();
        let esp = EspContents::from_policy(&policy, &build).unwrap();
        assert_eq!(
            esp.files,
            [(
                "NEXUS/PRIMARY-PROBE.EFI".to_string(),
                build.efi_app("primary-probe")
            )]
        );
        assert_eq!(efi_app_path("primary-probe"), "NEXUS/PRIMARY-PROBE.EFI");
        // The harness drops `boot`, and the app with it.
        let harness = EspContents::from_policy_with(&policy, &build, PrimaryBoot::Harness).unwrap();
        assert!(harness.files.is_empty());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn boot_paths_map_to_esp_paths() {
        assert_eq!(esp_path_of_boot("\\NEXUS\\VMLINUZ.EFI"), KERNEL_EFI);
        assert_eq!(
            esp_path_of_boot("\\EFI\\Garuda\\grubx64.efi"),
            "EFI/Garuda/grubx64.efi"
        );
    }
}
