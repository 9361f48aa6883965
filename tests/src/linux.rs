//! Booting the primary's Linux in QEMU and reading what it printed: when `/init` was reached
//! (QEMU start to the marker, and the kernel's own uptime then), and the output and exit
//! status of the command `/init` ran (`/etc/nexus-exec`, see `guest-images/linux/init`).
//!
//! Three ways to start the same kernel and initramfs:
//! - [`LinuxBoot::Hypervisor`]: the normal ESP; the hypervisor chain-loads the policy's `boot`;
//! - [`LinuxBoot::Direct`]: no hypervisor; OVMF boots the kernel QEMU hands it (`-kernel`,
//!   `-initrd`, `-append`): the fastest way to a Linux prompt, and the benchmark's baseline;
//! - [`LinuxBoot::Shell`]: no hypervisor; OVMF finds no boot loader, falls through to its UEFI
//!   shell, whose `startup.nsh` starts the kernel from the FAT disk (after a 5 s countdown).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::esp::{INITRD_IMG, KERNEL_EFI};
use crate::qemu::{Disk, Outcome, QemuConfig, QemuRun, Watch};

/// The line `/init` prints first: `nexus-init: reached /init after <uptime> s`.
pub const INIT_MARKER: &str = "nexus-init: reached /init after ";
/// Printed before the command's output.
pub const EXEC_BEGIN: &str = "NEXUS EXEC BEGIN";
/// Printed after it: `NEXUS EXEC STATUS: <n>`.
pub const EXEC_STATUS: &str = "NEXUS EXEC STATUS: ";

/// How QEMU starts Linux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinuxBoot {
    /// The hypervisor's ESP (directory or image); the policy names kernel and command line.
    Hypervisor(Disk),
    /// OVMF boots `kernel` with `initrd` and `cmdline` handed over by QEMU.
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        cmdline: String,
    },
    /// OVMF's UEFI shell starts the kernel from an ESP laid out by [`shell_esp`].
    Shell(PathBuf),
}

/// The command line for [`LinuxBoot::Direct`] from a policy's: without `initrd=` (QEMU hands
/// the initramfs over itself; the EFI stub would look for that file on a volume it lacks).
pub fn direct_cmdline(policy_cmdline: &str) -> String {
    policy_cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("initrd="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lays out `dir` for [`LinuxBoot::Shell`]: the kernel and initramfs where the policy's
/// command line expects them, and `startup.nsh` starting the kernel with that command line.
pub fn shell_esp(dir: &Path, kernel: &Path, initrd: &Path, cmdline: &str) -> io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir.join("NEXUS"))?;
    std::fs::copy(kernel, dir.join(KERNEL_EFI))?;
    std::fs::copy(initrd, dir.join(INITRD_IMG))?;
    let script = format!("fs0:\\{} {cmdline}\r\n", KERNEL_EFI.replace('/', "\\"));
    std::fs::write(dir.join("startup.nsh"), script)
}

/// The QEMU run for `boot`: the project's machine, with the boot method's arguments; the
/// guest console (COM1) is watched, so marker lines carry their arrival times.
pub fn qemu_config(name: &str, boot: &LinuxBoot, work_dir: &Path) -> QemuConfig {
    let mut cfg = qemu_config_for(name, boot, work_dir);
    cfg.watch = Watch::Guest;
    cfg
}

fn qemu_config_for(name: &str, boot: &LinuxBoot, work_dir: &Path) -> QemuConfig {
    match boot {
        LinuxBoot::Hypervisor(disk) => QemuConfig::new(name, disk.clone(), work_dir),
        LinuxBoot::Direct {
            kernel,
            initrd,
            cmdline,
        } => {
            let mut cfg = QemuConfig::new(name, Disk::None, work_dir);
            cfg.extra_args = vec![
                "-kernel".into(),
                kernel.display().to_string(),
                "-initrd".into(),
                initrd.display().to_string(),
                "-append".into(),
                cmdline.clone(),
            ];
            cfg
        }
        LinuxBoot::Shell(esp) => {
            let mut cfg = QemuConfig::new(name, Disk::Dir(esp.clone()), work_dir);
            // No network boot attempts before the shell.
            cfg.extra_args = vec!["-net".into(), "none".into()];
            cfg
        }
    }
}

