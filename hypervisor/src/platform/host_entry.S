// Host-mode entry points (assembled through global_asm! in exceptions.rs).
//
// nexus_vector_0xNN: one stub per IDT vector, each 16-byte aligned at nexus_vector_0x00 + 16 * N
// (exceptions.rs computes the IDT from that and checks it against nexus_vector_0xff). Vectors
// without a CPU-pushed error code push 0 so every frame has the same shape; then the vector
// number is pushed and every stub continues in nexus_exception_common, which saves the GPRs and
// calls nexus_host_exception(frame). That returns 0 when the frame may be resumed (an NMI, an
// external interrupt; the handler may have changed the saved RIP) and never returns otherwise.
// Vectors with an error code: 8, 10-14, 17, 21, 29, 30.
//
// nexus_switch_stack(top, entry, arg): continue on another stack, calling entry(arg) (which
// never returns).
//
// nexus_idle_wait(word): return once the u32 at `word` is non-zero, halting (interrupts off,
// woken by an NMI) while it is zero. An NMI handler that interrupts the window from the check
// to the HLT (nexus_idle_restart ..= nexus_idle_hlt) restarts it at the check, so a wake-up
// that lands between the check and the HLT is never lost.
//
// All use the System V calling convention (arguments in rdi, rsi, rdx); the Rust sides
// declare them `extern "sysv64"`, since the UEFI target's `extern "C"` is the Microsoft one.

.section .text

.global nexus_exception_common
nexus_exception_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    mov rbx, rsp
    and rsp, -16
    cld
    call nexus_host_exception
    mov rsp, rbx
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq

.global nexus_switch_stack
nexus_switch_stack:
    mov rsp, rdi
    and rsp, -16
    mov rdi, rdx
    xor ebp, ebp
    call rsi
2:  cli
    hlt
    jmp 2b

// void nexus_idle_wait(const u32 *word)
.global nexus_idle_wait
.global nexus_idle_restart
.global nexus_idle_hlt
nexus_idle_wait:
nexus_idle_restart:
    cmp dword ptr [rdi], 0
    jne 3f
nexus_idle_hlt:
    hlt
    jmp nexus_idle_restart
3:  ret

.macro vector_stub n
    .balign 16
    .global nexus_vector_\n
nexus_vector_\n:
    .if (\n == 8) || ((\n >= 10) && (\n <= 14)) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
    push \n
    .else
    push 0
    push \n
    .endif
    jmp nexus_exception_common
.endm

.irp hi, 0,1,2,3,4,5,6,7,8,9,a,b,c,d,e,f
.irp lo, 0,1,2,3,4,5,6,7,8,9,a,b,c,d,e,f
vector_stub 0x\hi\()\lo
.endr
.endr
