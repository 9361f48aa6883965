//! Host-mode vectors. Two kinds are resumed: an NMI (recorded for the CPU's run loop, see
//! [`super::nmi`]; a kick from another CPU or an NMI meant for the guest) and an external
//! interrupt (acknowledged at the local APIC and counted: host mode runs with interrupts off,
//! so one only arrives where the hypervisor opened a window for it). Every other vector is an
//! exception in the hypervisor itself: it is logged (vector, error code, RIP, CR2 for #PF,
//! the CPU's APIC ID) through the fatal console path, the run ends with `NEXUS RESULT: FAIL`,
//! and the CPU halts. The hypervisor never triple-faults silently.

use core::fmt;

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(include_str!("host_entry.S"));

/// Registers saved by `host_entry.S`, lowest address first, then the CPU's frame.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct ExceptionFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Mnemonic of an exception vector.
pub fn vector_name(v: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE divide error",
        "#DB debug",
        "NMI",
        "#BP breakpoint",
        "#OF overflow",
        "#BR bound range",
        "#UD invalid opcode",
        "#NM device not available",
        "#DF double fault",
        "coprocessor segment overrun",
        "#TS invalid TSS",
        "#NP segment not present",
        "#SS stack fault",
        "#GP general protection",
        "#PF page fault",
        "reserved 15",
        "#MF x87 error",
        "#AC alignment check",
        "#MC machine check",
        "#XM SIMD error",
        "#VE virtualization exception",
        "#CP control protection",
        "reserved 22",
        "reserved 23",
        "reserved 24",
        "reserved 25",
        "reserved 26",
        "reserved 27",
        "#HV hypervisor injection",
        "#VC VMM communication",
        "#SX security exception",
        "reserved 31",
    ];
    NAMES
        .get(v as usize)
        .copied()
        .unwrap_or("external interrupt")
}

/// The report printed for a host exception (pure, for tests).
pub struct Report<'a> {
    pub frame: &'a ExceptionFrame,
    pub cr2: u64,
    pub apic_id: u32,
}

impl fmt::Display for Report<'_> {
    /// Several lines; the console prefixes each one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fr = self.frame;
        write!(
            f,
            "host exception on CPU apic-id {}: vector {} ({}) error code {:#x} at rip {:#x}",
            self.apic_id,
            fr.vector,
            vector_name(fr.vector),
            fr.error_code,
            fr.rip
        )?;
        if fr.vector == 14 {
            write!(
                f,
                "\npage fault address {:#x} ({}, {}, {})",
                self.cr2,
                if fr.error_code & 1 != 0 {
                    "protection"
                } else {
                    "not present"
                },
                if fr.error_code & 2 != 0 {
                    "write"
                } else {
                    "read"
                },
                if fr.error_code & 16 != 0 {
                    "fetch"
                } else {
                    "data"
                }
            )?;
        }
        write!(
            f,
            "\ncs {:#x} rflags {:#x} rsp {:#x} ss {:#x}",
            fr.cs, fr.rflags, fr.rsp, fr.ss
        )?;
        write!(
            f,
            "\nrax {:#x} rbx {:#x} rcx {:#x} rdx {:#x}",
            fr.rax, fr.rbx, fr.rcx, fr.rdx
        )?;
        write!(
            f,
            "\nrsi {:#x} rdi {:#x} rbp {:#x} r8 {:#x}",
            fr.rsi, fr.rdi, fr.rbp, fr.r8
        )?;
        write!(
            f,
            "\nr9 {:#x} r10 {:#x} r11 {:#x} r12 {:#x}",
            fr.r9, fr.r10, fr.r11, fr.r12
        )?;
        write!(f, "\nr13 {:#x} r14 {:#x} r15 {:#x}", fr.r13, fr.r14, fr.r15)
    }
}

/// What the host does with a vector that arrived in host mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Record it for the CPU's run loop and resume.
    Nmi,
    /// Acknowledge it at the local APIC (unless spurious) and resume.
    Interrupt { eoi: bool },
    /// An exception in the hypervisor: report and halt.
    Fatal,
}

/// The spurious-interrupt vector the hypervisor's and firmware's APIC setups use (SDM: a
/// spurious interrupt is not acknowledged with EOI).
pub const SPURIOUS_VECTOR: u64 = 0xff;

/// How the host treats `vector` (pure).
pub fn classify(vector: u64) -> Disposition {
    match vector {
        2 => Disposition::Nmi,
        32..=255 => Disposition::Interrupt {
            eoi: vector != SPURIOUS_VECTOR,
        },
        _ => Disposition::Fatal,
    }
}

/// External interrupts the host acknowledged (all CPUs).
static INTERRUPTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How many external interrupts arrived in host mode so far.
pub fn host_interrupts() -> u64 {
    INTERRUPTS.load(core::sync::atomic::Ordering::Relaxed)
}

