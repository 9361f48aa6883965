//! Transcript checks of the hostile-guest suite (`policies/*-hostile-*.toml`, one attack per
//! partition next to the well-behaved `hypercalls` partition): each attack is named with the
//! containment the hypervisor documents for it (docs/hypervisor.md, "Security review
//! findings"), the neighbour still passes all 33 of its checks, and the run passes.

use super::{check_hypercalls, policy_file, Backend};
use crate::{Transcript, Verdict};
use std::fmt::Display;

/// Bytes the `flood` probe writes through `console_write` (the guest's `FLOOD_CALLS` x 4 KiB).
pub const FLOOD_BYTES: u64 = 128 * 4096;
/// Bytes the `flood-com1` probe sends through `console_write` before its COM1 flood (the
/// guest's `FLOOD_COM1_FIRST`: the budget's burst).
pub const FLOOD_COM1_FIRST: u64 = 16 * 1024;
/// Bytes the `flood-com1` probe then writes to COM1 (the guest's `FLOOD_COM1_BYTES`).
pub const FLOOD_COM1_BYTES: u64 = 64 * 1024;
/// A flood line, newline included (the guest's `FLOOD_LINE`).
pub const FLOOD_LINE: u64 = 64;
/// The pattern the image tests preload into the `scan` partition's memory before the
/// firmware starts: this many non-zero bytes, at 8 MiB into its region (Bochs 2.7 loads
/// at most 128 KiB of an `optramimage`).
pub const STALE_PATTERN_BYTES: u64 = 64 << 10;
pub const STALE_PATTERN_OFFSET: u64 = 8 << 20;

/// A hostile-policy run.
#[derive(Clone, Copy, Debug)]
pub struct HostileRun<'a> {
    /// The policy file under `policies/` that was booted.
    pub policy: &'a str,
    pub backend: Backend,
    /// Whether the harness preloaded [`STALE_PATTERN_BYTES`] into the `scan` partition's
    /// memory (then the hypervisor must report at least that many stale bytes zeroed).
    pub stale_pattern: bool,
}

/// One line of the suite's table: an attack, and what the hypervisor did about it as the
/// transcript shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Containment {
    pub attack: String,
    pub outcome: String,
}

impl Containment {
    /// The closing-note table row the image tests print: attack, backend, what the
    /// hypervisor did, what the well-behaved neighbour did (checked by `check_hostile_run`).
    pub fn table_row(&self, backend: &str) -> String {
        format!(
            "hostile | {} | {backend} | {} | hypercalls: {} checks passed, exit 0",
            self.attack,
            self.outcome,
            super::HYPERCALL_CHECKS
        )
    }
}

/// The test partitions of a hostile policy other than `hypercalls`, with their cmdlines.
pub fn attacks(policy: &str) -> Vec<(String, String)> {
    let p = nexus_policy::load_file(policy_file(policy)).unwrap_or_else(|e| panic!("{e}"));
    p.partitions
        .iter()
        .filter(|x| x.role == nexus_policy::Role::Test && x.name != "hypercalls")
        .map(|x| (x.name.clone(), x.cmdline.clone().unwrap_or_default()))
        .collect()
}

/// Where the stale pattern goes: [`STALE_PATTERN_OFFSET`] into the `scan` partition's region.
pub fn stale_pattern_address(policy: &str) -> u64 {
    super::region_base(policy, "scan") + STALE_PATTERN_OFFSET
}

