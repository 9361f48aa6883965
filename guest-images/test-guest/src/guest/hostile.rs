//! Hostile probes: each tries one thing a partition must not be able to do to the machine or
//! its neighbours (docs/hypervisor.md, "Security review findings"), says what happened, and
//! ends with `partition_exit(0)` when the hypervisor answered as documented (non-zero when it
//! did not). The image tests check the hypervisor's side of each (counters, stop reports).

use super::{call, com1, Console};
use crate::checks::{
    self, Attack, FLOOD_CALLS, FLOOD_COM1_BYTES, FLOOD_COM1_FIRST, FLOOD_LINE, WBINVD_LOOPS,
};
use crate::faults::catching_gp;
use core::arch::asm;
use core::arch::x86_64::__cpuid;
use core::fmt::Write;
use nexus_abi::cpuid::Transport;
use nexus_abi::ring::PartitionInfo;
use nexus_abi::{Hypercall, Status};

pub fn run(attack: Attack, info: &PartitionInfo<'_>) -> u32 {
    match attack {
        Attack::Invd => invd(),
        Attack::Wbinvd => wbinvd(),
        Attack::Rdpmc => rdpmc(),
        Attack::Mwait => mwait(),
        Attack::Flood => flood(),
        Attack::FloodCom1 => flood_com1(),
        Attack::Registers => registers(),
        Attack::HighGpa => high_gpa(),
        Attack::Scan => scan(info),
    }
}

/// INVD with a freshly written line: a no-op for a test partition (nothing is dropped, the
/// line keeps its value).
fn invd() -> u32 {
    let mut marker: u64 = 0;
    // SAFETY: a local variable.
    unsafe { core::ptr::write_volatile(&mut marker, 0x4e45_5855_535f_494e) };
    say!("invd: executing INVD after writing a marker (it must not be dropped)");
    // SAFETY: ring 0; INVD at worst drops this partition's own dirty lines.
    unsafe { asm!("invd", options(nostack)) };
    // SAFETY: as above.
    let back = unsafe { core::ptr::read_volatile(&marker) };
    if back == 0x4e45_5855_535f_494e {
        say!("invd: returned, marker intact");
        0
    } else {
        say!("FAIL invd: marker lost ({back:#x})");
        30
    }
}

/// WBINVD in a loop: each must come back (a no-op) without flushing anyone's caches.
fn wbinvd() -> u32 {
    say!("wbinvd: executing WBINVD {WBINVD_LOOPS} times");
    for _ in 0..WBINVD_LOOPS {
        // SAFETY: ring 0.
        unsafe { asm!("wbinvd", options(nostack)) };
    }
    say!("wbinvd: {WBINVD_LOOPS} WBINVDs returned");
    0
}

/// RDPMC of counter 0: #GP, no counter reaches a test partition.
fn rdpmc() -> u32 {
    let (mut lo, mut hi) = (0u32, 0u32);
    let gp = catching_gp(|| {
        // SAFETY: ring 0 inside `catching_gp`: a #GP resumes after the RDPMC.
        unsafe { crate::may_fault!("rdpmc", in("ecx") 0, inout("eax") lo, inout("edx") hi) };
    });
    match gp {
        Some(code) => {
            say!("rdpmc: counter 0 -> #GP({code:#x})");
            0
        }
        None => {
            say!(
                "FAIL rdpmc: counter 0 read {:#x}",
                (hi as u64) << 32 | lo as u64
            );
            31
        }
    }
}

