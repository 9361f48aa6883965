//! Boots an ESP in QEMU (TCG, `-cpu max`, OVMF) and reports the image's own verdict.
//!
//! The image ends QEMU through `isa-debug-exit` (port 0xf4): writing v makes QEMU exit with
//! `(v << 1) | 1`, so PASS (0x10) is 33 and FAIL (0x11) is 35. Any other ending — a hang, a
//! reset, a QEMU error — is reported with the reason and the last serial lines.
//!
//! Two serial ports: COM1 is the guest console (the firmware's, then the primary OS's),
//! COM2 the hypervisor's own console (its `[hv]` lines and the test partitions' consoles),
//! which no guest can reach, so the two never interleave. One of them is watched live on
//! QEMU's stdio ([`Watch`]), the other goes to a file read after the run.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::process::{describe, run_watched_with, Finish, WatchOptions};
use crate::transcript::Transcript;

/// QEMU exit status for an image that wrote 0x10 (PASS) to isa-debug-exit.
pub const EXIT_PASS: i32 = 33;
/// QEMU exit status for an image that wrote 0x11 (FAIL) to isa-debug-exit.
pub const EXIT_FAIL: i32 = 35;

/// Default firmware paths (Debian's `ovmf` package); override with `NEXUS_OVMF_CODE` and
/// `NEXUS_OVMF_VARS`.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

/// What QEMU boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disk {
    /// A directory laid out as an ESP, shown to the guest as a FAT disk (QEMU's vvfat).
    Dir(PathBuf),
    /// A raw FAT image file.
    Image(PathBuf),
    /// No disk (a kernel given with `-kernel` boots without one).
    None,
}

/// Which serial port is watched live (stdio, with arrival times); the other is a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// COM2, the hypervisor's console (image tests judge its transcript).
    Hypervisor,
    /// COM1, the guest console (a Linux boot's markers, timed).
    Guest,
}

/// One QEMU boot.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// Names the run: the transcript goes to `<work_dir>/serial-<name>.log`.
    pub name: String,
    pub disk: Disk,
    /// Where the transcript and the run's own copy of the OVMF variables go.
    pub work_dir: PathBuf,
    pub qemu: PathBuf,
    pub ovmf_code: PathBuf,
    pub ovmf_vars: PathBuf,
    pub cpu: String,
    pub smp: u32,
    /// QEMU `-m` value, e.g. `2G`.
    pub memory: String,
    pub timeout: Duration,
    /// Stream the watched port's output to stdout while the guest runs.
    pub echo: bool,
    pub watch: Watch,
    /// The serial console on this terminal both ways (a shell in the guest), multiplexed
    /// with the QEMU monitor (Ctrl-A X quits) and also logged to [`Self::serial_log`];
    /// run with [`Self::run_interactive`].
    pub interactive: bool,
    pub extra_args: Vec<String>,
}

impl QemuConfig {
    /// The project's default machine: 4 CPUs, 2 GiB, `-cpu max`, no echo, 120 s timeout
    /// (`NEXUS_QEMU_TIMEOUT` seconds when set, for slower machines).
    pub fn new(name: &str, disk: Disk, work_dir: &Path) -> Self {
        let env_or = |var: &str, default: &str| {
            PathBuf::from(std::env::var_os(var).unwrap_or_else(|| default.into()))
        };
        Self {
            name: name.to_string(),
            disk,
            work_dir: work_dir.to_path_buf(),
            qemu: env_or("NEXUS_QEMU", "qemu-system-x86_64"),
            ovmf_code: env_or("NEXUS_OVMF_CODE", OVMF_CODE),
            ovmf_vars: env_or("NEXUS_OVMF_VARS", OVMF_VARS),
            cpu: "max".into(),
            smp: 5,
            memory: "2G".into(),
            timeout: Duration::from_secs(
                std::env::var("NEXUS_QEMU_TIMEOUT")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(120),
            ),
            echo: false,
            watch: Watch::Hypervisor,
            interactive: false,
            extra_args: Vec::new(),
        }
    }

    /// The hypervisor's console (COM2).
    pub fn serial_log(&self) -> PathBuf {
        self.work_dir.join(format!("serial-{}.log", self.name))
    }

    /// The guest console (COM1).
    pub fn console_log(&self) -> PathBuf {
        self.work_dir.join(format!("console-{}.log", self.name))
    }

    /// QEMU's log of each CPU reset (`-d cpu_reset`): the registers of a CPU that
    /// triple-faulted, which no console can print.
    pub fn reset_log(&self) -> PathBuf {
        self.work_dir.join(format!("cpu-reset-{}.log", self.name))
    }

