//! `cargo xtask bench ai`: our HTTP API and our engine against llama.cpp run directly
//! (llama-cpp-python), on the same GGUF with the same thread count, the same ggml CPU
//! variant and the same page size, in one run; prints tokens/s and the ratios, and fails
//! when the two sides' greedy outputs differ (ai-partition/clients/bench_ai.py does the
//! measuring and checking).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

use crate::{ai_bundle, cmd, paths, pyenv};

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
        /// ggml CPU variant both sides run (default: $NEXUS_AI_CPU_VARIANT, else the best
        /// nexus-ai finds for this CPU).
        #[arg(long)]
        cpu_variant: Option<String>,
        /// Model weights in transparent huge pages, on both sides alike.
        #[arg(long, value_enum, default_value_t = Switch::On)]
        huge_pages: Switch,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    fn as_str(self) -> &'static str {
        match self {
            Switch::On => "on",
            Switch::Off => "off",
        }
    }
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

/// Print the CMake build type llama.cpp was compiled with, and warn when it is not `Release`
/// (`-O3`, as llama-cpp-python builds): llama-cpp-sys-2 configures CMake once per build
/// directory, so a target directory built before `LLAMA_LIB_PROFILE=Release` keeps `-O2` and
/// decodes about 9% slower (docs/ai-models.md).
fn report_llama_build_type(llama_out: &Path) {
    let cache = llama_out.join("build/CMakeCache.txt");
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
        cpu_variant,
        huge_pages,
    } = &args.what;
    let models_dir = models_dir.clone().unwrap_or_else(default_models_dir);
    let gguf = models_dir.join("smollm2/135m/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.is_file() {
        crate::models::fetch_default()?;
    }
    let bundle = ai_bundle::build()?;
    report_llama_build_type(&bundle.llama_out);
    // Both sides run the same ggml CPU variant: the one nexus-ai picks here (or is told to),
    // with llama-cpp-python built for exactly that variant's instruction sets.
    let wanted = cpu_variant
        .clone()
        .or_else(|| std::env::var("NEXUS_AI_CPU_VARIANT").ok());
    let ours = ai_bundle::info(&bundle.exe, wanted.as_deref())?;
    let variant = ours["cpu_backend"]["variant"]
        .as_str()
        .context("nexus-ai info reported no CPU variant")?
        .to_string();
    pyenv::ensure_llama_cpp(&variant)?;
    let python = pyenv::python();
    cmd::step("benchmarking (llama.cpp direct, engine direct, HTTP API)…");
    let mut c = Command::new(python);
    // The three contenders stay alive side by side; OpenMP workers that spin while idle
    // would steal the cores from whichever one is running (threads > 1).
    c.env("OMP_WAIT_POLICY", "PASSIVE")
        .env(
            "NEXUS_AI_CPU_VARIANT",
            wanted.as_deref().unwrap_or_default(),
        )
        .env_remove("NEXUS_AI_BACKENDS_DIR");
    // The same pages for both: glibc puts malloc'd memory in transparent huge pages when
    // started with this tunable (both processes inherit it), and both load the weights into
    // malloc'd memory instead of mmapping the file (nexus-ai does by default; the script
    // passes use_mmap=False to llama-cpp-python). Off: file mmap and 4 KiB pages on both.
    match huge_pages {
        Switch::On => c.env("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1"),
        Switch::Off => c
            .env("NEXUS_AI_HUGEPAGES", "0")
            .env_remove("GLIBC_TUNABLES"),
    };
    cmd::run(
        c.arg(paths::root().join("ai-partition/clients/bench_ai.py"))
            .arg("--nexus-ai")
            .arg(&bundle.exe)
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
                "--reference-variant",
                &variant,
                "--huge-pages",
                huge_pages.as_str(),
            ]),
    )?;
    Ok(ExitCode::SUCCESS)
}
