//! Boots an ESP disk image in Bochs 2.7 (Intel VMX with EPT) and reports the image's verdict.
//!
//! Bochs runs headless (`display_library: rfb` with `timeout=0`; this Debian build has no
//! `nogui`) with its built-in debugger told to continue (`-rc` file holding `c`). OVMF (the
//! 2 MiB `OVMF.fd`) is the ROM at 0xffe00000; the ESP is an IDE disk in flat mode (its size a
//! whole number of 516096-byte cylinders, as `cargo xtask build` makes it). COM2, the
//! hypervisor's console, goes to `serial.log` and COM1, the firmware's and the primary's
//! console, to `console.log`; Bochs writes them out as it runs and completely at exit. The
//! harness image ends Bochs by writing
//! "Shutdown" to port 0x8900 after its `NEXUS RESULT:` line; Bochs then exits with status 1
//! ("shutdown requested"), so the verdict comes from the transcript, never from the status.
//! A run still going at the deadline is killed by its own pid.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{describe, run_watched, Finish, WatchOptions};
use crate::transcript::{clean_line, Transcript, Verdict};

/// The 2 MiB OVMF image that Bochs can map as its ROM (Debian's `ovmf` package).
pub const OVMF_ROM: &str = "/usr/share/ovmf/OVMF.fd";
/// A UEFI shell script that starts the hypervisor if OVMF drops to the shell.
pub const STARTUP_NSH: &str = "fs0:\r\n\\EFI\\BOOT\\BOOTX64.EFI\r\n";
/// Bochs' geometry detection needs whole cylinders of 16 heads x 63 sectors x 512 bytes.
pub const CYLINDER_BYTES: u64 = 16 * 63 * 512;

/// One Bochs boot.
#[derive(Debug, Clone)]
pub struct BochsConfig {
    /// Names the run: files go to `<work_dir>/bochs-<name>/`.
    pub name: String,
    /// The ESP FAT image; the run boots a private copy (Bochs may write to its disk).
    pub image: PathBuf,
    pub work_dir: PathBuf,
    pub bochs: PathBuf,
    pub rom: PathBuf,
    /// Bochs CPU model with VMX and EPT: `tigerlake`, `corei7_icelake_u`, `corei7_skylake_x`.
    pub cpu_model: String,
    /// Processors. Four match policies/bochs-dev.toml (the primary's boot CPU and one per
    /// test partition), which the hypervisor checks against what UEFI MP services reports.
    pub cpus: u32,
    pub megs: u32,
    pub timeout: Duration,
    /// Print Bochs' stdout (debugger and port 0xE9 output) while it runs.
    pub echo: bool,
    /// Files Bochs loads into RAM at these physical addresses before the firmware runs
    /// (`optramimage1..4`; the hostile-guest suite preloads a pattern where a partition's
    /// memory will be, to see that the hypervisor zeroes it).
    pub ram_images: Vec<(PathBuf, u64)>,
}

