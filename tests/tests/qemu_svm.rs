//! Boots the hypervisor on QEMU's SVM (`-accel tcg -cpu max`, 4 CPUs, 2 GiB) and checks that
//! the test partitions of policies/qemu-dev.toml run on their own CPUs, answer the hypercall
//! checks, that the isolation partitions are stopped with nested-page-fault reports naming them,
//! the address and the access (a read of the neighbouring partition, a write into the
//! hypervisor's own memory), and that the counters and the verdict are printed; and that the
//! deliberately failing guest of policies/qemu-fail.toml makes the run fail.

use nexus_e2e::{BuildDir, Disk, Outcome, QemuConfig, QemuRun, Verdict};
use nexus_policy::Role;
use std::path::PathBuf;

fn policy_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .join(name)
}

fn boot(name: &str, policy: Option<&str>) -> QemuRun {
    let build = BuildDir::from_env().unwrap_or_else(|e| panic!("{e}"));
    let disk = match policy {
        None => Disk::Dir(build.esp_dir()),
        Some(p) => Disk::Dir(
            build
                .esp_for_policy(&policy_file(p))
                .unwrap_or_else(|e| panic!("{e}")),
        ),
    };
    QemuConfig::new(name, disk, build.root())
        .run()
        .unwrap_or_else(|e| panic!("cannot run QEMU: {e}"))
}

/// `(base, size)` of a shipped policy's `[machine] hypervisor_memory`.
fn hypervisor_memory(policy: &str) -> (u64, u64) {
    let p = nexus_policy::load_file(policy_file(policy)).unwrap_or_else(|e| panic!("{e}"));
    let hv = p
        .machine
        .hypervisor_memory
        .unwrap_or_else(|| panic!("{policy} places no hypervisor_memory"));
    (hv.base, hv.size)
}

