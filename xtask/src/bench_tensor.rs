//! `cargo xtask bench tensor`: our CPU kernels against numpy in the same run, on this
//! CPU, at each thread count: f32 GEMM GFLOP/s per size and elementwise add GB/s,
//! both against a plain memory copy. Then GEMM through our CUDA backend against
//! PyTorch (cuBLAS) on the GPU; on a machine without one, that part says loudly that
//! no GPU was found and measures nothing.

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
    /// Square GEMM sizes on the GPU (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "256,512,1024,2048,4096")]
    pub gpu_sizes: Vec<usize>,
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
    // With the CUDA backend built in: it loads the driver at run time, so the same
    // binary measures the GPU where there is one and says why not elsewhere.
    cmd::step("building the tensor benchmark (release, with the CUDA backend)…");
    cmd::run(cargo::cargo().args([
        "build",
        "--release",
        "-p",
        "nexus-tensor",
        "--features",
        "cuda",
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
    gpu_part(&bench, &args.gpu_sizes, &python)?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// GEMM on the GPU through our CUDA backend against PyTorch (cuBLAS), when there is a
/// GPU; otherwise a loud line saying that nothing was measured there, and why.
fn gpu_part(
    bench: &std::path::Path,
    sizes: &[usize],
    pyenv_python: &std::path::Path,
) -> Result<()> {
    let gpus = crate::gpu::nvidia_gpus();
    println!();
    cmd::step("GPU: GEMM through the CUDA backend, then PyTorch…");
    let ours = json_of(
        Command::new(bench)
            .args(["--gpu", "--sizes", &list(sizes)])
            .output()?,
        "tensor-bench --gpu",
    )?;
    if let Some(why) = ours["gpu_error"].as_str() {
        println!("!!! NO GPU: GPU GEMM NOT MEASURED: {why}");
        if let Some(g) = gpus {
            println!("!!! (nvidia-smi lists {g}, but the CUDA backend could not use it)");
        }
        return Ok(());
    }
    println!("GPU: {}", ours["device"].as_str().unwrap_or("?"));
    // PyTorch is large; it is used where it is installed already (build/pyenv first,
    // then the system's python3), never installed by the benchmark.
    let torch_python = [pyenv_python.to_path_buf(), "python3".into()]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import torch"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let script = paths::root().join("ai-partition/tensor/bench/torch_reference.py");
    let reference = match &torch_python {
        Some(p) => Some(json_of(
            Command::new(p)
                .arg(&script)
                .args(["--sizes", &list(sizes)])
                .output()?,
            "PyTorch reference",
        )?),
        None => None,
    };
    match &reference {
        Some(r) if r["error"].is_null() => println!(
            "PyTorch {} (CUDA {}) on {}",
            r["torch"].as_str().unwrap_or("?"),
            r["cuda"].as_str().unwrap_or("?"),
            r["device"].as_str().unwrap_or("?")
        ),
        Some(r) => println!(
            "SKIP: PyTorch reference: {}",
            r["error"].as_str().unwrap_or("failed")
        ),
        None => println!(
            "SKIP: PyTorch reference: torch is not importable (neither in build/pyenv nor python3); \
             our figures alone, no ratio"
        ),
    }
    println!(
        "{:>6} {:>12} {:>12} {:>8}",
        "n", "ours GF/s", "torch GF/s", "ratio"
    );
    let theirs: Vec<Value> = reference
        .as_ref()
        .and_then(|r| r["gemm"].as_array().cloned())
        .unwrap_or_default();
    for (i, o) in ours["gemm"].as_array().into_iter().flatten().enumerate() {
        let a = o["gflops"].as_f64().unwrap_or(0.0);
        match theirs.get(i).and_then(|t| t["gflops"].as_f64()) {
            Some(b) if b > 0.0 => println!("{:>6} {a:>12.1} {b:>12.1} {:>7.2}x", o["n"], a / b),
            _ => println!("{:>6} {a:>12.1} {:>12} {:>8}", o["n"], "-", "-"),
        }
    }
    Ok(())
}