/// Write the stale pattern ([`STALE_PATTERN_BYTES`] bytes, none of them 0) to
/// `dir/stale-pattern.bin` for the emulator to preload.
pub fn write_stale_pattern(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("stale-pattern.bin");
    let bytes: Vec<u8> = (0..STALE_PATTERN_BYTES)
        .map(|i| (i % 255) as u8 + 1)
        .collect();
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// The groups of attacks, one policy each per backend: `policies/<backend>-hostile-<group>.toml`.
pub const GROUPS: [&str; 6] = ["cache", "counters", "flood", "registers", "memory", "apic"];

/// Every hostile run: PASS; the hypercalls neighbour answers all 33 checks and exits 0; each
/// attack partition is contained as documented and judged PASS; no host exception. Returns
/// the table rows.
pub fn check_hostile_run(
    t: &Transcript,
    run: &dyn Display,
    h: &HostileRun<'_>,
) -> Vec<Containment> {
    assert_eq!(t.verdict(), Some(Verdict::Pass), "{run}");
    assert!(t.find("host exception").is_none(), "{run}");
    check_hypercalls(t, run); // all HYPERCALL_CHECKS checks passed
    assert!(
        t.find("[hv] partition hypercalls: exited with code 0 (expected exit 0) -> PASS")
            .is_some(),
        "{run}"
    );
    let attacks = attacks(h.policy);
    let mut rows = Vec::new();
    for (name, cmdline) in &attacks {
        let guest: Vec<&str> = t.partition(name).collect();
        assert!(
            !guest.iter().any(|l| l.starts_with("FAIL")
                || l.contains("NOT STOPPED")
                || l.contains("NOT CONTAINED")),
            "{name} was not answered as documented: {guest:#?}\n{run}"
        );
        let prefix = format!("[hv] partition {name}: ");
        let summary = t
            .find_all(&prefix)
            .find(|l| l.contains("(expected "))
            .unwrap_or_else(|| panic!("no summary line for {name}\n{run}"));
        assert!(summary.ends_with("-> PASS"), "{summary}\n{run}");
        let stats = t
            .find(&format!("[hv] stats {name}: exits: "))
            .unwrap_or_else(|| panic!("no counters for {name}\n{run}"));
        let outcome = match cmdline.split_whitespace().next().unwrap_or("") {
            "isolation" => mmio(t, run, name, cmdline),
            "invd" => {
                expect_line(&guest, "invd: returned, marker intact", name, run);
                // QEMU 7.2 TCG reports INVD with WBINVD's exit code.
                let counted = stats.contains(" invd=1")
                    || (h.backend == Backend::Svm && stats.contains(" wbinvd=1"));
                assert!(counted, "one INVD exit: {stats}\n{run}");
                "INVD exit answered as a no-op: the marker line was not dropped, nothing flushed for anyone".into()
            }
            "wbinvd" => {
                expect_line(&guest, "wbinvd: 1000 WBINVDs returned", name, run);
                assert!(has_counter(stats, "wbinvd", 1000), "{stats}\n{run}");
                "1000 WBINVD exits answered as no-ops (the shared caches were not flushed)".into()
            }
            "rdpmc" => {
                expect_line(&guest, "rdpmc: counter 0 -> #GP(0x0)", name, run);
                assert!(has_counter(stats, "rdpmc", 1), "{stats}\n{run}");
                "RDPMC exit answered with #GP(0): no counter value reached the guest".into()
            }
            "mwait" => {
                expect_line(&guest, "mwait: returned", name, run);
                assert!(has_counter(stats, "monitor", 1), "{stats}\n{run}");
                assert!(has_counter(stats, "mwait", 1), "{stats}\n{run}");
                "MONITOR and MWAIT exits stepped over: MWAIT returned at once".into()
            }
            // 32 bursts' worth: at most half of it may get through.
            "flood" => flood(t, run, name, FLOOD_BYTES, FLOOD_BYTES / 2),
            "flood-com1" => {
                assert!(
                    has_counter(stats, "io", FLOOD_COM1_BYTES),
                    "one exit per COM1 byte: {stats}\n{run}"
                );
                // The COM1 bytes meet a bucket the first bytes emptied: at most its refill
                // gets through, however slow an exit per byte is (in Bochs especially),
                // so some must be dropped.
                let bytes = FLOOD_COM1_FIRST + FLOOD_COM1_BYTES;
                flood(t, run, name, bytes, bytes - FLOOD_LINE)
            }
            "registers" => registers(&guest, name, run, h.backend),
            "high-gpa" => {
                let ok: Vec<&&str> = guest
                    .iter()
                    .filter(|l| l.starts_with("ok   ") && l.ends_with(" -> bad address (-12)"))
                    .collect();
                assert!(
                    ok.iter()
                        .any(|l| l.starts_with("ok   console_write at 0x1000")),
                    "no bit-48 alias refused: {guest:#?}\n{run}"
                );
                assert!(ok.len() >= 2, "{guest:#?}\n{run}");
                assert!(
                    t.find("SECRET-ALIAS-LEAK").is_none(),
                    "an aliased buffer was printed\n{run}"
                );
                format!(
                    "{} hypercalls with buffers at bit 48 / above MAXPHYADDR answered BadAddress, nothing printed",
                    ok.len()
                )
            }
            "scan" => scan(t, run, name, h.stale_pattern),
            other => panic!("{name}: no check for the attack {other:?}"),
        };
        rows.push(Containment {
            attack: name.clone(),
            outcome,
        });
    }
    assert!(
        t.find(&format!(
            "[hv] all {} test partition(s) passed",
            attacks.len() + 1
        ))
        .is_some(),
        "{run}"
    );
    rows
}

fn expect_line(guest: &[&str], line: &str, name: &str, run: &dyn Display) {
    assert!(
        guest.contains(&line),
        "{name}: no {line:?} in {guest:#?}\n{run}"
    );
}

/// `key=n` among the counters of a stats line.
fn has_counter(stats: &str, key: &str, n: u64) -> bool {
    stats
        .split_whitespace()
        .any(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')) == Some(&n.to_string()))
}

/// An MMIO attack (`isolation [write] ADDR`): stopped by a nested page fault / EPT violation
/// on exactly that access.
fn mmio(t: &Transcript, run: &dyn Display, name: &str, cmdline: &str) -> String {
    let write = cmdline.split_whitespace().any(|w| w == "write");
    let addr = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("0x"))
        .map(|h| u64::from_str_radix(&h.replace('_', ""), 16).unwrap())
        .unwrap_or_else(|| panic!("{name}: no address in {cmdline:?}"));
    let access = if write { "write" } else { "read" };
    let report = format!("stopped by isolation: nested page fault on {access} of {addr:#x}");
    let stop = t
        .find(&format!("[hv] partition {name} stopped at rip 0x"))
        .unwrap_or_else(|| panic!("no stop report for {name}\n{run}"));
    assert!(stop.ends_with(&report), "{stop}\n{run}");
    format!("{access} of {addr:#x} stopped by the second-level tables: \"{report}\"")
}

/// A console flood of `bytes` bytes of 64-byte lines: every byte either printed as a flood
/// line or counted in a "dropped" report, at most `max_printed` printed, at least one report.
fn flood(t: &Transcript, run: &dyn Display, name: &str, bytes: u64, max_printed: u64) -> String {
    let printed = t
        .partition(name)
        .filter(|l| l.starts_with("flood ") && l.len() as u64 == FLOOD_LINE - 1)
        .count() as u64;
    let prefix = format!("[hv] partition {name}: console output dropped (");
    let dropped: Vec<u64> = t
        .find_all(&prefix)
        .map(|l| {
            l.strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(" bytes)"))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("malformed report {l:?}"))
        })
        .collect();
    let total_dropped: u64 = dropped.iter().sum();
    assert!(!dropped.is_empty(), "no dropped report for {name}\n{run}");
    assert!(
        printed * FLOOD_LINE + total_dropped >= bytes,
        "{name}: {printed} lines printed and {total_dropped} bytes reported dropped do not add up to the {bytes} written\n{run}"
    );
    assert!(
        printed * FLOOD_LINE <= max_printed,
        "{name}: {printed} flood lines printed, more than the {max_printed} bytes the budget may let through here\n{run}"
    );
    format!(
        "{bytes} bytes flooded: {} printed ({printed} lines), {total_dropped} bytes dropped and reported in {} \"console output dropped\" line(s)",
        printed * FLOOD_LINE,
        dropped.len()
    )
}