    fn vars_copy(&self) -> PathBuf {
        self.work_dir.join(format!("OVMF_VARS-{}.fd", self.name))
    }

    /// The QEMU command line for this run.
    pub fn command(&self) -> Command {
        let drive = match &self.disk {
            Disk::Dir(dir) => Some(format!("format=raw,file=fat:rw:{}", dir.display())),
            Disk::Image(img) => Some(format!("format=raw,file={}", img.display())),
            Disk::None => None,
        };
        let mut cmd = Command::new(&self.qemu);
        cmd.args(["-accel", "tcg", "-cpu", &self.cpu])
            .args(["-smp", &self.smp.to_string(), "-m", &self.memory])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,readonly=on,file={}",
                self.ovmf_code.display()
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,file={}",
                self.vars_copy().display()
            ))
            .args(drive.iter().flat_map(|d| ["-drive", d]));
        let file = |p: PathBuf| format!("file:{}", p.display());
        if self.interactive {
            // signal=off: Ctrl-C goes to the guest's shell, not to QEMU.
            cmd.arg("-chardev")
                .arg(format!(
                    "stdio,id=console,mux=on,signal=off,logfile={}",
                    self.console_log().display()
                ))
                .args(["-serial", "chardev:console"])
                .args(["-serial", &file(self.serial_log())])
                .args(["-mon", "chardev=console"]);
        } else {
            match self.watch {
                Watch::Hypervisor => cmd
                    .args(["-serial", &file(self.console_log())])
                    .args(["-serial", "stdio"]),
                Watch::Guest => cmd
                    .args(["-serial", "stdio"])
                    .args(["-serial", &file(self.serial_log())]),
            };
        }
        cmd.args(["-display", "none", "-no-reboot"])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
            .args(["-d", "cpu_reset", "-D"])
            .arg(self.reset_log())
            .args(&self.extra_args);
        cmd
    }

    fn prepare(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.work_dir)
            .map_err(|e| format!("cannot create {}: {e}", self.work_dir.display()))?;
        // Each run starts from pristine firmware variables, so runs cannot influence each other.
        std::fs::copy(&self.ovmf_vars, self.vars_copy()).map_err(|e| {
            format!(
                "cannot copy OVMF variables {} to {}: {e} (is the `ovmf` package installed?)",
                self.ovmf_vars.display(),
                self.vars_copy().display()
            )
        })?;
        Ok(())
    }

    /// Boots with the console on this terminal (`interactive` must be set) and waits until
    /// QEMU exits, or kills it after `timeout` when one is given.
    pub fn run_interactive(&self, timeout: Option<Duration>) -> Result<ExitStatus, String> {
        if !self.interactive {
            return Err("run_interactive needs `interactive` set".into());
        }
        self.prepare()?;
        let mut cmd = self.command();
        let line = describe(&cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {line}: {e}"))?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        // The hypervisor's console (COM2) beside the guest's: its whole lines, as they come.
        let mut hv = Tail::new(self.serial_log());
        loop {
            hv.print_new_lines();
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                hv.print_new_lines();
                return Ok(status);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "QEMU still ran after {} s and was killed",
                    timeout.unwrap_or_default().as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Boots and waits for the result (or the timeout).
    pub fn run(&self) -> Result<QemuRun, String> {
        self.run_with(&mut |_, _| {})
    }

    /// As [`Self::run`], calling `on_line(arrival, line)` for each serial line as it arrives.
    pub fn run_with(&self, on_line: &mut dyn FnMut(Duration, &str)) -> Result<QemuRun, String> {
        self.prepare()?;
        let cmd = self.command();
        let command_line = describe(&cmd);
        let (watched_log, other_log) = match self.watch {
            Watch::Hypervisor => (self.serial_log(), self.console_log()),
            Watch::Guest => (self.console_log(), self.serial_log()),
        };
        let opts = WatchOptions {
            timeout: self.timeout,
            echo: self.echo,
            log: Some(watched_log),
        };
        let w = run_watched_with(cmd, &opts, on_line).map_err(|e| e.to_string())?;
        let other = Transcript::from_bytes(&std::fs::read(&other_log).unwrap_or_default());
        let (transcript, console) = match self.watch {
            Watch::Hypervisor => (w.transcript, other),
            Watch::Guest => (other, w.transcript),
        };
        let outcome = match w.finish {
            Finish::TimedOut => Outcome::Hung,
            Finish::Exited(status) => match status.code() {
                Some(EXIT_PASS) => Outcome::Pass,
                Some(EXIT_FAIL) => Outcome::Fail,
                Some(code) => Outcome::OtherExit(code),
                None => Outcome::Killed,
            },
        };
        Ok(QemuRun {
            outcome,
            transcript,
            console,
            watch: self.watch,
            line_times: w.line_times,
            stderr: w.stderr,
            elapsed: w.elapsed,
            timeout: self.timeout,
            serial_log: self.serial_log(),
            reset_log: self.reset_log(),
            command_line,
        })
    }
}

/// Follows a growing file and prints its complete new lines on stderr (raw terminal mode:
/// CR LF endings).
struct Tail {
    path: PathBuf,
    offset: usize,
}

impl Tail {
    fn new(path: PathBuf) -> Self {
        Tail { path, offset: 0 }
    }

    fn print_new_lines(&mut self) {
        use std::io::Write;
        let Ok(bytes) = std::fs::read(&self.path) else {
            return;
        };
        let Some(end) = bytes[self.offset.min(bytes.len())..]
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| self.offset + i + 1)
        else {
            return;
        };
        let mut err = std::io::stderr().lock();
        for line in String::from_utf8_lossy(&bytes[self.offset..end]).lines() {
            let _ = write!(err, "{}\r\n", crate::transcript::clean_line(line));
        }
        self.offset = end;
    }
}

/// How a QEMU run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 33: the image reported PASS.
    Pass,
    /// Exit status 35: the image reported FAIL.
    Fail,
    /// No exit before the timeout; QEMU was killed.
    Hung,
    /// Any other exit status (a reset with `-no-reboot` gives 0, a QEMU error 1).
    OtherExit(i32),
    /// Ended by a signal not sent by us.
    Killed,
}

