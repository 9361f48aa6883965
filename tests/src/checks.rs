//! Transcript checks shared by the image tests that boot the development policies
//! (`policies/qemu-dev.toml`, `policies/bochs-dev.toml`) on either backend: the same test
//! guest, so the same hypercall checks, isolation reports, counters and verdict.

use crate::{Transcript, Verdict};
use nexus_policy::Role;

pub mod hostile;
pub mod manage;
use std::fmt::Display;
use std::path::PathBuf;

/// `policies/<name>` of this repository.
pub fn policy_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .join(name)
}

/// `(base, size)` of a shipped policy's `[machine] hypervisor_memory`.
pub fn hypervisor_memory(policy: &str) -> (u64, u64) {
    let p = nexus_policy::load_file(policy_file(policy)).unwrap_or_else(|e| panic!("{e}"));
    let hv = p
        .machine
        .hypervisor_memory
        .unwrap_or_else(|| panic!("{policy} places no hypervisor_memory"));
    (hv.base, hv.size)
}

/// Base of the first memory region of partition `name` (a test or managed partition, whose
/// regions the policy places) in a shipped policy.
pub fn region_base(policy: &str, name: &str) -> u64 {
    let p = nexus_policy::load_file(policy_file(policy)).unwrap_or_else(|e| panic!("{e}"));
    let part = p
        .partitions
        .iter()
        .find(|x| x.name == name)
        .unwrap_or_else(|| panic!("{policy} has no partition {name}"));
    assert_ne!(part.role, Role::Primary);
    part.memory[0].base
}

/// The virtualization backend a run used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// AMD SVM with nested paging (ASIDs).
    Svm,
    /// Intel VMX with EPT (VPIDs, MTRR memory types).
    Vmx,
}

/// What a development-policy run is checked against.
#[derive(Clone, Copy, Debug)]
pub struct DevRun<'a> {
    /// The policy file under `policies/` that was booted.
    pub policy: &'a str,
    pub backend: Backend,
    /// CPUs of the machine; with one, the test partitions run on the boot CPU (VMX).
    pub cpus: u32,
    /// The CPUs of hypercalls, isolation and isolation-hv, as the policy gives them.
    pub test_cpus: [u32; 3],
    /// The isolation-hv partition's cmdline (it names the hypervisor address it writes).
    pub isolation_hv_cmdline: &'a str,
    /// Whether the guest's XSETBVs exit: always on VMX; on SVM where the CPU implements the
    /// XSETBV intercept (Bochs does, QEMU 7.2 TCG does not: there the guest writes XCR0
    /// itself and the SVM backend finds the value by reading XCR0 back after exits).
    pub xsetbv_exits: bool,
}

/// The development-policy checks: discovery, each test partition set up and started on its
/// CPU, hypercalls of every group, both isolation partitions contained with reports naming
/// partition, address and access, the primary in guest mode, counters, summary and verdict.
/// `run` is printed with every failed assertion.
pub fn check_dev_run(t: &Transcript, run: &dyn Display, dev: &DevRun<'_>) {
    assert_eq!(t.verdict(), Some(Verdict::Pass), "{run}");

    // Discovery summary, then the backend's view of the CPU.
    let vendor = match dev.backend {
        Backend::Svm => "AuthenticAMD",
        Backend::Vmx => "GenuineIntel",
    };
    assert!(
        t.find(&format!("[hv] cpu: vendor {vendor}")).is_some(),
        "no {vendor} CPU\n{run}"
    );
    assert!(t.find("[hv] memory map: ").is_some(), "{run}");
    match dev.backend {
        Backend::Svm => {
            let svm = t
                .find("[hv] svm: ")
                .unwrap_or_else(|| panic!("no SVM line\n{run}"));
            assert!(svm.contains("npt=true"), "{svm}");
        }
        Backend::Vmx => {
            let vmx = t
                .find("[hv] vmx: VMCS revision ")
                .unwrap_or_else(|| panic!("no VMXON line\n{run}"));
            assert!(vmx.contains("EPT 2M=true"), "{vmx}");
            assert!(t.find("[hv] vmx: MTRRs enabled").is_some(), "{run}");
        }
    }

    // The page pool lives at the policy's hypervisor_memory.
    let (hv_base, hv_size) = hypervisor_memory(dev.policy);
    let pool = t
        .find("[hv] memory: heap ")
        .unwrap_or_else(|| panic!("no memory line\n{run}"));
    assert!(
        pool.contains(&format!(
            "page pool {hv_base:#x} ({} MiB, policy hypervisor_memory)",
            hv_size >> 20
        )),
        "{pool}"
    );

    check_partitions_started(t, run, dev);
    check_hypercalls(t, run);
    let xsetbv_exits = check_xsetbv(t, run);
    let reports = check_isolation(t, run, dev.policy, hv_base);
    check_primary(t, run, dev.backend);
    check_summary(t, run, &reports, dev.xsetbv_exits.then_some(xsetbv_exits));
}

