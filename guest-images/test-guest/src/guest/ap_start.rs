//! `ap-start APIC VECTOR`: start another CPU of this partition the way an OS
//! starts an AP (INIT, SIPI, SIPI through the x2APIC ICR). The AP runs
//! real-mode code at `vector << 12` that records the CS and IP the start-up
//! IPI gave it; the second SIPI finds it running and must not restart it.
//!
//! (A second start after an INIT that stops the running AP is not tried: in
//! Bochs 2.7, the VMX test machine, an INIT that caused a VM exit stays pending
//! and exits again at every later VM entry, so that AP could never run again.)

use super::Console;
use crate::checks::{self, ApReport, AP_MARKER};
use core::fmt::Write;
use nexus_drivers::apic::{Icr, X2APIC_ICR_MSR};

core::arch::global_asm!(include_str!("ap_trampoline.S"), options(att_syntax));

extern "C" {
    static nexus_ap_trampoline: u8;
    static nexus_ap_trampoline_end: u8;
    static nexus_ap_trampoline_ip_probe: u8;
}

/// Spins (a PAUSE and a load each) before an AP counts as not started.
const START_SPINS: u64 = 200_000_000;

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: ring 0; the hypervisor emulates the x2APIC ICR for test
    // partitions (INIT/SIPI to the partition's own CPUs, #GP otherwise).
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32,
                         in("edx") (value >> 32) as u32, options(nostack))
    };
}

/// Copy the trampoline to `page` and clear its report area.
fn place_trampoline(page: u64) -> u16 {
    // SAFETY: linker symbols of the trampoline's start, end and probe label.
    let (start, end, probe) = unsafe {
        (
            &nexus_ap_trampoline as *const u8,
            &nexus_ap_trampoline_end as *const u8,
            &nexus_ap_trampoline_ip_probe as *const u8,
        )
    };
    let len = end as usize - start as usize;
    for i in 0..len {
        // SAFETY: `page` is in this partition's low region (identity-mapped),
        // the code is `len` bytes of this image's rodata.
        unsafe { core::ptr::write_volatile((page + i as u64) as *mut u8, *start.add(i)) };
    }
    for off in 0x800..0x80au64 {
        // SAFETY: as above, the report area of the same page.
        unsafe { core::ptr::write_volatile((page + off) as *mut u8, 0) };
    }
    (probe as usize - start as usize) as u16
}

fn read_report(page: u64) -> ApReport {
    // SAFETY: the report area of the trampoline page, written by the AP.
    unsafe {
        ApReport {
            marker: core::ptr::read_volatile((page + 0x800) as *const u32),
            cs: core::ptr::read_volatile((page + 0x804) as *const u16),
            ip: core::ptr::read_volatile((page + 0x806) as *const u16),
            starts: core::ptr::read_volatile((page + 0x808) as *const u16),
        }
    }
}

fn wait_for_marker(page: u64) -> bool {
    for _ in 0..START_SPINS {
        if read_report(page).marker == AP_MARKER {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

pub fn run(apic: u32, vector: u8) -> u32 {
    let page = (vector as u64) << 12;
    let probe = place_trampoline(page);
    say!("ap-start: INIT, SIPI {vector:#04x}, SIPI {vector:#04x} to CPU {apic} (from its reset state)");
    wrmsr(X2APIC_ICR_MSR, Icr::init(apic).to_x2apic());
    wrmsr(X2APIC_ICR_MSR, Icr::startup(apic, vector).to_x2apic());
    if !wait_for_marker(page) {
        say!("FAIL ap-start: CPU {apic} did not run the code at {page:#x}");
        return 14;
    }
    let report = read_report(page);
    if let Err(why) = checks::check_ap_report(&report, vector, probe) {
        say!("FAIL ap-start: {why} ({report:?})");
        return 15;
    }
    say!(
        "ok   ap-start: CPU {apic} ran real-mode code at {:04x}:0000, its call returned to {:04x}:{:04x}",
        report.cs,
        report.cs,
        report.ip
    );
    // The protocol's second SIPI reaches a running AP: dropped, as on hardware (a
    // restart would count a second start).
    wrmsr(X2APIC_ICR_MSR, Icr::startup(apic, vector).to_x2apic());
    for _ in 0..1_000_000 {
        core::hint::spin_loop();
    }
    if read_report(page) != report {
        say!("FAIL ap-start: the second SIPI restarted CPU {apic}");
        return 16;
    }
    say!("ok   ap-start: the second SIPI left the running CPU {apic} alone");
    0
}
