//! The primary's Linux without the hypervisor: Debian's kernel and the project's initramfs,
//! booted by OVMF from QEMU's `-kernel` (`cargo xtask build` fetched and wrote them). Checks
//! what the with-hypervisor tests rely on: `/init` is reached and runs the command,
//! every QEMU CPU is online, and `nexusctl info` says it is not under NexusOS.

use nexus_e2e::checks::policy_file;
use nexus_e2e::initramfs::Initramfs;
use nexus_e2e::linux::{direct_cmdline, qemu_config, LinuxBoot, LinuxRun};
use nexus_e2e::BuildDir;

/// Fewer CPUs than the project's default machine: QEMU TCG runs a thread per vCPU, and this
/// build machine has two cores.
const SMP: u32 = 2;

#[test]
#[ignore = "boots images: run through cargo xtask test"]
fn linux_alone_reaches_init_with_every_cpu_and_nexusctl_says_not_nexusos() {
    let build = BuildDir::from_env().unwrap_or_else(|e| panic!("{e}"));
    let initrd = build.linux_dir().join("initrd-qemu_linux_plain.img");
    Initramfs::from_build(
        &build,
        Some("nproc\nnexusctl info\necho \"nexusctl status $?\""),
    )
    .write(&initrd)
    .unwrap_or_else(|e| panic!("{e}"));
    let policy = nexus_policy::load_file(policy_file("qemu-dev.toml")).unwrap();
    let cmdline = policy.partitions[0].cmdline.as_deref().unwrap_or_default();
    let boot = LinuxBoot::Direct {
        kernel: build.kernel(),
        initrd,
        cmdline: direct_cmdline(cmdline),
    };
    let mut cfg = qemu_config("qemu_linux_plain", &boot, build.root());
    cfg.smp = SMP;
    let run = cfg.run().unwrap_or_else(|e| panic!("cannot run QEMU: {e}"));
    let linux = LinuxRun::read(run, &[]);
    let init = linux.expect_init().unwrap_or_else(|e| panic!("{e}"));
    assert!(init.uptime > 0.0, "{linux}");
    let exec = linux.expect_exec().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(exec.status, 0, "the script's last command is echo\n{linux}");

    let out = &exec.output;
    assert_eq!(
        out.first(),
        Some(&SMP.to_string()),
        "nproc must equal QEMU's -smp\n{linux}"
    );
    let refused = out
        .iter()
        .find(|l| l.starts_with("nexusctl: "))
        .unwrap_or_else(|| panic!("no nexusctl error line\n{linux}"));
    assert!(
        refused.starts_with("nexusctl: not running under NexusOS: no NexusOS signature"),
        "{refused}"
    );
    // QEMU's TCG announces itself at 0x40000000; nexusctl names it.
    assert!(refused.contains("\"TCGTCGTCGTCG\""), "{refused}");
    assert!(
        out.iter().any(|l| l == "nexusctl status 3"),
        "documented exit status 3\n{linux}"
    );
    // It powered off by itself after the command.
    assert_eq!(
        linux.run.outcome,
        nexus_e2e::Outcome::OtherExit(0),
        "{linux}"
    );
}