/// Each test partition was set up with its own address space and started on its CPU; the
/// guest found NexusOS through CPUID and read its cmdline via partition_info.
fn check_partitions_started(t: &Transcript, run: &dyn Display, dev: &DevRun<'_>) {
    for (index, (name, cpu, cmdline)) in [
        ("hypercalls", dev.test_cpus[0], "hypercalls"),
        ("isolation", dev.test_cpus[1], "isolation"),
        ("isolation-hv", dev.test_cpus[2], dev.isolation_hv_cmdline),
    ]
    .into_iter()
    .enumerate()
    {
        // Policy index (the primary is 0) + 1: the partition's ASID / VPID.
        let tag = index + 2;
        let setup = t
            .find(&format!("[hv] partition {name}: image test-guest at "))
            .unwrap_or_else(|| panic!("no set-up line for {name}\n{run}"));
        let found = match dev.backend {
            Backend::Svm => {
                assert!(setup.contains(&format!("ASID {tag}, CPU {cpu}")), "{setup}");
                " found at CPUID 0x40000000"
            }
            Backend::Vmx => {
                // Own EPT with 2 MiB pages of the MTRR types, own VPID, own CPU.
                assert!(setup.contains(" x 2 MiB, "), "{setup}");
                assert!(setup.contains("MTRR memory types"), "{setup}");
                assert!(setup.contains(&format!("VPID {tag}, CPU {cpu}")), "{setup}");
                " found at CPUID 0x40000000 (transport Vmcall"
            }
        };
        // Its own CPU, or the boot CPU when the machine has only that one.
        let runs_on = if dev.cpus == 1 { 0 } else { cpu };
        assert!(
            t.find(&format!("[hv] partition {name}: running on CPU {runs_on}"))
                .is_some(),
            "{run}"
        );
        if dev.cpus == 1 {
            assert!(
                t.find(&format!(
                    "[hv] partition {name}: its CPU is not online; it runs on the boot CPU before the hand-over"
                ))
                .is_some(),
                "{run}"
            );
        }
        let lines: Vec<&str> = t.partition(name).collect();
        assert!(
            lines.iter().any(|l| found_compatible_abi(l, found)),
            "{name}: {lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("cmdline \"{cmdline}\""))),
            "{name}: {lines:?}"
        );
    }
}

/// Whether `line` is the guest's `NexusOS ABI <major>.<minor><rest>...` with this tree's
/// major version: any minor is compatible, and recorded transcripts keep older minors.
fn found_compatible_abi(line: &str, rest: &str) -> bool {
    let Some(tail) = line.strip_prefix("NexusOS ABI ") else {
        return false;
    };
    let Some((version, after)) = tail.split_once(' ') else {
        return false;
    };
    let major = version.split_once('.').and_then(|(m, n)| {
        n.parse::<u16>().ok()?;
        m.parse::<u16>().ok()
    });
    major == Some(nexus_abi::ABI_VERSION.major) && format!(" {after}").starts_with(rest)
}

