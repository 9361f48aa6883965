//! Checks of a primary-probe run (guest-images/primary-probe booted as the primary's OS by
//! `policies/qemu-probe.toml` or `policies/bochs-probe.toml`), shared by the SVM and VMX
//! image tests: the probe's own lines on the guest console (COM1) and what the hypervisor
//! logged on its console (COM2) about the same events.

use crate::Transcript;
use std::fmt::Display;

/// What a probe run is checked against (the policy's CPUs and the probe's options).
#[derive(Clone, Copy, Debug)]
pub struct ProbeRun<'a> {
    /// The policy under `policies/`.
    pub policy: &'a str,
    /// The primary's CPUs, the boot CPU first.
    pub primary: &'a [u32],
    /// Every CPU the primary does not own: test partitions' and unassigned ones.
    pub foreign: &'a [u32],
    /// The CPU of the `spin` test partition, which runs while the probe attacks it.
    pub spin_cpu: u32,
    /// The CPU has x2APIC: the C2 and H1 rounds run a second time through the ICR MSR.
    pub x2apic: bool,
    /// Self-NMIs per round (the cmdline's `nmis=`).
    pub nmis: u32,
    /// The firmware publishes a MADT (QEMU; not OVMF under Bochs).
    pub madt: bool,
}

/// policies/qemu-probe.toml on QEMU TCG (5 CPUs, no x2APIC).
pub const QEMU_PROBE: ProbeRun<'static> = ProbeRun {
    policy: "qemu-probe.toml",
    primary: &[0, 1],
    foreign: &[2, 3, 4],
    spin_cpu: 3,
    x2apic: false,
    nmis: 10_000,
    madt: true,
};

/// policies/bochs-probe.toml on Bochs (4 Tiger Lake CPUs with x2APIC, no ACPI tables).
pub const BOCHS_PROBE: ProbeRun<'static> = ProbeRun {
    policy: "bochs-probe.toml",
    primary: &[0, 1],
    foreign: &[2, 3],
    spin_cpu: 2,
    x2apic: true,
    nmis: 2_000,
    madt: false,
};

/// Dropped IPIs the hypervisor logs one by one before it only counts them
/// (`launch::exit_host::LOG_FIRST`).
pub const LOGGED_DROPS: usize = 16;

/// `[1, 4]` as the probe prints CPU lists.
fn list(ids: &[u32]) -> String {
    let inner: Vec<String> = ids.iter().map(u32::to_string).collect();
    format!("[{}]", inner.join(", "))
}

/// The vectors of the probe's three start-up pages: own APs, foreign CPUs, broadcast.
fn vectors(console: &Transcript, run: &dyn Display) -> [String; 3] {
    let line = console
        .find("probe: start-up code: ")
        .unwrap_or_else(|| panic!("the probe placed no start-up code\n{run}"));
    let words: Vec<&str> = line
        .split(['(', ')', ' '])
        .filter(|w| w.starts_with("0x") && w.len() == 4)
        .collect();
    match words.as_slice() {
        [a, b, c] => [a.to_string(), b.to_string(), c.to_string()],
        _ => panic!("no three vectors in {line:?}\n{run}"),
    }
}

