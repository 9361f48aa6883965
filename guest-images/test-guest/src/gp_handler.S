// The #GP handler of the test guest's probes that expect a #GP (IDT vector 13, installed by
// faults.rs around the XSETBV probe and the hostile probes).
//
// The probe stores the address to resume at in NEXUS_GP_RESUME just before the instruction
// that must fault. The handler disarms it, records the error code in NEXUS_GP_ERROR, counts
// the fault in NEXUS_GP_COUNT, makes the saved RIP the resume address, drops the error code
// and returns with iretq. Unarmed (a #GP nobody expected) it halts: the hypervisor stops a
// test partition on HLT, so the run fails instead of going on somewhere unexpected.
//
// Frame on entry (64-bit mode, same privilege): [rsp] error code, [rsp+8] RIP, [rsp+16] CS,
// [rsp+24] RFLAGS, [rsp+32] RSP, [rsp+40] SS.

.section .text

.global nexus_guest_gp_handler
nexus_guest_gp_handler:
    push rax
    mov rax, [rip + NEXUS_GP_RESUME]
    test rax, rax
    jz 2f
    mov [rsp + 16], rax
    mov qword ptr [rip + NEXUS_GP_RESUME], 0
    mov rax, [rsp + 8]
    mov [rip + NEXUS_GP_ERROR], rax
    inc qword ptr [rip + NEXUS_GP_COUNT]
    pop rax
    add rsp, 8
    iretq
2:
    hlt
    jmp 2b