/// When user space started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InitReached {
    /// From QEMU's start to the marker line.
    pub wall: Duration,
    /// The kernel's uptime when `/init` printed it (`/proc/uptime`), in seconds.
    pub uptime: f64,
}

/// What the command printed and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub output: Vec<String>,
    pub status: i32,
}

/// A Linux boot, read.
#[derive(Debug, Clone)]
pub struct LinuxRun {
    pub run: QemuRun,
    pub init: Option<InitReached>,
    /// `None` until both `EXEC_BEGIN` and a status line were printed.
    pub exec: Option<ExecResult>,
}

impl LinuxRun {
    /// Reads `run`'s guest console. `foreign` are line prefixes of other writers that may
    /// share that port (`[hv] `, `[<test partition>] `: a machine without the hypervisor's
    /// own COM2) kept out of the command's output.
    pub fn read(run: QemuRun, foreign: &[String]) -> LinuxRun {
        let lines = run.console.lines();
        let init = lines.iter().enumerate().find_map(|(i, l)| {
            let uptime = parse_init_line(l)?;
            let wall = run.line_times.get(i).copied().unwrap_or(run.elapsed);
            Some(InitReached { wall, uptime })
        });
        let exec = exec_result(lines, foreign);
        LinuxRun { run, init, exec }
    }

    /// The `/init` marker, or why it never came.
    pub fn expect_init(&self) -> Result<InitReached, String> {
        self.init
            .ok_or_else(|| format!("{}\n{}", self.diagnose(), self.run))
    }

    /// The command's result, or why there is none.
    pub fn expect_exec(&self) -> Result<&ExecResult, String> {
        self.expect_init()?;
        self.exec.as_ref().ok_or_else(|| {
            let why = if self.run.console.find(EXEC_BEGIN).is_none() {
                "Linux reached /init but started no command (the initramfs has no /etc/nexus-exec?)"
            } else {
                "the command started but printed no `NEXUS EXEC STATUS:` line before QEMU ended"
            };
            format!("{why}\n{}", self.run)
        })
    }

    /// Why `/init` was not reached, from what the transcript does hold.
    pub fn diagnose(&self) -> String {
        let t = &self.run.console;
        let ending = match self.run.outcome {
            Outcome::Hung => format!("within {} s (QEMU was killed)", self.run.timeout.as_secs()),
            _ => "before QEMU ended".to_string(),
        };
        if let Some(result) = self.run.transcript.result_line() {
            return format!(
                "Linux never reached /init {ending}: the hypervisor ended the run at \
                 `NEXUS RESULT: {result}` without starting the primary's OS (the policy's \
                 `boot` was dropped, or this hypervisor does not chain-load it)"
            );
        }
        if let Some(panic) = t.find("Kernel panic") {
            return format!("Linux never reached /init {ending}: {panic}");
        }
        if t.find("Linux version ").is_some() {
            return format!("Linux never reached /init {ending}: the kernel started but /init never printed its marker");
        }
        format!("Linux never reached /init {ending}: the kernel never started (no `Linux version` line)")
    }
}

impl fmt::Display for LinuxRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.init {
            Some(i) => writeln!(
                f,
                "/init reached {:.1} s after QEMU started (kernel uptime {:.2} s)",
                i.wall.as_secs_f64(),
                i.uptime
            )?,
            None => writeln!(f, "{}", self.diagnose())?,
        }
        write!(f, "{}", self.run)
    }
}

/// The uptime in `nexus-init: reached /init after 4.12 s`.
pub fn parse_init_line(line: &str) -> Option<f64> {
    let rest = line.strip_prefix(INIT_MARKER)?;
    rest.strip_suffix(" s")?.trim().parse().ok()
}

