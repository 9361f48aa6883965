//! The XSETBV probe's bare-metal half: CR4.OSXSAVE, XGETBV/XSETBV, and the invalid XSETBV
//! whose #GP comes back to the probe ([`crate::faults`]) instead of becoming a triple fault.
//! Which values it writes and how it reports are in [`crate::checks`].

use crate::checks::{self, XsetbvProbe, XCR0_INVALID};
use core::arch::asm;
use core::arch::x86_64::{__cpuid, __cpuid_count};

const CR4_OSXSAVE: u64 = 1 << 18;

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

/// XSETBV of [`XCR0_INVALID`], which must raise #GP (x87 clear); returns its error code.
fn invalid_xsetbv() -> Option<u64> {
    crate::faults::catching_gp(|| {
        // SAFETY: ring 0, inside `catching_gp`: the XSETBV must fault and the handler resumes
        // after it with nothing else changed; OSXSAVE is set, so it cannot #UD.
        unsafe {
            crate::may_fault!(
                "xsetbv",
                in("ecx") 0,
                in("eax") XCR0_INVALID as u32,
                in("edx") (XCR0_INVALID >> 32) as u32,
            )
        };
    })
}
