//! Linux in the primary partition, under the hypervisor (SVM, QEMU TCG, policies/qemu-dev.toml):
//! one boot whose `/init` runs a script of checks and attacks, read back from the guest's
//! console (COM1) and the hypervisor's log (COM2).
//!
//! What it shows (issue 11, "tested in the guest"):
//! - Linux sees exactly the policy's primary CPUs, all online, none "possible" beyond them (the
//!   other partitions' CPUs are gone from the MADT), its APs started through the emulated
//!   INIT/SIPI;
//! - `/proc/iomem` lists no RAM outside what the primary's table maps, and none in another
//!   partition's or the hypervisor's memory;
//! - `nexusctl info` finds NexusOS through CPUID and, as root through the doorbell, reads the
//!   partition's own description; `nexusctl stats` its counters; `nexusctl partitions` every
//!   partition of the policy through the management calls;
//! - root reading every reserved range through `/dev/mem` sees no hypervisor or test-partition
//!   bytes, and zeroing the hypervisor's page pool and writing a test partition's memory
//!   through `/dev/mem` reaches neither: the writes land in a sink page (a second foreign
//!   range reads back what was written to the first), the hypervisor logs them, and Linux and
//!   the hypervisor keep running;
//! - the primary keeps running through more than two million exits;
//! - the test partitions still PASS beside it.

use std::time::Duration;

use nexus_e2e::checks::policy_file;
use nexus_e2e::esp::{EspContents, INITRD_IMG};
use nexus_e2e::initramfs::Initramfs;
use nexus_e2e::linux::{qemu_config, LinuxBoot, LinuxRun};
use nexus_e2e::qemu::Disk;
use nexus_e2e::BuildDir;

const POLICY: &str = "qemu-dev.toml";
/// Exits the CPUID loop makes (on top of the boot's own).
const LOOP_EXITS: u64 = 2_100_000;
/// What the hypervisor's image and the test guest's image hold (read-only data), which
/// no read of foreign memory may return.
const HV_MARKER: &str = "NEXUS RESULT";
const GUEST_MARKER: &str = "the hypervisor must stop me";

