//! `cargo xtask bench batch`: aggregate decode tokens/s of `nexus-ai serve` (continuous
//! batching) at 1, 4 and 8 concurrent streams against llama.cpp's own `llama-server`, same
//! model, threads, slots and token budget, in one run (ai-partition/clients/bench_batch.py
//! does the measuring).
//!
//! The reference is llama-server built from the llama.cpp that llama-cpp-python vendors
//! (its source distribution from PyPI: the crate we link ships llama.cpp without the
//! server's sources), configured the portable way: no `-march=native`, CPU variants built as
//! loadable backends and the best one for this CPU picked at run time (`GGML_BACKEND_DL`,
//! `GGML_CPU_ALL_VARIANTS`). It is built once into `build/llama-server-ref/`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use crate::ai_bundle;
use crate::bench_ai::default_models_dir;
use crate::{cmd, paths, pyenv};

#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    /// Threads for both servers (default: all cores).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Concurrent streams to measure, comma-separated; the largest is the slot count.
    #[arg(long, default_value = "1,4,8")]
    pub levels: String,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 64)]
    pub tokens: u32,
    /// Measured bursts per level (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Context per slot.
    #[arg(long, default_value_t = 1024)]
    pub ctx: u32,
    /// Models directory (default: the AI crate's default).
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
}

/// ggml's x86 CPU variants and the /proc/cpuinfo flags each needs, less `sapphirerapids`:
/// GCC 12 miscompiles its AMX tile configuration (issue 10), so the portable build leaves it
/// out and so does the reference. Only the variants this CPU can run are built: ggml picks
/// the best of those at run time, the same choice it makes among all of them.
fn cpu_variants() -> Vec<(&'static str, Vec<&'static str>)> {
    let haswell = ["sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"];
    let avx512 = ["avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"];
    let with = |base: &[&'static str], more: &[&'static str]| [base, more].concat();
    let skylakex = with(&haswell, &avx512);
    vec![
        ("x64", vec![]),
        ("sse42", vec!["sse4_2"]),
        ("sandybridge", vec!["sse4_2", "avx"]),
        ("ivybridge", vec!["sse4_2", "avx", "f16c"]),
        ("piledriver", vec!["sse4_2", "avx", "f16c", "fma"]),
        ("haswell", haswell.to_vec()),
        ("skylakex", skylakex.clone()),
        ("cannonlake", with(&skylakex, &["avx512vbmi"])),
        ("cascadelake", with(&skylakex, &["avx512_vnni"])),
        ("icelake", with(&skylakex, &["avx512vbmi", "avx512_vnni"])),
        (
            "cooperlake",
            with(&skylakex, &["avx512_vnni", "avx512_bf16"]),
        ),
        (
            "zen4",
            with(&skylakex, &["avx512vbmi", "avx512_vnni", "avx512_bf16"]),
        ),
        ("alderlake", with(&haswell, &["avx_vnni"])),
    ]
}

/// ggml's CMake builds every variant as a dependency of `ggml`; leave out those this CPU
/// cannot run (ggml would refuse to load them here anyway, so it picks the same variant) and
/// `sapphirerapids`. Edits a pristine copy of ggml's CMakeLists.txt kept beside it.
fn keep_only_variants(tree: &Path, keep: &[&str]) -> Result<()> {
    let path = tree.join("ggml/src/CMakeLists.txt");
    let pristine = tree.join("ggml/src/CMakeLists.txt.orig");
    if !pristine.is_file() {
        std::fs::copy(&path, &pristine)?;
    }
    let x86: Vec<&str> = cpu_variants()
        .iter()
        .map(|(v, _)| *v)
        .chain(["sapphirerapids"])
        .collect();
    let mut out = String::new();
    for line in std::fs::read_to_string(&pristine)?.lines() {
        let name = line
            .trim_start()
            .strip_prefix("ggml_add_cpu_backend_variant(")
            .and_then(|r| r.split([' ', ')']).next());
        if name.is_some_and(|n| x86.contains(&n) && !keep.contains(&n)) {
            out.push_str("# left out by cargo xtask bench batch: ");
        }
        out.push_str(line);
        out.push('\n');
    }
    std::fs::write(&path, out).with_context(|| format!("cannot write {}", path.display()))
}

/// How our llama.cpp was configured (the newest llama-cpp-sys-2 build next to `exe`).
fn our_llama_config(exe: &Path) -> String {
    let newest = exe
        .parent()
        .map(|d| d.join("build"))
        .and_then(|b| std::fs::read_dir(b).ok())
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
        return "unknown".into();
    };
    let text = std::fs::read_to_string(cache).unwrap_or_default();
    let mut out: Vec<String> = ["GGML_NATIVE", "GGML_BACKEND_DL", "GGML_CPU_ALL_VARIANTS"]
        .iter()
        .map(|k| {
            let v = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}:BOOL=")))
                .unwrap_or("unset");
            format!("{k}={v}")
        })
        .collect();
    // -march=native may come in through CFLAGS rather than GGML_NATIVE.
    if text
        .lines()
        .any(|l| l.starts_with("CMAKE_C_FLAGS:") && l.contains("-march=native"))
    {
        out.push("CFLAGS -march=native".into());
    }
    out.join(" ")
}

