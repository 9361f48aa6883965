//! `cargo xtask bench boot`: the primary's Linux booting to `/init` in the same QEMU with and
//! without the hypervisor, in one run, side by side as a ratio (wall time from QEMU's start to
//! the `/init` line, and the kernel's own uptime then); and, with the hypervisor, the exits
//! per second of the idle primary by reason: `nexusctl stats` (the `partition_stats` call
//! through the doorbell) before and after an idle sleep prints `exits: total=N <reason>=N ...`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use nexus_e2e::linux::{qemu_config, LinuxBoot, LinuxRun};
use nexus_e2e::BuildDir;

use crate::linux::{self as primary_linux, Via};
use crate::{build, cmd, paths, policy, prereqs};

/// The line prefix of the per-reason exit counters `nexusctl stats` prints (the hypervisor's
/// log uses the same format).
pub const STATS_PREFIX: &str = "exits: ";
/// Printed by the idle script around its sleep: `nexus-bench: mark <uptime>`.
pub const MARK: &str = "nexus-bench: mark ";

#[derive(Debug, Clone, clap::Args)]
pub struct BootArgs {
    /// Policy to boot with (its primary must boot the kernel).
    #[arg(long, value_name = "FILE", default_value_os_t = paths::default_policy())]
    pub policy: PathBuf,
    /// QEMU CPUs, the same for both halves (default: as many as the policy's `[machine] cpus`
    /// lists, else 5).
    #[arg(long, value_name = "N")]
    pub smp: Option<u32>,
    /// Boots of each kind, interleaved; the table shows medians.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub runs: u32,
    /// How OVMF starts the kernel without the hypervisor.
    #[arg(long, value_enum, value_name = "HOW", default_value = "kernel")]
    pub via: Via,
    /// Seconds the primary stays idle while its exits are counted (with the hypervisor).
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub idle: u32,
    /// The command the primary runs before and after the idle time to print its counters as
    /// an `exits: total=N <reason>=N ...` line.
    #[arg(long, value_name = "CMD", default_value = "nexusctl stats")]
    pub stats_cmd: String,
    /// Seconds before one boot counts as hung.
    #[arg(long, value_name = "S", default_value_t = 180)]
    pub timeout: u64,
}

/// One boot's figures.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    wall: f64,
    uptime: f64,
    cpus: Option<u32>,
}

pub fn run(args: &BootArgs) -> Result<ExitCode> {
    prereqs::ensure("booting in QEMU", prereqs::QEMU)?;
    let policy = policy::load(&args.policy)?;
    let args = &BootArgs {
        smp: Some(
            args.smp
                .unwrap_or_else(|| policy::qemu_cpus(&policy, crate::qemu::DEFAULT_SMP)),
        ),
        ..args.clone()
    };
    let dir = build::images(&args.policy)?;
    let plain_initrd = dir.linux_dir().join("initrd-bench-plain.img");
    primary_linux::write_initrd(&dir, Some(&cpus_script()), &plain_initrd)?;
    let hv_initrd = dir.linux_dir().join("initrd-bench-hv.img");
    primary_linux::write_initrd(&dir, Some(&idle_script(args)), &hv_initrd)?;
    // The same QEMU machine; Linux without the hypervisor uses as many CPUs as the primary
    // gets with it, so both boots bring up the same number.
    let primary_cpus = policy.primary().map_or(0, |p| p.apic_ids.len());
    let limit = if primary_cpus > 0 {
        format!("nr_cpus={primary_cpus}")
    } else {
        String::new()
    };
    let plain = primary_linux::plain_boot(&dir, &policy, &plain_initrd, args.via, &limit)?;
    let with_hv = primary_linux::hypervisor_boot(&dir, &args.policy, &hv_initrd, "bench")?;
    let foreign = primary_linux::foreign_prefixes(&policy);

    let (mut without, mut with, mut idle) = (Vec::new(), Vec::new(), None);
    let mut failure = None;
    for i in 1..=args.runs {
        cmd::step(&format!(
            "run {i}/{}: Linux without the hypervisor…",
            args.runs
        ));
        let r = boot(&dir, args, &plain, "bench-plain", &foreign);
        without.push(r.map_err(anyhow::Error::msg)?.0);
        if failure.is_some() {
            continue;
        }
        cmd::step(&format!(
            "run {i}/{}: Linux in the primary, with the hypervisor…",
            args.runs
        ));
        match boot(&dir, args, &with_hv, "bench-hv", &foreign) {
            Ok((sample, linux)) => {
                with.push(sample);
                idle = Some(idle_exits(&linux));
            }
            Err(why) => failure = Some(why),
        }
    }
    println!("{}", table(args, &without, &with));
    match (&failure, &idle) {
        (Some(why), _) => {
            println!("with the hypervisor: no figures:\n{why}");
            Ok(ExitCode::FAILURE)
        }
        (None, Some(Ok(rates))) => {
            println!(
                "idle primary, exits per second over {} s of guest time (last run):",
                args.idle
            );
            println!("{}", rates_line(rates));
            Ok(ExitCode::SUCCESS)
        }
        (None, Some(Err(why))) => {
            println!("idle primary exits per second: none: {why}");
            Ok(ExitCode::FAILURE)
        }
        (None, None) => Ok(ExitCode::FAILURE),
    }
}