/// The result of one QEMU boot.
#[derive(Debug, Clone)]
pub struct QemuRun {
    pub outcome: Outcome,
    /// The hypervisor's console (COM2).
    pub transcript: Transcript,
    /// The guest console (COM1): the firmware's and the primary OS's output.
    pub console: Transcript,
    pub watch: Watch,
    /// Arrival time of each line of the watched port, from QEMU's start.
    pub line_times: Vec<Duration>,
    pub stderr: String,
    pub elapsed: Duration,
    pub timeout: Duration,
    pub serial_log: PathBuf,
    /// QEMU's `-d cpu_reset` log ([`QemuConfig::reset_log`]).
    pub reset_log: PathBuf,
    pub command_line: String,
}

impl QemuRun {
    /// `Ok` for PASS with a matching `NEXUS RESULT: PASS` line; otherwise an explanation.
    pub fn expect_pass(&self) -> Result<(), String> {
        match (self.outcome, self.transcript.verdict()) {
            (Outcome::Pass, Some(crate::transcript::Verdict::Pass)) => Ok(()),
            (Outcome::Pass, _) => Err(format!(
                "QEMU exited with PASS ({EXIT_PASS}) but the transcript has no `NEXUS RESULT: PASS` line\n{self}"
            )),
            _ => Err(self.to_string()),
        }
    }

    /// One-paragraph explanation of the outcome, for error messages.
    pub fn explain(&self) -> String {
        match self.outcome {
            Outcome::Pass => format!("PASS (exit {EXIT_PASS}) after {:.1} s", self.elapsed.as_secs_f64()),
            Outcome::Fail => format!(
                "FAIL (exit {EXIT_FAIL}): the image reported failure: {}",
                self.transcript.result_line().unwrap_or("(no NEXUS RESULT line)")
            ),
            Outcome::Hung => format!(
                "QEMU hung: no result after {} s (killed)",
                self.timeout.as_secs()
            ),
            Outcome::OtherExit(0) => "QEMU exited with status 0: the guest reset or powered off without \
                                      reporting a result through isa-debug-exit (a triple fault resets; \
                                      -no-reboot turns that into an exit)"
                .to_string(),
            Outcome::OtherExit(1) => format!(
                "QEMU exited with status 1: QEMU itself failed; its stderr says: {}",
                self.stderr.trim()
            ),
            Outcome::OtherExit(code) => format!(
                "QEMU exited with unexpected status {code}: the image wrote {:#x} to isa-debug-exit; \
                 expected 0x10 (PASS, exit {EXIT_PASS}) or 0x11 (FAIL, exit {EXIT_FAIL})",
                code >> 1
            ),
            Outcome::Killed => "QEMU was killed by a signal".to_string(),
        }
    }
}

