//! Boots the hypervisor in Bochs 2.7 (Intel VMX with EPT, four Tiger Lake CPUs, 512 MiB, OVMF)
//! with policies/bochs-dev.toml and checks the same things as the SVM suite: the test partitions
//! run on their own CPUs, find NexusOS through CPUID, answer the hypercall
//! checks of every group, the isolation partitions are stopped by EPT violations naming them,
//! the address and the access (a read of the neighbour, a write into the hypervisor's own
//! memory), the boot CPU continues in guest mode as the primary partition,
//! counters and the verdict are printed (with four CPUs, and with the one CPU issue 4 asks for:
//! the test partitions then run one after another on the boot CPU); and policies/bochs-fail.toml
//! makes the run fail; the hostile-guest suite (policies/bochs-hostile-*.toml, four CPUs):
//! each attack in its own partition is contained as documented while the hypercalls partition
//! next to it passes all its checks; and what the primary probe (policies/bochs-probe.toml) can
//! and cannot do from inside the primary. Bochs is slow (about 20 s a boot here, the probe's
//! run about a minute): each test boots once.

use nexus_e2e::bochs::{BochsConfig, BochsOutcome, BochsRun};
use nexus_e2e::checks::hostile::{self, HostileRun};
use nexus_e2e::checks::{self, manage, policy_file, Backend, DevRun};
use nexus_e2e::esp::EspContents;
use nexus_e2e::probe::{check_probe_run, BOCHS_PROBE};
use nexus_e2e::BuildDir;

/// Makes the FAT image for `policy` from the built hypervisor and images, and boots it.
fn boot(name: &str, policy: &str) -> BochsRun {
    boot_cpus(name, policy, 4)
}

fn boot_cpus(name: &str, policy: &str, cpus: u32) -> BochsRun {
    boot_with(name, policy, cpus, |_| {})
}

/// Boot `policy` on `cpus` CPUs, with `configure` changing the machine first.
fn boot_with(
    name: &str,
    policy: &str,
    cpus: u32,
    configure: impl FnOnce(&mut BochsConfig),
) -> BochsRun {
    let build = BuildDir::from_env().unwrap_or_else(|e| panic!("{e}"));
    let contents =
        EspContents::from_policy(&policy_file(policy), &build).unwrap_or_else(|e| panic!("{e}"));
    let img = build.root().join(format!("esp-{name}.img"));
    contents
        .write_fat_image(&img)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = BochsConfig::new(name, &img, build.root());
    cfg.cpus = cpus;
    configure(&mut cfg);
    let run = cfg
        .run()
        .unwrap_or_else(|e| panic!("cannot run Bochs: {e}"));
    eprintln!("{name}: Bochs run took {:.1} s", run.elapsed.as_secs_f64());
    run
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn test_partitions_run_under_vmx_with_ept_and_the_run_passes() {
    let run = boot("bochs_vmx", "bochs-dev.toml");
    check_dev_run(&run, 4);
}

/// Issue 4's configuration: Bochs with ONE CPU. The policy's test-partition CPUs do not
/// exist, so the test partitions run one after another on the boot CPU before it becomes
/// the primary; everything else is checked exactly as with four CPUs.
#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn one_cpu_runs_the_test_partitions_on_the_boot_cpu_and_the_run_passes() {
    let run = boot_cpus("bochs_vmx_1cpu", "bochs-dev.toml", 1);
    check_dev_run(&run, 1);
}

