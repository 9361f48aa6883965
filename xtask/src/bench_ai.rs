//! `cargo xtask bench ai`: our HTTP API and our engine against llama.cpp run directly
//! (llama-cpp-python), on the same GGUF with the same thread count, in one run; prints
//! tokens/s and the ratios (ai-partition/clients/bench_ai.py does the measuring).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cargo, cmd, paths, pyenv};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// AI: decode and prompt tokens/s through our API vs llama.cpp, API overhead, KV-cache reuse.
    Ai {
        /// Threads for both llama.cpp and our engine.
        #[arg(long, default_value_t = 1)]
        threads: u32,
        /// Tokens generated per request.
        #[arg(long, default_value_t = 64)]
        tokens: u32,
        /// Measured requests per case (plus one warm-up).
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Models directory (default: the AI crate's default).
        #[arg(long)]
        models_dir: Option<PathBuf>,
    },
}

/// Same rule as the AI crate's default models directory.
pub(crate) fn default_models_dir() -> PathBuf {
    let var = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("NEXUS_MODELS")
        .or_else(|| var("XDG_DATA_HOME").map(|p| p.join("nexusos/models")))
        .unwrap_or_else(|| {
            var("HOME")
                .unwrap_or_else(|| "/".into())
                .join(".local/share/nexusos/models")
        })
}

/// `cargo build --release -p nexus-ai` for the host; the binary's path.
pub(crate) fn build_nexus_ai() -> Result<PathBuf> {
    cmd::step("building nexus-ai (release)…");
    let mut c = cargo::cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "nexus-ai",
        "--bin",
        "nexus-ai",
        "--message-format=json-render-diagnostics",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    let line = cmd::describe(&c);
    let mut child = c
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let mut exe = None;
    for l in BufReader::new(child.stdout.take().expect("piped")).lines() {
        if let Ok(v) = serde_json::from_str::<Value>(&l?) {
            if v["reason"] == "compiler-artifact" && v["target"]["name"] == "nexus-ai" {
                exe = v["executable"].as_str().map(PathBuf::from).or(exe);
            }
        }
    }
    if !child.wait()?.success() {
        bail!("`{line}` failed; the compiler's messages are above");
    }
    exe.with_context(|| format!("`{line}` reported no nexus-ai executable"))
}

/// Print the CMake build type llama.cpp was compiled with for `exe`, and warn when it is not
/// `Release` (`-O3`, as llama-cpp-python builds): llama-cpp-sys-2 configures CMake once per
/// build directory, so a target directory built before `LLAMA_LIB_PROFILE=Release` keeps
/// `-O2` and decodes about 9% slower (docs/ai-models.md).
fn report_llama_build_type(exe: &std::path::Path) {
    let Some(build) = exe.parent().map(|d| d.join("build")) else {
        return;
    };
    // The newest llama-cpp-sys-2 build directory is the one this build used.
    let newest = std::fs::read_dir(&build)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("llama-cpp-sys-2-")
        })
        .map(|e| e.path().join("out/build/CMakeCache.txt"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .max();
    let Some((_, cache)) = newest else {
        println!(
            "llama.cpp build type: unknown (no CMakeCache.txt under {})",
            build.display()
        );
        return;
    };
    let text = std::fs::read_to_string(&cache).unwrap_or_default();
    let kind = text
        .lines()
        .find_map(|l| l.strip_prefix("CMAKE_BUILD_TYPE:STRING="))
        .unwrap_or("unknown");
    println!("llama.cpp build type (ours): {kind} ({})", cache.display());
    if kind != "Release" {
        println!(
            "warning: llama.cpp is not built Release (-O3) here; delete {} and rerun for a fair comparison",
            cache.display()
        );
    }
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let BenchWhat::Ai {
        threads,
        tokens,
        runs,
        models_dir,
    } = &args.what;
    let models_dir = models_dir.clone().unwrap_or_else(default_models_dir);
    let gguf = models_dir.join("smollm2/135m/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.is_file() {
        crate::models::fetch_default()?;
    }
    let python = pyenv::ensure(true)?;
    let exe = build_nexus_ai()?;
    report_llama_build_type(&exe);
    cmd::step("benchmarking (llama.cpp direct, engine direct, HTTP API)…");
    cmd::run(
        Command::new(python)
            // The three contenders stay alive side by side; OpenMP workers that spin while
            // idle would steal the cores from whichever one is running (threads > 1).
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .arg(paths::root().join("ai-partition/clients/bench_ai.py"))
            .arg("--nexus-ai")
            .arg(&exe)
            .arg("--gguf")
            .arg(&gguf)
            .arg("--models-dir")
            .arg(&models_dir)
            .args([
                "--threads",
                &threads.to_string(),
                "--n",
                &tokens.to_string(),
                "--runs",
                &runs.to_string(),
            ]),
    )?;
    Ok(ExitCode::SUCCESS)
}
