//! Arguments of the xtask commands.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use xtask::linux::Via;
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
    /// Seconds before QEMU counts as hung and is killed (default: 120 for --harness and
    /// --exec, none for the console).
    #[arg(long, value_name = "S")]
    pub timeout: Option<u64>,
    /// Virtual CPUs (default: as many as the policy's `[machine] cpus` lists, else 5).
    #[arg(long, value_name = "N")]
    pub smp: Option<u32>,
    /// Run CMD (a shell command line) in the primary's Linux instead of a shell: prints its
    /// output, powers off and exits with its status (125 when the run itself failed).
    #[arg(long, value_name = "CMD", conflicts_with = "harness")]
    pub exec: Option<String>,
    /// The test-harness run: the policy's primary `boot` is dropped, so the run ends at the
    /// test partitions' NEXUS RESULT; exit 0 on PASS, 1 on FAIL, 2 on anything else.
    #[arg(long)]
    pub harness: bool,
    /// Boot the primary's Linux (same kernel, initramfs and command line) without the
    /// hypervisor.
    #[arg(long, conflicts_with = "harness")]
    pub no_hypervisor: bool,
    /// With --no-hypervisor: how OVMF starts the kernel [default: kernel].
    #[arg(long, value_enum, value_name = "HOW", requires = "no_hypervisor")]
    pub via: Option<Via>,
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
