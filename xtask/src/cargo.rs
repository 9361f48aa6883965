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
    remove_dangling_library_links(&target_dir());
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(paths::root());
    cmd
}

/// Cargo's target folder: `CARGO_TARGET_DIR`, else `target/` in the workspace.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => paths::root().join(dir),
        None => paths::root().join("target"),
    }
}

/// llama-cpp-sys-2's build script hard-links llama.cpp's `lib*.so` files into
/// `target/<profile>/` and `deps/`. Those are symlinks to `lib*.so.0`, which it does not
/// link, so they dangle; when the script runs again (clippy first, then the tests: a
/// changed environment variable re-runs it) it sees no file there, links again and panics
/// with "File exists". Nothing uses those links (cargo finds the libraries in the build
/// script's own folder), so dangling ones are removed before every cargo call.
pub fn remove_dangling_library_links(target: &std::path::Path) {
    let Ok(profiles) = std::fs::read_dir(target) else {
        return; // no target folder yet
    };
    for profile in profiles.flatten() {
        let profile = profile.path();
        for dir in [
            profile.clone(),
            profile.join("deps"),
            profile.join("examples"),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
                if is_link && name.starts_with("lib") && name.ends_with(".so") && !path.exists() {
                    // A failure here is harmless: the build script reports it if it matters.
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
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
    fn dangling_library_links_are_removed_and_nothing_else() {
        let root = std::env::temp_dir().join(format!("xtask-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let debug = root.join("debug");
        let deps = debug.join("deps");
        std::fs::create_dir_all(&deps).unwrap();
        std::fs::write(debug.join("libreal.so.0"), b"elf").unwrap();
        let link = |to: &str, at: PathBuf| std::os::unix::fs::symlink(to, at).unwrap();
        link("libreal.so.0", debug.join("libreal.so")); // resolves: kept
        link("libggml.so.0", debug.join("libggml.so")); // dangles: removed
        link("libggml.so.0", deps.join("libggml.so")); // dangles: removed
        link("missing", debug.join("notes.txt")); // dangles but is not a library: kept
        std::fs::write(deps.join("libplain.so"), b"elf").unwrap(); // a file: kept
        remove_dangling_library_links(&root);
        let exists = |p: PathBuf| std::fs::symlink_metadata(p).is_ok();
        assert!(exists(debug.join("libreal.so")));
        assert!(!exists(debug.join("libggml.so")));
        assert!(!exists(deps.join("libggml.so")));
        assert!(exists(debug.join("notes.txt")));
        assert!(exists(deps.join("libplain.so")));
        remove_dangling_library_links(&root.join("absent")); // no target folder: no error
        std::fs::remove_dir_all(&root).unwrap();
    }

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
