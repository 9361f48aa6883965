//! `cargo xtask bench ...`: which benchmark to run.

use std::process::ExitCode;

use anyhow::Result;

use crate::{bench_ai, bench_batch, bench_boot, bench_tensor};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    #[command(flatten)]
    Ai(bench_ai::BenchWhat),
    /// AI: aggregate decode tokens/s at 1, 4 and 8 concurrent streams, nexus-ai serve
    /// (continuous batching) vs llama.cpp's llama-server.
    Batch(bench_batch::BatchArgs),
    /// Linux boot to /init in the same QEMU with and without the hypervisor (ratio), and the
    /// idle primary's exits per second by reason.
    Boot(bench_boot::BootArgs),
    /// Tensor service: f32 GEMM GFLOP/s against numpy (OpenBLAS) at 1 and 2 threads,
    /// elementwise add against memory-copy bandwidth; GEMM against PyTorch/cuBLAS on a GPU.
    Tensor(bench_tensor::TensorArgs),
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    match args.what {
        BenchWhat::Ai(what) => bench_ai::run(&bench_ai::BenchArgs { what }),
        BenchWhat::Batch(a) => bench_batch::run(&a),
        BenchWhat::Boot(a) => bench_boot::run(&a),
        BenchWhat::Tensor(a) => bench_tensor::run(&a),
    }
}
