//! Guest-side call helpers for x86_64: execute CPUID and the transport
//! instruction. The only `unsafe` code in the crate.
//!
//! Which helper to use comes from discovery ([`crate::cpuid::discover`] with
//! [`cpuid`]); [`call`] dispatches on the discovered transport.
#![allow(unsafe_code)]

use core::arch::asm;

use crate::call::{HypercallArgs, Reply};
use crate::cpuid::{CpuidResult, Transport};

/// Execute CPUID for `leaf` (subleaf 0).
pub fn cpuid(leaf: u32) -> CpuidResult {
    // CPUID is unprivileged and available on every x86_64 CPU; it reads no memory.
    #[allow(unused_unsafe)]
    // SAFETY: see above; the intrinsic has no other preconditions.
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, 0) };
    CpuidResult {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Make a call with `VMCALL` (Intel VT-x).
///
/// # Safety
/// Must run in a guest of a hypervisor implementing this ABI over `VMCALL`
/// (elsewhere the instruction faults with #UD). Calls that name guest memory
/// (console_write, partition_info, ring calls) let the hypervisor read or
/// write that memory; the caller must own it for the duration of the call.
pub unsafe fn vmcall(call: &HypercallArgs) -> Reply {
    let [a0, a1, a2, a3, a4, a5] = call.args;
    let (rax, rdx): (u64, u64);
    // SAFETY: the caller guarantees the hypervisor; it changes only RAX and RDX.
    unsafe {
        asm!("vmcall",
            inout("rax") call.number => rax, in("rdi") a0, in("rsi") a1,
            inout("rdx") a2 => rdx, in("r10") a3, in("r8") a4, in("r9") a5,
            options(nostack));
    }
    Reply::from_registers(rax, rdx)
}

/// Make a call with `VMMCALL` (AMD-V).
///
/// # Safety
/// As [`vmcall`], for a hypervisor using `VMMCALL`.
pub unsafe fn vmmcall(call: &HypercallArgs) -> Reply {
    let [a0, a1, a2, a3, a4, a5] = call.args;
    let (rax, rdx): (u64, u64);
    // SAFETY: the caller guarantees the hypervisor; it changes only RAX and RDX.
    unsafe {
        asm!("vmmcall",
            inout("rax") call.number => rax, in("rdi") a0, in("rsi") a1,
            inout("rdx") a2 => rdx, in("r10") a3, in("r8") a4, in("r9") a5,
            options(nostack));
    }
    Reply::from_registers(rax, rdx)
}

/// Make a call through a port-I/O doorbell: `OUT` of EAX (the number's low
/// half) to `port`. `OUT` needs DX for the port, so the third argument
/// travels in R11 with this transport.
///
/// # Safety
/// `port` must be the doorbell discovered through CPUID; a write to another
/// port reaches whatever device decodes it. Otherwise as [`vmcall`].
pub unsafe fn port_io_call(port: u16, call: &HypercallArgs) -> Reply {
    let [a0, a1, a2, a3, a4, a5] = call.args;
    let (rax, rdx): (u64, u64);
    // SAFETY: the caller guarantees `port` is the doorbell; the VMM changes only RAX and RDX.
    unsafe {
        asm!("out dx, eax",
            inout("rax") call.number => rax, in("rdi") a0, in("rsi") a1,
            inout("rdx") port as u64 => rdx, in("r11") a2, in("r10") a3, in("r8") a4, in("r9") a5,
            options(nostack));
    }
    Reply::from_registers(rax, rdx)
}

/// Make a call through an MMIO doorbell: `mov dword [r11], eax` (bytes
/// `41 89 03`), a 32-bit store of EAX (the number's low half) to `doorbell`,
/// with the arguments in RDI, RSI, RDX, R10, R8, R9 as for `VMCALL`. This is
/// both the MMIO transport and, since ABI 1.1, the user-space doorbell of a
/// VMCALL/VMMCALL partition (`docs/abi.md`, "The user-space doorbell"); the
/// reply's registers are [`Reply::registers`].
///
/// # Safety
/// `doorbell` must be the guest's uncached mapping of the discovered doorbell
/// guest-physical address ([`crate::cpuid::Info::user_doorbell`]); a store
/// through any other pointer writes arbitrary memory. Calls that name guest
/// memory let the hypervisor read or write those guest-physical pages: the
/// caller must own them, and keep them resident at those addresses, for the
/// duration of the call.
pub unsafe fn mmio_call(doorbell: *mut u32, call: &HypercallArgs) -> Reply {
    let [a0, a1, a2, a3, a4, a5] = call.args;
    let (rax, rdx): (u64, u64);
    // SAFETY: the caller guarantees `doorbell` maps the doorbell; the hypervisor (or VMM)
    // changes only RAX and RDX.
    unsafe {
        asm!("mov dword ptr [r11], eax",
            inout("rax") call.number => rax, in("rdi") a0, in("rsi") a1,
            inout("rdx") a2 => rdx, in("r11") doorbell, in("r10") a3, in("r8") a4, in("r9") a5,
            options(nostack));
    }
    Reply::from_registers(rax, rdx)
}

/// Make a call over `transport`. For [`Transport::Mmio`] the doorbell's
/// guest-physical address is used as the pointer, which is right for guests
/// that identity-map it (as NexusOS test guests do).
///
/// # Safety
/// `transport` must be the one discovered through CPUID, and for MMIO the
/// doorbell must be identity-mapped. Otherwise as [`vmcall`].
pub unsafe fn call(transport: Transport, call: &HypercallArgs) -> Reply {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match transport {
            Transport::Vmcall => vmcall(call),
            Transport::Vmmcall => vmmcall(call),
            Transport::PortIo { port } => port_io_call(port, call),
            Transport::Mmio { gpa } => mmio_call(gpa as *mut u32, call),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_cpuid_has_no_nexus_signature() {
        // The host is not a NexusOS guest: discovery must say so, not misparse.
        let r = crate::cpuid::discover(cpuid);
        assert_eq!(r, Err(crate::status::Status::Unsupported));
        assert!(cpuid(0).eax >= 1, "leaf 0 reports at least leaf 1");
    }

    #[test]
    fn mmio_call_stores_the_numbers_low_half_and_keeps_the_registers() {
        // Without a hypervisor behind it the store lands in ordinary memory and
        // nothing answers: EAX is written, RAX and RDX come back as loaded (a
        // number that reads back as a status shows RAX unchanged).
        let mut cell: u32 = 0xdead_beef;
        let call = HypercallArgs {
            number: crate::Status::NoMemory.raw(),
            args: [1, 2, 0x99, 4, 5, 6],
        };
        // SAFETY: `cell` is a live, aligned u32 owned by this test.
        let reply = unsafe { mmio_call(&mut cell, &call) };
        assert_eq!(
            cell, 0xffff_fffa,
            "EAX, the low half of RAX (-6), is stored"
        );
        assert_eq!(reply.status, crate::Status::NoMemory);
        assert_eq!(reply.value, 0x99, "RDX as loaded");
    }
}