/// The probe's checks passed, and the hypervisor's log shows the same events.
pub fn check_probe_run(console: &Transcript, hv: &Transcript, run: &dyn Display, p: &ProbeRun<'_>) {
    // The probe's verdict and rounds.
    let result = console
        .find("probe: RESULT ")
        .unwrap_or_else(|| panic!("the probe printed no RESULT line\n{run}"));
    assert!(
        result.starts_with("probe: RESULT PASS ("),
        "the probe failed: {result}\n{run}"
    );
    assert_eq!(console.count("probe: FAIL "), 0, "a round failed\n{run}");
    assert!(console.find("probe: powering off").is_some(), "{run}");
    let [start_v, foreign_v, broadcast_v] = vectors(console, run);
    let own_aps = &p.primary[1..];
    let own = list(own_aps);
    let foreign = list(p.foreign);
    let rounds: Vec<String> = [
        format!(
            "probe: ok   ap-start: APIC {own} started by INIT, SIPI {start_v}, SIPI {start_v} through the xapic ICR: each ran the start-up code once, in guest mode"
        ),
        format!("probe: ok   mp-services: StartupThisAP ran the procedure on APIC {own} in guest mode"),
        format!(
            "probe: ok   c2 xapic: INIT, SIPI {foreign_v}, SIPI {foreign_v}, NMI to APIC {foreign}: nothing ran"
        ),
        format!(
            "probe: ok   h1 xapic: self-NMIs through the xapic ICR: {n} sent, {n} counted, 0 late, 0 lost",
            n = p.nmis
        ),
        "probe: ok   l7: wrote 0x10 and 0x11 to 0xf4".to_string(),
        format!("probe: ok   broadcast: INIT, SIPI {broadcast_v}, SIPI {broadcast_v} to all but self"),
        format!(
            "probe: ok   c2 later: the start-up code sent to foreign CPUs (vector {foreign_v}) never ran anywhere"
        ),
    ]
    .into_iter()
    .chain(p.madt.then(|| {
        format!(
            "probe: ok   madt: the primary's MADT lists exactly its CPUs {}",
            list(p.primary)
        )
    }))
    .chain(if p.x2apic {
        vec![
            format!(
                "probe: ok   c2 x2apic: INIT, SIPI {foreign_v}, SIPI {foreign_v}, NMI to APIC {foreign}: nothing ran"
            ),
            format!(
                "probe: ok   h1 x2apic: self-NMIs through the x2apic ICR: {n} sent, {n} counted, 0 late, 0 lost",
                n = p.nmis
            ),
        ]
    } else {
        vec!["probe: skip c2 x2apic / h1 x2apic: the CPU has no x2APIC".to_string()]
    })
    .collect();
    for r in &rounds {
        assert!(console.find(r).is_some(), "missing {r:?}\n{run}");
    }
    let broadcast = console.find("probe: ok   broadcast: ").unwrap();
    assert!(
        broadcast.contains(&format!(
            "own APs {own} restarted, foreign {foreign} each ran the code once in guest mode"
        )),
        "{broadcast}\n{run}"
    );

    // The hypervisor: the own APs started by the emulated SIPI at the probe's vector.
    for ap in own_aps {
        let line = format!("[hv] partition primary: CPU {ap} started by SIPI vector {start_v}:");
        assert!(hv.find(&line).is_some(), "missing {line:?}\n{run}");
    }
    // Nothing runs at the vector sent to foreign CPUs; the broadcast runs a firmware proxy
    // on each foreign CPU, once.
    assert_eq!(
        hv.count(&format!(
            "runs the primary's firmware from start-up vector {foreign_v}"
        )),
        0,
        "code ran at the vector sent to foreign CPUs ({foreign_v})\n{run}"
    );
    for f in p.foreign {
        let proxy = format!("[hv] CPU {f}: runs the primary's firmware from start-up vector {broadcast_v} until it halts");
        assert_eq!(hv.count(&proxy), 1, "{proxy}\n{run}");
    }
    // Every IPI to a foreign CPU dropped and counted: four per CPU and round (INIT, SIPI,
    // SIPI, NMI), the broadcast INIT (it only arms the proxy) and the broadcast's second SIPI
    // (a proxy runs once per INIT); the log names the first 16.
    let rounds_n = if p.x2apic { 2 } else { 1 };
    let expected = p.foreign.len() * (4 * rounds_n + 2);
    let drops: Vec<&str> = hv
        .find_all("[hv] partition primary: IPI to CPU ")
        .filter(|l| l.contains(" dropped (not its CPU"))
        .collect();
    assert_eq!(drops.len(), expected.min(LOGGED_DROPS), "{drops:#?}\n{run}");
    let last = drops.last().unwrap();
    assert!(
        last.ends_with(&format!("; {} dropped so far", drops.len())),
        "{last}\n{run}"
    );
    for f in p.foreign {
        assert!(
            drops
                .iter()
                .any(|l| l.starts_with(&format!("[hv] partition primary: IPI to CPU {f} "))),
            "no dropped IPI to CPU {f}\n{run}"
        );
    }
    assert!(
        drops.iter().all(|l| p
            .foreign
            .iter()
            .any(|f| l.starts_with(&format!("[hv] partition primary: IPI to CPU {f} ")))),
        "an IPI to the primary's own CPU was dropped: {drops:#?}\n{run}"
    );
    // The attacks reached the `spin` partition while it ran (all of its directed IPIs logged
    // before its stop), it still ended as expected, and its proxy ran only after that.
    let spin_stop = hv
        .position("[hv] partition spin stopped at rip ")
        .unwrap_or_else(|| panic!("the spin partition never stopped\n{run}"));
    let before_stop = hv.lines()[..spin_stop]
        .iter()
        .filter(|l| {
            l.starts_with(&format!(
                "[hv] partition primary: IPI to CPU {} dropped",
                p.spin_cpu
            ))
        })
        .count();
    assert!(
        before_stop >= 4 * rounds_n,
        "only {before_stop} IPIs to CPU {} came while spin ran (raise its yield count)\n{run}",
        p.spin_cpu
    );
    assert!(
        hv.find("[hv] partition spin: exited with code 0 (expected exit 0) -> PASS")
            .is_some(),
        "{run}"
    );
    let spin_proxy = hv
        .position(&format!(
            "[hv] CPU {}: runs the primary's firmware",
            p.spin_cpu
        ))
        .unwrap();
    assert!(
        spin_proxy > spin_stop,
        "a proxy ran on spin's CPU while it ran\n{run}"
    );
    // The test partitions' verdict; no host exception; nothing the primary wrote into the
    // hypervisor's console or its exit ports shows up.
    assert!(hv.find("[hv] test partitions: PASS").is_some(), "{run}");
    assert!(
        hv.find("host exception").is_none(),
        "a host exception\n{run}"
    );
    assert!(
        hv.find("forged").is_none(),
        "what the primary forged reached the hypervisor's log\n{run}"
    );
    assert!(
        hv.result_line().is_none(),
        "a NEXUS RESULT line in a run without the harness\n{run}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_CONSOLE: &[u8] = include_bytes!("../testdata/console-qemu_svm_probe.log");
    const QEMU_HV: &[u8] = include_bytes!("../testdata/serial-qemu_svm_probe.log");
    const BOCHS_CONSOLE: &[u8] = include_bytes!("../testdata/console-bochs_vmx_probe.log");
    const BOCHS_HV: &[u8] = include_bytes!("../testdata/serial-bochs_vmx_probe.log");

    const QEMU: ProbeRun<'static> = QEMU_PROBE;

    #[test]
    fn the_expectations_are_the_policies() {
        for p in [QEMU_PROBE, BOCHS_PROBE] {
            let policy = nexus_policy::load_file(crate::checks::policy_file(p.policy)).unwrap();
            let primary = policy.primary().unwrap();
            assert_eq!(primary.apic_ids, p.primary, "{}", p.policy);
            let cmdline = primary.cmdline.as_deref().unwrap();
            assert!(cmdline.contains(&format!("nmis={}", p.nmis)), "{cmdline}");
            let cpus: Vec<String> = p.primary.iter().map(u32::to_string).collect();
            assert!(
                cmdline.contains(&format!("cpus={}", cpus.join(","))),
                "{cmdline}"
            );
            let spin = policy.partitions.iter().find(|x| x.name == "spin").unwrap();
            assert_eq!(spin.apic_ids, [p.spin_cpu], "{}", p.policy);
            let mut foreign: Vec<u32> = policy
                .machine
                .cpus
                .iter()
                .map(|c| c.apic_id)
                .filter(|a| !p.primary.contains(a))
                .collect();
            foreign.sort();
            assert_eq!(foreign, p.foreign, "{}", p.policy);
        }
    }

    fn qemu() -> (Transcript, Transcript) {
        (
            Transcript::from_bytes(QEMU_CONSOLE),
            Transcript::from_bytes(QEMU_HV),
        )
    }

    fn edited(t: &Transcript, from: &str, to: &str) -> Transcript {
        Transcript::from_lines(t.lines().iter().map(|l| l.replace(from, to)).collect())
    }

    #[test]
    fn recorded_probe_runs_pass_the_checks() {
        let (c, h) = qemu();
        check_probe_run(&c, &h, &"qemu", &QEMU);
        let (c, h) = (
            Transcript::from_bytes(BOCHS_CONSOLE),
            Transcript::from_bytes(BOCHS_HV),
        );
        check_probe_run(&c, &h, &"bochs", &BOCHS_PROBE);
    }

    #[test]
    #[should_panic(expected = "the probe failed: probe: RESULT FAIL")]
    fn a_failing_probe_fails() {
        let (c, h) = qemu();
        check_probe_run(
            &edited(&c, "RESULT PASS", "RESULT FAIL"),
            &h,
            &"qemu",
            &QEMU,
        );
    }

    #[test]
    #[should_panic(expected = "code ran at the vector sent to foreign CPUs")]
    fn a_directed_start_up_ipi_that_ran_fails() {
        // the hypervisor ran code at the vector the probe sent to a foreign CPU
        let (c, h) = qemu();
        let [_, foreign_v, broadcast_v] = vectors(&c, &"qemu");
        let h = edited(
            &h,
            &format!("CPU 4: runs the primary's firmware from start-up vector {broadcast_v}"),
            &format!("CPU 4: runs the primary's firmware from start-up vector {foreign_v}"),
        );
        check_probe_run(&c, &h, &"qemu", &QEMU);
    }

    #[test]
    #[should_panic(expected = "came while spin ran")]
    fn attacks_after_the_spin_partition_ended_prove_nothing() {
        let (c, h) = qemu();
        let mut lines: Vec<String> = h.lines().to_vec();
        let stop = lines
            .iter()
            .position(|l| l.starts_with("[hv] partition spin stopped at rip "))
            .unwrap();
        let line = lines.remove(stop);
        let first_drop = lines.iter().position(|l| l.contains("IPI to CPU")).unwrap();
        lines.insert(first_drop, line);
        check_probe_run(&c, &Transcript::from_lines(lines), &"qemu", &QEMU);
    }

    #[test]
    #[should_panic(expected = "forged")]
    fn a_forged_line_in_the_hypervisor_log_fails() {
        let (c, h) = qemu();
        let mut lines = h.lines().to_vec();
        lines.push("[hv] test partitions: PASS (forged by the primary)".into());
        check_probe_run(&c, &Transcript::from_lines(lines), &"qemu", &QEMU);
    }

    #[test]
    #[should_panic(expected = "x2apic")]
    fn a_run_without_the_x2apic_rounds_fails_where_the_cpu_has_x2apic() {
        let (c, h) = qemu();
        check_probe_run(
            &c,
            &h,
            &"qemu",
            &ProbeRun {
                x2apic: true,
                ..QEMU
            },
        );
    }
}