fn registers(guest: &[&str], name: &str, run: &dyn Display, backend: Backend) -> String {
    let mut refused = 0;
    for case in [
        "wrmsr EFER with bit 63 (reserved)",
        "wrmsr EFER clearing LME under paging",
        "mov cr0 with bit 32 (reserved)",
        "mov cr4 with bit 31 (reserved)",
    ] {
        let efer = case.starts_with("wrmsr");
        if efer || backend == Backend::Vmx {
            expect_line(guest, &format!("registers: {case} -> #GP(0x0)"), name, run);
            refused += 1;
        } else {
            expect_line(
                guest,
                &format!("registers: {case}: the processor's own on SVM (no exit), not tried"),
                name,
                run,
            );
        }
    }
    assert!(
        guest
            .iter()
            .any(|l| l.starts_with("registers: EFER ") && l.ends_with(" unchanged")),
        "{guest:#?}\n{run}"
    );
    format!("{refused} illegal EFER/CR writes answered with #GP(0), registers unchanged")
}

/// The stale-memory scan: all zero, and the hypervisor zeroed at least the preloaded pattern.
fn scan(t: &Transcript, run: &dyn Display, name: &str, stale_pattern: bool) -> String {
    let guest: Vec<&str> = t.partition(name).collect();
    let all_zero = guest
        .iter()
        .find(|l| l.starts_with("scan: all ") && l.ends_with(" bytes are zero"))
        .unwrap_or_else(|| panic!("no clean scan in {guest:#?}\n{run}"));
    let zeroed = t
        .find(&format!("[hv] partition {name}: memory 0x"))
        .unwrap_or_else(|| panic!("no zeroing line for {name}\n{run}"));
    let stale: u64 = zeroed
        .rsplit_once(" zeroed before loading (")
        .and_then(|(_, r)| r.strip_suffix(" byte(s) were not zero)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("malformed {zeroed:?}"));
    if stale_pattern {
        assert!(
            stale >= STALE_PATTERN_BYTES,
            "the preloaded pattern was not there to zero: {zeroed}\n{run}"
        );
    }
    format!(
        "{stale} stale bytes zeroed before loading; the guest read {}",
        all_zero.trim_start_matches("scan: ")
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{edited, without};
    use super::*;

    /// Transcripts of passing hostile runs recorded by `cargo xtask test`.
    const QEMU_FLOOD: &[u8] = include_bytes!("../../testdata/serial-qemu_svm_hostile_flood.log");
    const BOCHS_REGISTERS: &[u8] =
        include_bytes!("../../testdata/serial-bochs_vmx_hostile_registers.log");

    fn qemu_flood() -> HostileRun<'static> {
        HostileRun {
            policy: "qemu-hostile-flood.toml",
            backend: Backend::Svm,
            stale_pattern: false,
        }
    }

    fn bochs_registers() -> HostileRun<'static> {
        HostileRun {
            policy: "bochs-hostile-registers.toml",
            backend: Backend::Vmx,
            stale_pattern: false,
        }
    }

    #[test]
    fn recorded_hostile_runs_pass_and_name_each_containment() {
        let rows = check_hostile_run(&Transcript::from_bytes(QEMU_FLOOD), &"qemu", &qemu_flood());
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].attack, "flood");
        assert!(
            rows[0].outcome.contains("bytes dropped and reported"),
            "{rows:?}"
        );
        let rows = check_hostile_run(
            &Transcript::from_bytes(BOCHS_REGISTERS),
            &"bochs",
            &bochs_registers(),
        );
        assert_eq!(
            rows.iter().map(|r| r.attack.as_str()).collect::<Vec<_>>(),
            ["registers", "high-gpa"]
        );
        assert!(
            rows[0].outcome.starts_with("4 illegal EFER/CR writes"),
            "{rows:?}"
        );
    }

    #[test]
    #[should_panic(expected = "no dropped report for flood")]
    fn a_flood_nobody_reports_fails() {
        let t = without(QEMU_FLOOD, "[hv] partition flood: console output dropped");
        check_hostile_run(&t, &"qemu", &qemu_flood());
    }

    #[test]
    #[should_panic(expected = "do not add up")]
    fn flood_bytes_that_vanish_fail() {
        // A report that undercounts: bytes neither printed nor reported.
        let t = Transcript::from_bytes(QEMU_FLOOD);
        let lines = t
            .lines()
            .iter()
            .map(
                |l| match l.strip_prefix("[hv] partition flood: console output dropped (") {
                    Some(_) => "[hv] partition flood: console output dropped (1 bytes)".to_string(),
                    None => l.clone(),
                },
            )
            .collect();
        check_hostile_run(&Transcript::from_lines(lines), &"qemu", &qemu_flood());
    }

    #[test]
    #[should_panic(expected = "was not answered as documented")]
    fn an_efer_write_that_does_not_fault_fails() {
        let t = edited(
            BOCHS_REGISTERS,
            "registers: wrmsr EFER with bit 63 (reserved) -> #GP(0x0)",
            "FAIL registers: wrmsr EFER with bit 63 (reserved) did not fault",
        );
        check_hostile_run(&t, &"bochs", &bochs_registers());
    }

    #[test]
    #[should_panic(expected = "an aliased buffer was printed")]
    fn a_printed_alias_fails() {
        let t = edited(
            BOCHS_REGISTERS,
            "[hv] partition high-gpa stopped at",
            "[high-gpa] SECRET-ALIAS-LEAK\n[hv] partition high-gpa stopped at",
        );
        check_hostile_run(&t, &"bochs", &bochs_registers());
    }

    #[test]
    fn every_hostile_policy_names_known_attacks_two_per_boot() {
        let mut names = Vec::new();
        for backend in ["qemu", "bochs"] {
            for group in GROUPS {
                let a = attacks(&format!("{backend}-hostile-{group}.toml"));
                assert_eq!(a.len(), 2, "{backend}-{group}");
                names.extend(a.into_iter().map(|(n, _)| n));
            }
        }
        names.sort();
        names.dedup();
        assert_eq!(
            names,
            [
                "flood",
                "flood-com1",
                "high-gpa",
                "invd",
                "ioapic",
                "iommu",
                "lapic",
                "mwait",
                "rdpmc",
                "registers",
                "scan",
                "wbinvd"
            ]
        );
    }

    #[test]
    fn counters_match_whole_keys() {
        let stats = "exits: total=1009 hypercall=6 cpuid=3 wbinvd=1000";
        assert!(has_counter(stats, "wbinvd", 1000));
        assert!(!has_counter(stats, "wbinvd", 100));
        assert!(!has_counter(stats, "invd", 1000));
    }
}
