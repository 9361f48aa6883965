//! Calling cargo from xtask: building one package for a target and finding what it produced.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cmd::{self, describe};
use crate::paths;

/// The cargo that runs xtask (so the pinned toolchain is used), else `cargo` from PATH.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(paths::root());
    cmd
}

/// Builds the binary `bin` of `package` in release mode for `target` and returns its path.
/// Cargo's progress and diagnostics go to the terminal as usual.
pub fn build_release_bin(package: &str, bin: &str, target: &str) -> Result<PathBuf> {
    cmd::step(&format!("building {package} (release, {target})…"));
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "--package",
        package,
        "--bin",
        bin,
        "--target",
        target,
    ])
    .arg("--message-format=json-render-diagnostics")
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    let line = describe(&cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let mut executable = None;
    for msg in BufReader::new(child.stdout.take().expect("stdout is piped")).lines() {
        let msg: Value = match serde_json::from_str(&msg?) {
            Ok(v) => v,
            Err(_) => continue, // a build script's stray output; not a cargo message
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == bin {
            if let Some(path) = msg["executable"].as_str() {
                executable = Some(PathBuf::from(path));
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{line}` failed ({status}); the compiler's messages are above");
    }
    executable.with_context(|| format!("`{line}` succeeded but reported no executable named {bin}"))
}

/// A workspace package that is a guest image: `guest-images/<name>/` with one binary.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// The folder name, which is also the name policies use in `image = "..."` (a test
    /// partition's ELF) or in the primary's `boot = '\NEXUS\<NAME>.EFI'` (an EFI app).
    pub name: String,
    pub package: String,
    pub bin: String,
    pub kind: ImageKind,
}

/// What a guest image is, from its manifest's `[package.metadata.nexus] image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A test partition's static ELF for x86_64-unknown-none (no metadata, or `"elf"`).
    Elf,
    /// An EFI application the primary boots, for x86_64-unknown-uefi (`"efi"`).
    Efi,
}

impl ImageKind {
    /// From the package's `metadata` value (`null` when it has none).
    pub fn from_metadata(package: &str, metadata: &Value) -> Result<ImageKind> {
        match &metadata["nexus"]["image"] {
            Value::Null => Ok(ImageKind::Elf),
            Value::String(s) if s == "elf" => Ok(ImageKind::Elf),
            Value::String(s) if s == "efi" => Ok(ImageKind::Efi),
            other => bail!(
                "guest image package {package}: [package.metadata.nexus] image = {other} \
                 (expected \"elf\" or \"efi\")"
            ),
        }
    }

    /// The target it is built for.
    pub fn target(self) -> &'static str {
        match self {
            ImageKind::Elf => crate::build::GUEST_TARGET,
            ImageKind::Efi => crate::build::UEFI_TARGET,
        }
    }
}

/// Every package directly under `guest-images/` (`guest-images/<name>/Cargo.toml`), from
/// `cargo metadata`. Deeper packages are not images: `guest-images/linux/` holds what the
/// primary's Linux runs (`nexusctl`), built for Linux instead.
pub fn guest_images() -> Result<Vec<GuestImage>> {
    let out = cmd::output(cargo().args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let meta: Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata printed invalid JSON")?;
    let images_dir = paths::root().join("guest-images");
    let mut images = Vec::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        let manifest = PathBuf::from(pkg["manifest_path"].as_str().unwrap_or_default());
        let Ok(rel) = manifest.strip_prefix(&images_dir) else {
            continue;
        };
        if rel.components().count() != 2 {
            continue;
        }
        let name = rel
            .parent()
            .and_then(|p| p.to_str())
            .unwrap_or_default()
            .to_string();
        let bins: Vec<&str> = pkg["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
            })
            .filter_map(|t| t["name"].as_str())
            .collect();
        let package = pkg["name"].as_str().unwrap_or_default().to_string();
        let kind = ImageKind::from_metadata(&package, &pkg["metadata"])?;
        match bins.as_slice() {
            [bin] => images.push(GuestImage {
                name,
                package,
                bin: bin.to_string(),
                kind,
            }),
            _ => {
                bail!("guest image package {package} must have exactly one binary, it has {bins:?}")
            }
        }
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_kind_comes_from_the_manifest_metadata() {
        let kind = |v: Value| ImageKind::from_metadata("p", &v);
        assert_eq!(kind(Value::Null).unwrap(), ImageKind::Elf);
        assert_eq!(
            kind(serde_json::json!({"nexus": {"image": "elf"}})).unwrap(),
            ImageKind::Elf
        );
        assert_eq!(
            kind(serde_json::json!({"nexus": {"image": "efi"}})).unwrap(),
            ImageKind::Efi
        );
        assert_eq!(
            kind(serde_json::json!({"other-tool": 1})).unwrap(),
            ImageKind::Elf
        );
        let e = kind(serde_json::json!({"nexus": {"image": "exe"}})).unwrap_err();
        assert!(e.to_string().contains("\"exe\""), "{e}");
        assert_eq!(ImageKind::Efi.target(), "x86_64-unknown-uefi");
        assert_eq!(ImageKind::Elf.target(), "x86_64-unknown-none");
    }
}
