// Blue-pill of the boot CPU: the running code continues as a guest.
//
// u64 nexus_svm_bluepill(state: *mut RunState, vmcb: *mut u8, host_stack_top: u64,
//                        host_loop: extern "sysv64" fn(*mut c_void) -> !, ctx: *mut c_void)
//
// Records the callee-saved registers, the stack pointer and the resume
// address (label 1) as the guest's state, then switches to the host stack
// and calls host_loop(ctx), which enters the guest with VMRUN and never
// returns. The guest resumes at label 1 with the caller's stack and
// registers and returns 1 from this function, now in guest mode.

.global nexus_svm_bluepill
nexus_svm_bluepill:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15

    mov [rdi + 0x18], rbx
    mov [rdi + 0x28], rbp
    mov [rdi + 0x60], r12
    mov [rdi + 0x68], r13
    mov [rdi + 0x70], r14
    mov [rdi + 0x78], r15
    mov qword ptr [rdi + 0x00], 1       // guest RAX: the return value
    mov [rdi + 0x20], rsp               // guest RSP
    lea rax, [rip + 1f]
    mov [rsi + 0x578], rax              // VMCB save.RIP
    pushfq
    pop rax
    mov [rsi + 0x570], rax              // VMCB save.RFLAGS

    mov rsp, rdx
    mov rdi, r8
    call rcx
    ud2

1:
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

// void nexus_read_selectors(out: *mut [u16; 4])  -> CS, SS, DS, ES
.global nexus_read_selectors
nexus_read_selectors:
    mov ax, cs
    mov [rdi], ax
    mov ax, ss
    mov [rdi + 2], ax
    mov ax, ds
    mov [rdi + 4], ax
    mov ax, es
    mov [rdi + 6], ax
    ret

// u64 nexus_read_dr7(void)
.global nexus_read_dr7
nexus_read_dr7:
    mov rax, dr7
    ret

// void nexus_fxsave(area: *mut [u8; 512])  (16-byte aligned)
.global nexus_fxsave
nexus_fxsave:
    fxsave64 [rdi]
    ret

// void nexus_vmsave(vmcb_pa: u64): store this CPU's FS, GS, TR, LDTR and
// syscall MSRs into the VMCB (capturing the current state as a guest's).
.global nexus_vmsave
nexus_vmsave:
    mov rax, rdi
    vmsave rax
    ret
