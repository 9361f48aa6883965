//! `cargo xtask lint`: formatting and clippy (host, and the images for their own targets).

use anyhow::{bail, Result};

use crate::build::{HYPERVISOR, UEFI_TARGET};
use crate::{cargo, cmd, prereqs};

/// Runs every check, then fails listing those that failed.
pub fn run() -> Result<()> {
    prereqs::ensure_rust_targets()?;
    prereqs::ensure(
        "clippy of the AI crate (builds llama.cpp)",
        prereqs::AI_BUILD,
    )?;
    let mut checks: Vec<(String, Vec<String>)> = vec![
        (
            "cargo fmt --check".into(),
            args(&["fmt", "--all", "--", "--check"]),
        ),
        (
            "clippy, host, whole workspace".into(),
            args(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        // The CUDA backend loads its libraries at run time, so it builds without a CUDA
        // toolkit: linted here so it cannot rot on machines without a GPU.
        (
            "clippy, nexus-tensor with the cuda feature".into(),
            args(&[
                "clippy",
                "-p",
                "nexus-tensor",
                "--features",
                "cuda",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        (
            "clippy, nexus-ai with the tensor-cuda feature".into(),
            args(&[
                "clippy",
                "-p",
                "nexus-ai",
                "--features",
                "tensor-cuda",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        (
            format!("clippy, {HYPERVISOR} for {UEFI_TARGET}"),
            args(&[
                "clippy",
                "-p",
                HYPERVISOR,
                "--target",
                UEFI_TARGET,
                "--",
                "-D",
                "warnings",
            ]),
        ),
    ];
    for image in cargo::guest_images()? {
        checks.push((
            format!("clippy, {} for {}", image.package, image.kind.target()),
            args(&[
                "clippy",
                "-p",
                &image.package,
                "--target",
                image.kind.target(),
                "--",
                "-D",
                "warnings",
            ]),
        ));
    }
    let mut failed = Vec::new();
    for (name, a) in &checks {
        cmd::step(&format!("{name}…"));
        if let Err(e) = cmd::run(cargo::cargo().args(a)) {
            eprintln!("error: {e:#}");
            failed.push(name.as_str());
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join("; "));
    }
    cmd::step("lint: clean");
    Ok(())
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}