/// Every hypercall check passed, with one call of each AI group answered "service
/// unavailable", and unknown numbers / bad arguments rejected.
/// How many checks the test guest's `hypercalls` partition makes when it holds the console,
/// models, GPU, tensor and container groups (every dev and hostile policy gives it those):
/// pinned, so a check that silently stops running fails the run.
pub const HYPERCALL_CHECKS: usize = 35;

pub(crate) fn check_hypercalls(t: &Transcript, run: &dyn Display) {
    let hc: Vec<&str> = t.partition("hypercalls").collect();
    assert!(!hc.iter().any(|l| l.starts_with("FAIL")), "{hc:#?}");
    for call in [
        "ai_model_load",
        "gpu_alloc",
        "tensor_create",
        "container_create",
    ] {
        let want = format!("ok   {call} -> service unavailable (-4)");
        assert!(hc.contains(&want.as_str()), "missing {want:?} in {hc:#?}");
    }
    assert!(
        hc.contains(&"ok   unassigned number 404 (models block) -> invalid call (-1)"),
        "{hc:#?}"
    );
    assert!(
        hc.contains(&"ok   ai_model_load, ring slot out of range -> invalid argument (-2)"),
        "{hc:#?}"
    );
    let tally = hc
        .iter()
        .find(|l| l.starts_with("hypercall checks: "))
        .unwrap_or_else(|| panic!("no tally\n{hc:#?}"));
    assert_eq!(
        *tally,
        format!("hypercall checks: {HYPERCALL_CHECKS} passed, 0 failed"),
        "{run}"
    );
    assert!(
        t.find("[hv] partition hypercalls stopped at rip 0x")
            .is_some_and(|l| l.ends_with("exited with code 0")),
        "{run}"
    );
}

/// The hypercalls partition's XSETBV probe: every machine these runs use has XSAVE (QEMU
/// `-cpu max`, Bochs `tigerlake` and `ryzen`), so a skipped probe fails. Each XCR0 value the
/// guest wrote read back as written, the invalid one (x87 clear) raised #GP(0) and left XCR0
/// as it was, and no test partition left its XCR0 to the firmware (the one-CPU VMX run says
/// so when the boot CPU's XCR0 changed). Returns the XSETBV exits the probe made: one per
/// value written plus the invalid one.
fn check_xsetbv(t: &Transcript, run: &dyn Display) -> u64 {
    let hc: Vec<&str> = t.partition("hypercalls").collect();
    assert!(
        !hc.iter().any(|l| l.starts_with("xsetbv: skipped")),
        "the CPU has XSAVE but the probe was skipped: {hc:#?}"
    );
    let line = hc
        .iter()
        .find(|l| l.starts_with("xsetbv: XCR0 "))
        .unwrap_or_else(|| panic!("no xsetbv line\n{hc:#?}"));
    let mut written = Vec::new();
    for part in line.split(", ") {
        if let Some(pair) = part.strip_prefix("wrote ") {
            let (w, r) = pair
                .split_once(" read ")
                .unwrap_or_else(|| panic!("{line}"));
            assert_eq!(
                w, r,
                "XCR0 read back differs from the value written: {line}"
            );
            written.push(w);
        }
    }
    assert!(written.contains(&"0x3"), "x87|SSE not written: {line}");
    assert!(
        line.contains(", invalid 0x2 -> #GP(0x0), "),
        "no #GP(0) for the invalid XCR0: {line}"
    );
    let last = written.last().expect("checked above");
    assert!(
        line.ends_with(&format!(", XCR0 after {last}")),
        "the invalid XSETBV changed XCR0: {line}"
    );
    assert!(
        t.find("to the firmware (was ").is_none(),
        "a test partition changed the boot CPU's XCR0\n{run}"
    );
    written.len() as u64 + 1
}