/// The bochs-dev checks on a machine with `cpus` CPUs: discovery, hypercalls of every group,
/// isolation contained by EPT violations, the primary in guest mode, counters, verdict.
fn check_dev_run(run: &BochsRun, cpus: u32) {
    assert_eq!(run.outcome, BochsOutcome::Pass, "{run}");
    checks::check_dev_run(
        &run.transcript,
        run,
        &DevRun {
            test_cpus: [1, 2, 3],
            policy: "bochs-dev.toml",
            backend: Backend::Vmx,
            cpus,
            isolation_hv_cmdline: "isolation write 0x0c00_0000",
            xsetbv_exits: true,
        },
    );
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn failing_guest_makes_the_vmx_run_fail() {
    let run = boot("bochs_vmx_fail", "bochs-fail.toml");
    assert_eq!(run.outcome, BochsOutcome::Fail, "{run}");
    checks::check_fail_run(&run.transcript, &run);
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn faulting_guests_are_stopped_alone_and_reported_under_vmx() {
    let run = boot_cpus("bochs_vmx_faults", "bochs-faults.toml", 4);
    // Every partition's stop is the one its cmdline expects, so the run passes.
    assert_eq!(run.outcome, BochsOutcome::Pass, "{run}");
    checks::check_faults_run(&run.transcript, &run, "bochs-faults.toml");
}

/// AP start under VMX (issue 4's INIT/SIPI exits): policies/bochs-smp.toml gives the test
/// partition `smp` two CPUs. Its second CPU (APIC 2) starts in the INIT state, waiting for a
/// start-up IPI; the guest on APIC 1 starts it through its x2APIC ICR with INIT, SIPI, SIPI.
/// APIC 2 runs real-mode code at 2000:0000 that reports the CS and IP the SIPI gave it, and
/// the second SIPI must not restart it. When the partition ends, the hypervisor stops APIC 2
/// with a physical INIT: a real INIT VM exit, handled by the shared exit code.
#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn partition_aps_start_by_init_and_sipi_under_vmx() {
    let run = boot_cpus("bochs_vmx_smp", "bochs-smp.toml", 3);
    let t = &run.transcript;
    assert_eq!(run.outcome, BochsOutcome::Pass, "{run}");
    for line in [
        "[hv] partition smp: CPU 2 is reset and waits for a start-up IPI",
        "[smp] ap-start: INIT, SIPI 0x20, SIPI 0x20 to CPU 2 (from its reset state)",
        "[hv] partition smp: CPU 2 started by SIPI vector 0x20: real mode at 2000:0000 (address 0x20000)",
        "[smp] ok   ap-start: CPU 2 ran real-mode code at 2000:0000",
        "[smp] ok   ap-start: the second SIPI left the running CPU 2 alone",
        "[hv] partition smp: exited with code 0 (expected exit 0) -> PASS",
        "[hv] all 1 test partition(s) passed",
    ] {
        assert!(t.find(line).is_some(), "missing {line:?}\n{run}");
    }
    // The AP greets from real mode through the emulated COM1, once.
    assert_eq!(t.count("[smp] ap: hello from real mode"), 1, "{run}");
    assert_eq!(t.count("started by SIPI vector"), 1, "{run}");
    // Its end: the partition's end stops it (a mailbox request and an NMI kick, no physical
    // INIT); it stops with its own counters (25 COM1 bytes; no INIT or SIPI exit: both
    // came through its mailbox).
    let end = t.position("[hv] partition smp stopped at ").unwrap();
    let ap_end = t.position("[hv] partition smp: CPU 2 stopped at ").unwrap();
    assert!(
        end < ap_end,
        "the AP stops after its partition's end\n{run}"
    );
    let stopped = t
        .find("[hv] partition smp: CPU 2 stopped at ")
        .unwrap_or_else(|| panic!("APIC 2 never stopped\n{run}"));
    assert!(
        stopped.ends_with("stopped with its partition"),
        "{stopped}\n{run}"
    );
    let stats = t
        .find("[hv] stats smp CPU 2: exits: ")
        .unwrap_or_else(|| panic!("no counters of APIC 2\n{run}"));
    assert!(stats.contains(" io=25"), "{stats}\n{run}");
    assert!(!stats.contains(" init="), "{stats}\n{run}");
    assert!(!stats.contains("sipi="), "{stats}\n{run}");
}

/// The management calls (ABI 1.5) under VMX, policies/bochs-manage.toml: the `manager`
/// test partition loads, starts, watches and stops programs in the managed partition `ai`
/// (its own CPU, its own EPT), as the QEMU test does under SVM.
#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn a_manager_loads_starts_and_stops_a_managed_partition_under_vmx() {
    let run = boot_cpus("bochs_vmx_manage", "bochs-manage.toml", 3);
    assert_eq!(run.outcome, BochsOutcome::Pass, "{run}");
    let pool = manage::check_manage_run(
        &run.transcript,
        &run,
        checks::region_base("bochs-manage.toml", "ai"),
    );
    eprintln!(
        "bochs_vmx_manage: hypervisor pages in use after each of {} stops: {pool:?}",
        manage::RUNS
    );
}

