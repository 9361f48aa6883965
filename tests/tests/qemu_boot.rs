//! Boots the default image (`cargo xtask build` with policies/qemu-dev.toml, in its harness
//! form: no OS loader) in QEMU and checks what the hypervisor reports on its serial console and
//! through isa-debug-exit.

use nexus_e2e::{BuildDir, Disk, Outcome, QemuConfig, QemuRun, Verdict};

fn boot(name: &str, disk: impl FnOnce(&BuildDir) -> Disk) -> QemuRun {
    let build = BuildDir::from_env().unwrap_or_else(|e| panic!("{e}"));
    let cfg = QemuConfig::new(name, disk(&build), build.root());
    cfg.run().unwrap_or_else(|e| panic!("cannot run QEMU: {e}"))
}

/// Megabytes in `... usable RAM <n> MiB ...`.
fn usable_mib(line: &str) -> f64 {
    let after = line
        .split("usable RAM ")
        .nth(1)
        .unwrap_or_else(|| panic!("no `usable RAM` in {line:?}"));
    let number = after.split_whitespace().next().unwrap_or_default();
    number
        .parse()
        .unwrap_or_else(|_| panic!("usable RAM {number:?} is not a number in {line:?}"))
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn default_image_reports_cpu_memory_and_pass() {
    let run = boot("qemu_boot", |b| {
        Disk::Dir(
            b.esp_harness(&nexus_e2e::checks::policy_file("qemu-dev.toml"))
                .unwrap_or_else(|e| panic!("{e}")),
        )
    });
    let t = &run.transcript;
    assert_eq!(run.outcome, Outcome::Pass, "{run}");
    assert_eq!(t.verdict(), Some(Verdict::Pass), "{run}");

    // Banner first, with the crate version.
    let banner = t
        .position("[hv] NexusOS hypervisor ")
        .unwrap_or_else(|| panic!("no banner\n{run}"));
    assert!(
        t.lines()[banner].ends_with(env!("CARGO_PKG_VERSION")),
        "banner without version: {}",
        t.lines()[banner]
    );

    // QEMU TCG `-cpu max` is an AMD CPU with SVM and nested paging (docs: emulation facts).
    let vendor = t
        .find("[hv] cpu: vendor ")
        .unwrap_or_else(|| panic!("no CPU vendor line\n{run}"));
    assert!(vendor.contains("vendor AuthenticAMD"), "{vendor}");
    let features = t
        .find("[hv] cpu: svm=")
        .unwrap_or_else(|| panic!("no CPU feature line\n{run}"));
    assert!(
        features.contains("svm=yes") && features.contains("npt=yes"),
        "{features}"
    );

    // The machine has 2 GiB; firmware keeps some, so usable RAM is most but not all of it.
    let map = t
        .find("[hv] memory map: ")
        .unwrap_or_else(|| panic!("no memory map summary\n{run}"));
    let mib = usable_mib(map);
    assert!(
        mib > 1536.0 && mib <= 2048.0,
        "usable RAM {mib} MiB does not fit a 2 GiB machine: {map}"
    );
    assert!(
        t.find("[hv] largest free region: 0x").is_some(),
        "no largest free region\n{run}"
    );

    // The verdict comes after everything else the hypervisor printed.
    let result = t.position("NEXUS RESULT: ").expect("verdict checked above");
    assert!(banner < result && t.position("[hv] memory map: ") < Some(result));
    assert_eq!(
        t.lines()
            .iter()
            .rev()
            .find(|l| !l.is_empty())
            .map(String::as_str),
        Some("NEXUS RESULT: PASS")
    );
}

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn fat_disk_image_boots_like_the_directory() {
    let run = boot("qemu_boot_img", |b| {
        Disk::Image(
            b.esp_harness_image(&nexus_e2e::checks::policy_file("qemu-dev.toml"))
                .unwrap_or_else(|e| panic!("{e}")),
        )
    });
    run.expect_pass()
        .unwrap_or_else(|e| panic!("build/esp.img does not boot: {e}"));
    assert!(
        run.transcript.find("[hv] NexusOS hypervisor ").is_some(),
        "{run}"
    );
}