impl BochsConfig {
    /// Four Tiger Lake CPUs with 512 MiB, 300 s timeout (`NEXUS_BOCHS_TIMEOUT` seconds when set);
    /// `NEXUS_BOCHS`, `NEXUS_BOCHS_ROM` and `NEXUS_BOCHS_CPU` override the program, ROM and model.
    pub fn new(name: &str, image: &Path, work_dir: &Path) -> Self {
        let env_or =
            |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.into());
        Self {
            name: name.to_string(),
            image: image.to_path_buf(),
            work_dir: work_dir.to_path_buf(),
            bochs: env_or("NEXUS_BOCHS", "bochs").into(),
            rom: env_or("NEXUS_BOCHS_ROM", OVMF_ROM).into(),
            cpu_model: env_or("NEXUS_BOCHS_CPU", "tigerlake"),
            cpus: 4,
            megs: 512,
            timeout: Duration::from_secs(
                std::env::var("NEXUS_BOCHS_TIMEOUT")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(300),
            ),
            echo: false,
            ram_images: Vec::new(),
        }
    }

    /// Folder with this run's disk copy, configuration and logs.
    pub fn run_dir(&self) -> PathBuf {
        self.work_dir.join(format!("bochs-{}", self.name))
    }

    /// COM2: the hypervisor's console.
    pub fn serial_log(&self) -> PathBuf {
        self.run_dir().join("serial.log")
    }

    /// COM1: the firmware's console and what the primary prints on it.
    pub fn console_log(&self) -> PathBuf {
        self.run_dir().join("console.log")
    }

    pub fn bochs_log(&self) -> PathBuf {
        self.run_dir().join("bochs.log")
    }

    fn disk(&self) -> PathBuf {
        self.run_dir().join("esp.img")
    }

    /// The bochsrc text for this run. Bochs 2.7 mishandles INIT delivered to a CPU in VMX
    /// non-root operation (after an INIT VM exit); NexusOS never sends one in these runs.
    pub fn bochsrc(&self) -> String {
        let mut text = self.base_bochsrc();
        for (i, (file, address)) in self.ram_images.iter().take(4).enumerate() {
            text.push_str(&format!(
                "optramimage{}: file={}, address={address:#x}\n",
                i + 1,
                file.display()
            ));
        }
        text
    }

    fn base_bochsrc(&self) -> String {
        format!(
            "megs: {megs}\n\
             cpu: model={model}, count={cpus}, ips=100000000\n\
             romimage: file={rom}, address=0xffe00000\n\
             vgaromimage: file=/usr/share/vgabios/vgabios.bin\n\
             pci: enabled=1, chipset=i440fx\n\
             ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14\n\
             ata0-master: type=disk, path={disk}, mode=flat\n\
             boot: disk\n\
             display_library: rfb, options=\"timeout=0\"\n\
             port_e9_hack: enabled=1\n\
             com1: enabled=1, mode=file, dev={console}\n\
             com2: enabled=1, mode=file, dev={serial}\n\
             speaker: enabled=0\n\
             sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy\n\
             log: {log}\n\
             panic: action=fatal\n\
             error: action=report\n\
             info: action=ignore\n",
            megs = self.megs,
            model = self.cpu_model,
            cpus = self.cpus,
            rom = self.rom.display(),
            disk = self.disk().display(),
            serial = self.serial_log().display(),
            console = self.console_log().display(),
            log = self.bochs_log().display(),
        )
    }

    /// The command line (files are written by [`BochsConfig::run`]).
    pub fn command(&self) -> Command {
        let dir = self.run_dir();
        let mut cmd = Command::new(&self.bochs);
        cmd.arg("-q")
            .arg("-f")
            .arg(dir.join("bochsrc"))
            .arg("-rc")
            .arg(dir.join("cont.rc"))
            .current_dir(&dir);
        cmd
    }

    /// Copies the image (adding `startup.nsh`), writes the configuration, boots and waits.
    pub fn run(&self) -> Result<BochsRun, String> {
        let dir = self.run_dir();
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let len = fs::metadata(&self.image)
            .map_err(|e| {
                format!(
                    "cannot read ESP image {}: {e} (run `cargo xtask build`)",
                    self.image.display()
                )
            })?
            .len();
        if len == 0 || len % CYLINDER_BYTES != 0 {
            return Err(format!(
                "{} is {len} bytes, not a whole number of {CYLINDER_BYTES}-byte cylinders: \
                 Bochs cannot detect its geometry",
                self.image.display()
            ));
        }
        fs::copy(&self.image, self.disk()).map_err(|e| {
            format!(
                "cannot copy {} to {}: {e}",
                self.image.display(),
                self.disk().display()
            )
        })?;
        add_startup_nsh(&self.disk(), &dir)?;
        let write = |name: &str, text: &str| {
            fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))
        };
        write("bochsrc", &self.bochsrc())?;
        write("cont.rc", "c\n")?;
        let _ = fs::remove_file(self.serial_log());
        let _ = fs::remove_file(self.console_log());
        // A run killed at its deadline leaves Bochs' lock on the disk copy, which would make
        // every later run of this name refuse the disk.
        let _ = fs::remove_file(dir.join("esp.img.lock"));

        let cmd = self.command();
        let command_line = describe(&cmd);
        let opts = WatchOptions {
            timeout: self.timeout,
            echo: self.echo,
            log: Some(dir.join("stdout.log")),
        };
        let w = run_watched(cmd, &opts).map_err(|e| e.to_string())?;
        // The serial files are complete once Bochs has exited (or been killed).
        let raw = fs::read(self.serial_log()).unwrap_or_default();
        let lines = String::from_utf8_lossy(&raw)
            .lines()
            .map(clean_line)
            .collect();
        let transcript = Transcript::from_lines(lines);
        let console = Transcript::from_bytes(&fs::read(self.console_log()).unwrap_or_default());
        let shutdown = w.stderr.contains("Shutdown port: shutdown requested")
            || w.transcript
                .find("Shutdown port: shutdown requested")
                .is_some();
        let powered_off = w.stderr.contains(ACPI_POWER_OFF);
        let outcome = match w.finish {
            Finish::TimedOut => BochsOutcome::Hung,
            Finish::Exited(_) if powered_off => BochsOutcome::PoweredOff,
            Finish::Exited(_) if shutdown => match transcript.verdict() {
                Some(Verdict::Pass) => BochsOutcome::Pass,
                Some(_) => BochsOutcome::Fail,
                None => BochsOutcome::NoVerdict,
            },
            Finish::Exited(status) => BochsOutcome::Ended(status.code()),
        };
        Ok(BochsRun {
            outcome,
            transcript,
            console,
            stdout: w.transcript,
            stderr: w.stderr,
            elapsed: w.elapsed,
            timeout: self.timeout,
            serial_log: self.serial_log(),
            bochs_log: self.bochs_log(),
            command_line,
        })
    }
}

