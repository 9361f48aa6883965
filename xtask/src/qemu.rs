//! `cargo xtask run`: build and boot in QEMU. With a policy whose primary boots an OS, the
//! serial console is on the terminal (the primary's Linux shell); `--exec CMD` runs one
//! command there instead and exits with its status; `--harness` is the test-harness run that
//! ends at the test partitions' `NEXUS RESULT`; `--no-hypervisor` boots the same Linux alone.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use nexus_e2e::linux::{self, qemu_config, LinuxBoot, LinuxRun, EXEC_BEGIN, EXEC_STATUS};
use nexus_e2e::qemu::{EXIT_FAIL, EXIT_PASS};
use nexus_e2e::{Disk, Outcome, QemuConfig};

use crate::linux::Via;
use crate::{build, cmd, linux as primary_linux, paths, policy, prereqs};

/// Timeout of runs that end by themselves (harness, `--exec`) when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// QEMU CPUs for a policy that lists none.
pub const DEFAULT_SMP: u32 = 5;
/// Exit status of `run --exec` when the run itself failed (no `/init`, no status line).
pub const EXEC_RUN_FAILED: u8 = 125;

/// What the run is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The primary's OS with its console on this terminal (or the harness run when the policy
    /// boots no OS).
    Console,
    /// The policy's primary `boot` dropped: the run ends at `NEXUS RESULT`.
    Harness,
    /// Run this command in the primary's Linux, print its output, exit with its status.
    Exec(String),
}

pub struct RunOptions {
    pub policy: PathBuf,
    /// `None`: the default for the mode (none for a console, [`DEFAULT_TIMEOUT`] otherwise).
    pub timeout: Option<Duration>,
    /// `None`: as many as the policy's machine lists ([`policy::qemu_cpus`]).
    pub smp: Option<u32>,
    pub mode: Mode,
    /// `Some`: boot Linux without the hypervisor, this way.
    pub no_hypervisor: Option<Via>,
}

pub fn run(opts: &RunOptions) -> Result<ExitCode> {
    prereqs::ensure("booting in QEMU", prereqs::QEMU)?;
    let policy = policy::load(&opts.policy)?;
    let smp = opts
        .smp
        .unwrap_or_else(|| policy::qemu_cpus(&policy, DEFAULT_SMP));
    let stem = opts
        .policy
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let dir = paths::build_dir();

    let (boot, name) = match (&opts.no_hypervisor, &opts.mode) {
        (Some(_), Mode::Harness) => {
            bail!("--harness runs the hypervisor; it cannot be combined with --no-hypervisor")
        }
        (Some(via), mode) => {
            primary_linux::prepare(&dir)?;
            let initrd = match mode {
                Mode::Exec(command) => {
                    let path = dir.linux_dir().join("initrd-exec.img");
                    primary_linux::write_initrd(&dir, Some(command), &path)?;
                    path
                }
                _ => dir.initrd(),
            };
            let boot = primary_linux::plain_boot(&dir, &policy, &initrd, *via, "")?;
            (boot, format!("linux-{}", mode_name(mode)))
        }
        (None, Mode::Harness) => {
            let esp = build::harness_esp(&opts.policy)?;
            return harness(opts, smp, Disk::Dir(esp), &stem);
        }
        (None, mode) => {
            let built = build::images(&opts.policy)?;
            if policy.primary().and_then(|p| p.boot.as_ref()).is_none() {
                if let Mode::Exec(_) = mode {
                    bail!(
                        "{}: the primary partition has no `boot` (no OS to run the command in); \
                         see docs/policy.md",
                        opts.policy.display()
                    );
                }
                cmd::step("the policy's primary boots no OS: this is the harness run");
                return harness(opts, smp, Disk::Dir(built.esp_dir()), &stem);
            }
            match mode {
                Mode::Exec(command) => {
                    let path = dir.linux_dir().join("initrd-exec.img");
                    primary_linux::write_initrd(&dir, Some(command), &path)?;
                    let boot = primary_linux::hypervisor_boot(&dir, &opts.policy, &path, "exec")?;
                    (boot, format!("{stem}-exec"))
                }
                _ => (
                    LinuxBoot::Hypervisor(Disk::Dir(built.esp_dir())),
                    stem.clone(),
                ),
            }
        }
    };
    let mut cfg = qemu_config(&name, &boot, dir.root());
    cfg.smp = smp;
    match &opts.mode {
        Mode::Exec(command) => exec(
            cfg,
            opts,
            command,
            &primary_linux::foreign_prefixes(&policy),
        ),
        _ => console(cfg, opts.timeout),
    }
}

fn mode_name(mode: &Mode) -> &'static str {
    match mode {
        Mode::Console => "console",
        Mode::Harness => "harness",
        Mode::Exec(_) => "exec",
    }
}

