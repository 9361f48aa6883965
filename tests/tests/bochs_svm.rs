//! Boots the hypervisor on a second SVM implementation: Bochs 2.7 `model=ryzen` (four CPUs,
//! 512 MiB, OVMF) with policies/bochs-dev.toml. Unlike QEMU TCG this CPU has nrip-save and
//! flush-by-ASID, so the SVM backend takes its other paths (next RIP from the VMCB, per-ASID
//! flush) and must give the same results: the test partitions pass their checks on their own
//! CPUs, both isolation partitions (a read of the neighbour, a write into the hypervisor's
//! memory) are contained, the boot CPU continues as the primary's guest.

use nexus_e2e::bochs::{BochsConfig, BochsOutcome, BochsRun};
use nexus_e2e::esp::EspContents;
use nexus_e2e::{BuildDir, Verdict};
use std::path::PathBuf;

fn boot_ryzen(name: &str, policy: &str) -> BochsRun {
    let build = BuildDir::from_env().unwrap_or_else(|e| panic!("{e}"));
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .join(policy);
    let contents = EspContents::from_policy(&file, &build).unwrap_or_else(|e| panic!("{e}"));
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
    assert_eq!(t.verdict(), Some(Verdict::Pass), "{run}");
    let svm = t
        .find("[hv] svm: ")
        .unwrap_or_else(|| panic!("no SVM line\n{run}"));
    assert!(
        svm.contains("nrip-save=true") && svm.contains("flush-by-asid=true"),
        "{svm}"
    );
    assert!(!svm.contains("decoded by the hypervisor"), "{svm}");
    for (name, cpu) in [("hypercalls", 1), ("isolation", 2), ("isolation-hv", 3)] {
        assert!(
            t.find(&format!("[hv] partition {name}: running on CPU {cpu}"))
                .is_some(),
            "{run}"
        );
    }
    let tally = t
        .partition("hypercalls")
        .find(|l| l.starts_with("hypercall checks: "))
        .unwrap_or_else(|| panic!("no tally\n{run}"));
    assert_eq!(tally, "hypercall checks: 28 passed, 0 failed");
    let stop = t
        .find("[hv] partition isolation stopped at rip 0x")
        .unwrap_or_else(|| panic!("no isolation stop\n{run}"));
    assert!(
        stop.ends_with("stopped by isolation: nested page fault on read of 0x8000000"),
        "{stop}"
    );
    let stop = t
        .find("[hv] partition isolation-hv stopped at rip 0x")
        .unwrap_or_else(|| panic!("no isolation-hv stop\n{run}"));
    assert!(
        stop.ends_with("stopped by isolation: nested page fault on write of 0xc000000"),
        "{stop}"
    );
    assert!(
        t.find("[hv] partition primary: the boot CPU now runs in guest mode (CPUID 0x40000000 answers NexusOS)")
            .is_some(),
        "{run}"
    );
    assert!(
        t.find("[hv] all 3 test partition(s) passed").is_some(),
        "{run}"
    );
}
