//! Every privileged x86 instruction the platform layer uses, in one place.
//!
//! Each is a thin `unsafe fn` around one instruction; callers state why their use is sound.
//! Nothing else in `platform/` contains inline assembly for these instructions.

use core::arch::asm;

/// A descriptor-table register image for `lgdt`/`lidt`/`sgdt`/`sidt`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, packed)]
pub struct DescriptorTablePointer {
    /// Size of the table in bytes minus one.
    pub limit: u16,
    /// Linear address of the table.
    pub base: u64,
}

/// Read a byte from an I/O port.
///
/// # Safety
/// Must run at CPL 0 (or with the port allowed by the IOPB); reading some device ports has side
/// effects (for example popping a receive FIFO), which the caller must intend.
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller upholds this function's contract.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Write a byte to an I/O port.
///
/// # Safety
/// Must run at CPL 0; the write must not disturb a device that someone else drives.
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller upholds this function's contract.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Write a doubleword to an I/O port.
///
/// # Safety
/// As [`outb`].
#[inline]
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller upholds this function's contract.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Write back and invalidate the caches of this CPU (WBINVD).
///
/// # Safety
/// CPL 0. It may take a long time (the whole cache hierarchy is written back).
pub unsafe fn wbinvd() {
    // SAFETY: the caller guarantees CPL 0; no memory or register is changed.
    unsafe { asm!("wbinvd", options(nostack, preserves_flags)) };
}

/// IBPB: no branch prediction from before reaches code after (IA32_PRED_CMD, 0x49, bit 0).
///
/// # Safety
/// CPL 0 on a CPU that reports IBPB (CPUID.7.0:EDX[26] or 0x8000_0008 EBX[12]).
pub unsafe fn ibpb() {
    // SAFETY: the caller's contract; the command changes no architectural state.
    unsafe { wrmsr(0x49, 1) };
}

/// Write back and invalidate the L1 data cache (IA32_FLUSH_CMD, 0x10B, bit 0).
///
/// # Safety
/// CPL 0 on a CPU that reports the command (CPUID.7.0:EDX[28]).
pub unsafe fn l1d_flush() {
    // SAFETY: the caller's contract; the command changes no architectural state.
    unsafe { wrmsr(0x10b, 1) };
}

/// VERW with a memory operand holding the current DS selector: on CPUs that report
/// MD_CLEAR this overwrites the fill, store and load buffers (and, with RFDS_CLEAR, the
/// register files affected by RFDS). Only ZF changes.
///
/// # Safety
/// CPL 0 (any CPU: without MD_CLEAR it only checks the selector).
pub unsafe fn verw() {
    let ds: u16;
    // SAFETY: reading DS.
    unsafe { asm!("mov {0:x}, ds", out(reg) ds, options(nomem, nostack, preserves_flags)) };
    // SAFETY: the caller's contract; VERW reads its 2-byte operand and sets ZF.
    unsafe { asm!("verw word ptr [{}]", in(reg) &ds, options(nostack, readonly)) };
}

/// Read a model-specific register.
///
/// # Safety
/// `msr` must exist on this CPU (otherwise `#GP`), and the code must run at CPL 0.
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller upholds this function's contract.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Write a model-specific register.
///
/// # Safety
/// `msr` must exist and accept `value`; changing MSRs such as EFER can change how all following
/// code executes, which the caller must account for.
#[inline]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller upholds this function's contract.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags))
    };
}

