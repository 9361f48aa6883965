// Real-mode start-up code of the primary probe (Intel syntax, assembled by global_asm! in
// trampoline.rs and copied to offset 0 of a page below 1 MiB; a start-up IPI with that
// page's vector starts a CPU here with CS = vector << 8, IP = 0). Layout of the page:
// report.rs. It records the CPU in its slot and halts:
//   flags  = 1 when CPUID 0x40000000 returns the NexusOS signature ("Nexu" in EBX)
//   slot   = [0x400 + 4 * APIC ID] (APIC ID from CPUID 1, EBX bits 31:24):
//            bits 31:16 = 0x5052, bits 15:8 |= flags, bits 7:0 += 1 (written last)
//   [0x3fc] += 1 (every run)
// No stack is used.

.section .text
.global nexus_probe_trampoline
.global nexus_probe_trampoline_end
.code16
nexus_probe_trampoline:
    cli
    mov ax, cs
    mov ds, ax
    xor di, di
    mov eax, 0x40000000
    xor ecx, ecx
    cpuid
    cmp ebx, 0x7578654e
    jne 1f
    mov di, 1
1:
    mov eax, 1
    xor ecx, ecx
    cpuid
    shr ebx, 24
    shl bx, 2
    lock inc dword ptr [0x3fc]
    mov word ptr [bx + 0x402], 0x5052
    mov ax, di
    lock or byte ptr [bx + 0x401], al
    lock inc byte ptr [bx + 0x400]
2:
    cli
    hlt
    jmp 2b
nexus_probe_trampoline_end:
.code64