/// What the baseline runs: how many CPUs Linux sees, then power off.
fn cpus_script() -> String {
    "echo \"nexus-bench: cpus $(nproc)\"".to_string()
}

/// The idle measurement: uptime marks around `idle` seconds of sleep, each after the stats
/// request when there is one.
fn idle_script(args: &BootArgs) -> String {
    let stats = args.stats_cmd.clone();
    let mark = format!("echo \"{MARK}$(cut -d' ' -f1 /proc/uptime)\"");
    [
        cpus_script(),
        stats.clone(),
        mark.clone(),
        format!("sleep {}", args.idle),
        stats,
        mark,
    ]
    .into_iter()
    .filter(|l| !l.is_empty())
    .collect::<Vec<_>>()
    .join("\n")
}

fn boot(
    dir: &BuildDir,
    args: &BootArgs,
    how: &LinuxBoot,
    name: &str,
    foreign: &[String],
) -> Result<(Sample, LinuxRun), String> {
    let mut cfg = qemu_config(name, how, dir.root());
    cfg.smp = args.smp.unwrap_or(crate::qemu::DEFAULT_SMP);
    cfg.timeout = Duration::from_secs(args.timeout);
    let run = cfg.run()?;
    let linux = LinuxRun::read(run, foreign);
    let init = linux.expect_init()?;
    let cpus = linux.exec.as_ref().and_then(|e| {
        e.output
            .iter()
            .find_map(|l| l.strip_prefix("nexus-bench: cpus ")?.trim().parse().ok())
    });
    cmd::step(&format!(
        "/init after {:.1} s (kernel uptime {:.2} s)",
        init.wall.as_secs_f64(),
        init.uptime
    ));
    let sample = Sample {
        wall: init.wall.as_secs_f64(),
        uptime: init.uptime,
        cpus,
    };
    Ok((sample, linux))
}

fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The side-by-side table.
fn table(args: &BootArgs, without: &[Sample], with: &[Sample]) -> String {
    let mut out = format!(
        "\nLinux boot to /init, QEMU -accel tcg -cpu max -smp {} -m 2G, median of {} run(s) each \
         (without the hypervisor: OVMF {}, nr_cpus = the primary's CPUs)\n",
        args.smp.unwrap_or(crate::qemu::DEFAULT_SMP),
        args.runs,
        match args.via {
            Via::Kernel => "with -kernel",
            Via::Shell => "UEFI shell startup.nsh",
        }
    );
    out += &format!(
        "{:<28} {:>14} {:>14} {:>12}\n",
        "", "without hv", "with hv", "with/without"
    );
    let row = |name: &str, unit: &str, f: fn(&Sample) -> f64| {
        let a = median(without.iter().map(f));
        let b = median(with.iter().map(f));
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} {unit}"));
        let ratio = match (a, b) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.2}x", b / a),
            _ => "-".into(),
        };
        format!("{name:<28} {:>14} {:>14} {ratio:>12}\n", cell(a), cell(b))
    };
    out += &row("QEMU start -> /init (wall)", "s", |s| s.wall);
    out += &row("kernel uptime at /init", "s", |s| s.uptime);
    let cpus = |v: &[Sample]| {
        v.first()
            .and_then(|s| s.cpus)
            .map_or("-".to_string(), |n| n.to_string())
    };
    out += &format!(
        "{:<28} {:>14} {:>14}\n",
        "CPUs Linux saw",
        cpus(without),
        cpus(with)
    );
    out
}