/// MONITOR on a local line, then MWAIT: must return at once.
fn mwait() -> u32 {
    if __cpuid(1).ecx & (1 << 3) == 0 {
        say!("FAIL mwait: CPUID reports no MONITOR/MWAIT");
        return 32;
    }
    let line = [0u64; 8];
    say!("mwait: MONITOR, then MWAIT (must return at once)");
    // SAFETY: ring 0; MONITOR arms a local line, MWAIT with hints 0, no extensions.
    unsafe {
        asm!("monitor", in("rax") line.as_ptr(), in("ecx") 0, in("edx") 0, options(nostack));
        asm!("mwait", in("eax") 0, in("ecx") 0, options(nostack));
    }
    say!("mwait: returned");
    0
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// `console_write` of whole 4 KiB pages of lines, [`FLOOD_CALLS`] times: the budget prints
/// its burst, drops the rest and says so.
fn flood() -> u32 {
    say!(
        "flood: {FLOOD_CALLS} console_write calls of 4096 bytes ({} bytes, lines of {FLOOD_LINE})",
        FLOOD_CALLS as usize * 4096
    );
    match console_pages(FLOOD_CALLS, 0) {
        Ok((written, _)) => {
            say!("flood: done, the hypervisor accepted {written} bytes");
            0
        }
        Err(s) => {
            say!("FAIL flood: console_write -> {s}");
            33
        }
    }
}

/// `calls` pages of flood lines numbered from `next` through `console_write`: the bytes the
/// hypervisor accepted and the next line number.
fn console_pages(calls: u32, mut next: u32) -> Result<(u64, u32), Status> {
    let mut page = Page([0; 4096]);
    let mut written = 0u64;
    for _ in 0..calls {
        next = checks::flood_lines(&mut page.0, next);
        let r = call(
            Hypercall::ConsoleWrite.number(),
            [page.0.as_ptr() as u64, 4096, 0, 0, 0, 0],
        );
        written += r.result()?;
    }
    Ok((written, next))
}

/// [`FLOOD_COM1_FIRST`] bytes of lines through `console_write`, which spend the budget's
/// burst, then [`FLOOD_COM1_BYTES`] to COM1 byte by byte: the same budget covers both paths,
/// and the COM1 bytes get only its refill, however slowly each exit goes.
fn flood_com1() -> u32 {
    say!(
        "flood-com1: {FLOOD_COM1_FIRST} bytes through console_write, then {FLOOD_COM1_BYTES} bytes to COM1 with out 0x3f8"
    );
    let mut next = match console_pages(FLOOD_COM1_FIRST / 4096, 0) {
        Ok((_, next)) => next,
        Err(s) => {
            say!("FAIL flood-com1: console_write -> {s}");
            return 33;
        }
    };
    let mut page = Page([0; 4096]);
    let mut sent = 0;
    while sent < FLOOD_COM1_BYTES {
        next = checks::flood_lines(&mut page.0, next);
        if let Ok(text) = core::str::from_utf8(&page.0) {
            com1(text);
        }
        sent += 4096;
    }
    say!("flood-com1: done");
    0
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: ring 0; EFER is an MSR the hypervisor lets test partitions read.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) };
    (hi as u64) << 32 | lo as u64
}

/// WRMSR of `value`, expected to fault; the #GP's error code.
fn wrmsr_gp(msr: u32, value: u64) -> Option<u64> {
    catching_gp(|| {
        // SAFETY: ring 0 inside `catching_gp`: a #GP resumes after the WRMSR; if it does not
        // fault the value was valid for the (virtual) CPU.
        unsafe {
            crate::may_fault!("wrmsr", in("ecx") msr, in("eax") value as u32,
                              in("edx") (value >> 32) as u32)
        };
    })
}

/// MOV to CR0 (`cr4`: CR4) of `value`, expected to fault.
fn write_cr_gp(cr4: bool, value: u64) -> Option<u64> {
    catching_gp(|| {
        // SAFETY: ring 0 inside `catching_gp`: the value has a reserved bit, a #GP resumes
        // after the MOV.
        unsafe {
            if cr4 {
                crate::may_fault!("mov cr4, {v}", v = in(reg) value);
            } else {
                crate::may_fault!("mov cr0, {v}", v = in(reg) value);
            }
        }
    })
}

fn read_cr(cr4: bool) -> u64 {
    let v: u64;
    // SAFETY: ring 0, reading a control register.
    unsafe {
        if cr4 {
            asm!("mov {}, cr4", out(reg) v, options(nomem, nostack));
        } else {
            asm!("mov {}, cr0", out(reg) v, options(nomem, nostack));
        }
    }
    v
}