/// Stub addresses for the IDT, one per vector; `None` if the stubs are not laid out 16 bytes
/// apart as `host_entry.S` promises (then no IDT is installed rather than a wrong one).
#[cfg(target_arch = "x86_64")]
pub fn stub_addresses() -> Option<[u64; 256]> {
    extern "C" {
        fn nexus_vector_0x00();
        fn nexus_vector_0xff();
    }
    let first = nexus_vector_0x00 as *const () as u64;
    let last = nexus_vector_0xff as *const () as u64;
    if last != first + 255 * 16 {
        return None;
    }
    let mut a = [0u64; 256];
    for (v, slot) in a.iter_mut().enumerate() {
        *slot = first + v as u64 * 16;
    }
    Some(a)
}

/// Called by `nexus_exception_common` with the saved frame; returns 0 to resume the frame
/// (NMI, external interrupt), never returns otherwise. System V calling convention on every
/// target (the UEFI target's `extern "C"` is the Microsoft one).
///
/// # Safety
/// Only the exception stubs call this, with `frame` pointing at the frame they built.
#[cfg(target_arch = "x86_64")]
#[no_mangle]
unsafe extern "sysv64" fn nexus_host_exception(frame: *mut ExceptionFrame) -> u64 {
    use super::{exit, instructions, log};
    match classify(
        // SAFETY: the stub passes a pointer to the frame it just pushed on this stack.
        unsafe { (*frame).vector },
    ) {
        Disposition::Nmi => {
            super::nmi::record(super::cpu_info::current_apic_id());
            let (restart, hlt) = super::nmi::idle_window();
            // SAFETY: as above; only this handler touches the frame until it returns.
            unsafe { (*frame).rip = super::nmi::resume_rip((*frame).rip, restart, hlt) };
            return 0;
        }
        Disposition::Interrupt { eoi } => {
            INTERRUPTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            if eoi {
                // SAFETY: host mode at CPL 0 with the identity map (it covers the APIC page).
                unsafe { super::apic::eoi() };
            }
            return 0;
        }
        Disposition::Fatal => {}
    }
    // SAFETY: as above.
    let frame = unsafe { &*frame };
    // SAFETY: host mode runs at CPL 0, where CR2 is readable.
    let cr2 = unsafe { instructions::read_cr2() };
    let apic_id = super::cpu_info::current_apic_id();
    let report = Report {
        frame,
        cr2,
        apic_id,
    };
    log::CONSOLE.println_fatal("hv", format_args!("{report}"));
    log::CONSOLE.raw_fatal(format_args!(
        "NEXUS RESULT: FAIL (host exception {} at rip {:#x} on apic-id {apic_id})",
        vector_name(frame.vector),
        frame.rip
    ));
    exit::exit_emulator(false);
    // SAFETY: this CPU cannot continue after a host exception.
    unsafe { instructions::halt_forever() }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn page_fault_report_names_address_and_access() {
        let frame = ExceptionFrame {
            vector: 14,
            error_code: 0b10010,
            rip: 0x7e5_1234,
            ..Default::default()
        };
        let text = Report {
            frame: &frame,
            cr2: 0xdead_b000,
            apic_id: 2,
        }
        .to_string();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "host exception on CPU apic-id 2: vector 14 (#PF page fault) error code 0x12 at rip 0x7e51234"
        );
        assert_eq!(
            lines.next().unwrap(),
            "page fault address 0xdeadb000 (not present, write, fetch)"
        );
        assert!(text.contains("rax 0x0 rbx 0x0"));
    }

    #[test]
    fn other_vectors_have_no_page_fault_line() {
        let frame = ExceptionFrame {
            vector: 13,
            error_code: 0x18,
            rip: 0x1000,
            ..Default::default()
        };
        let text = Report {
            frame: &frame,
            cr2: 0x1234,
            apic_id: 0,
        }
        .to_string();
        assert!(text.starts_with(
            "host exception on CPU apic-id 0: vector 13 (#GP general protection) error code 0x18"
        ));
        assert!(!text.contains("page fault address"));
        assert_eq!(vector_name(8), "#DF double fault");
        assert_eq!(vector_name(32), "external interrupt");
    }

    #[test]
    fn frame_layout_matches_the_stub_pushes() {
        // 15 GPRs, vector, error code, then the CPU's 5-word frame.
        assert_eq!(core::mem::size_of::<ExceptionFrame>(), 22 * 8);
        assert_eq!(core::mem::offset_of!(ExceptionFrame, rax), 14 * 8);
        assert_eq!(core::mem::offset_of!(ExceptionFrame, vector), 15 * 8);
        assert_eq!(core::mem::offset_of!(ExceptionFrame, rip), 17 * 8);
    }

    #[test]
    fn only_nmis_and_interrupts_are_resumed() {
        assert_eq!(classify(2), Disposition::Nmi);
        for v in [0, 1, 3, 6, 8, 13, 14, 18, 31] {
            assert_eq!(classify(v), Disposition::Fatal, "vector {v}");
        }
        assert_eq!(classify(32), Disposition::Interrupt { eoi: true });
        assert_eq!(classify(0xf0), Disposition::Interrupt { eoi: true });
        assert_eq!(classify(0xff), Disposition::Interrupt { eoi: false });
    }

    #[test]
    fn stubs_are_16_bytes_apart() {
        let a = stub_addresses().expect("host_entry.S stubs must be 16 bytes apart");
        assert_eq!(a[1] - a[0], 16);
    }
}