/// Read CR0.
///
/// # Safety
/// CPL 0 only.
#[inline]
pub unsafe fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Write CR0.
///
/// # Safety
/// The new value must keep paging and protection consistent with the running code.
#[inline]
pub unsafe fn write_cr0(v: u64) {
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Read CR2 (the faulting linear address of the last page fault).
///
/// # Safety
/// CPL 0 only.
#[inline]
pub unsafe fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Read CR3 (the current page-table root and flags).
///
/// # Safety
/// CPL 0 only.
#[inline]
pub unsafe fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Load CR3 (switches page tables and flushes non-global TLB entries).
///
/// # Safety
/// `v` must point at page tables that map the running code, its stack and all data in use.
#[inline]
pub unsafe fn write_cr3(v: u64) {
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("mov cr3, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Read CR4.
///
/// # Safety
/// CPL 0 only.
#[inline]
pub unsafe fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Write CR4.
///
/// # Safety
/// The new value must be supported by the CPU and consistent with the running code.
#[inline]
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Read extended control register `index` (XGETBV; XCR0 is the XSAVE feature mask).
///
/// # Safety
/// CR4.OSXSAVE must be set (otherwise `#UD`) and `index` must be an XCR the CPU has
/// (otherwise `#GP`).
#[inline]
pub unsafe fn xgetbv(index: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller upholds this function's contract.
    unsafe {
        asm!("xgetbv", in("ecx") index, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Write extended control register `index` (XSETBV).
///
/// # Safety
/// CPL 0 with CR4.OSXSAVE set (otherwise `#UD`); `value` must be valid for XCR `index`
/// (for XCR0: x87 set, only bits CPUID.(EAX=0xD,ECX=0) reports, the pairing rules of
/// `crate::xcr0::valid`), otherwise `#GP`. The state components it enables or disables
/// change what XSAVE/XRSTOR and AVX instructions do for all following code.
#[inline]
pub unsafe fn xsetbv(index: u32, value: u64) {
    // SAFETY: the caller upholds this function's contract.
    unsafe {
        asm!("xsetbv", in("ecx") index, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nomem, nostack, preserves_flags))
    };
}

/// Load the GDT register.
///
/// # Safety
/// `ptr` must describe a valid GDT that stays alive and unchanged in the entries in use for as
/// long as it is loaded, including the descriptors of the current CS/SS.
#[inline]
pub unsafe fn lgdt(ptr: &DescriptorTablePointer) {
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("lgdt [{}]", in(reg) ptr, options(readonly, nostack, preserves_flags)) };
}

/// Store the GDT register.
///
/// # Safety
/// CPL 0 (UMIP may forbid it elsewhere).
#[inline]
pub unsafe fn sgdt() -> DescriptorTablePointer {
    let mut p = DescriptorTablePointer::default();
    // SAFETY: `p` is a writable 10-byte buffer; the caller upholds the CPL requirement.
    unsafe { asm!("sgdt [{}]", in(reg) &mut p, options(nostack, preserves_flags)) };
    p
}

/// Load the IDT register.
///
/// # Safety
/// `ptr` must describe a valid IDT whose handlers stay alive while it is loaded.
#[inline]
pub unsafe fn lidt(ptr: &DescriptorTablePointer) {
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("lidt [{}]", in(reg) ptr, options(readonly, nostack, preserves_flags)) };
}

/// Store the IDT register.
///
/// # Safety
/// CPL 0 (UMIP may forbid it elsewhere).
#[inline]
pub unsafe fn sidt() -> DescriptorTablePointer {
    let mut p = DescriptorTablePointer::default();
    // SAFETY: `p` is a writable 10-byte buffer; the caller upholds the CPL requirement.
    unsafe { asm!("sidt [{}]", in(reg) &mut p, options(nostack, preserves_flags)) };
    p
}

/// Load the task register.
///
/// # Safety
/// `selector` must name an available 64-bit TSS descriptor in the loaded GDT; `ltr` marks it busy.
#[inline]
pub unsafe fn ltr(selector: u16) {
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("ltr {0:x}", in(reg) selector, options(nostack, preserves_flags)) };
}

/// Store the task register selector.
///
/// # Safety
/// CPL 0 (UMIP may forbid it elsewhere).
#[inline]
pub unsafe fn str() -> u16 {
    let v: u16;
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("str {0:x}", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reload CS (through a far return) and set SS, DS, ES to `data`, FS and GS to null.
///
/// # Safety
/// `code` must select a present 64-bit code segment and `data` a present writable data
/// segment of the loaded GDT, at DPL 0.
pub unsafe fn reload_segments(code: u16, data: u16) {
    // SAFETY: the caller upholds this function's contract; the far return lands on the next
    // instruction with the new CS.
    unsafe {
        asm!(
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ss, {data:x}",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "xor {tmp:e}, {tmp:e}",
            "mov fs, {tmp:x}",
            "mov gs, {tmp:x}",
            code = in(reg) u64::from(code),
            data = in(reg) data,
            tmp = out(reg) _,
        )
    };
}

/// The LDT selector.
///
/// # Safety
/// CPL 0 is not required by the instruction, but UMIP makes it fault above CPL 0.
#[inline]
pub unsafe fn sldt() -> u16 {
    let v: u16;
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("sldt {0:x}", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// DR7.
///
/// # Safety
/// CPL 0.
#[inline]
pub unsafe fn read_dr7() -> u64 {
    let v: u64;
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("mov {}, dr7", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Current segment selectors `(cs, ss, ds, es, fs, gs)`.
#[inline]
pub fn read_selectors() -> [u16; 6] {
    let (cs, ss, ds, es, fs, gs): (u16, u16, u16, u16, u16, u16);
    // SAFETY: reading segment registers has no side effects at any privilege level.
    unsafe {
        asm!("mov {0:x}, cs", "mov {1:x}, ss", "mov {2:x}, ds", "mov {3:x}, es", "mov {4:x}, fs", "mov {5:x}, gs",
            out(reg) cs, out(reg) ss, out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs,
            options(nomem, nostack, preserves_flags))
    };
    [cs, ss, ds, es, fs, gs]
}

/// Current code segment selector.
#[inline]
pub fn read_cs() -> u16 {
    let v: u16;
    // SAFETY: reading CS has no side effects and is allowed at any privilege level.
    unsafe { asm!("mov {0:x}, cs", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Invalidate the TLB entry of one linear address.
///
/// # Safety
/// CPL 0 only.
#[inline]
pub unsafe fn invlpg(addr: u64) {
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("invlpg [{}]", in(reg) addr, options(nostack, preserves_flags)) };
}

/// Disable maskable interrupts.
///
/// # Safety
/// The caller must re-enable them when firmware or guests rely on interrupts.
#[inline]
pub unsafe fn cli() {
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Enable maskable interrupts.
///
/// # Safety
/// A valid IDT with handlers for every vector that may fire must be loaded.
#[inline]
pub unsafe fn sti() {
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Whether maskable interrupts are enabled (RFLAGS.IF).
#[inline]
pub fn interrupts_enabled() -> bool {
    let rflags: u64;
    // SAFETY: reading RFLAGS through the stack has no side effects.
    unsafe { asm!("pushfq; pop {}", out(reg) rflags, options(nomem, preserves_flags)) };
    rflags & (1 << 9) != 0
}

/// Halt until the next interrupt.
///
/// # Safety
/// CPL 0 only. With interrupts disabled this stops the CPU for good (except NMI/SMI/INIT).
#[inline]
pub unsafe fn hlt() {
    // SAFETY: the caller upholds this function's contract.
    unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) };
}

/// Stop this CPU for good: interrupts off, halt forever.
///
/// # Safety
/// CPL 0 only; the caller gives the CPU up (nothing it holds is released).
pub unsafe fn halt_forever() -> ! {
    loop {
        // SAFETY: the caller upholds this function's contract.
        unsafe {
            cli();
            hlt();
        }
    }
}

/// Open a one-instruction interrupt window (`sti; nop; cli`): external interrupts pending at
/// the local APIC are taken through the host IDT, whose stubs acknowledge them and return.
///
/// # Safety
/// Host mode at CPL 0 with the hypervisor's IDT loaded; called with interrupts disabled.
#[inline]
pub unsafe fn take_pending_interrupts() {
    // SAFETY: the caller upholds this function's contract; STI's one-instruction shadow
    // covers the NOP, so interrupts are taken right after it, before CLI.
    unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) };
}

/// Reset the x87 and SSE registers to their power-on values: FNINIT, MXCSR 0x1F80, XMM0-15
/// zero (the upper halves of the AVX registers are left as they are). A vCPU that does not
/// continue the CPU's own context starts from here, so nothing the CPU's previous vCPU left
/// in those registers reaches the next one; the host itself never uses them (it is built
/// soft-float), so after this they are the guest's. No FXRSTOR: under QEMU's TCG it would
/// rewrite CPU 0's mode flags from this thread (docs/boot.md, "The QEMU FXRSTOR race").
///
/// # Safety
/// CPL 0 with CR0.TS clear and CR4.OSFXSR set; the registers' previous contents are lost.
pub unsafe fn fpu_reset() {
    let mxcsr: u32 = 0x1f80;
    // SAFETY: the caller upholds this function's contract; the host keeps no values in
    // these registers (soft-float target), so nothing of the compiler's is clobbered.
    unsafe {
        asm!(
            "fninit",
            "ldmxcsr [{m}]",
            "xorps xmm0, xmm0",
            "xorps xmm1, xmm1",
            "xorps xmm2, xmm2",
            "xorps xmm3, xmm3",
            "xorps xmm4, xmm4",
            "xorps xmm5, xmm5",
            "xorps xmm6, xmm6",
            "xorps xmm7, xmm7",
            "xorps xmm8, xmm8",
            "xorps xmm9, xmm9",
            "xorps xmm10, xmm10",
            "xorps xmm11, xmm11",
            "xorps xmm12, xmm12",
            "xorps xmm13, xmm13",
            "xorps xmm14, xmm14",
            "xorps xmm15, xmm15",
            m = in(reg) &mxcsr,
            options(nostack, readonly),
        )
    };
}

// The guests' x87/SSE state stays in the registers while the host runs (see `fpu_reset`):
// a host built with SSE would corrupt it on every exit.
#[cfg(all(target_os = "uefi", target_feature = "sse"))]
compile_error!("the hypervisor must be built soft-float: guests' FPU/SSE state stays live");

/// The time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects (CR4.TSD is clear in host mode).
    unsafe { core::arch::x86_64::_rdtsc() }
}
