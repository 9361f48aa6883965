//! `cargo xtask build`: the hypervisor, every guest image, the compiled policy, the primary's
//! Linux when the policy boots it, and the ESP (`build/esp/` and the FAT image
//! `build/esp.img`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nexus_e2e::esp::{self, EspContents, PrimaryBoot};
use nexus_e2e::BuildDir;

use crate::cargo::ImageKind;
use crate::{cargo, cmd, linux, paths, policy, prereqs};

/// The hypervisor's package and binary.
pub const HYPERVISOR: &str = "nexus-hypervisor";
/// Target of the hypervisor (a UEFI application).
pub const UEFI_TARGET: &str = "x86_64-unknown-uefi";
/// Target of the guest images (bare-metal ELF).
pub const GUEST_TARGET: &str = "x86_64-unknown-none";

/// Builds everything that boots and lays out the ESP for `policy_file` (`build/esp/` and
/// `build/esp.img`).
pub fn images(policy_file: &Path) -> Result<BuildDir> {
    let dir = binaries(policy_file, PrimaryBoot::AsPolicy)?;
    let contents = EspContents::from_policy(policy_file, &dir).map_err(anyhow::Error::msg)?;
    cmd::step(&format!("laying out {}…", dir.esp_dir().display()));
    contents
        .write_dir(&dir.esp_dir())
        .with_context(|| format!("cannot lay out {}", dir.esp_dir().display()))?;
    cmd::step(&format!("making {}…", dir.esp_image().display()));
    contents
        .write_fat_image(&dir.esp_image())
        .map_err(anyhow::Error::msg)?;
    print_layout(&dir.esp_dir(), &contents)?;
    let img = fs::metadata(dir.esp_image())?.len();
    eprintln!(
        "    {} is {img} bytes ({} cylinders of {} bytes; dd it to a USB stick to boot real hardware)",
        dir.esp_image().display(),
        img / esp::CYLINDER_BYTES,
        esp::CYLINDER_BYTES
    );
    Ok(dir)
}

/// The test-harness ESP (`build/esp-harness/`): the policy's primary `boot` dropped, so the
/// run ends at the test partitions' `NEXUS RESULT`; nothing of the primary's OS is built.
pub fn harness_esp(policy_file: &Path) -> Result<PathBuf> {
    let dir = binaries(policy_file, PrimaryBoot::Harness)?;
    let contents = EspContents::from_policy_with(policy_file, &dir, PrimaryBoot::Harness)
        .map_err(anyhow::Error::msg)?;
    let esp = dir.root().join("esp-harness");
    cmd::step(&format!("laying out {}…", esp.display()));
    contents
        .write_dir(&esp)
        .with_context(|| format!("cannot lay out {}", esp.display()))?;
    print_layout(&esp, &contents)?;
    Ok(esp)
}

/// The hypervisor, the guest images and, when the policy boots it (`boot` as `boot` says),
/// the primary's Linux.
fn binaries(policy_file: &Path, boot: PrimaryBoot) -> Result<BuildDir> {
    prereqs::ensure_rust_targets()?;
    prereqs::ensure("making the ESP disk image", prereqs::MTOOLS)?;
    // A bad policy fails in a second, before the long builds.
    cmd::step(&format!("checking policy {}…", policy_file.display()));
    let loaded = policy::load(policy_file)?;

    let dir = paths::build_dir();
    // Start the images folders afresh so that they list exactly the images that exist now.
    for images in [dir.images_dir(), dir.efi_dir()] {
        if images.exists() {
            fs::remove_dir_all(&images)?;
        }
        fs::create_dir_all(&images)?;
    }
    fs::create_dir_all(dir.hypervisor_efi().parent().expect("bin/ has a parent"))?;
    let hv = cargo::build_release_bin(HYPERVISOR, HYPERVISOR, UEFI_TARGET)?;
    copy(&hv, &dir.hypervisor_efi())?;

    let available = cargo::guest_images()?;
    for image in &available {
        let built = cargo::build_release_bin(&image.package, &image.bin, image.kind.target())?;
        match image.kind {
            ImageKind::Elf => copy(&built, &dir.image_elf(&image.name))?,
            ImageKind::Efi => copy(&built, &dir.efi_app(&image.name))?,
        }
    }

    if boot == PrimaryBoot::AsPolicy {
        if esp::boots_project_kernel(&loaded) {
            linux::prepare(&dir)?;
        } else if let Some(path) = loaded
            .primary()
            .and_then(|p| p.boot.as_deref())
            .filter(|_| esp::boots_built_app(&loaded, &dir).is_none())
        {
            cmd::step(&format!(
                "the primary boots {path}: not built here, it must be on the ESP the hypervisor \
                 is installed to"
            ));
        }
    }
    Ok(dir)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn print_layout(esp: &Path, contents: &EspContents) -> Result<()> {
    let mut rows = vec![esp::BOOT_EFI.to_string(), esp::POLICY_BIN.to_string()];
    rows.extend(
        contents
            .images
            .iter()
            .map(|(name, _)| esp::image_path(name)),
    );
    rows.extend(contents.files.iter().map(|(rel, _)| rel.clone()));
    for rel in rows {
        let len = fs::metadata(esp.join(&rel))?.len();
        eprintln!("    {:<28} {:>10} bytes", rel, len);
    }
    Ok(())
}

/// `cargo build --workspace`: the host binaries (the AI services, tools).
pub fn host() -> Result<()> {
    prereqs::ensure("building the AI crate (llama.cpp)", prereqs::AI_BUILD)?;
    cmd::step("building host binaries (cargo build --workspace)…");
    cmd::run(cargo::cargo().args(["build", "--workspace"]))
}