impl fmt::Display for QemuRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.explain())?;
        writeln!(f, "command: {}", self.command_line)?;
        writeln!(f, "transcript: {}", self.serial_log.display())?;
        if !self.stderr.trim().is_empty() && self.outcome != Outcome::OtherExit(1) {
            writeln!(f, "QEMU stderr: {}", self.stderr.trim())?;
        }
        for (name, t) in [
            ("hypervisor console (COM2)", &self.transcript),
            ("guest console (COM1)", &self.console),
        ] {
            if t.is_empty() {
                writeln!(f, "last lines of the {name}: (none)")?;
                continue;
            }
            writeln!(f, "last lines of the {name}:")?;
            for line in t.tail(20) {
                writeln!(f, "  | {line}")?;
            }
        }
        if self.outcome == Outcome::OtherExit(0) {
            match crate::cpu_reset::ResetSummary::read(&self.reset_log) {
                Some(s) => write!(f, "{s}")?,
                None => writeln!(f, "nothing logged in {}", self.reset_log.display())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_the_project_machine() {
        let cfg = QemuConfig::new("boot", Disk::Dir("/b/esp".into()), Path::new("/b"));
        let line = describe(&cfg.command());
        for part in [
            "-accel tcg -cpu max -smp 5 -m 2G",
            "if=pflash,format=raw,readonly=on,file=",
            "if=pflash,format=raw,file=/b/OVMF_VARS-boot.fd",
            "-drive format=raw,file=fat:rw:/b/esp",
            "-serial file:/b/console-boot.log -serial stdio -display none -no-reboot",
            "-device isa-debug-exit,iobase=0xf4,iosize=4",
            "-d cpu_reset -D /b/cpu-reset-boot.log",
        ] {
            assert!(line.contains(part), "missing {part:?} in {line}");
        }
        assert_eq!(cfg.serial_log(), Path::new("/b/serial-boot.log"));
    }

    #[test]
    fn kernel_boots_need_no_disk_and_interactive_runs_share_the_terminal() {
        let mut cfg = QemuConfig::new("linux", Disk::None, Path::new("/b"));
        let line = describe(&cfg.command());
        assert!(!line.contains("-drive format=raw"), "{line}");
        assert!(line.contains("-serial stdio"), "{line}");
        cfg.interactive = true;
        let line = describe(&cfg.command());
        assert!(
            line.contains(
                "-chardev stdio,id=console,mux=on,signal=off,logfile=/b/console-linux.log \
                 -serial chardev:console -serial file:/b/serial-linux.log -mon chardev=console"
            ),
            "{line}"
        );
        assert!(!line.contains("-serial stdio"), "{line}");
        cfg.interactive = false;
        assert!(cfg.run_interactive(None).is_err());
    }

    #[test]
    fn explains_each_outcome() {
        let mut run = QemuRun {
            outcome: Outcome::Hung,
            transcript: Transcript::from_bytes(b"[hv] started\n"),
            console: Transcript::from_bytes(b"BdsDxe: loading\n"),
            watch: Watch::Hypervisor,
            line_times: vec![Duration::from_secs(1)],
            stderr: String::new(),
            elapsed: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            serial_log: "/b/serial-x.log".into(),
            reset_log: "/b/cpu-reset-x.log".into(),
            command_line: "qemu".into(),
        };
        let text = run.to_string();
        assert!(text.starts_with("QEMU hung: no result after 5 s"), "{text}");
        assert!(text.contains("  | [hv] started"), "{text}");
        assert!(run.expect_pass().is_err());

        run.outcome = Outcome::OtherExit(37);
        assert!(run.explain().contains("0x12"), "{}", run.explain());
        run.outcome = Outcome::Pass;
        assert!(run
            .expect_pass()
            .unwrap_err()
            .contains("no `NEXUS RESULT: PASS` line"));
        run.transcript = Transcript::from_bytes(b"NEXUS RESULT: PASS\n");
        assert_eq!(run.expect_pass(), Ok(()));
    }

    #[test]
    fn a_reset_says_whether_qemu_logged_a_triple_fault() {
        let dir = std::env::temp_dir().join(format!("nexus-reset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("cpu-reset-x.log");
        let mut run = QemuRun {
            outcome: Outcome::OtherExit(0),
            transcript: Transcript::from_bytes(b"[hv] started\n"),
            console: Transcript::from_bytes(b""),
            watch: Watch::Hypervisor,
            line_times: vec![],
            stderr: String::new(),
            elapsed: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            serial_log: dir.join("serial-x.log"),
            reset_log: log.clone(),
            command_line: "qemu".into(),
        };
        assert!(run.to_string().contains("nothing logged in"));
        std::fs::write(
            &log,
            "CPU Reset (CPU 1)\nRIP=000000000000fff0 RFL=00000002\nTriple fault\n",
        )
        .unwrap();
        let text = run.to_string();
        assert!(
            text.contains("QEMU logged a triple fault (with -no-reboot"),
            "{text}"
        );
        assert!(
            !text.contains("fff0"),
            "boot-time dumps are left out: {text}"
        );
        // Other endings do not read it.
        run.outcome = Outcome::Hung;
        assert!(!run.to_string().contains("triple fault"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
