//! `cargo xtask`: build, boot and test NexusOS.
//!
//! To add a command: put it in its own module (`mod bench;` below), add a variant to
//! [`Command`] and one arm to [`dispatch`].

mod cli;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use xtask::{build, lint, policy, prereqs, qemu, test};

/// Build, boot and test NexusOS.
///
/// Start with `cargo xtask run` (boots the hypervisor in QEMU) and `cargo xtask test` (runs
/// every test). Both install missing Debian packages when run as root (otherwise they print the
/// `sudo apt-get install` command) and add missing Rust targets.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the hypervisor (UEFI), the guest images, the policy and the ESP (build/esp/ and
    /// build/esp.img), then the host binaries.
    Build(cli::BuildArgs),
    /// Build and boot in QEMU with OVMF: the primary's Linux with its shell on this terminal
    /// (`--exec CMD` runs one command and exits with its status; `--no-hypervisor` boots that
    /// Linux alone); `--harness` (or a policy whose primary boots no OS) ends at the test
    /// partitions' verdict: exit 0 on PASS, 1 on FAIL, 2 on any other ending.
    Run(cli::RunArgs),
    /// Run every test: host tests of the workspace, then the image tests; prints a summary.
    Test(cli::TestArgs),
    /// Policy tools.
    #[command(subcommand)]
    Policy(cli::PolicyCommand),
    /// cargo fmt --check and clippy -D warnings (host and image targets).
    Lint,
    /// Check for (and as root install) everything the build and the tests need.
    Prereqs,
    /// AI models: fetch the catalogue's packages from PyPI into the cache and install them.
    Models(xtask::models::ModelsArgs),
    /// Build with policies/bochs-dev.toml and boot in Bochs 2.7 (Intel VMX with EPT); exit 0 on
    /// PASS, 1 on FAIL, 2 on any other ending.
    Bochs(xtask::bochs::BochsArgs),
    /// Build build/ai/: nexus-ai with llama.cpp's libraries and CPU variants, one relocatable
    /// folder (what the AI partition carries).
    AiBundle,
    /// Benchmarks (`bench ai`: our API vs llama.cpp on the same GGUF; `bench batch`:
    /// concurrent streams vs llama-server; `bench boot`: Linux to /init with and without the
    /// hypervisor; `bench tensor`: our CPU kernels vs numpy/OpenBLAS).
    Bench(xtask::bench::BenchArgs),
    /// Create build/pyenv: the official ollama/openai Python clients for the client tests.
    Pyenv,
}

fn main() -> ExitCode {
    match dispatch(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Build(a) => {
            build::images(&a.policy)?;
            if !a.images_only {
                build::host()?;
            }
        }
        Command::Run(a) => {
            let mode = match (a.harness, a.exec) {
                (true, _) => qemu::Mode::Harness,
                (false, Some(command)) => qemu::Mode::Exec(command),
                (false, None) => qemu::Mode::Console,
            };
            let opts = qemu::RunOptions {
                policy: a.policy,
                timeout: a.timeout.map(Duration::from_secs),
                smp: a.smp,
                mode,
                no_hypervisor: a
                    .no_hypervisor
                    .then(|| a.via.unwrap_or(xtask::linux::Via::Kernel)),
            };
            return qemu::run(&opts);
        }
        Command::Test(a) => {
            let opts = test::TestOptions {
                host: !a.images_only,
                images: !a.host_only,
                filter: a.filter,
            };
            return test::run(&opts);
        }
        Command::Policy(cli::PolicyCommand::Check { file }) => policy::check(&file)?,
        Command::Lint => lint::run()?,
        Command::Models(a) => return xtask::models::run(&a),
        Command::Bochs(a) => return xtask::bochs::run(&a),
        Command::AiBundle => drop(xtask::ai_bundle::build()?),
        Command::Bench(a) => return xtask::bench::run(a),
        Command::Pyenv => drop(xtask::pyenv::ensure()?),
        Command::Prereqs => {
            prereqs::ensure_rust_targets()?;
            for (purpose, reqs) in [
                ("booting in QEMU", prereqs::QEMU),
                ("making ESP images", prereqs::MTOOLS),
                (
                    "fetching Debian's kernel and busybox",
                    prereqs::DEBIAN_FETCH,
                ),
                ("the initramfs tests", prereqs::CPIO),
                ("Bochs image tests", prereqs::BOCHS),
                ("building the AI crate", prereqs::AI_BUILD),
            ] {
                prereqs::ensure(purpose, reqs)?;
                eprintln!("ok: {purpose}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