/// Isolation: only the management group is granted, so an AI call is refused; then the read
/// of the neighbouring partition's memory is stopped and reported with partition and address.
/// Isolation-hv: its write into the hypervisor's memory (the page pool, hidden from every
/// partition) is stopped and reported as a write of that address. Returns both stop reports.
fn check_isolation(t: &Transcript, run: &dyn Display, policy: &str, hv_base: u64) -> [String; 2] {
    let iso: Vec<&str> = t.partition("isolation").collect();
    assert!(
        iso.contains(&"ok   ai_model_load -> permission denied (-3)"),
        "{iso:#?}"
    );
    assert!(!iso.iter().any(|l| l.contains("NOT CONTAINED")), "{iso:#?}");
    let target = region_base(policy, "isolation") - (16 << 20);
    assert_eq!(
        target,
        region_base(policy, "hypercalls"),
        "probe must hit the other partition"
    );
    let report = format!("stopped by isolation: nested page fault on read of {target:#x}");
    let stop = t
        .find("[hv] partition isolation stopped at rip 0x")
        .unwrap_or_else(|| panic!("no stop report for isolation\n{run}"));
    assert!(stop.ends_with(&report), "{stop}");

    let iso_hv: Vec<&str> = t.partition("isolation-hv").collect();
    let writing =
        format!("writing {hv_base:#x}, outside this partition: the hypervisor must stop me");
    assert!(iso_hv.contains(&writing.as_str()), "{iso_hv:#?}");
    assert!(
        !iso_hv.iter().any(|l| l.contains("NOT CONTAINED")),
        "{iso_hv:#?}"
    );
    let own = region_base(policy, "isolation-hv");
    assert!(
        !(own..own + (16 << 20)).contains(&hv_base),
        "the probe must leave its partition"
    );
    let report_hv = format!("stopped by isolation: nested page fault on write of {hv_base:#x}");
    let stop = t
        .find("[hv] partition isolation-hv stopped at rip 0x")
        .unwrap_or_else(|| panic!("no stop report for isolation-hv\n{run}"));
    assert!(stop.ends_with(&report_hv), "{stop}");
    [report, report_hv]
}

/// The boot CPU was virtualized in place and carried on as the primary partition: its
/// second-level table is its own (the hypervisor and the other partitions left out, its
/// xAPIC page read-only), it was handed over to the stub in its own memory, its first exit
/// came from guest mode there, and its exits are counted.
fn check_primary(t: &Transcript, run: &dyn Display, backend: Backend) {
    let (table, tag) = match backend {
        Backend::Svm => ("NPT", "ASID 1"),
        Backend::Vmx => ("EPT", "VPID 1"),
    };
    let line = t
        .find(&format!("[hv] partition primary: {table} maps "))
        .unwrap_or_else(|| panic!("no primary {table} line\n{run}"));
    assert!(line.contains(&format!("{tag}, CPUs [0")), "{line}");
    assert!(line.contains("xAPIC page 0xfee00000 read-only"), "{line}");
    if backend == Backend::Vmx {
        assert!(line.contains("MTRR memory types"), "{line}");
    }
    let hand_over = t
        .find("[hv] hand-over: the boot CPU continues as the primary's guest at 0x")
        .unwrap_or_else(|| panic!("no hand-over line\n{run}"));
    assert!(
        hand_over.ends_with("returning to the firmware (no OS loader)"),
        "{hand_over}"
    );
    let first = t
        .find("[hv] partition primary: the boot CPU runs in guest mode: first exit cpuid at rip 0x")
        .unwrap_or_else(|| panic!("no first primary exit\n{run}"));
    // The exit came from the hand-over stub's first instructions, not from hypervisor code.
    let hex = |text: &str, after: &str| {
        text.split(after)
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_hexdigit() && c != 'x').next())
            .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .unwrap_or_else(|| panic!("no address after {after:?} in {text}"))
    };
    let stub = hex(hand_over, "guest at ");
    let rip = hex(first, "at rip ");
    assert!(
        (stub..stub + 16).contains(&rip),
        "first exit at {rip:#x}, stub at {stub:#x}"
    );
    let primary_exits = t
        .find("[hv] stats primary: exits: total=")
        .unwrap_or_else(|| panic!("no primary counters\n{run}"));
    assert!(primary_exits.contains(" cpuid="), "{primary_exits}");
}

