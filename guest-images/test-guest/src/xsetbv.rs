//! The XSETBV probe's bare-metal half: CR4.OSXSAVE, XGETBV/XSETBV, and a minimal GDT and
//! IDT so that the invalid XSETBV's #GP comes back to the probe (`gp_handler.S`) instead of
//! becoming a triple fault. Which values it writes and how it reports are in
//! [`crate::checks`].

use crate::checks::{self, XsetbvProbe, XCR0_INVALID};
use core::arch::asm;
use core::arch::x86_64::{__cpuid, __cpuid_count};
use core::sync::atomic::{AtomicU64, Ordering};

core::arch::global_asm!(include_str!("gp_handler.S"));

extern "C" {
    /// Vector 13's handler (`gp_handler.S`); never called from Rust.
    fn nexus_guest_gp_handler();
}

/// Where the #GP handler resumes (0: no #GP expected, the handler halts).
#[no_mangle]
static NEXUS_GP_RESUME: AtomicU64 = AtomicU64::new(0);
/// The error code of the last #GP.
#[no_mangle]
static NEXUS_GP_ERROR: AtomicU64 = AtomicU64::new(0);
/// #GPs taken.
#[no_mangle]
static NEXUS_GP_COUNT: AtomicU64 = AtomicU64::new(0);

const CR4_OSXSAVE: u64 = 1 << 18;
/// 64-bit ring-0 code (selector 0x08) and flat data (0x10), accessed bits set so the CPU
/// never writes the table: the selectors the hypervisor starts the guest with.
const GDT: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
const GP_VECTOR: usize = 13;

/// An LGDT/LIDT operand.
#[repr(C, packed)]
#[derive(Default)]
struct TablePointer {
    limit: u16,
    base: u64,
}

/// Gates 0..=13 (16 bytes each); only #GP's is present.
#[repr(C, align(16))]
struct Idt([u64; 2 * (GP_VECTOR + 1)]);

/// # Safety
/// CR4.OSXSAVE is set.
unsafe fn xgetbv() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller's contract; XCR0 always exists.
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (hi as u64) << 32 | lo as u64
}

/// # Safety
/// CR4.OSXSAVE is set and `value` is a valid XCR0 for this CPU.
unsafe fn xsetbv(value: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        asm!("xsetbv", in("ecx") 0, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nomem, nostack))
    };
}

/// Enable XSAVE, write the XCR0 values [`checks::xcr0_writes`] picks and read each back,
/// then try an invalid one, which must raise #GP and change nothing. `None` when the CPU
/// (as the hypervisor reports it) has no XSAVE.
pub fn probe() -> Option<XsetbvProbe> {
    if __cpuid(1).ecx & (1 << 26) == 0 {
        return None;
    }
    let d = __cpuid_count(0xd, 0);
    let supported = (d.edx as u64) << 32 | d.eax as u64;
    // SAFETY: ring 0; the CPU has XSAVE, so CR4.OSXSAVE is a bit it accepts.
    unsafe {
        let cr4: u64;
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
        asm!("mov cr4, {}", in(reg) cr4 | CR4_OSXSAVE, options(nostack));
    }
    // SAFETY: OSXSAVE is set (above).
    let initial = unsafe { xgetbv() };
    let (values, n) = checks::xcr0_writes(supported);
    let mut writes = [(0, 0); 2];
    for (slot, &v) in writes.iter_mut().zip(&values[..n]) {
        // SAFETY: OSXSAVE is set; x87|SSE, with AVX only when CPUID 0xD reports it.
        *slot = (v, unsafe {
            xsetbv(v);
            xgetbv()
        });
    }
    let gp = invalid_xsetbv();
    // SAFETY: OSXSAVE is set.
    let after = unsafe { xgetbv() };
    Some(XsetbvProbe {
        initial,
        writes,
        n,
        gp,
        after,
    })
}

/// XSETBV of [`XCR0_INVALID`] with a GDT and an IDT whose #GP gate resumes right after it;
/// the guest's own (empty) tables are back afterwards. Returns the #GP's error code.
fn invalid_xsetbv() -> Option<u64> {
    let handler = nexus_guest_gp_handler as *const () as u64;
    let mut idt = Idt([0; 2 * (GP_VECTOR + 1)]);
    // Interrupt gate, present, DPL 0, selector 0x08, offset split 15:0 / 31:16 / 63:32.
    idt.0[2 * GP_VECTOR] =
        (handler & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((handler >> 16) & 0xffff) << 48;
    idt.0[2 * GP_VECTOR + 1] = handler >> 32;
    let gdt = GDT;
    let new_gdtr = TablePointer {
        limit: (core::mem::size_of_val(&gdt) - 1) as u16,
        base: gdt.as_ptr() as u64,
    };
    let new_idtr = TablePointer {
        limit: (core::mem::size_of_val(&idt) - 1) as u16,
        base: idt.0.as_ptr() as u64,
    };
    let (mut gdtr, mut idtr) = (TablePointer::default(), TablePointer::default());
    let faults = NEXUS_GP_COUNT.load(Ordering::SeqCst);
    // SAFETY: ring 0. The tables live on this stack frame until the old ones are loaded
    // back at the end; the code and data selectors match what CS and SS hold. The XSETBV
    // must fault (x87 clear): the handler resumes at label 2 with nothing else changed;
    // OSXSAVE is set, so it cannot #UD.
    unsafe {
        asm!("sgdt [{}]", "sidt [{}]", in(reg) &mut gdtr, in(reg) &mut idtr, options(nostack));
        asm!("lgdt [{}]", "lidt [{}]", in(reg) &new_gdtr, in(reg) &new_idtr, options(nostack));
        asm!(
            "lea {t}, [rip + 2f]",
            "mov [{resume}], {t}",
            "xsetbv",
            "2:",
            t = out(reg) _,
            resume = in(reg) NEXUS_GP_RESUME.as_ptr(),
            in("ecx") 0,
            in("eax") XCR0_INVALID as u32,
            in("edx") (XCR0_INVALID >> 32) as u32,
        );
        asm!("lgdt [{}]", "lidt [{}]", in(reg) &gdtr, in(reg) &idtr, options(nostack));
    }
    // Disarm, in case it did not fault.
    NEXUS_GP_RESUME.store(0, Ordering::SeqCst);
    (NEXUS_GP_COUNT.load(Ordering::SeqCst) != faults).then(|| NEXUS_GP_ERROR.load(Ordering::SeqCst))
}
