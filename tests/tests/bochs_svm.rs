//! Boots the hypervisor on a second SVM implementation: Bochs 2.7 `model=ryzen` (four CPUs,
//! 512 MiB, OVMF) with policies/bochs-dev.toml. Unlike QEMU TCG this CPU has nrip-save and
//! flush-by-ASID, so the SVM backend takes its other paths (next RIP from the VMCB, per-ASID
//! flush) and must give the same results: the test partitions pass their checks on their own
//! CPUs, both isolation partitions (a read of the neighbour, a write into the hypervisor's
//! memory) are contained, the boot CPU continues as the primary's guest: the development-run
//! checks the QEMU and VMX suites share (`nexus_e2e::checks`).

use nexus_e2e::bochs::{BochsConfig, BochsOutcome, BochsRun};
use nexus_e2e::checks::{check_dev_run, policy_file, Backend, DevRun};
use nexus_e2e::esp::EspContents;
use nexus_e2e::BuildDir;

fn boot_ryzen(name: &str, policy: &str) -> BochsRun {
    let build = BuildDir::from_env().unwrap_or_else(|e| panic!("{e}"));
    let contents =
        EspContents::from_policy(&policy_file(policy), &build).unwrap_or_else(|e| panic!("{e}"));
    let img = build.root().join(format!("esp-{name}.img"));
    contents
        .write_fat_image(&img)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = BochsConfig::new(name, &img, build.root());
    cfg.cpu_model = "ryzen".into();
    cfg.cpus = 4;
    cfg.run()
        .unwrap_or_else(|e| panic!("cannot run Bochs: {e}"))
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn svm_with_nrip_save_runs_the_same_partitions() {
    let run = boot_ryzen("bochs_svm", "bochs-dev.toml");
    let t = &run.transcript;
    assert_eq!(run.outcome, BochsOutcome::Pass, "{run}");
    let svm = t
        .find("[hv] svm: ")
        .unwrap_or_else(|| panic!("no SVM line\n{run}"));
    assert!(
        svm.contains("nrip-save=true") && svm.contains("flush-by-asid=true"),
        "{svm}"
    );
    assert!(!svm.contains("decoded by the hypervisor"), "{svm}");
    check_dev_run(
        t,
        &run,
        &DevRun {
            test_cpus: [1, 2, 3],
            policy: "bochs-dev.toml",
            backend: Backend::Svm,
            cpus: 4,
            isolation_hv_cmdline: "isolation write 0x0c00_0000",
            xsetbv_exits: true,
        },
    );
    // The isolation reports at the addresses bochs-dev.toml puts the neighbour and the
    // hypervisor's memory.
    for (name, report) in [
        (
            "isolation",
            "stopped by isolation: nested page fault on read of 0x8000000",
        ),
        (
            "isolation-hv",
            "stopped by isolation: nested page fault on write of 0xc000000",
        ),
    ] {
        let stop = t
            .find(&format!("[hv] partition {name} stopped at rip 0x"))
            .unwrap_or_else(|| panic!("no {name} stop\n{run}"));
        assert!(stop.ends_with(report), "{stop}");
    }
}
