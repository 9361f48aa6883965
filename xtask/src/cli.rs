//! Arguments of the xtask commands.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use xtask::paths;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Policy compiled into NEXUS/POLICY.BIN; its partitions' images go on the ESP.
    #[arg(long, value_name = "FILE", default_value_os_t = paths::default_policy())]
    pub policy: PathBuf,
    /// Only the bootable images and the ESP, not the host binaries (`cargo build --workspace`).
    #[arg(long)]
    pub images_only: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Policy to boot with.
    #[arg(long, value_name = "FILE", default_value_os_t = paths::default_policy())]
    pub policy: PathBuf,
    /// Seconds before QEMU counts as hung and is killed.
    #[arg(long, value_name = "S", default_value_t = 120)]
    pub timeout: u64,
    /// Virtual CPUs.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub smp: u32,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Only the host tests (`cargo test --workspace`).
    #[arg(long, conflicts_with = "images_only")]
    pub host_only: bool,
    /// Only the image tests (tests/tests/*.rs booting in emulators).
    #[arg(long)]
    pub images_only: bool,
    /// Only image tests whose file name contains this (e.g. `qemu`).
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy: print its table (partitions, cores, memory, VRAM, ABI groups) or the
    /// precise error; exits non-zero on error.
    Check {
        /// The policy TOML file.
        file: PathBuf,
    },
}

/// `cargo xtask bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    #[command(flatten)]
    Ai(xtask::bench_ai::BenchWhat),
    /// AI: aggregate decode tokens/s at 1, 4 and 8 concurrent streams, nexus-ai serve
    /// (continuous batching) vs llama.cpp's llama-server.
    Batch(xtask::bench_batch::BatchArgs),
}