/// Put `startup.nsh` in the root of the FAT image with mtools (the UEFI shell runs it when
/// OVMF finds no boot option; normally OVMF boots `EFI/BOOT/BOOTX64.EFI` directly).
fn add_startup_nsh(img: &Path, dir: &Path) -> Result<(), String> {
    let nsh = dir.join("startup.nsh");
    fs::write(&nsh, STARTUP_NSH).map_err(|e| format!("cannot write {}: {e}", nsh.display()))?;
    let mut cmd = Command::new("mcopy");
    cmd.env("MTOOLS_SKIP_CHECK", "1")
        .arg("-o")
        .arg("-i")
        .arg(img)
        .arg(&nsh)
        .arg("::/startup.nsh");
    let out = cmd.output().map_err(|e| {
        format!(
            "cannot run `{}`: {e} (is `mtools` installed?)",
            describe(&cmd)
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            describe(&cmd),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// What Bochs says (as its last, fatal message) when the guest powers the machine off
/// through the ACPI PM1 control register (SLP_TYP 0, SLP_EN), as OVMF's ResetSystem
/// shutdown does.
pub const ACPI_POWER_OFF: &str = "ACPI control: soft power off";

/// How a Bochs run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BochsOutcome {
    /// Powered off through ACPI (no verdict through the shutdown port: a primary that
    /// boots an EFI application which ends the run itself, the primary probe).
    PoweredOff,
    /// Shut down through port 0x8900 after `NEXUS RESULT: PASS`.
    Pass,
    /// Shut down after `NEXUS RESULT: FAIL (...)`.
    Fail,
    /// Shut down without a `NEXUS RESULT:` line.
    NoVerdict,
    /// No shutdown before the timeout; Bochs was killed.
    Hung,
    /// Bochs ended some other way (a panic, a configuration error): its exit status.
    Ended(Option<i32>),
}

/// The result of one Bochs boot.
#[derive(Debug, Clone)]
pub struct BochsRun {
    pub outcome: BochsOutcome,
    /// COM2: the hypervisor's and partitions' lines.
    pub transcript: Transcript,
    /// COM1: the firmware's console and the primary's output on it.
    pub console: Transcript,
    /// Bochs' stdout: debugger lines and port 0xE9 output.
    pub stdout: Transcript,
    pub stderr: String,
    pub elapsed: Duration,
    pub timeout: Duration,
    pub serial_log: PathBuf,
    pub bochs_log: PathBuf,
    pub command_line: String,
}

impl BochsRun {
    /// `Ok` for a PASS verdict; otherwise the explanation with the last lines.
    pub fn expect_pass(&self) -> Result<(), String> {
        match self.outcome {
            BochsOutcome::Pass => Ok(()),
            _ => Err(self.to_string()),
        }
    }

    pub fn explain(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        match self.outcome {
            BochsOutcome::Pass => format!("PASS after {secs:.1} s"),
            BochsOutcome::Fail => format!(
                "FAIL after {secs:.1} s: {}",
                self.transcript.result_line().unwrap_or("?")
            ),
            BochsOutcome::PoweredOff => {
                format!("the guest powered Bochs off through ACPI after {secs:.1} s")
            }
            BochsOutcome::NoVerdict => {
                format!("Bochs shut down after {secs:.1} s without a `NEXUS RESULT:` line")
            }
            BochsOutcome::Hung => format!(
                "Bochs hung: no shutdown after {} s (killed)",
                self.timeout.as_secs()
            ),
            BochsOutcome::Ended(code) => format!(
                "Bochs ended without the shutdown port (status {code:?}) after {secs:.1} s; \
                 its messages: {}",
                last_lines(&self.stderr, 5)
            ),
        }
    }
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

impl fmt::Display for BochsRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.explain())?;
        writeln!(f, "command: {}", self.command_line)?;
        writeln!(f, "transcript: {}", self.serial_log.display())?;
        writeln!(f, "bochs log: {}", self.bochs_log.display())?;
        for (name, t, n) in [
            ("hypervisor console (COM2)", &self.transcript, 25),
            ("guest console (COM1)", &self.console, 15),
        ] {
            if t.is_empty() {
                writeln!(f, "last lines of the {name}: (none)")?;
                continue;
            }
            writeln!(f, "last lines of the {name}:")?;
            for line in t.tail(n) {
                writeln!(f, "  | {line}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bochsrc_has_the_vmx_machine() {
        let cfg = BochsConfig::new("t", Path::new("/b/esp.img"), Path::new("/b"));
        let rc = cfg.bochsrc();
        for part in [
            "cpu: model=tigerlake, count=4",
            "romimage: file=/usr/share/ovmf/OVMF.fd, address=0xffe00000",
            "pci: enabled=1, chipset=i440fx",
            "ata0-master: type=disk, path=/b/bochs-t/esp.img, mode=flat",
            "display_library: rfb, options=\"timeout=0\"",
            "port_e9_hack: enabled=1",
            "com2: enabled=1, mode=file, dev=/b/bochs-t/serial.log",
        ] {
            assert!(rc.contains(part), "missing {part:?} in\n{rc}");
        }
        let line = describe(&cfg.command());
        assert!(
            line.contains("-q -f /b/bochs-t/bochsrc -rc /b/bochs-t/cont.rc"),
            "{line}"
        );
        assert!(!rc.contains("optramimage"), "{rc}");
        let mut cfg = cfg;
        cfg.ram_images.push(("/b/pattern.bin".into(), 0x980_0000));
        assert!(cfg
            .bochsrc()
            .ends_with("optramimage1: file=/b/pattern.bin, address=0x9800000\n"));
    }

    #[test]
    fn refuses_images_bochs_cannot_size() {
        let dir = std::env::temp_dir().join(format!("nexus-bochs-size-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let img = dir.join("odd.img");
        fs::write(&img, vec![0u8; 1000]).unwrap();
        let err = BochsConfig::new("odd", &img, &dir).run().unwrap_err();
        assert!(err.contains("cylinders"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn explains_outcomes() {
        let run = BochsRun {
            outcome: BochsOutcome::Hung,
            transcript: Transcript::from_lines(vec!["[hv] started".into()]),
            console: Transcript::from_lines(vec!["probe: RESULT PASS".into()]),
            stdout: Transcript::from_lines(vec![]),
            stderr: String::new(),
            elapsed: Duration::from_secs(3),
            timeout: Duration::from_secs(300),
            serial_log: "/b/serial.log".into(),
            bochs_log: "/b/bochs.log".into(),
            command_line: "bochs".into(),
        };
        let s = run.to_string();
        assert!(
            s.contains("no shutdown after 300 s") && s.contains("| [hv] started"),
            "{s}"
        );
        assert!(
            s.contains("guest console (COM1):\n  | probe: RESULT PASS"),
            "{s}"
        );
        assert!(run.expect_pass().is_err());
        let off = BochsRun {
            outcome: BochsOutcome::PoweredOff,
            ..run
        };
        assert!(off.explain().contains("powered Bochs off through ACPI"));
        assert!(off.expect_pass().is_err(), "no verdict: not a PASS");
    }
}
