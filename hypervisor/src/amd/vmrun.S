// VMRUN entry/exit for the SVM backend.
//
// nexus_svm_run(state: *mut RunState)  (System V ABI)
//
// RunState layout (see run_state.rs, checked by a test there):
//   0x00..0x80  guest GPRs in x86 encoding order (RAX and RSP slots unused:
//               the VMCB holds those)
//   0x80        guest VMCB physical address
//   0x88        host save VMCB physical address (VMSAVE/VMLOAD of the host's
//               FS/GS/TR/LDTR/syscall MSRs, which VMRUN does not switch)
//   0x90        non-zero: VMRUN with RFLAGS.IF set (physical interrupts exit the guest
//               under V_INTR_MASKING and the INTR intercept; GIF keeps them off the host)
//
// VMRUN saves and restores host RAX, RSP, RIP, RFLAGS, segments and control
// registers itself; the other GPRs are switched here. The x87/SSE/AVX registers are
// not switched at all: the host is built soft-float and never touches them, so they
// hold the guest's state throughout. No FXRSTOR (or FRSTOR/FLDENV/XRSTOR) may appear
// here: under QEMU's TCG each one also rewrites CPU 0's hidden mode flags from the
// executing thread without a lock, which can undo a world switch CPU 0 makes at that
// moment (docs/boot.md, "The QEMU FXRSTOR race").

.global nexus_svm_run
nexus_svm_run:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdi

    clgi
    mov rax, [rdi + 0x88]
    vmsave rax
    mov rax, [rdi + 0x80]
    vmload rax

    mov rcx, [rdi + 0x08]
    mov rdx, [rdi + 0x10]
    mov rbx, [rdi + 0x18]
    mov rbp, [rdi + 0x28]
    mov rsi, [rdi + 0x30]
    mov r8,  [rdi + 0x40]
    mov r9,  [rdi + 0x48]
    mov r10, [rdi + 0x50]
    mov r11, [rdi + 0x58]
    mov r12, [rdi + 0x60]
    mov r13, [rdi + 0x68]
    mov r14, [rdi + 0x70]
    mov r15, [rdi + 0x78]
    cmp qword ptr [rdi + 0x90], 0
    mov rdi, [rdi + 0x38]
    je 1f
    sti
1:
    vmrun rax
    // Where VMRUN resumes the host (the RIP it saves in the host save area).
.global nexus_svm_resume
nexus_svm_resume:
    cli

    // #VMEXIT: RAX and RSP are the host's again; the rest are the guest's.
    push rdi
    mov rdi, [rsp + 8]
    mov [rdi + 0x08], rcx
    mov [rdi + 0x10], rdx
    mov [rdi + 0x18], rbx
    mov [rdi + 0x28], rbp
    mov [rdi + 0x30], rsi
    mov [rdi + 0x40], r8
    mov [rdi + 0x48], r9
    mov [rdi + 0x50], r10
    mov [rdi + 0x58], r11
    mov [rdi + 0x60], r12
    mov [rdi + 0x68], r13
    mov [rdi + 0x70], r14
    mov [rdi + 0x78], r15
    pop rax
    mov [rdi + 0x38], rax

    mov rax, [rdi + 0x80]
    vmsave rax
    mov rax, [rdi + 0x88]
    vmload rax
    stgi

    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
