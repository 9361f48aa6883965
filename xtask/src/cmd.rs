//! Running external programs with failures that say what ran and what it printed.

use std::io::IsTerminal;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

pub use nexus_e2e::process::describe;

/// Runs `cmd` with the terminal attached (its output streams live); fails with the command line
/// and exit status. Its stderr was shown to the user as it ran.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status}); its output is above");
    }
    Ok(())
}

/// Runs `cmd` capturing its output; fails with the command line, exit status and stderr.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let line = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(out)
}

/// Prints a progress line for a long step.
pub fn step(what: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("\x1b[1m==>\x1b[0m {what}");
    } else {
        eprintln!("==> {what}");
    }
}
