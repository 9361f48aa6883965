//! The management-call run (`policies/qemu-manage.toml`, `policies/bochs-manage.toml`): a
//! test partition, `manager`, manages partition `ai` through ABI 1.5's management calls.

use crate::Transcript;
use std::fmt::Display;

/// Starts the manager makes: one program that exits, one it stops, one the hypervisor stops
/// for a fault, and ten start/exit cycles.
pub const RUNS: usize = 13;

/// The transcript shows every management check passing, 11 runs that printed and exited,
/// one stopped by the manager, one stopped for the fault (the write below the partition at
/// `ai_base`), every stop with all of the partition's CPUs back and the hypervisor's page
/// use unchanged. Returns the page counts after each stop, for the log.
pub fn check_manage_run(t: &Transcript, run: &dyn Display, ai_base: u64) -> Vec<String> {
    let manager: Vec<&str> = t.partition("manager").collect();
    assert!(manager.contains(&"management checks: 0 failed"), "{run}");
    assert!(
        manager.contains(&"managed cycles: 10 of 10 exited with their own code"),
        "{run}"
    );
    assert!(!manager.iter().any(|l| l.starts_with("FAIL")), "{run}");
    // The first run and the ten cycles printed their line.
    assert_eq!(
        t.partition("ai")
            .filter(|l| *l == "hello from a managed partition")
            .count(),
        11,
        "{run}"
    );
    let stops: Vec<&str> = t.find_all("[hv] partition ai: stopped (").collect();
    assert_eq!(stops.len(), RUNS, "{run}");
    let pool: Vec<String> = stops
        .iter()
        .map(|l| {
            l.rsplit("hypervisor pages in use: ")
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(
        pool.iter().all(|p| *p == pool[0] && !p.is_empty()),
        "the hypervisor's page use changed between runs: {pool:?}\n{run}"
    );
    let with = |s: &str| stops.iter().filter(|l| l.contains(s)).count();
    assert_eq!(with("(Exited, exit code 0x600d, run 1)"), 1, "{stops:?}");
    assert_eq!(with("(Stopped, exit code 0x0, run 2)"), 1, "{stops:?}");
    assert_eq!(with("(Faulted, exit code 0x0, run 3)"), 1, "{stops:?}");
    for i in 0..10 {
        let line = format!("(Exited, exit code {:#x}, run {})", 0x1000 + i, 4 + i);
        assert_eq!(with(&line), 1, "{line} in {stops:?}");
    }
    // The fault: the write just below the partition, stopped like any isolation fault.
    let below = format!("{:#x}", ai_base - 0x1000);
    assert!(
        t.find_all("[hv] partition ai stopped at rip 0x")
            .any(|l| l.contains(&below)),
        "no stop report naming {below}\n{run}"
    );
    pool
}
