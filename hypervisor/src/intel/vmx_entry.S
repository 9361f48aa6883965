// VM entry and exit path for the VMX backend (Intel syntax).
//
// u64 nexus_vmx_run(Gprs *gprs, u64 launched)   [sysv64: rdi, rsi]
//   Saves the host's callee-saved registers, records RSP as HOST_RSP, loads
//   the guest's general-purpose registers (RSP lives in the VMCS) and enters
//   with VMLAUNCH (launched == 0) or VMRESUME. Returns:
//     0  after a VM exit (guest registers stored back into *gprs),
//     1  VMfailInvalid (CF=1), 2  VMfailValid (ZF=1: see the VM-instruction
//        error field), 3  the VMWRITE of HOST_RSP itself failed.
// nexus_vmx_exit is HOST_RIP: the processor arrives here on every VM exit
//   with RSP = the HOST_RSP written below, whose top slot holds `gprs`.

.text
.global nexus_vmx_run
.global nexus_vmx_exit

.set HOST_RSP_FIELD, 0x6C14

nexus_vmx_run:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi                        // [rsp] = gprs, read back on exit
    mov rax, HOST_RSP_FIELD
    vmwrite rax, rsp
    jbe 3f                          // CF or ZF: the write failed
    mov rax, rdi
    test rsi, rsi                   // flags survive the MOVs below
    mov rcx, [rax + 8]
    mov rdx, [rax + 16]
    mov rbx, [rax + 24]
    mov rbp, [rax + 40]
    mov rsi, [rax + 48]
    mov rdi, [rax + 56]
    mov r8,  [rax + 64]
    mov r9,  [rax + 72]
    mov r10, [rax + 80]
    mov r11, [rax + 88]
    mov r12, [rax + 96]
    mov r13, [rax + 104]
    mov r14, [rax + 112]
    mov r15, [rax + 120]
    mov rax, [rax]
    jnz 1f
    vmlaunch
    jmp 2f
1:
    vmresume
2:
    // Entry failed: still in host mode on the host stack; guest values in registers.
    mov eax, 2
    jnc 4f
    mov eax, 1
    jmp 4f
3:
    mov eax, 3
4:
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

nexus_vmx_exit:
    push rax                        // guest RAX
    mov rax, [rsp + 8]              // gprs
    mov [rax + 8], rcx
    mov [rax + 16], rdx
    mov [rax + 24], rbx
    mov [rax + 40], rbp
    mov [rax + 48], rsi
    mov [rax + 56], rdi
    mov [rax + 64], r8
    mov [rax + 72], r9
    mov [rax + 80], r10
    mov [rax + 88], r11
    mov [rax + 96], r12
    mov [rax + 104], r13
    mov [rax + 112], r14
    mov [rax + 120], r15
    pop rcx
    mov [rax], rcx
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    xor eax, eax
    ret


// void nexus_vmx_unblock_nmis(void)
// A VM exit caused by an NMI leaves NMIs blocked in VMX root operation until the next IRET;
// this IRETs to its own caller (same CS, SS, RSP and RFLAGS).
.global nexus_vmx_unblock_nmis
nexus_vmx_unblock_nmis:
    mov rax, rsp
    push 0
    mov [rsp], ss
    push rax
    pushfq
    push 0
    mov [rsp], cs
    lea rcx, [rip + 1f]
    push rcx
    iretq
1:
    ret
