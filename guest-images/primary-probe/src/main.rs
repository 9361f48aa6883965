//! The primary probe: a UEFI application that a policy's primary partition boots instead of
//! an OS (`boot = '\NEXUS\PRIMARY-PROBE.EFI'`), so that the hypervisor's rules for the
//! primary's CPUs are exercised from inside the primary, on both backends:
//!
//! 1. the primary's other CPUs start through the emulated INIT/SIPI (INIT, SIPI, SIPI
//!    written into the trapped xAPIC ICR, real-mode code below 1 MiB that records itself);
//! 2. INIT, SIPI and NMI to every CPU the primary does not own (the review's C2) reach
//!    nothing, through the xAPIC ICR and, where the CPU has one, the x2APIC ICR MSR;
//! 3. self-NMIs (the review's H1) reach the primary's NMI handler, each exactly once;
//! 4. the emulators' exit ports and the hypervisor's console UART (the review's L7, M4) do
//!    not end or forge the run;
//! 5. a broadcast start-up IPI restarts the primary's own APs and runs on the other CPUs
//!    only as the hypervisor's firmware proxy, in guest mode, once their partitions ended.
//!
//! It prints `probe: ` lines on the firmware's console (COM1) and a last
//! `probe: RESULT PASS (...)` or `probe: RESULT FAIL (<why>)`, then powers the machine off
//! (ResetSystem shutdown). docs/testing.md describes the image tests that boot it. The
//! pure parts (command line, CPU lists, judging) are host-tested; on the host this file
//! builds to a program that only says what it is.
#![cfg_attr(target_os = "uefi", no_std, no_main)]

// The pure parts; on the host only their tests use them.
#[cfg_attr(not(target_os = "uefi"), allow(dead_code))]
mod cpus;
#[cfg_attr(not(target_os = "uefi"), allow(dead_code))]
mod options;
#[cfg_attr(not(target_os = "uefi"), allow(dead_code))]
mod report;

#[cfg(target_os = "uefi")]
mod acpi;
#[cfg(target_os = "uefi")]
mod apic;
#[cfg(target_os = "uefi")]
mod console;
#[cfg(target_os = "uefi")]
mod mp;
#[cfg(target_os = "uefi")]
mod nmi;
#[cfg(target_os = "uefi")]
mod ports;
#[cfg(target_os = "uefi")]
mod probe;
#[cfg(target_os = "uefi")]
mod time;
#[cfg(target_os = "uefi")]
mod trampoline;

#[cfg(target_os = "uefi")]
#[uefi::entry]
fn efi_main() -> uefi::Status {
    probe::run()
}

#[cfg(target_os = "uefi")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    say!("RESULT FAIL (probe panic: {info})");
    probe::power_off()
}

#[cfg(not(target_os = "uefi"))]
fn main() {
    eprintln!(
        "nexus-primary-probe is a UEFI application the primary partition boots \
         (target x86_64-unknown-uefi, policies/*-probe.toml)"
    );
}
