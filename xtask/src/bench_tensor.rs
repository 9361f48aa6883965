//! `cargo xtask bench tensor`: our CPU kernels against numpy in the same run, on this
//! CPU, at each thread count: f32 GEMM GFLOP/s per size and elementwise add GB/s,
//! both against a plain memory copy. On a machine with an NVIDIA GPU, GEMM through our
//! CUDA backend against PyTorch (cuBLAS) as well; without one that part says SKIP.

use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{cargo, cmd, paths, pyenv};

#[derive(Debug, clap::Args)]
pub struct TensorArgs {
    /// Thread counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Square GEMM sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "256,512,1024,2048")]
    pub sizes: Vec<usize>,
}

/// numpy and threadpoolctl for the reference side.
pub const NUMPY: &[(&str, &str)] = &[("numpy", "2.4.6"), ("threadpoolctl", "3.8.0")];

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn json_of(out: std::process::Output, what: &str) -> Result<Value> {
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("{what} printed {text:?}"))
}

fn list(v: &[usize]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn run(args: &TensorArgs) -> Result<ExitCode> {
    let python = pyenv::ensure_packages(NUMPY)?;
    cmd::step("building the tensor benchmark (release)…");
    cmd::run(cargo::cargo().args([
        "build",
        "--release",
        "-p",
        "nexus-tensor",
        "--bin",
        "tensor-bench",
    ]))?;
    let bench = paths::root().join("target/release/tensor-bench");
    let script = paths::root().join("ai-partition/tensor/bench/numpy_reference.py");
    println!(
        "CPU: {} ({} logical CPUs)",
        cpu_model(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut ok = true;
    for &t in &args.threads {
        cmd::step(&format!("measuring on {t} thread(s): ours, then numpy…"));
        let ours = json_of(
            Command::new(&bench)
                .args(["--threads", &t.to_string(), "--sizes", &list(&args.sizes)])
                .output()?,
            "tensor-bench",
        )?;
        // Some machines of this kind set these and halve OpenBLAS: unset for numpy only.
        let np = json_of(
            Command::new(&python)
                .arg(&script)
                .args(["--threads", &t.to_string(), "--sizes", &list(&args.sizes)])
                .env_remove("OPENBLAS_CORETYPE")
                .env_remove("OPENBLAS_L2_SIZE")
                .env("OMP_NUM_THREADS", t.to_string())
                .output()?,
            "numpy reference",
        )?;
        let blas = &np["blas"];
        println!(
            "\n{t} thread(s); numpy {} with {} {} (kernel {})",
            np["numpy"].as_str().unwrap_or("?"),
            blas["internal_api"].as_str().unwrap_or("?"),
            blas["version"].as_str().unwrap_or("?"),
            blas["architecture"].as_str().unwrap_or("?")
        );
        println!(
            "{:>6} {:>12} {:>12} {:>8}",
            "n", "ours GF/s", "numpy GF/s", "ratio"
        );
        for (o, n) in ours["gemm"]
            .as_array()
            .into_iter()
            .flatten()
            .zip(np["gemm"].as_array().into_iter().flatten())
        {
            let (a, b) = (
                o["gflops"].as_f64().unwrap_or(0.0),
                n["gflops"].as_f64().unwrap_or(0.0),
            );
            let ratio = if b > 0.0 { a / b } else { 0.0 };
            ok &= ratio > 0.0;
            println!("{:>6} {a:>12.1} {b:>12.1} {ratio:>7.2}x", o["n"]);
        }
        let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
        println!(
            "elementwise add: ours {:.1} GB/s vs our copy {:.1} GB/s ({:.2}x); numpy add {:.1} GB/s vs numpy copy {:.1} GB/s ({:.2}x); ours/numpy add {:.2}x",
            f(&ours, "add_gbps"),
            f(&ours, "copy_gbps"),
            f(&ours, "add_gbps") / f(&ours, "copy_gbps").max(1e-9),
            f(&np, "add_gbps"),
            f(&np, "copy_gbps"),
            f(&np, "add_gbps") / f(&np, "copy_gbps").max(1e-9),
            f(&ours, "add_gbps") / f(&np, "add_gbps").max(1e-9),
        );
    }
    gpu_part()?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// GEMM on the GPU against PyTorch: needs an NVIDIA GPU and our CUDA backend, which
/// does not exist yet; say which is missing.
fn gpu_part() -> Result<()> {
    match Command::new("nvidia-smi").arg("-L").output() {
        Ok(o) if o.status.success() => println!(
            "\nSKIP: GPU GEMM against PyTorch/cuBLAS: {} is here, but nexus-tensor has no CUDA backend yet",
            String::from_utf8_lossy(&o.stdout).trim()
        ),
        _ => println!(
            "\nSKIP: GPU GEMM against PyTorch/cuBLAS: no NVIDIA GPU here (nvidia-smi not found or failed), and nexus-tensor has no CUDA backend yet"
        ),
    }
    Ok(())
}
