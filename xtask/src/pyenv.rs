//! `build/pyenv`: the Python virtual environment with the official `ollama` and
//! `openai` clients (for the client tests) and, for `cargo xtask bench ai`,
//! llama-cpp-python built from source for this CPU. Versions are pinned; an existing
//! environment with the right versions is reused as is.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::{cmd, paths};

/// The client packages the tests use.
pub const CLIENTS: &[(&str, &str)] = &[("ollama", "0.6.3"), ("openai", "3.57.0")];
/// llama.cpp through Python, the benchmark's reference.
pub const LLAMA_CPP: (&str, &str) = ("llama-cpp-python", "0.3.36");

pub fn dir() -> PathBuf {
    paths::root().join("build").join("pyenv")
}

pub fn python() -> PathBuf {
    dir().join("bin").join("python")
}

/// The installed version of `package` in the environment, if any.
fn installed(package: &str) -> Option<String> {
    let out = Command::new(python())
        .args([
            "-c",
            &format!("import importlib.metadata as m; print(m.version({package:?}))"),
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn pip_install(spec: &str, envs: &[(&str, &str)]) -> Result<()> {
    cmd::run(
        Command::new(python())
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                spec,
            ])
            .envs(envs.iter().copied()),
    )
}

/// The environment with `packages` (name, pinned version) installed as well.
pub fn ensure_packages(packages: &[(&str, &str)]) -> Result<PathBuf> {
    let python = ensure(false)?;
    for (pkg, ver) in packages {
        if installed(pkg).as_deref() != Some(*ver) {
            cmd::step(&format!("installing {pkg}=={ver} from PyPI…"));
            pip_install(&format!("{pkg}=={ver}"), &[])?;
        }
    }
    Ok(python)
}

/// Create (or update) the environment; with `llama_cpp`, also build llama-cpp-python.
/// Returns the environment's python.
pub fn ensure(llama_cpp: bool) -> Result<PathBuf> {
    if !python().is_file() {
        cmd::step(&format!(
            "creating the Python environment {}…",
            dir().display()
        ));
        cmd::run(Command::new("python3").args(["-m", "venv"]).arg(dir()))
            .context("python3 -m venv failed (Debian: apt-get install python3-venv)")?;
    }
    for (pkg, ver) in CLIENTS {
        if installed(pkg).as_deref() != Some(*ver) {
            cmd::step(&format!("installing {pkg}=={ver} from PyPI…"));
            pip_install(&format!("{pkg}=={ver}"), &[])?;
        }
    }
    if llama_cpp {
        let (pkg, ver) = LLAMA_CPP;
        if installed(pkg).as_deref() != Some(ver) {
            cmd::step(&format!(
                "building {pkg}=={ver} from source for this CPU (GGML_NATIVE; takes several minutes)…"
            ));
            pip_install(
                &format!("{pkg}=={ver}"),
                &[("CMAKE_ARGS", "-DGGML_NATIVE=ON"), ("FORCE_CMAKE", "1")],
            )?;
        }
    }
    Ok(python())
}
