//! Tells the tests whether the catalogue's models are installed, so tests that need them are
//! `#[ignore]`d with a reason (run `cargo xtask models fetch`) instead of failing or passing
//! vacuously. Re-runs when a model is installed or removed, or the models directory changes.
//!
//! Also makes the `nexus-ai` binary find llama.cpp's shared libraries in `lib/` next to
//! itself, wherever the folder is moved (the bundle `cargo xtask ai-bundle` makes).

use std::path::PathBuf;

fn models_dir() -> PathBuf {
    // Same rule as nexus_ai::models::default_models_dir.
    let var = |k| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = var("NEXUS_MODELS") {
        return PathBuf::from(p);
    }
    if let Some(p) = var("XDG_DATA_HOME") {
        return PathBuf::from(p).join("nexusos/models");
    }
    PathBuf::from(var("HOME").unwrap_or_else(|| "/".into())).join(".local/share/nexusos/models")
}

fn main() {
    // DT_RPATH rather than DT_RUNPATH: it also serves the libraries' own dependencies
    // (libllama.so needs libggml.so, which has no search path of its own). `cargo run` and
    // `cargo test` find the libraries through the LD_LIBRARY_PATH cargo sets.
    println!("cargo::rustc-link-arg-bins=-Wl,--disable-new-dtags,-rpath,$ORIGIN/lib");
    for k in ["NEXUS_MODELS", "XDG_DATA_HOME", "HOME"] {
        println!("cargo::rerun-if-env-changed={k}");
    }
    let dir = models_dir();
    for (cfg, model) in [
        ("nexus_model_smollm2", "smollm2/135m"),
        ("nexus_model_minilm", "all-minilm/l6-v2"),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        let manifest = dir.join(model).join("manifest.json");
        // Watching a missing file makes cargo re-run this script once it appears.
        println!("cargo::rerun-if-changed={}", manifest.display());
        if manifest.is_file() {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
