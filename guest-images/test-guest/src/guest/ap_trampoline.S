// Real-mode code an AP of the partition runs after a start-up IPI with vector V:
// the BSP copies it to V << 12, and the SIPI starts it at CS = V << 8, IP = 0.
// It records CS and the IP of one of its own instructions (both as the SIPI
// loaded them), counts its starts, greets through COM1, sets the marker last and
// spins (the end of the partition stops it).
// Layout of the page: [code][message] ... 0x800: marker (u32), 0x804: CS (u16),
// 0x806: IP of label `nexus_ap_trampoline_ip_probe` (u16), 0x808: starts (u16);
// the stack grows down from 0x1000.

    .pushsection .rodata.nexus_ap_trampoline, "a"
    .global nexus_ap_trampoline
    .global nexus_ap_trampoline_end
    .global nexus_ap_trampoline_ip_probe
    .code16
nexus_ap_trampoline:
    cli
    movw %cs, %ax
    movw %ax, %ds
    // INIT left SS:SP = 0:0, outside the partition: a stack at the page's end.
    movw %ax, %ss
    movw $0x1000, %sp
    movw %ax, (0x804)
    call nexus_ap_trampoline_ip_probe
nexus_ap_trampoline_ip_probe:
    popw %bx
    movw %bx, (0x806)
    incw (0x808)
    movw $(.Lap_message - nexus_ap_trampoline), %si
    movw $0x3f8, %dx
.Lap_print:
    movb (%si), %al
    testb %al, %al
    jz .Lap_done
    outb %al, %dx
    incw %si
    jmp .Lap_print
.Lap_done:
    movl $0x50554150, (0x800)
.Lap_spin:
    pause
    jmp .Lap_spin
.Lap_message:
    .asciz "ap: hello from real mode\n"
nexus_ap_trampoline_end:
    .code64
    .popsection
