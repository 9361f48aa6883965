//! `cargo xtask bochs`: build the image for the Bochs policy and boot it in Bochs 2.7 (Intel
//! VMX with EPT), printing the serial transcript and the run's duration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use nexus_e2e::bochs::{BochsConfig, BochsOutcome};

use crate::{build, cmd, paths, prereqs};

/// The policy the Bochs machine is described by.
pub fn default_policy() -> PathBuf {
    paths::root().join("policies/bochs-dev.toml")
}

#[derive(Debug, Args)]
pub struct BochsArgs {
    /// Policy to boot with.
    #[arg(long, value_name = "FILE", default_value_os_t = default_policy())]
    pub policy: PathBuf,
    /// Seconds before Bochs counts as hung and is killed.
    #[arg(long, value_name = "S", default_value_t = 300)]
    pub timeout: u64,
    /// Bochs CPU model (needs VMX and EPT): tigerlake, corei7_icelake_u, corei7_skylake_x.
    #[arg(long, value_name = "MODEL", default_value = "tigerlake")]
    pub cpu: String,
}

/// Builds, boots and maps the result: PASS → success, FAIL → 1, anything else → 2.
pub fn run(args: &BochsArgs) -> Result<ExitCode> {
    prereqs::ensure("Bochs image tests", prereqs::BOCHS)?;
    let dir = build::images(&args.policy)?;
    let name = args
        .policy
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let mut cfg = BochsConfig::new(&name, &dir.esp_image(), dir.root());
    cfg.timeout = Duration::from_secs(args.timeout);
    cfg.cpu_model = args.cpu.clone();
    cmd::step(&format!(
        "booting in Bochs (timeout {} s; serial in {}):\n    {}",
        args.timeout,
        cfg.serial_log().display(),
        cmd::describe(&cfg.command())
    ));
    let run = cfg.run().map_err(anyhow::Error::msg)?;
    for line in run.transcript.lines() {
        println!("{line}");
    }
    Ok(match run.outcome {
        BochsOutcome::Pass => {
            cmd::step(&run.explain());
            ExitCode::SUCCESS
        }
        BochsOutcome::Fail => {
            eprintln!("{run}");
            ExitCode::from(1)
        }
        _ => {
            eprintln!("error: {run}");
            ExitCode::from(2)
        }
    })
}