/// Summary with per-partition results and counters, then the verdict, in that order.
/// `xsetbv_exits`: the XSETBV exits the hypercalls partition must have made, `None` where
/// XSETBV does not exit (then none may be counted).
fn check_summary(
    t: &Transcript,
    run: &dyn Display,
    reports: &[String; 2],
    xsetbv_exits: Option<u64>,
) {
    let summary = t
        .position("[hv] summary: 3 test partition(s)")
        .unwrap_or_else(|| panic!("{run}"));
    assert!(
        t.find("[hv] partition hypercalls: exited with code 0 (expected exit 0) -> PASS")
            .is_some(),
        "{run}"
    );
    let hc_exits = t
        .find("[hv] stats hypercalls: exits: total=")
        .unwrap_or_else(|| panic!("{run}"));
    let calls = hc_exits
        .split_whitespace()
        .find_map(|w| w.strip_prefix("hypercall="))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        calls >= HYPERCALL_CHECKS as u64,
        "at least one exit per checked call: {hc_exits}"
    );
    match xsetbv_exits {
        Some(n) => assert!(
            hc_exits.contains(&format!(" xsetbv={n} ")) || hc_exits.ends_with(&format!(" xsetbv={n}")),
            "one exit per XSETBV of the probe ({n}): {hc_exits}"
        ),
        None => assert!(
            !hc_exits.contains(" xsetbv="),
            "XSETBV exits where the CPU was not expected to intercept it (set xsetbv_exits): {hc_exits}"
        ),
    }
    let hc_calls = t
        .find("[hv] stats hypercalls: hypercalls: ")
        .unwrap_or_else(|| panic!("{run}"));
    for key in [
        "console_write=",
        "partition_info=",
        "ai_model_load=",
        "k8s_schedule=",
        "invalid=3",
    ] {
        assert!(hc_calls.contains(key), "{key} missing: {hc_calls}");
    }
    for (name, report) in ["isolation", "isolation-hv"].into_iter().zip(reports) {
        assert!(
            t.find(&format!(
                "[hv] partition {name}: {report} (expected to be contained) -> PASS"
            ))
            .is_some(),
            "{run}"
        );
        let iso_exits = t
            .find(&format!("[hv] stats {name}: exits: "))
            .unwrap_or_else(|| panic!("{run}"));
        assert!(iso_exits.contains(" npf=1"), "{iso_exits}");
    }
    let all = t
        .position("[hv] all 3 test partition(s) passed")
        .unwrap_or_else(|| panic!("{run}"));
    let result = t
        .position("NEXUS RESULT: PASS")
        .expect("verdict checked above");
    assert!(summary < all && all < result, "{run}");
}

/// The deliberately failing guest (`policies/*-fail.toml`): the run fails naming it, its own
/// message and its summary line say why, and its exit call is counted.
pub fn check_fail_run(t: &Transcript, run: &dyn Display) {
    match t.verdict() {
        Some(Verdict::Fail(why)) => {
            assert_eq!(why, "partition fail: exited with code 1", "{run}")
        }
        other => panic!("expected FAIL, got {other:?}\n{run}"),
    }
    assert!(
        t.partition("fail")
            .any(|l| l == "failing on purpose (cmdline \"fail\")"),
        "{run}"
    );
    assert!(
        t.find("[hv] partition fail: exited with code 1 (expected exit 0) -> FAIL")
            .is_some(),
        "{run}"
    );
    assert!(
        t.find("[hv] stats fail: hypercalls: ")
            .is_some_and(|l| l.contains("partition_exit=1")),
        "{run}"
    );
}