/// A kernel message on the console: `[    1.234567] ...` (printk with timestamps).
pub fn is_kernel_message(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    let Some((stamp, _)) = rest.split_once(']') else {
        return false;
    };
    let stamp = stamp.trim_start();
    stamp.split_once('.').is_some_and(|(s, us)| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && us.len() == 6
            && us.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The command's output (between the begin and the last status line, without kernel messages
/// and lines of `foreign` writers) and status.
pub fn exec_result(lines: &[String], foreign: &[String]) -> Option<ExecResult> {
    let begin = lines.iter().position(|l| l == EXEC_BEGIN)?;
    let (end, status) = lines
        .iter()
        .enumerate()
        .skip(begin + 1)
        .rev()
        .find_map(|(i, l)| Some((i, l.strip_prefix(EXEC_STATUS)?.trim().parse().ok()?)))?;
    let output = lines[begin + 1..end]
        .iter()
        .filter(|l| !is_kernel_message(l))
        .filter(|l| !foreign.iter().any(|p| l.starts_with(p.as_str())))
        .cloned()
        .collect();
    Some(ExecResult { output, status })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Outcome;
    use crate::Transcript;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    fn run(text: &str, outcome: Outcome) -> QemuRun {
        let console = Transcript::from_lines(lines(text));
        let n = console.lines().len();
        QemuRun {
            outcome,
            line_times: (0..n)
                .map(|i| Duration::from_millis(100 * i as u64))
                .collect(),
            transcript: Transcript::from_lines(Vec::new()),
            console,
            watch: Watch::Guest,
            stderr: String::new(),
            elapsed: Duration::from_secs(9),
            timeout: Duration::from_secs(60),
            serial_log: "/b/serial-linux.log".into(),
            reset_log: "/b/cpu-reset-linux.log".into(),
            command_line: "qemu".into(),
        }
    }

    const BOOT: &str = "\
BdsDxe: loading Boot0001
[    0.000000] Linux version 6.1.0-57-amd64
[    5.157517] Run /init as init process
nexus-init: reached /init after 5.35 s
NEXUS EXEC BEGIN
4
[hv] stats primary: exits: total=9
[    7.000001] random: crng init done
nexusctl: not running under NexusOS
[hypercalls] ok
NEXUS EXEC STATUS: 3
[    8.100000] reboot: Power down";

    #[test]
    fn reads_the_init_marker_with_its_arrival_time() {
        let r = LinuxRun::read(run(BOOT, Outcome::OtherExit(0)), &[]);
        let init = r.expect_init().unwrap();
        assert_eq!(init.uptime, 5.35);
        assert_eq!(init.wall, Duration::from_millis(300));
        assert_eq!(
            parse_init_line("nexus-init: reached /init after 12 s"),
            Some(12.0)
        );
        assert_eq!(parse_init_line("nexus-init: reached /init after x s"), None);
        assert_eq!(
            parse_init_line("  nexus-init: reached /init after 1.0 s"),
            None
        );
    }

    #[test]
    fn takes_the_command_output_without_foreign_lines() {
        let foreign = vec!["[hv] ".to_string(), "[hypercalls] ".to_string()];
        let r = LinuxRun::read(run(BOOT, Outcome::OtherExit(0)), &foreign);
        let exec = r.expect_exec().unwrap();
        assert_eq!(exec.status, 3);
        assert_eq!(exec.output, ["4", "nexusctl: not running under NexusOS"]);
        // Output that prints the status text itself: the last status line counts.
        let tricky = lines("NEXUS EXEC BEGIN\nNEXUS EXEC STATUS: 0\nreal\nNEXUS EXEC STATUS: 1");
        let e = exec_result(&tricky, &[]).unwrap();
        assert_eq!((e.output.len(), e.status), (2, 1));
        assert_eq!(exec_result(&lines("NEXUS EXEC BEGIN\nhalf"), &[]), None);
        assert_eq!(exec_result(&lines("NEXUS EXEC STATUS: 0"), &[]), None);
    }

    #[test]
    fn tells_kernel_messages_from_output() {
        assert!(is_kernel_message("[    0.000000] Linux version"));
        assert!(is_kernel_message("[12345.123456] x"));
        for not in [
            "[hv] x",
            "[ 1.2] x",
            "[a.123456] x",
            "4",
            "[    1.123456 no bracket",
        ] {
            assert!(!is_kernel_message(not), "{not}");
        }
    }

    #[test]
    fn explains_a_missing_init() {
        let mut harness = run("BdsDxe: loading Boot0001", Outcome::Pass);
        harness.transcript =
            Transcript::from_lines(lines("[hv] NexusOS hypervisor\nNEXUS RESULT: PASS"));
        let r = LinuxRun::read(harness, &[]);
        let e = r.expect_init().unwrap_err();
        assert!(e.starts_with("Linux never reached /init before QEMU ended: the hypervisor ended the run at `NEXUS RESULT: PASS`"), "{e}");
        let panic = run(
            "[    0.000000] Linux version 6.1\n[    1.000000] Kernel panic - not syncing: no init",
            Outcome::Hung,
        );
        let e = LinuxRun::read(panic, &[]).expect_init().unwrap_err();
        assert!(e.starts_with("Linux never reached /init within 60 s (QEMU was killed): [    1.000000] Kernel panic"), "{e}");
        let nothing = LinuxRun::read(run("BdsDxe: failed", Outcome::Hung), &[]);
        assert!(nothing
            .diagnose()
            .ends_with("the kernel never started (no `Linux version` line)"));
        let no_cmd = LinuxRun::read(
            run("nexus-init: reached /init after 1.00 s", Outcome::Hung),
            &[],
        );
        assert!(no_cmd
            .expect_exec()
            .unwrap_err()
            .contains("started no command"));
    }

    #[test]
    fn boot_methods_give_their_qemu_arguments() {
        let direct = LinuxBoot::Direct {
            kernel: "/b/linux/vmlinuz".into(),
            initrd: "/b/linux/initrd.img".into(),
            cmdline: direct_cmdline("initrd=\\NEXUS\\INITRD.IMG console=ttyS0 panic=-1"),
        };
        let line = crate::process::describe(&qemu_config("x", &direct, Path::new("/b")).command());
        assert!(line.contains("-kernel /b/linux/vmlinuz -initrd /b/linux/initrd.img -append 'console=ttyS0 panic=-1'"), "{line}");
        assert!(line.contains("OVMF_CODE"), "{line}");
        assert!(!line.contains("fat:rw"), "{line}");
        let shell = qemu_config(
            "x",
            &LinuxBoot::Shell("/b/esp-shell".into()),
            Path::new("/b"),
        );
        let line = crate::process::describe(&shell.command());
        assert!(
            line.contains("fat:rw:/b/esp-shell") && line.contains("-net none"),
            "{line}"
        );
    }

    #[test]
    fn shell_esp_has_kernel_initrd_and_startup_script() {
        let dir = std::env::temp_dir().join(format!("nexus-e2e-shell-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k"), b"MZ").unwrap();
        std::fs::write(dir.join("i"), b"070701").unwrap();
        let esp = dir.join("esp");
        shell_esp(
            &esp,
            &dir.join("k"),
            &dir.join("i"),
            "initrd=\\NEXUS\\INITRD.IMG console=ttyS0",
        )
        .unwrap();
        assert_eq!(std::fs::read(esp.join(KERNEL_EFI)).unwrap(), b"MZ");
        assert_eq!(std::fs::read(esp.join(INITRD_IMG)).unwrap(), b"070701");
        assert_eq!(
            std::fs::read_to_string(esp.join("startup.nsh")).unwrap(),
            "fs0:\\NEXUS\\VMLINUZ.EFI initrd=\\NEXUS\\INITRD.IMG console=ttyS0\r\n"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