/// Counters of one `exits: total=N reason=N ...` line, in order.
pub fn parse_exit_counts(line: &str) -> Option<Vec<(String, u64)>> {
    let rest = line.strip_prefix(STATS_PREFIX)?;
    rest.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Exits per guest second, by reason, between the two idle marks: each mark's counters are
/// the last stats line printed before it.
fn idle_exits(linux: &LinuxRun) -> Result<Vec<(String, f64)>, String> {
    let lines = linux.run.console.lines();
    let mut marks = Vec::new();
    let mut last_stats = None;
    for line in lines {
        if let Some(counts) = parse_exit_counts(line) {
            last_stats = Some(counts);
        } else if let Some(uptime) = line
            .strip_prefix(MARK)
            .and_then(|u| u.trim().parse::<f64>().ok())
        {
            marks.push((uptime, last_stats.clone()));
        }
    }
    let [(t0, Some(first)), (t1, Some(second))] = marks.as_slice() else {
        return Err(if marks.len() < 2 {
            "the idle script's marks are missing (see the transcript)".into()
        } else {
            format!(
                "no `{}` line before each mark (--stats-cmd must print the primary's counters; \
                 see the transcript)",
                STATS_PREFIX.trim_end()
            )
        });
    };
    rates(first, second, t1 - t0)
}

/// Per-second differences of two counter snapshots over `seconds`.
fn rates(
    first: &[(String, u64)],
    second: &[(String, u64)],
    seconds: f64,
) -> Result<Vec<(String, f64)>, String> {
    if seconds <= 0.0 {
        return Err(format!("the idle marks are {seconds:.2} s apart"));
    }
    let before = |name: &str| first.iter().find(|(k, _)| k == name).map_or(0, |(_, v)| *v);
    second
        .iter()
        .map(|(name, after)| {
            let delta = after
                .checked_sub(before(name))
                .ok_or_else(|| format!("counter {name} went down ({} -> {after})", before(name)))?;
            Ok((name.clone(), delta as f64 / seconds))
        })
        .collect()
}

fn rates_line(rates: &[(String, f64)]) -> String {
    rates
        .iter()
        .map(|(k, v)| format!("{k}={v:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_e2e::qemu::{Outcome, QemuRun};
    use nexus_e2e::Transcript;

    fn linux(text: &str) -> LinuxRun {
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let n = lines.len();
        let run = QemuRun {
            outcome: Outcome::OtherExit(0),
            line_times: vec![Duration::ZERO; n],
            transcript: Transcript::from_lines(lines.clone()),
            console: Transcript::from_lines(lines),
            watch: nexus_e2e::Watch::Guest,
            stderr: String::new(),
            elapsed: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            serial_log: "/b/x.log".into(),
            reset_log: "/b/cpu-reset-x.log".into(),
            command_line: "qemu".into(),
        };
        LinuxRun::read(run, &[])
    }

    #[test]
    fn parses_the_hypervisors_stats_line() {
        assert_eq!(
            parse_exit_counts("exits: total=41 hypercall=30 npf=11"),
            Some(vec![
                ("total".into(), 41),
                ("hypercall".into(), 30),
                ("npf".into(), 11)
            ])
        );
        assert_eq!(
            parse_exit_counts("[hv] stats hypercalls: exits: total=1"),
            None
        );
        assert_eq!(parse_exit_counts("exits: total=x"), None);
    }

    #[test]
    fn idle_rates_come_from_the_stats_before_each_mark() {
        let t = linux(
            "exits: total=100 hlt=40 io=60\n\
             nexus-bench: mark 6.00\n\
             exits: total=150 hlt=50\n\
             exits: total=300 hlt=100 io=200 npf=0\n\
             nexus-bench: mark 16.00",
        );
        let r = idle_exits(&t).unwrap();
        assert_eq!(
            r,
            [
                ("total".to_string(), 20.0),
                ("hlt".to_string(), 6.0),
                ("io".to_string(), 14.0),
                ("npf".to_string(), 0.0)
            ]
        );
        assert_eq!(rates_line(&r), "total=20.0 hlt=6.0 io=14.0 npf=0.0");
    }

    #[test]
    fn missing_or_broken_counters_are_explained() {
        let none = linux("nexus-bench: mark 1.0\nnexus-bench: mark 11.0");
        assert!(idle_exits(&none)
            .unwrap_err()
            .contains("no `exits:` line before each mark"));
        let one_mark = linux("exits: total=1\nnexus-bench: mark 1.0");
        assert!(idle_exits(&one_mark)
            .unwrap_err()
            .contains("marks are missing"));
        let down = rates(&[("total".into(), 5)], &[("total".into(), 4)], 1.0);
        assert!(down.unwrap_err().contains("went down"));
        assert!(rates(&[], &[], 0.0).is_err());
    }

    #[test]
    fn scripts_mark_around_the_idle_time() {
        let mut args = BootArgs {
            policy: "p".into(),
            smp: Some(4),
            runs: 1,
            via: Via::Kernel,
            idle: 7,
            stats_cmd: String::new(),
            timeout: 1,
        };
        assert_eq!(
            idle_script(&args),
            "echo \"nexus-bench: cpus $(nproc)\"\n\
             echo \"nexus-bench: mark $(cut -d' ' -f1 /proc/uptime)\"\nsleep 7\n\
             echo \"nexus-bench: mark $(cut -d' ' -f1 /proc/uptime)\""
        );
        args.stats_cmd = "nexusctl stats".into();
        let s = idle_script(&args);
        assert_eq!(
            s.matches("nexusctl stats\necho \"nexus-bench: mark")
                .count(),
            2,
            "{s}"
        );
    }

    #[test]
    fn table_shows_medians_and_the_ratio() {
        let s = |wall, uptime| Sample {
            wall,
            uptime,
            cpus: Some(4),
        };
        let args = BootArgs {
            policy: "p".into(),
            smp: Some(4),
            runs: 3,
            via: Via::Kernel,
            idle: 10,
            stats_cmd: "nexusctl stats".into(),
            timeout: 1,
        };
        // The figures after a row's label.
        let cells = |t: &str, label: &str| -> Vec<String> {
            let line = t
                .lines()
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("{t}"));
            line[label.len()..]
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let t = table(
            &args,
            &[s(10.0, 5.0), s(12.0, 5.0), s(30.0, 6.0)],
            &[s(15.0, 6.0)],
        );
        let wall = "QEMU start -> /init (wall)";
        assert_eq!(cells(&t, wall), ["12.00", "s", "15.00", "s", "1.25x"]);
        assert_eq!(
            cells(&t, "kernel uptime at /init"),
            ["5.00", "s", "6.00", "s", "1.20x"]
        );
        assert_eq!(cells(&t, "CPUs Linux saw"), ["4", "4"]);
        let t = table(&args, &[s(10.0, 5.0)], &[]);
        assert_eq!(cells(&t, wall), ["10.00", "s", "-", "-"]);
        assert_eq!(median([4.0, 1.0].into_iter()), Some(2.5));
    }
}