/// One hostile policy (`policies/bochs-hostile-<group>.toml`, four CPUs): the run passes, each
/// attack is contained as documented, the hypercalls neighbour passes; prints one table row per
/// attack. The `memory` group's scan partition gets a stale pattern preloaded into its memory
/// (Bochs `optramimage`) before OVMF starts.
fn hostile_run(group: &str) {
    let policy = format!("bochs-hostile-{group}.toml");
    let stale_pattern = group == "memory";
    let run = boot_with(&format!("bochs_vmx_hostile_{group}"), &policy, 4, |cfg| {
        if stale_pattern {
            let build = BuildDir::from_env().unwrap_or_else(|e| panic!("{e}"));
            cfg.ram_images.push((
                hostile::write_stale_pattern(build.root()),
                hostile::stale_pattern_address(&policy),
            ));
        }
        // Bochs emulates COM1 at 115200 baud: the floods' burst and refill alone take
        // seconds of emulated time, minutes of real time on a loaded machine.
        if group == "flood" {
            cfg.timeout = cfg.timeout.max(std::time::Duration::from_secs(600));
        }
    });
    assert_eq!(run.outcome, BochsOutcome::Pass, "{run}");
    let rows = hostile::check_hostile_run(
        &run.transcript,
        &run,
        &HostileRun {
            policy: &policy,
            backend: Backend::Vmx,
            stale_pattern,
        },
    );
    for r in rows {
        eprintln!("{}", r.table_row("VMX (Bochs)"));
    }
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn hostile_cache_instructions_are_no_ops_for_test_partitions_under_vmx() {
    hostile_run("cache");
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn hostile_rdpmc_faults_and_mwait_returns_under_vmx() {
    hostile_run("counters");
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn hostile_console_floods_are_cut_to_their_budget_under_vmx() {
    hostile_run("flood");
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn hostile_register_writes_fault_and_high_gpas_are_refused_under_vmx() {
    hostile_run("registers");
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn hostile_stale_memory_is_zeroed_and_iommu_mmio_is_contained_under_vmx() {
    hostile_run("memory");
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn hostile_lapic_and_ioapic_writes_are_contained_under_vmx() {
    hostile_run("apic");
}

/// The primary probe under VMX (policies/bochs-probe.toml; docs/testing.md, "The primary
/// probe"): the same rounds as on SVM (qemu_svm.rs), and, since Bochs' Tiger Lake has
/// x2APIC, the INIT/SIPI/NMI and self-NMI rounds a second time through the x2APIC ICR MSR
/// after the probe switched its APIC to x2APIC mode. OVMF publishes no ACPI tables under
/// Bochs, so the probe takes the primary's CPUs from its cmdline instead of the MADT. The
/// firmware's own AP start (StartupThisAP: real mode, protected mode, paging with
/// EFER.LME) is what found the VMX CR0 emulation leaving EFER.LMA clear. The probe powers
/// Bochs off through ACPI.
#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn the_primary_probe_reaches_only_its_own_cpus_and_keeps_its_nmis_under_vmx() {
    let p = BOCHS_PROBE;
    let run = boot("bochs_vmx_probe", p.policy);
    assert_eq!(run.outcome, BochsOutcome::PoweredOff, "{run}");
    check_probe_run(&run.console, &run.transcript, &run, &p);
}
