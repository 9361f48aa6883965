//! Where `cargo xtask build` puts its outputs, as image tests find them.
//!
//! `cargo xtask test` sets `NEXUS_BUILD_DIR` to the repository's `build/` folder:
//! - `esp/` — the default ESP directory, `esp.img` — the same as a FAT image;
//! - `bin/nexus-hypervisor.efi` — the hypervisor;
//! - `images/<name>.elf` — each guest image, named like the policy's `image` field;
//! - `efi/<name>.efi` — each EFI application a primary may boot (`guest-images/<name>` with
//!   `[package.metadata.nexus] image = "efi"`), on the ESP as `NEXUS/<NAME>.EFI`;
//! - `linux/` — the primary's Linux: `vmlinuz`, `busybox`, `initrd.img`; `bin/nexusctl`;
//! - `serial-<run>.log` — transcripts of the runs.

use std::path::{Path, PathBuf};

/// Environment variable naming the build folder.
pub const ENV: &str = "NEXUS_BUILD_DIR";

/// The build folder of `cargo xtask build`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildDir {
    root: PathBuf,
}

impl BuildDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Reads `NEXUS_BUILD_DIR`; the error says how to run image tests properly.
    pub fn from_env() -> Result<Self, String> {
        let root = std::env::var_os(ENV).ok_or_else(|| {
            format!(
                "{ENV} is not set: image tests boot what `cargo xtask build` made; run them with `cargo xtask test`"
            )
        })?;
        let dir = Self::new(root);
        if !dir.esp_dir().join(crate::esp::BOOT_EFI).is_file() {
            return Err(format!(
                "{} has no {}: run `cargo xtask build` first (or `cargo xtask test`, which builds)",
                dir.esp_dir().display(),
                crate::esp::BOOT_EFI
            ));
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn esp_dir(&self) -> PathBuf {
        self.root.join("esp")
    }

    pub fn esp_image(&self) -> PathBuf {
        self.root.join("esp.img")
    }

    pub fn hypervisor_efi(&self) -> PathBuf {
        self.root.join("bin").join("nexus-hypervisor.efi")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// The built ELF of guest image `name` (e.g. `test-guest`).
    pub fn image_elf(&self, name: &str) -> PathBuf {
        self.images_dir().join(format!("{name}.elf"))
    }

    /// `efi/`: the EFI applications a primary may boot.
    pub fn efi_dir(&self) -> PathBuf {
        self.root.join("efi")
    }

    /// The built EFI application `name` (e.g. `primary-probe`).
    pub fn efi_app(&self, name: &str) -> PathBuf {
        self.efi_dir().join(format!("{name}.efi"))
    }

    /// `linux/`: the primary's Linux (kernel, busybox, initramfs; Debian packages in `debs/`).
    pub fn linux_dir(&self) -> PathBuf {
        self.root.join("linux")
    }

    /// Debian's EFI-stub kernel (`NEXUS/VMLINUZ.EFI` on the ESP).
    pub fn kernel(&self) -> PathBuf {
        self.linux_dir().join("vmlinuz")
    }

    /// Debian's static busybox.
    pub fn busybox(&self) -> PathBuf {
        self.linux_dir().join("busybox")
    }

    /// The initramfs with an interactive shell (`NEXUS/INITRD.IMG` on the ESP).
    pub fn initrd(&self) -> PathBuf {
        self.linux_dir().join("initrd.img")
    }

    /// `nexusctl`, static for x86_64-unknown-linux-musl.
    pub fn nexusctl(&self) -> PathBuf {
        self.root.join("bin").join("nexusctl")
    }

    /// Names of the guest images that were built, sorted.
    pub fn built_images(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.images_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".elf")
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }

    /// Lays out an ESP directory for another policy (e.g. `policies/qemu-fail.toml`) from the
    /// built hypervisor and images, at `<build>/esp-<policy file stem>/`, and returns it.
    pub fn esp_for_policy(&self, policy_file: &Path) -> Result<PathBuf, String> {
        self.esp_with(policy_file, crate::esp::PrimaryBoot::AsPolicy, "")
    }

    /// [`Self::esp_for_policy`] for the test harness: the primary's `boot` is dropped, so the
    /// run ends at the test partitions' `NEXUS RESULT` (`<build>/esp-harness-<stem>/`).
    pub fn esp_harness(&self, policy_file: &Path) -> Result<PathBuf, String> {
        self.esp_with(policy_file, crate::esp::PrimaryBoot::Harness, "harness-")
    }

    /// The harness ESP of `policy_file` as a FAT disk image (`<build>/esp-harness-<stem>.img`).
    pub fn esp_harness_image(&self, policy_file: &Path) -> Result<PathBuf, String> {
        let contents = crate::esp::EspContents::from_policy_with(
            policy_file,
            self,
            crate::esp::PrimaryBoot::Harness,
        )?;
        let img = self
            .root
            .join(format!("esp-harness-{}.img", stem(policy_file)));
        contents.write_fat_image(&img)?;
        Ok(img)
    }

    fn esp_with(
        &self,
        policy_file: &Path,
        boot: crate::esp::PrimaryBoot,
        prefix: &str,
    ) -> Result<PathBuf, String> {
        let dir = self.root.join(format!("esp-{prefix}{}", stem(policy_file)));
        let contents = crate::esp::EspContents::from_policy_with(policy_file, self, boot)?;
        contents
            .write_dir(&dir)
            .map_err(|e| format!("cannot lay out {}: {e}", dir.display()))?;
        Ok(dir)
    }
}

fn stem(policy_file: &Path) -> String {
    policy_file
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}
