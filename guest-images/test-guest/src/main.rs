//! The NexusOS test guest: a `no_std` x86-64 program that the hypervisor
//! loads into a test partition and starts in 64-bit mode (identity paging,
//! stack set by the hypervisor). It finds NexusOS through CPUID, talks to
//! its console through `console_write`, reads its command line through
//! `partition_info`, and runs the test the command line names:
//!
//! - `hypercalls`: calls from every group, checking each documented status,
//!   then the XSETBV probe (XCR0 written and read back, an invalid value
//!   must raise #GP);
//! - `isolation [write] [ADDR]`: reads (or writes) memory outside its
//!   partition and must be stopped by the hypervisor (default address: the
//!   16 MiB just below its own memory, i.e. the neighbouring partition);
//! - `fail`: reports failure on purpose;
//! - `triple-fault`, `port`, `msr`, `hlt`: fault-containment probes (a
//!   triple fault, a denied port, a refused MSR, a HLT) that must stop only
//!   this partition; their policy cmdline says `expect=...`;
//! - hostile probes (`invd`, `wbinvd`, `rdpmc`, `mwait`, `flood`,
//!   `flood-com1`, `registers`, `high-gpa`, `scan`): each tries one attack on
//!   the machine or its neighbours and exits 0 when the hypervisor answered as
//!   documented (`guest::hostile`); MMIO attacks use `isolation ADDR`.
//! - `spin N`: `N` `yield` calls, then exit 0 (a partition still busy while the primary
//!   acts, see guest-images/primary-probe).
//! - `manage ID`: manages partition `ID` (policy role `ai` or `containers`) through the
//!   management calls: refused calls first, then small programs ([`payload`]) loaded,
//!   started, watched and stopped in it (an exit, a manager's stop, a fault, ten cycles).
//!
//! The result goes back through `partition_exit(code)` (0 = passed).
//! Pure logic (command line, expected statuses) lives in [`checks`] and is
//! tested on the host; the bare-metal part is in `guest`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod checks;
#[cfg(target_os = "none")]
mod faults;
#[cfg(target_os = "none")]
mod guest;
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod payload;
#[cfg(target_os = "none")]
mod xsetbv;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("nexus-test-guest runs inside a NexusOS test partition (target x86_64-unknown-none)");
}
