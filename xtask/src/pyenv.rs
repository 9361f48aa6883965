//! `build/pyenv`: the Python virtual environment with the official `ollama` and
//! `openai` clients (for the client tests) and, for `cargo xtask bench ai`,
//! llama-cpp-python built from source for one of ggml's CPU variants (the one nexus-ai runs
//! on this CPU, so both sides of the benchmark run the same kernels). Versions are pinned;
//! an existing environment with the right versions (and variant) is reused as is.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

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

fn pip_install(spec: &str, extra: &[&str], envs: &[(&str, String)]) -> Result<()> {
    cmd::run(
        Command::new(python())
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .args(extra)
            .arg(spec)
            .envs(envs.iter().map(|(k, v)| (k, v))),
    )
}

/// The environment with `packages` (name, pinned version) installed as well.
pub fn ensure_packages(packages: &[(&str, &str)]) -> Result<PathBuf> {
    let python = ensure()?;
    for (pkg, ver) in packages {
        if installed(pkg).as_deref() != Some(*ver) {
            cmd::step(&format!("installing {pkg}=={ver} from PyPI…"));
            pip_install(&format!("{pkg}=={ver}"), &[], &[])?;
        }
    }
    Ok(python)
}

/// The instruction-set options of each x86-64 CPU variant, as ggml's CMake list defines
/// them (`ggml_add_cpu_backend_variant` in ggml/src/CMakeLists.txt). The AMX variant is
/// absent: nexus-ai does not run it (engine/llama/backends.rs).
const VARIANTS: &[(&str, &[&str])] = &[
    ("x64", &[]),
    ("sse42", &["SSE42"]),
    ("sandybridge", &["SSE42", "AVX"]),
    ("ivybridge", &["SSE42", "AVX", "F16C"]),
    ("piledriver", &["SSE42", "AVX", "F16C", "FMA"]),
    ("haswell", &["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2"]),
    (
        "skylakex",
        &["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512"],
    ),
    (
        "cannonlake",
        &[
            "SSE42",
            "AVX",
            "F16C",
            "FMA",
            "AVX2",
            "BMI2",
            "AVX512",
            "AVX512_VBMI",
        ],
    ),
    (
        "cascadelake",
        &[
            "SSE42",
            "AVX",
            "F16C",
            "FMA",
            "AVX2",
            "BMI2",
            "AVX512",
            "AVX512_VNNI",
        ],
    ),
    (
        "icelake",
        &[
            "SSE42",
            "AVX",
            "F16C",
            "FMA",
            "AVX2",
            "BMI2",
            "AVX512",
            "AVX512_VBMI",
            "AVX512_VNNI",
        ],
    ),
    (
        "cooperlake",
        &[
            "SSE42",
            "AVX",
            "F16C",
            "FMA",
            "AVX2",
            "BMI2",
            "AVX512",
            "AVX512_VNNI",
            "AVX512_BF16",
        ],
    ),
    (
        "zen4",
        &[
            "SSE42",
            "AVX",
            "F16C",
            "FMA",
            "AVX2",
            "BMI2",
            "AVX512",
            "AVX512_VBMI",
            "AVX512_VNNI",
            "AVX512_BF16",
        ],
    ),
    (
        "alderlake",
        &["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX_VNNI"],
    ),
];

/// Every instruction-set option a variant sets or clears.
const ISA_OPTIONS: &[&str] = &[
    "SSE42",
    "AVX",
    "AVX2",
    "BMI2",
    "AVX_VNNI",
    "FMA",
    "F16C",
    "AVX512",
    "AVX512_VBMI",
    "AVX512_VNNI",
    "AVX512_BF16",
    "AMX_TILE",
    "AMX_INT8",
    "AMX_BF16",
];

/// CMake options that build ggml's CPU backend exactly as `variant` (no -march=native).
pub fn variant_cmake_args(variant: &str) -> Result<String> {
    let Some((_, on)) = VARIANTS.iter().find(|(v, _)| *v == variant) else {
        bail!(
            "no llama-cpp-python build for the CPU variant {variant:?}; known: {}",
            VARIANTS
                .iter()
                .map(|(v, _)| *v)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let mut args = vec!["-DGGML_NATIVE=OFF".to_string()];
    for opt in ISA_OPTIONS {
        let state = if on.contains(opt) { "ON" } else { "OFF" };
        args.push(format!("-DGGML_{opt}={state}"));
    }
    Ok(args.join(" "))
}

/// Records which variant llama-cpp-python was built for.
fn variant_marker() -> PathBuf {
    dir().join("llama-cpp-python.variant")
}

/// The CPU variant the installed llama-cpp-python was built for, if it is the pinned version.
pub fn llama_cpp_variant() -> Option<String> {
    let (pkg, ver) = LLAMA_CPP;
    if installed(pkg).as_deref() != Some(ver) {
        return None;
    }
    std::fs::read_to_string(variant_marker())
        .ok()
        .map(|s| s.trim().to_string())
}

/// Build llama-cpp-python for ggml's CPU `variant` unless it already is (several minutes).
pub fn ensure_llama_cpp(variant: &str) -> Result<()> {
    ensure()?;
    if llama_cpp_variant().as_deref() == Some(variant) {
        return Ok(());
    }
    let (pkg, ver) = LLAMA_CPP;
    // The multimodal library (llava/mtmd) is not benchmarked: not built, to save minutes.
    let cmake_args = format!("{} -DLLAVA_BUILD=OFF", variant_cmake_args(variant)?);
    cmd::step(&format!(
        "building {pkg}=={ver} from source for ggml's {variant} CPU variant (takes several minutes)…"
    ));
    eprintln!("    CMAKE_ARGS={cmake_args}");
    let _ = std::fs::remove_file(variant_marker());
    // No wheel cache: a wheel built for another variant must not be reused.
    pip_install(
        &format!("{pkg}=={ver}"),
        &[
            "--force-reinstall",
            "--no-deps",
            "--no-cache-dir",
            "--no-binary",
            pkg,
        ],
        &[("CMAKE_ARGS", cmake_args), ("FORCE_CMAKE", "1".into())],
    )?;
    // Its dependencies (numpy, jinja2, …), from wheels.
    pip_install(&format!("{pkg}=={ver}"), &[], &[])?;
    std::fs::write(variant_marker(), variant)
        .with_context(|| format!("cannot write {}", variant_marker().display()))?;
    Ok(())
}

/// Create (or update) the environment with the client packages. Returns its python.
pub fn ensure() -> Result<PathBuf> {
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
            pip_install(&format!("{pkg}=={ver}"), &[], &[])?;
        }
    }
    Ok(python())
}