/// EFER, CR0 and CR4 writes the processor refuses: each must raise #GP and change nothing
/// (review L1, L2: before, some reached the VMCB/VMCS and failed the next entry). EFER writes
/// exit on both backends; CR0/CR4 writes exit only on VMX (the hypervisor emulates them
/// there). On SVM they are the processor's own and are not tried: QEMU 7.2 TCG, the SVM test
/// machine, accepts CR0 bits 63:32 that hardware refuses.
fn registers() -> u32 {
    const EFER: u32 = 0xc000_0080;
    const LME: u64 = 1 << 8;
    let efer = rdmsr(EFER);
    let (cr0, cr4) = (read_cr(false), read_cr(true));
    let vmx = super::transport() == Transport::Vmcall;
    let cases: [(&str, Option<Option<u64>>); 4] = [
        (
            "wrmsr EFER with bit 63 (reserved)",
            Some(wrmsr_gp(EFER, efer | 1 << 63)),
        ),
        (
            "wrmsr EFER clearing LME under paging",
            Some(wrmsr_gp(EFER, efer & !LME)),
        ),
        (
            "mov cr0 with bit 32 (reserved)",
            vmx.then(|| write_cr_gp(false, cr0 | 1 << 32)),
        ),
        (
            "mov cr4 with bit 31 (reserved)",
            vmx.then(|| write_cr_gp(true, cr4 | 1 << 31)),
        ),
    ];
    let mut failed = 0;
    for (what, gp) in cases {
        match gp {
            None => say!("registers: {what}: the processor's own on SVM (no exit), not tried"),
            Some(Some(code)) => say!("registers: {what} -> #GP({code:#x})"),
            Some(None) => {
                say!("FAIL registers: {what} did not fault");
                failed += 1;
            }
        }
    }
    let after = (rdmsr(EFER), read_cr(false), read_cr(true));
    if after != (efer, cr0, cr4) {
        say!(
            "FAIL registers: EFER/CR0/CR4 changed: {after:x?}, were {:x?}",
            (efer, cr0, cr4)
        );
        failed += 1;
    } else {
        say!("registers: EFER {efer:#x}, CR0 {cr0:#x}, CR4 {cr4:#x} unchanged");
    }
    if failed == 0 {
        0
    } else {
        34
    }
}

/// Hypercall buffers at its own memory's address with bit 48 set (an alias, if the tables
/// dropped the high bits) and with the bit above MAXPHYADDR set: BadAddress, nothing printed.
fn high_gpa() -> u32 {
    let phys_bits = if __cpuid(0x8000_0000).eax >= 0x8000_0008 {
        __cpuid(0x8000_0008).eax & 0xff
    } else {
        36
    };
    let secret = b"SECRET-ALIAS-LEAK\n";
    let mut buf = [0u8; 32];
    buf[..secret.len()].copy_from_slice(secret);
    let own = buf.as_ptr() as u64;
    let (gpas, n) = checks::high_gpas(own, phys_bits);
    say!("high-gpa: MAXPHYADDR {phys_bits}, buffer at {own:#x}");
    let mut failed = 0;
    for gpa in &gpas[..n] {
        for (number, args) in [
            (
                Hypercall::ConsoleWrite,
                [*gpa, secret.len() as u64, 0, 0, 0, 0],
            ),
            (Hypercall::PartitionInfo, [*gpa & !7, 512, 0, 0, 0, 0]),
        ] {
            let s = call(number.number(), args).status;
            if s == Status::BadAddress {
                say!("ok   {number} at {gpa:#x} -> {s}");
            } else {
                say!(
                    "FAIL {number} at {gpa:#x} -> {s} (expected {})",
                    Status::BadAddress
                );
                failed += 1;
            }
        }
    }
    if failed == 0 {
        0
    } else {
        35
    }
}

extern "C" {
    /// The end of this image in memory (after .bss), from the linker.
    static _end: u8;
}

/// Read all of its memory between the image and the stack: every byte must be 0, whatever
/// was there before the hypervisor claimed the region (review M6).
fn scan(info: &PartitionInfo<'_>) -> u32 {
    // SAFETY: only the address of the linker symbol is taken.
    let image_end = unsafe { &_end as *const u8 as u64 };
    let (start, end) = checks::scan_range(image_end, info.memory_base, info.memory_size);
    say!(
        "scan: reading {start:#x}..{end:#x} ({} KiB outside image, stack and page tables)",
        (end - start) >> 10
    );
    let mut stale = 0u64;
    let mut first = None;
    let mut at = start;
    while at < end {
        // SAFETY: inside this partition's own, identity-mapped region, outside anything in use.
        let w = unsafe { core::ptr::read_volatile(at as *const u64) };
        if w != 0 {
            stale += w.to_le_bytes().iter().filter(|b| **b != 0).count() as u64;
            first.get_or_insert((at, w));
        }
        at += 8;
    }
    match first {
        None => {
            say!("scan: all {} bytes are zero", end - start);
            0
        }
        Some((addr, w)) => {
            say!("FAIL scan: {stale} stale byte(s), first at {addr:#x} ({w:#018x})");
            36
        }
    }
}