/// The faulting guests (`policies/*-faults.toml`): the page pool sits at the policy's
/// hypervisor_memory, and each partition is stopped alone by its own fault, reported,
/// judged as expected and counted; so the run passes.
pub fn check_faults_run(t: &Transcript, run: &dyn Display, policy: &str) {
    let (hv_base, _) = hypervisor_memory(policy);
    assert!(
        t.find("[hv] memory: heap ")
            .is_some_and(|l| l.contains(&format!("page pool {hv_base:#x} ("))),
        "{run}"
    );
    for (name, reason, counter) in [
        ("triple-fault", "stopped: triple fault", " shutdown=1"),
        ("port", "stopped: I/O port 0x60 denied", " io=1"),
        // RDMSR exits, #GP is injected on the next entry, no guest IDT: triple fault.
        ("msr", "stopped: triple fault", " rdmsr=1"),
    ] {
        let stop = t
            .find(&format!("[hv] partition {name} stopped at rip 0x"))
            .unwrap_or_else(|| panic!("no stop report for {name}\n{run}"));
        assert!(stop.ends_with(reason), "{stop}");
        assert!(
            !t.partition(name).any(|l| l.starts_with("NOT STOPPED")),
            "{name} went on after its fault\n{run}"
        );
        let summary = t
            .find(&format!("[hv] partition {name}: {reason} ("))
            .unwrap_or_else(|| panic!("no summary line for {name}\n{run}"));
        assert!(summary.ends_with("-> PASS"), "{summary}");
        let exits = t
            .find(&format!("[hv] stats {name}: exits: "))
            .unwrap_or_else(|| panic!("no counters for {name}\n{run}"));
        assert!(exits.contains(counter), "{exits}");
    }
    assert!(
        t.find("[hv] all 3 test partition(s) passed").is_some(),
        "{run}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serial transcripts of passing runs, recorded by `cargo xtask test` (qemu_svm and
    /// bochs_vmx, development policies).
    const QEMU_SVM: &[u8] = include_bytes!("../testdata/serial-qemu_svm.log");
    const BOCHS_VMX: &[u8] = include_bytes!("../testdata/serial-bochs_vmx.log");

    const QEMU_DEV: DevRun<'static> = DevRun {
        policy: "qemu-dev.toml",
        backend: Backend::Svm,
        cpus: 5,
        test_cpus: [2, 3, 4],
        isolation_hv_cmdline: "isolation write 0x4200_0000",
        xsetbv_exits: false,
    };
    const BOCHS_DEV: DevRun<'static> = DevRun {
        policy: "bochs-dev.toml",
        backend: Backend::Vmx,
        cpus: 4,
        test_cpus: [1, 2, 3],
        isolation_hv_cmdline: "isolation write 0x0c00_0000",
        xsetbv_exits: true,
    };

    /// The transcript without the lines containing `needle`.
    pub(super) fn without(raw: &[u8], needle: &str) -> Transcript {
        let t = Transcript::from_bytes(raw);
        let lines = t.lines().iter().filter(|l| !l.contains(needle));
        Transcript::from_lines(lines.cloned().collect())
    }

    #[test]
    fn the_abi_line_needs_this_major_version_and_any_minor() {
        let rest = " found at CPUID 0x40000000 (transport Vmcall";
        let major = nexus_abi::ABI_VERSION.major;
        for ok in [
            format!(
                "NexusOS ABI {major}.0 found at CPUID 0x40000000 (transport Vmcall, groups {{}})"
            ),
            format!("NexusOS ABI {major}.7 found at CPUID 0x40000000 (transport Vmcall)"),
        ] {
            assert!(found_compatible_abi(&ok, rest), "{ok}");
        }
        for bad in [
            format!(
                "NexusOS ABI {}.0 found at CPUID 0x40000000 (transport Vmcall",
                major + 1
            ),
            format!("NexusOS ABI {major}.x found at CPUID 0x40000000 (transport Vmcall"),
            format!("NexusOS ABI {major}.1 found at CPUID 0x40000100 (transport Vmcall"),
            format!("NexusOS ABI {major}.1 found at CPUID 0x40000000 (transport Vmmcall"),
            "test-guest: NexusOS not found through CPUID".to_string(),
        ] {
            assert!(!found_compatible_abi(&bad, rest), "{bad}");
        }
    }

    #[test]
    fn recorded_passing_runs_pass_the_dev_checks() {
        check_dev_run(&Transcript::from_bytes(QEMU_SVM), &"qemu_svm", &QEMU_DEV);
        check_dev_run(&Transcript::from_bytes(BOCHS_VMX), &"bochs_vmx", &BOCHS_DEV);
    }

    #[test]
    #[should_panic(expected = "no stop report for isolation")]
    fn a_missing_isolation_report_fails_the_dev_checks() {
        let t = without(QEMU_SVM, "[hv] partition isolation stopped at rip");
        check_dev_run(&t, &"qemu_svm", &QEMU_DEV);
    }

    #[test]
    #[should_panic(expected = "no GenuineIntel CPU")]
    fn an_svm_run_fails_the_vmx_checks() {
        let t = Transcript::from_bytes(QEMU_SVM);
        check_dev_run(
            &t,
            &"qemu_svm",
            &DevRun {
                policy: "qemu-dev.toml",
                ..BOCHS_DEV
            },
        );
    }

    #[test]
    #[should_panic(expected = "at least one exit per checked call")]
    fn missing_hypercall_exits_fail_the_dev_checks() {
        let t = Transcript::from_bytes(BOCHS_VMX);
        let lines = t
            .lines()
            .iter()
            .map(|l| l.replace(" hypercall=", " hypercall=0 was="))
            .collect();
        check_dev_run(&Transcript::from_lines(lines), &"bochs_vmx", &BOCHS_DEV);
    }

    /// The recorded transcript with every line containing `from` edited to `to`.
    pub(super) fn edited(raw: &[u8], from: &str, to: &str) -> Transcript {
        let t = Transcript::from_bytes(raw);
        let lines = t.lines().iter().map(|l| l.replace(from, to)).collect();
        Transcript::from_lines(lines)
    }

    #[test]
    #[should_panic(expected = "the probe was skipped")]
    fn a_skipped_xsetbv_probe_fails_the_dev_checks() {
        let t = edited(
            BOCHS_VMX,
            "xsetbv: XCR0 0x1, wrote 0x3 read 0x3, wrote 0x7 read 0x7, invalid 0x2 -> #GP(0x0), XCR0 after 0x7",
            "xsetbv: skipped (no XSAVE)",
        );
        check_dev_run(&t, &"bochs_vmx", &BOCHS_DEV);
    }

    #[test]
    #[should_panic(expected = "read back differs")]
    fn an_xcr0_read_back_mismatch_fails_the_dev_checks() {
        let t = edited(QEMU_SVM, "wrote 0x7 read 0x7", "wrote 0x7 read 0x3");
        check_dev_run(&t, &"qemu_svm", &QEMU_DEV);
    }

    #[test]
    #[should_panic(expected = "no #GP(0) for the invalid XCR0")]
    fn an_invalid_xsetbv_without_gp_fails_the_dev_checks() {
        let t = edited(BOCHS_VMX, "-> #GP(0x0)", "-> no fault");
        check_dev_run(&t, &"bochs_vmx", &BOCHS_DEV);
    }

    #[test]
    #[should_panic(expected = "one exit per XSETBV of the probe")]
    fn missing_xsetbv_exits_fail_the_vmx_dev_checks() {
        let t = edited(BOCHS_VMX, " xsetbv=3", "");
        check_dev_run(&t, &"bochs_vmx", &BOCHS_DEV);
    }

    #[test]
    #[should_panic(expected = "changed the boot CPU's XCR0")]
    fn a_leaked_xcr0_fails_the_dev_checks() {
        let t = edited(
            BOCHS_VMX,
            "[hv] partition hypercalls stopped at rip",
            "[hv] partition hypercalls: left XCR0 0x7 to the firmware (was 0x1)\n[hv] partition hypercalls stopped at rip",
        );
        check_dev_run(&t, &"bochs_vmx", &BOCHS_DEV);
    }
}
