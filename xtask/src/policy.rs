//! `cargo xtask policy check FILE`, and the quick policy check `build` does before compiling.

use std::path::Path;

use anyhow::{anyhow, Result};
use nexus_policy::Policy;

/// Parses and validates `path`; the error is the policy crate's precise message (file,
/// partition, field, conflict).
pub fn load(path: &Path) -> Result<Policy> {
    nexus_policy::load_file(path).map_err(|e| anyhow!("{e}"))
}

/// QEMU CPUs for `policy`: as many as its `[machine] cpus` lists (QEMU numbers APIC IDs
/// from 0), else `fallback`.
pub fn qemu_cpus(policy: &Policy, fallback: u32) -> u32 {
    match policy.machine.cpus.iter().map(|c| c.apic_id).max() {
        Some(top) => top + 1,
        None => fallback,
    }
}

/// Prints the readable table (partitions, cores, memory, VRAM, ABI groups), or fails with the
/// error.
pub fn check(path: &Path) -> Result<()> {
    let policy = load(path)?;
    println!("{}", policy.table().trim_end());
    let compiled = nexus_policy::compile(&policy);
    println!(
        "\n{}: valid ({} bytes compiled)",
        path.display(),
        compiled.len()
    );
    Ok(())
}