/// This CPU's feature flags.
fn cpu_flags() -> Vec<String> {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("flags")).map(|l| {
                l.trim_start_matches([' ', '\t', ':'])
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The CPU's model name, as /proc/cpuinfo gives it.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// llama-server from llama-cpp-python's vendored llama.cpp, built once.
fn llama_server() -> Result<PathBuf> {
    let (pkg, ver) = pyenv::LLAMA_CPP;
    let root = paths::root().join("build/llama-server-ref").join(ver);
    let exe = root.join("build/bin/llama-server");
    let flags = cpu_flags();
    let variants: Vec<&str> = cpu_variants()
        .into_iter()
        .filter(|(_, needs)| needs.iter().all(|f| flags.iter().any(|h| h == f)))
        .map(|(v, _)| v)
        .collect();
    let built = |v: &str| root.join(format!("build/bin/libggml-cpu-{v}.so")).is_file();
    if exe.is_file() && variants.iter().all(|v| built(v)) {
        println!("reference: {} (cached)", exe.display());
        return Ok(exe);
    }
    let python = pyenv::ensure()?;
    let src_dir = root.join("src");
    let tree = src_dir.join(format!("llama_cpp_python-{ver}/vendor/llama.cpp"));
    if !tree.join("tools/server").is_dir() {
        cmd::step(&format!(
            "downloading the {pkg}=={ver} source distribution (it vendors llama.cpp) from PyPI…"
        ));
        std::fs::create_dir_all(&src_dir)?;
        cmd::run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    &format!("{pkg}=={ver}"),
                    "-d",
                ])
                .arg(&src_dir),
        )?;
        let archive = src_dir.join(format!("llama_cpp_python-{ver}.tar.gz"));
        cmd::run(
            Command::new("tar")
                .arg("xzf")
                .arg(&archive)
                .arg("-C")
                .arg(&src_dir),
        )
        .with_context(|| format!("cannot unpack {}", archive.display()))?;
        if !tree.join("tools/server").is_dir() {
            bail!("{} has no tools/server", tree.display());
        }
    }
    let build = root.join("build");
    // A variant this CPU needs is missing (or nothing is configured): configure afresh.
    if !variants.iter().all(|v| built(v)) {
        let _ = std::fs::remove_file(build.join("CMakeCache.txt"));
    }
    if !build.join("CMakeCache.txt").is_file() {
        keep_only_variants(&tree, &variants)?;
        cmd::run(
            Command::new("cmake")
                .arg("-S")
                .arg(&tree)
                .arg("-B")
                .arg(&build)
                .args([
                    "-DCMAKE_BUILD_TYPE=Release",
                    "-DGGML_NATIVE=OFF",
                    "-DGGML_BACKEND_DL=ON",
                    "-DGGML_CPU_ALL_VARIANTS=ON",
                    "-DGGML_OPENMP=ON",
                    "-DBUILD_SHARED_LIBS=ON",
                    "-DLLAMA_BUILD_TOOLS=ON",
                    "-DLLAMA_BUILD_SERVER=ON",
                    "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_BUILD_EXAMPLES=OFF",
                    "-DLLAMA_BUILD_UI=OFF",
                    "-DLLAMA_USE_PREBUILT_UI=OFF",
                    "-DLLAMA_CURL=OFF",
                    "-DLLAMA_OPENSSL=OFF",
                ]),
        )
        .context("cmake failed (Debian: apt-get install cmake g++)")?;
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    cmd::step(&format!(
        "building llama-server and the CPU variants this CPU can run ({}) with {jobs} jobs; the first time takes a long while…",
        variants.join(", ")
    ));
    // The CPU variants are modules loaded at run time; `ggml` depends on each of them.
    let targets = ["llama-server"];
    cmd::run(
        Command::new("cmake")
            .arg("--build")
            .arg(&build)
            .args(["--config", "Release", "-j", &jobs.to_string(), "--target"])
            .args(targets),
    )?;
    if !exe.is_file() {
        bail!(
            "the build reported success but {} is missing",
            exe.display()
        );
    }
    Ok(exe)
}

pub fn run(args: &BatchArgs) -> Result<ExitCode> {
    let models_dir = args.models_dir.clone().unwrap_or_else(default_models_dir);
    let gguf = models_dir.join("smollm2/135m/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.is_file() {
        crate::models::fetch_default()?;
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let levels: Vec<u32> = args
        .levels
        .split(',')
        .map(|l| l.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|l: &Vec<u32>| !l.is_empty() && l.iter().all(|&n| (1..=64).contains(&n)))
        .with_context(|| {
            format!(
                "--levels {:?}: give stream counts from 1 to 64, comma-separated",
                args.levels
            )
        })?;
    // The relocatable bundle: the same binary and CPU variant the AI partition runs.
    let exe = ai_bundle::build()?.exe;
    let server = llama_server()?;
    println!("CPU: {}", cpu_model());
    println!("nexus-ai's llama.cpp: {}", our_llama_config(&exe));
    cmd::step("benchmarking concurrent streams (nexus-ai serve vs llama-server)…");
    cmd::run(
        Command::new("python3")
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .arg(paths::root().join("ai-partition/clients/bench_batch.py"))
            .arg("--nexus-ai")
            .arg(&exe)
            .arg("--llama-server")
            .arg(&server)
            .arg("--gguf")
            .arg(&gguf)
            .arg("--models-dir")
            .arg(&models_dir)
            .args([
                "--threads",
                &threads.to_string(),
                "--levels",
                &levels
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                "--n",
                &args.tokens.to_string(),
                "--rounds",
                &args.rounds.to_string(),
                "--ctx",
                &args.ctx.to_string(),
            ]),
    )?;
    Ok(ExitCode::SUCCESS)
}