/// The test-harness run: PASS → 0, FAIL → 1, anything else → 2 with the reason.
fn harness(opts: &RunOptions, smp: u32, disk: Disk, stem: &str) -> Result<ExitCode> {
    let mut cfg = QemuConfig::new(stem, disk, paths::build_dir().root());
    cfg.smp = smp;
    cfg.timeout = opts.timeout.unwrap_or(DEFAULT_TIMEOUT);
    cfg.echo = true;
    cmd::step(&format!(
        "booting in QEMU (timeout {} s; serial also in {}):\n    {}",
        cfg.timeout.as_secs(),
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

/// The console on this terminal until QEMU exits: the guest powered off (0), or the harness
/// reported PASS (0) / FAIL (1); anything else is 2.
fn console(mut cfg: QemuConfig, timeout: Option<Duration>) -> Result<ExitCode> {
    cfg.interactive = true;
    cmd::step(&format!(
        "booting in QEMU; the serial console is this terminal (Ctrl-A X quits QEMU, \
         Ctrl-A C its monitor); transcript in {}:\n    {}",
        cfg.serial_log().display(),
        cmd::describe(&cfg.command())
    ));
    let status = cfg.run_interactive(timeout).map_err(anyhow::Error::msg)?;
    Ok(match status.code() {
        Some(0) | Some(EXIT_PASS) => ExitCode::SUCCESS,
        Some(EXIT_FAIL) => ExitCode::from(1),
        _ => {
            eprintln!(
                "error: QEMU ended with {status} (transcript: {})",
                cfg.serial_log().display()
            );
            ExitCode::from(2)
        }
    })
}

/// Runs `command` in the primary's Linux: progress on stderr while booting, the command's
/// output on stdout as it comes, its status as the exit status.
fn exec(
    mut cfg: QemuConfig,
    opts: &RunOptions,
    command: &str,
    foreign: &[String],
) -> Result<ExitCode> {
    cfg.timeout = opts.timeout.unwrap_or(DEFAULT_TIMEOUT);
    cmd::step(&format!(
        "booting in QEMU to run {command:?} (timeout {} s; transcript in {}):\n    {}",
        cfg.timeout.as_secs(),
        cfg.serial_log().display(),
        cmd::describe(&cfg.command())
    ));
    let mut progress = Progress::new(foreign);
    let run = cfg
        .run_with(&mut |at, line| progress.line(at, line))
        .map_err(anyhow::Error::msg)?;
    let linux = LinuxRun::read(run, foreign);
    match linux.expect_exec() {
        Ok(result) => {
            cmd::step(&format!(
                "{command:?} exited with status {} ({:.1} s in all; transcript in {})",
                result.status,
                linux.run.elapsed.as_secs_f64(),
                linux.run.serial_log.display()
            ));
            Ok(ExitCode::from(
                u8::try_from(result.status).unwrap_or(EXEC_RUN_FAILED),
            ))
        }
        Err(why) => {
            eprintln!("error: {why}");
            Ok(ExitCode::from(EXEC_RUN_FAILED))
        }
    }
}

/// Milestones of a boot on stderr, and the command's own lines on stdout as they arrive.
struct Progress<'a> {
    foreign: &'a [String],
    in_command: bool,
    seen_kernel: bool,
}

impl<'a> Progress<'a> {
    fn new(foreign: &'a [String]) -> Self {
        Self {
            foreign,
            in_command: false,
            seen_kernel: false,
        }
    }

    fn line(&mut self, at: Duration, line: &str) {
        let t = at.as_secs_f64();
        if self.in_command {
            if line.starts_with(EXEC_STATUS) {
                self.in_command = false;
            } else if !linux::is_kernel_message(line)
                && !self.foreign.iter().any(|p| line.starts_with(p.as_str()))
            {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            return;
        }
        if line.starts_with("[hv] NexusOS hypervisor ") {
            cmd::step(&format!("{t:5.1} s  hypervisor started"));
        } else if !self.seen_kernel && line.contains("] Linux version ") {
            self.seen_kernel = true;
            cmd::step(&format!("{t:5.1} s  kernel started"));
        } else if let Some(uptime) = linux::parse_init_line(line) {
            cmd::step(&format!(
                "{t:5.1} s  /init reached (kernel uptime {uptime:.2} s)"
            ));
        } else if line == EXEC_BEGIN {
            self.in_command = true;
        } else if line.contains("Kernel panic") {
            cmd::step(&format!("{t:5.1} s  {line}"));
        } else if let Some(result) = line.strip_prefix(nexus_e2e::transcript::RESULT_PREFIX) {
            cmd::step(&format!("{t:5.1} s  hypervisor: NEXUS RESULT: {result}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_e2e::linux::INIT_MARKER;

    #[test]
    fn progress_streams_only_the_commands_own_lines() {
        let foreign = vec!["[hv] ".to_string()];
        let mut p = Progress::new(&foreign);
        p.line(Duration::ZERO, "[hv] NexusOS hypervisor 0.1.0");
        assert!(!p.in_command);
        p.line(Duration::ZERO, &format!("{INIT_MARKER}1.00 s"));
        p.line(Duration::ZERO, EXEC_BEGIN);
        assert!(p.in_command);
        p.line(Duration::ZERO, "NEXUS EXEC STATUS: 0");
        assert!(!p.in_command);
    }
}