/// Base of the first memory region of partition `name` in a shipped policy.
fn region_base(policy: &str, name: &str) -> u64 {
    let p = nexus_policy::load_file(policy_file(policy)).unwrap_or_else(|e| panic!("{e}"));
    let part = p
        .partitions
        .iter()
        .find(|x| x.name == name)
        .unwrap_or_else(|| panic!("{policy} has no partition {name}"));
    assert_eq!(part.role, Role::Test);
    part.memory[0].base
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn test_partitions_run_isolated_and_the_run_passes() {
    let run = boot("qemu_svm", None);
    let t = &run.transcript;
    assert_eq!(run.outcome, Outcome::Pass, "{run}");
    assert_eq!(t.verdict(), Some(Verdict::Pass), "{run}");

    // Discovery summary, then the SVM backend's view of the CPU.
    assert!(t.find("[hv] cpu: vendor AuthenticAMD").is_some(), "{run}");
    assert!(t.find("[hv] memory map: ").is_some(), "{run}");
    let svm = t
        .find("[hv] svm: ")
        .unwrap_or_else(|| panic!("no SVM line\n{run}"));
    assert!(svm.contains("npt=true"), "{svm}");
    // QEMU TCG has no nrip-save: the hypervisor says it decodes lengths itself.
    assert!(
        svm.contains("nrip-save=false") && svm.contains("decoded by the hypervisor"),
        "{svm}"
    );

    // The page pool lives at the policy's hypervisor_memory.
    let (hv_base, hv_size) = hypervisor_memory("qemu-dev.toml");
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

    // Each test partition was set up with its own ASID and started on its CPU.
    for (name, cpu, cmdline) in [
        ("hypercalls", 1, "hypercalls"),
        ("isolation", 2, "isolation"),
        ("isolation-hv", 3, "isolation write 0x4200_0000"),
    ] {
        let setup = t
            .find(&format!("[hv] partition {name}: image test-guest at "))
            .unwrap_or_else(|| panic!("no set-up line for {name}\n{run}"));
        assert!(setup.contains(&format!("CPU {cpu}")), "{setup}");
        assert!(
            t.find(&format!("[hv] partition {name}: running on CPU {cpu}"))
                .is_some(),
            "{run}"
        );
        // The guest found NexusOS through CPUID and read its cmdline via partition_info.
        let lines: Vec<&str> = t.partition(name).collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("NexusOS ABI 1.0 found at CPUID 0x40000000")),
            "{name}: {lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("cmdline \"{cmdline}\""))),
            "{name}: {lines:?}"
        );
    }

    // Hypercalls: every check passed, with one call of each AI group answered "service
    // unavailable", and unknown numbers / bad arguments rejected.
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
    assert!(tally.ends_with(" passed, 0 failed"), "{tally}");
    assert!(
        t.find("[hv] partition hypercalls stopped at rip 0x")
            .is_some_and(|l| l.ends_with("exited with code 0")),
        "{run}"
    );

    // Isolation: only the management group is granted, so an AI call is refused; then the read
    // of the neighbouring partition's memory is stopped and reported with partition and address.
    let iso: Vec<&str> = t.partition("isolation").collect();
    assert!(
        iso.contains(&"ok   ai_model_load -> permission denied (-3)"),
        "{iso:#?}"
    );
    assert!(!iso.iter().any(|l| l.contains("NOT CONTAINED")), "{iso:#?}");
    let target = region_base("qemu-dev.toml", "isolation") - (16 << 20);
    assert_eq!(
        target,
        region_base("qemu-dev.toml", "hypercalls"),
        "probe must hit the other partition"
    );
    let report = format!("stopped by isolation: nested page fault on read of {target:#x}");
    let stop = t
        .find("[hv] partition isolation stopped at rip 0x")
        .unwrap_or_else(|| panic!("no stop report for isolation\n{run}"));
    assert!(stop.ends_with(&report), "{stop}");

    // Isolation-hv: its write into the hypervisor's memory (the page pool, hidden from every
    // partition) is stopped and reported as a write of that address.
    let iso_hv: Vec<&str> = t.partition("isolation-hv").collect();
    let writing =
        format!("writing {hv_base:#x}, outside this partition: the hypervisor must stop me");
    assert!(iso_hv.contains(&writing.as_str()), "{iso_hv:#?}");
    assert!(
        !iso_hv.iter().any(|l| l.contains("NOT CONTAINED")),
        "{iso_hv:#?}"
    );
    let own = region_base("qemu-dev.toml", "isolation-hv");
    assert!(
        !(own..own + (16 << 20)).contains(&hv_base),
        "the probe must leave its partition"
    );
    let report_hv = format!("stopped by isolation: nested page fault on write of {hv_base:#x}");
    let stop = t
        .find("[hv] partition isolation-hv stopped at rip 0x")
        .unwrap_or_else(|| panic!("no stop report for isolation-hv\n{run}"));
    assert!(stop.ends_with(&report_hv), "{stop}");

    // The boot CPU was virtualized in place and carried on as the primary partition: its
    // CPUID is intercepted and shows NexusOS, and its exits are counted.
    let primary_npt = t
        .find("[hv] partition primary: NPT 0x")
        .unwrap_or_else(|| panic!("no primary NPT line\n{run}"));
    assert!(primary_npt.contains("ASID 1, CPU 0"), "{primary_npt}");
    assert!(
        t.find("[hv] partition primary: the boot CPU now runs in guest mode (CPUID 0x40000000 answers NexusOS)")
            .is_some(),
        "{run}"
    );
    let primary_exits = t
        .find("[hv] stats primary: exits: total=")
        .unwrap_or_else(|| panic!("{run}"));
    assert!(primary_exits.contains(" cpuid="), "{primary_exits}");

    // Summary with per-partition counters, then the verdict.
    let summary = t
        .position("[hv] summary: 3 test partition(s)")
        .unwrap_or_else(|| panic!("{run}"));
    assert!(
        t.find("[hv] partition hypercalls: exited with code 0 (expected exit 0) -> PASS")
            .is_some(),
        "{run}"
    );
    for (name, report) in [("isolation", &report), ("isolation-hv", &report_hv)] {
        assert!(
            t.find(&format!(
                "[hv] partition {name}: {report} (expected to be contained) -> PASS"
            ))
            .is_some(),
            "{run}"
        );
    }
    let hc_exits = t
        .find("[hv] stats hypercalls: exits: total=")
        .unwrap_or_else(|| panic!("{run}"));
    let calls = hc_exits
        .split_whitespace()
        .find_map(|w| w.strip_prefix("hypercall="))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        calls >= 28,
        "at least one exit per checked call: {hc_exits}"
    );
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
    for name in ["isolation", "isolation-hv"] {
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

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn failing_guest_makes_the_run_fail() {
    let run = boot("qemu_svm_fail", Some("qemu-fail.toml"));
    let t = &run.transcript;
    assert_eq!(run.outcome, Outcome::Fail, "{run}");
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

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn hypervisor_memory_that_is_not_free_stops_the_boot() {
    let run = boot("qemu_svm_hvmem_busy", Some("qemu-hvmem-busy.toml"));
    let t = &run.transcript;
    assert_eq!(run.outcome, Outcome::Fail, "{run}");
    let (base, size) = hypervisor_memory("qemu-hvmem-busy.toml");
    let want = format!(
        "policy [machine] hypervisor_memory {base:#x}+{} MiB is not free memory: ",
        size >> 20
    );
    match t.verdict() {
        Some(Verdict::Fail(why)) => {
            assert!(why.starts_with(&want), "{why}\n{run}");
            assert!(
                why.ends_with("; choose a range the firmware leaves free"),
                "{why}"
            );
        }
        other => panic!("expected FAIL, got {other:?}\n{run}"),
    }
    // Refused before any partition started.
    assert!(
        t.find("[hv] partition hypercalls: running on CPU")
            .is_none(),
        "{run}"
    );
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn faulting_guests_are_stopped_alone_and_reported() {
    let run = boot("qemu_svm_faults", Some("qemu-faults.toml"));
    let t = &run.transcript;
    // Every partition's stop is the one its cmdline expects, so the run passes.
    assert_eq!(run.outcome, Outcome::Pass, "{run}");
    let (hv_base, _) = hypervisor_memory("qemu-faults.toml");
    assert!(
        t.find("[hv] memory: heap ")
            .is_some_and(|l| l.contains(&format!("page pool {hv_base:#x} ("))),
        "{run}"
    );
    for (name, reason, counter) in [
        ("triple-fault", "stopped: triple fault", " shutdown=1"),
        ("port", "stopped: I/O port 0x60 denied", " io=1"),
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