/// The script `/init` runs. Addresses of the policy: the hypervisor's page pool at
/// 0x4200_0000 (32 MiB), test partitions at 0x4000_0000 and 0x4400_0000.
fn script() -> String {
    format!(
        r#"echo "cpus $(nproc) online $(cat /sys/devices/system/cpu/online) possible $(cat /sys/devices/system/cpu/possible)"
echo "iomem begin"; cat /proc/iomem; echo "iomem end"
nexusctl info; echo "info status $?"
nexusctl partitions; echo "partitions status $?"
grep -v '^ ' /proc/iomem | grep ': Reserved$' | while read range colon name; do
  s=$((0x${{range%-*}})); e=$((0x${{range#*-}} + 1))
  if [ $e -gt $((0x100000000)) ] || [ $((e - s)) -gt $((256 << 20)) ]; then continue; fi
  first=$((s / 4096)); pages=$(( (e + 4095) / 4096 - first ))
  hits=$(dd if=/dev/mem bs=4096 skip=$first count=$pages 2>/dev/null | strings | grep -c -e '{HV_MARKER}' -e '{GUEST_MARKER}')
  echo "scan $range pages $pages hits $hits"
done
dd if=/dev/zero of=/dev/mem bs=4096 seek=$((0x42000000 / 4096)) count=8192 2>/dev/null; echo "zero pool status $?"
devmem 0x40000000 32 0x5a5a5a5a; echo "poke status $?"
echo "peek $(devmem 0x44000000 32)"
nexusctl stats; echo "stats status $?"
nexusctl exit-loop {LOOP_EXITS}; echo "loop status $?"
nexusctl stats; echo "stats status $?"
echo "still running""#
    )
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn linux_in_the_primary_owns_exactly_its_cpus_and_memory() {
    let build = BuildDir::from_env().unwrap_or_else(|e| panic!("{e}"));
    let policy_path = policy_file(POLICY);
    let policy = nexus_policy::load_file(&policy_path).unwrap();
    let initrd = build.linux_dir().join("initrd-qemu_linux.img");
    Initramfs::from_build(&build, Some(&script()))
        .write(&initrd)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut esp = EspContents::from_policy(&policy_path, &build).unwrap_or_else(|e| panic!("{e}"));
    esp.set_file(INITRD_IMG, initrd);
    let dir = build.root().join("esp-qemu_linux");
    esp.write_dir(&dir).unwrap();
    let mut cfg = qemu_config(
        "qemu_linux",
        &LinuxBoot::Hypervisor(Disk::Dir(dir)),
        build.root(),
    );
    cfg.timeout = cfg.timeout.max(Duration::from_secs(420));
    let foreign: Vec<String> = std::iter::once("[hv] ".to_string())
        .chain(
            policy
                .partitions
                .iter()
                .skip(1)
                .map(|p| format!("[{}] ", p.name)),
        )
        .collect();
    let run = cfg.run().unwrap_or_else(|e| panic!("cannot run QEMU: {e}"));
    let linux = LinuxRun::read(run, &foreign);
    let exec = linux.expect_exec().unwrap_or_else(|e| panic!("{e}"));
    let out = &exec.output;
    let hv = &linux.run.transcript;
    let line = |prefix: &str| -> &str {
        out.iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line\n{linux}"))
    };

    // CPUs: the policy's primary CPUs, all online, none possible beyond them.
    let primary = &policy.partitions[0];
    let n = primary.apic_ids.len();
    let last = n - 1;
    assert_eq!(
        line("cpus "),
        format!("cpus {n} online 0-{last} possible 0-{last}"),
        "{linux}"
    );
    for ap in 1..n {
        assert!(
            hv.find(&format!(
                "[hv] partition primary: CPU {} started by SIPI vector",
                primary.apic_ids[ap]
            ))
            .is_some(),
            "AP {} was not started through the emulated SIPI\n{linux}",
            primary.apic_ids[ap]
        );
    }

    // Memory: every System RAM range lies in what the primary's table maps, and outside the
    // other partitions' and the hypervisor's memory.
    let mapped: Vec<(u64, u64)> = hv
        .lines()
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("[hv] partition primary: maps 0x")?;
            let (a, b) = rest.split_once("..0x")?;
            let b = b.split_whitespace().next()?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect();
    assert!(!mapped.is_empty(), "no `maps` lines\n{linux}");
    let mut foreign_ranges: Vec<(u64, u64, String)> = policy
        .partitions
        .iter()
        .skip(1)
        .flat_map(|p| {
            p.memory
                .iter()
                .map(move |r| (r.base, r.base + r.size, p.name.clone()))
        })
        .collect();
    if let Some(h) = policy.machine.hypervisor_memory {
        foreign_ranges.push((h.base, h.base + h.size, "hypervisor_memory".into()));
    }
    // The hypervisor's image and heap, where the firmware put them (its log says).
    for (prefix, after) in [
        ("[hv] image: moved ", " -> 0x"),
        ("[hv] memory: heap ", "heap 0x"),
    ] {
        let l = hv
            .find(prefix)
            .unwrap_or_else(|| panic!("no {prefix:?} line\n{linux}"));
        let rest = l.split(after).nth(1).unwrap();
        let base = u64::from_str_radix(rest.split_whitespace().next().unwrap(), 16).unwrap();
        let kib: u64 = rest
            .split('(')
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("no size in {l}"));
        foreign_ranges.push((base, base + kib * 1024, prefix.trim().to_string()));
    }
    for (s, e, who) in &foreign_ranges {
        for &(a, b) in &mapped {
            assert!(
                b <= *s || *e <= a,
                "the primary's table maps {a:#x}..{b:#x}, which overlaps {who} {s:#x}..{e:#x}\n{linux}"
            );
        }
    }
    let begin = out.iter().position(|l| l == "iomem begin").unwrap();
    let end = out.iter().position(|l| l == "iomem end").unwrap();
    let mut ram = 0u64;
    for l in &out[begin + 1..end] {
        let Some((range, "System RAM")) = l.split_once(" : ") else {
            continue;
        };
        let (a, b) = range.trim().split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap() + 1,
        );
        ram += b - a;
        assert!(
            mapped.iter().any(|&(s, e)| s <= a && b <= e),
            "System RAM {a:#x}..{b:#x} is not in the primary's table\n{linux}"
        );
        for (s, e, who) in &foreign_ranges {
            assert!(
                b <= *s || *e <= a,
                "System RAM {a:#x}..{b:#x} overlaps {who} {s:#x}..{e:#x}\n{linux}"
            );
        }
    }
    assert!(ram > 1 << 30, "Linux has {ram} bytes of RAM\n{linux}");

    // Discovery and the doorbell.
    assert!(
        out.iter().any(|l| l == "NexusOS found at CPUID 0x40000000"),
        "{linux}"
    );
    assert!(out.iter().any(|l| l == "  name       primary"), "{linux}");
    assert!(
        out.iter().any(|l| l == &format!("  vcpus      {n}")),
        "{linux}"
    );
    assert_eq!(line("info status "), "info status 0", "{linux}");

    // The management calls from user space: every partition of the policy, by id, none of
    // them managed in this policy.
    assert_eq!(line("partitions status "), "partitions status 0", "{linux}");
    for (id, p) in policy.partitions.iter().enumerate() {
        let row = out
            .iter()
            .find(|l| l.starts_with(&format!("  {id:<3} {:<16} ", p.name)))
            .unwrap_or_else(|| panic!("no partitions row for {id} {}\n{linux}", p.name));
        assert!(row.ends_with("not managed (runs from boot)"), "{row}");
    }

    // Reads of foreign memory: every reserved range scanned, no marker found; the ranges
    // holding the hypervisor's pool and the test partitions were among them.
    let scans: Vec<&String> = out.iter().filter(|l| l.starts_with("scan ")).collect();
    for s in &scans {
        assert!(
            s.ends_with(" hits 0"),
            "foreign bytes read back: {s}\n{linux}"
        );
    }
    assert!(
        scans.iter().any(|s| s.starts_with("scan 40000000-")),
        "the partitions' range was not scanned\n{linux}"
    );
    assert!(
        hv.find("[hv] partition primary: read of 0x").is_some(),
        "the hypervisor saw no foreign read\n{linux}"
    );
    assert!(
        hv.find("which it does not own: contained (sink page, no foreign data)")
            .is_some(),
        "{linux}"
    );
    // Writes: they reached a sink, not the memory (what was written at 0x4000_0000 reads
    // back at 0x4400_0000, another partition's region: both are the same sink).
    assert_eq!(line("zero pool status "), "zero pool status 0", "{linux}");
    assert_eq!(line("poke status "), "poke status 0", "{linux}");
    assert_eq!(line("peek "), "peek 0x5A5A5A5A", "{linux}");

    // Counters through the doorbell, after the pool was "zeroed"; two million exits more.
    let stats: Vec<&String> = out
        .iter()
        .filter(|l| l.starts_with("exits: total="))
        .collect();
    assert_eq!(stats.len(), 2, "{linux}");
    let total = |l: &str| -> u64 {
        l["exits: total=".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let cpuid = |l: &str| -> u64 {
        l.split_whitespace()
            .find_map(|kv| kv.strip_prefix("cpuid="))
            .map_or(0, |v| v.parse().unwrap())
    };
    let (before, after) = (stats[0], stats[1]);
    assert!(
        total(after) >= total(before) + LOOP_EXITS,
        "{before} -> {after}\n{linux}"
    );
    assert!(
        cpuid(after) >= cpuid(before) + LOOP_EXITS,
        "{before} -> {after}\n{linux}"
    );
    assert!(total(after) >= 2_000_000, "{after}");
    assert_eq!(line("loop status "), "loop status 0", "{linux}");
    assert!(line("exit-loop: ").contains(" CPUID exits in "), "{linux}");
    assert!(out.iter().any(|l| l == "still running"), "{linux}");
    assert_eq!(exec.status, 0, "{linux}");

    // Beside it: the test partitions passed, the primary was never stopped.
    assert!(hv.find("[hv] test partitions: PASS").is_some(), "{linux}");
    assert!(
        hv.find("[hv] partition primary stopped").is_none(),
        "{linux}"
    );
    assert_eq!(
        linux.run.outcome,
        nexus_e2e::Outcome::OtherExit(0),
        "{linux}"
    );
}
