//! `cargo xtask run`: build the default image and boot it in QEMU, streaming the serial console.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use nexus_e2e::{Disk, Outcome, QemuConfig};

use crate::{build, cmd, prereqs};

pub struct RunOptions {
    pub policy: PathBuf,
    pub timeout: Duration,
    pub smp: u32,
}

/// Boots and maps the result: PASS → success, FAIL → 1, anything else → 2 with the reason.
pub fn run(opts: &RunOptions) -> Result<ExitCode> {
    prereqs::ensure("booting in QEMU", prereqs::QEMU)?;
    let dir = build::images(&opts.policy)?;
    let name = opts
        .policy
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let mut cfg = QemuConfig::new(&name, Disk::Dir(dir.esp_dir()), dir.root());
    cfg.smp = opts.smp;
    cfg.timeout = opts.timeout;
    cfg.echo = true;
    cmd::step(&format!(
        "booting in QEMU (timeout {} s; serial also in {}):\n    {}",
        opts.timeout.as_secs(),
        cfg.serial_log().display(),
        cmd::describe(&cfg.command())
    ));
    let run = cfg.run().map_err(anyhow::Error::msg)?;
    Ok(match run.outcome {
        Outcome::Pass => match run.expect_pass() {
            Ok(()) => {
                cmd::step(&run.explain());
                ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!("error: {why}");
                ExitCode::from(2)
            }
        },
        Outcome::Fail => {
            eprintln!("{run}");
            ExitCode::from(1)
        }
        _ => {
            eprintln!("error: {run}");
            ExitCode::from(2)
        }
    })
}
