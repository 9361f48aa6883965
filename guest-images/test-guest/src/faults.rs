//! Catching the #GP a probe expects: a minimal GDT and an IDT whose #GP gate
//! (`gp_handler.S`) resumes right after the faulting instruction, loaded only around the
//! probe, so that an expected #GP comes back to the guest instead of becoming a triple fault
//! (the partition runs without an IDT otherwise). Used by the XSETBV probe and the hostile
//! probes (RDPMC, EFER/CR0/CR4 writes).

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

core::arch::global_asm!(include_str!("gp_handler.S"));

extern "C" {
    /// Vector 13's handler (`gp_handler.S`); never called from Rust.
    fn nexus_guest_gp_handler();
}

/// Where the #GP handler resumes (0: no #GP expected, the handler halts).
#[no_mangle]
pub static NEXUS_GP_RESUME: AtomicU64 = AtomicU64::new(0);
/// The error code of the last #GP.
#[no_mangle]
static NEXUS_GP_ERROR: AtomicU64 = AtomicU64::new(0);
/// #GPs taken.
#[no_mangle]
static NEXUS_GP_COUNT: AtomicU64 = AtomicU64::new(0);

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

/// Execute one instruction that may raise #GP, inside [`catching_gp`]: the handler resumes
/// right after it. Operands as for `asm!`.
#[macro_export]
macro_rules! may_fault {
    ($insn:literal $(, $($operands:tt)*)?) => {
        core::arch::asm!(
            "lea {t}, [rip + 2f]",
            "mov [{resume}], {t}",
            $insn,
            "2:",
            t = out(reg) _,
            resume = in(reg) $crate::faults::NEXUS_GP_RESUME.as_ptr(),
            $($($operands)*)?
        )
    };
}

/// Run `probe` with a GDT and an IDT whose #GP gate resumes after the faulting instruction
/// (each such instruction goes through [`may_fault!`]); the guest's own (empty) tables are
/// back afterwards. Returns the error code of the #GP if one was taken.
pub fn catching_gp(probe: impl FnOnce()) -> Option<u64> {
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
    // SAFETY: ring 0. The tables live on this stack frame until the old ones are loaded back
    // at the end; the code and data selectors match what CS and SS hold.
    unsafe {
        asm!("sgdt [{}]", "sidt [{}]", in(reg) &mut gdtr, in(reg) &mut idtr, options(nostack));
        asm!("lgdt [{}]", "lidt [{}]", in(reg) &new_gdtr, in(reg) &new_idtr, options(nostack));
    }
    probe();
    // SAFETY: as above: the tables the guest had.
    unsafe {
        asm!("lgdt [{}]", "lidt [{}]", in(reg) &gdtr, in(reg) &idtr, options(nostack));
    }
    // Disarm, in case nothing faulted.
    NEXUS_GP_RESUME.store(0, Ordering::SeqCst);
    (NEXUS_GP_COUNT.load(Ordering::SeqCst) != faults).then(|| NEXUS_GP_ERROR.load(Ordering::SeqCst))
}
