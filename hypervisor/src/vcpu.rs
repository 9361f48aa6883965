//! The backend-neutral virtual CPU.
//!
//! Everything above this trait (exit handling, hypercalls, statistics,
//! partition bookkeeping) is written once and is generic over the
//! virtualization backend: `amd` (SVM) and `intel` (VMX).
//!
//! # How a backend plugs in
//!
//! A backend implements [`Vcpu`] for its per-CPU state (VMCB or VMCS plus the
//! general-purpose registers that hardware does not save):
//!
//! 1. [`Vcpu::run`] enters the guest (VMRUN / VMRESUME, in a `.S` file) and,
//!    when it exits, decodes the hardware exit code into a neutral
//!    [`VmExit`](crate::exit::VmExit): `Hypercall` (VMMCALL / VMCALL), `Cpuid`,
//!    `Msr{..}`, `Io{..}`, `NestedPageFault{..}` (NPF / EPT violation), `Hlt`,
//!    `Shutdown` (SVM shutdown intercept / VMX triple fault), `Exception{..}`,
//!    `Interrupt`, and `Unknown{code, info}` for everything else. It also
//!    fills [`VmExit::insn_len`](crate::exit::VmExit) for instruction exits:
//!    from NRIP (SVM with nrip-save), `VM_EXIT_INSTRUCTION_LEN` (VMX), or by
//!    decoding the guest's instruction bytes with [`crate::insn`] when the
//!    hardware does not say (QEMU TCG's SVM has no nrip-save).
//! 2. Registers: all sixteen GPRs are read and written through
//!    [`Vcpu::gpr`]/[`Vcpu::set_gpr`], indexed by [`Gpr`] in x86 encoding
//!    order. The backend keeps RAX/RSP coherent with its control block
//!    (the VMCB holds RAX and RSP; the VMCS holds RSP).
//! 3. RIP advance: the generic code calls [`Vcpu::set_rip`] with
//!    `rip + insn_len` after emulating an instruction; a backend never
//!    advances RIP on its own.
//! 4. Faults: [`Vcpu::inject_exception`] queues an exception for the next
//!    entry (SVM `EVENTINJ`, VMX VM-entry interruption information); the
//!    generic code injects #GP for MSRs it refuses and #UD for hypercalls
//!    made outside 64-bit mode or above CPL 0.
//! 5. EFER: the generic code routes RDMSR/WRMSR of EFER (when the backend
//!    intercepts them) through [`Vcpu::efer`]/[`Vcpu::set_efer`].
//! 6. AP start: an INIT signal (VMX exit 3, or the hypervisor's software INIT
//!    between the CPUs of one partition) calls [`Vcpu::init_reset`]: the vCPU
//!    takes the architectural post-INIT state and waits for a start-up IPI;
//!    [`Vcpu::sipi_start`] then starts it in real mode at `vector << 12`
//!    (hardware SIPI exit 4, or a SIPI from the partition's mailbox).
//! 7. NMIs: NMIs exit ([`ExitReason::Nmi`](crate::exit::ExitReason)); the run loop
//!    re-injects the primary's through [`Vcpu::queue_nmi`], which the backend delivers
//!    when the guest is not blocking NMIs.
//! 8. XCR0: XSETBV exits (VMX always; SVM intercepts it), the generic code
//!    checks the value ([`crate::xcr0::valid`]) and hands it to
//!    [`Vcpu::set_xcr0`]; the backend keeps it per vCPU and loads it around
//!    each entry ([`crate::xcr0::Xcr0Switch`]), never leaving it to the host.
//!
//! The backend never decides policy: it does not stop a partition, log, or
//! count. Its `run` must never panic on guest input: unexpected exit codes
//! become `Unknown`.

use crate::exit::VmExit;

/// General-purpose registers, numbered as in x86 instruction encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Gpr {
    Rax = 0,
    Rcx = 1,
    Rdx = 2,
    Rbx = 3,
    Rsp = 4,
    Rbp = 5,
    Rsi = 6,
    Rdi = 7,
    R8 = 8,
    R9 = 9,
    R10 = 10,
    R11 = 11,
    R12 = 12,
    R13 = 13,
    R14 = 14,
    R15 = 15,
}

impl Gpr {
    /// Every register, in encoding order.
    pub const ALL: [Gpr; 16] = [
        Gpr::Rax,
        Gpr::Rcx,
        Gpr::Rdx,
        Gpr::Rbx,
        Gpr::Rsp,
        Gpr::Rbp,
        Gpr::Rsi,
        Gpr::Rdi,
        Gpr::R8,
        Gpr::R9,
        Gpr::R10,
        Gpr::R11,
        Gpr::R12,
        Gpr::R13,
        Gpr::R14,
        Gpr::R15,
    ];

    /// The register with encoding `n` (its low four bits).
    pub const fn from_index(n: u8) -> Gpr {
        Gpr::ALL[(n & 15) as usize]
    }
}

/// The guest's general-purpose registers in [`Gpr`] order.
///
/// `#[repr(C)]` because the backends' entry assembly stores and loads it by
/// offset (`8 * Gpr as usize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Gprs(pub [u64; 16]);

impl Gprs {
    pub fn get(&self, r: Gpr) -> u64 {
        self.0[r as usize]
    }

    pub fn set(&mut self, r: Gpr, value: u64) {
        self.0[r as usize] = value;
    }
}

/// Guest paging mode, enough to read guest memory and decode instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// Real or virtual-8086 mode (16-bit addressing, no paging).
    Real,
    /// Protected mode, 16- or 32-bit code segment (`cs_db` = default size 32).
    Protected { cs_db: bool, paging: bool },
    /// IA-32e mode: 64-bit code segment (`cs_l`) or compatibility mode.
    Long { cs_l: bool },
}

/// A virtual CPU of one partition, implemented by each backend.
pub trait Vcpu {
    /// Enter the guest and run it until the next VM exit, decoded.
    fn run(&mut self) -> VmExit;

    fn gpr(&self, r: Gpr) -> u64;
    fn set_gpr(&mut self, r: Gpr, value: u64);

    fn rip(&self) -> u64;
    fn set_rip(&mut self, rip: u64);

    /// The guest's CR3 (its own page-table root, a guest-physical address).
    fn cr3(&self) -> u64;

    /// The guest's CR4 as the guest sees it (its paging mode: LA57; CPUID's OSXSAVE and
    /// OSPKE follow it).
    fn cr4(&self) -> u64;

    /// The guest's XCR0 (CPUID 0xD's XSAVE sizes follow it).
    fn xcr0(&self) -> u64;

    /// IA32_XSS in effect while the guest runs (CPUID.(0xD,1).EBX follows XCR0 | XSS).
    fn xss(&self) -> u64;

    /// Current operating mode of the guest.
    fn mode(&self) -> CpuMode;

    /// Current privilege level (0..=3); hypercalls are refused above 0.
    fn cpl(&self) -> u8;

    /// The base of the guest's CS (0 in 64-bit mode): instruction bytes are fetched at
    /// `cs_base + rip`.
    fn cs_base(&self) -> u64;

    /// The guest's EFER as the guest should see it (bits the backend needs
    /// for itself, like SVM's EFER.SVME, hidden).
    fn efer(&self) -> u64;

    /// A guest write to EFER (WRMSR 0xC000_0080). The backend keeps the bits
    /// the hardware requires in guest state (SVM: SVME) and applies the rest.
    fn set_efer(&mut self, value: u64);

    /// A guest XSETBV of XCR0, already checked against the CPU: the backend
    /// loads `value` before each later entry and restores the host's XCR0
    /// after each exit.
    fn set_xcr0(&mut self, value: u64);

    /// Queue exception `vector` (with `error_code` when it has one) for
    /// delivery on the next entry.
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>);

    /// INIT: load the processor state that follows INIT (SDM vol. 3A, table
    /// 10-1: real mode, CS:IP = F000:FFF0 with base 0xFFFF_0000, CR0 =
    /// 0x6000_0010, EFER = 0) and wait for a start-up IPI: the next
    /// [`Vcpu::run`] does not execute guest instructions until
    /// [`Vcpu::sipi_start`] (or the hardware SIPI exit) starts the vCPU.
    /// Errors when the backend cannot represent that state (VMX without
    /// unrestricted guest, SVM here): the caller stops the vCPU.
    fn init_reset(&mut self) -> Result<(), &'static str>;

    /// Start-up IPI with `vector` to a vCPU reset by INIT: real mode, CS
    /// selector `vector << 8`, CS base `vector << 12`, IP 0, running.
    fn sipi_start(&mut self, vector: u8);

    /// Deliver an NMI to the guest as soon as it can take one (at the next entry, or once
    /// the guest's own NMI handler has returned). Several queued before delivery count once,
    /// as pending NMIs do on hardware.
    fn queue_nmi(&mut self);
}

/// The real-mode CS a start-up IPI with `vector` loads: `(selector, base)`.
pub const fn sipi_cs(vector: u8) -> (u16, u64) {
    ((vector as u16) << 8, (vector as u64) << 12)
}

/// The state INIT leaves (SDM vol. 3A, table 10-1), for the backends.
pub mod init_state {
    /// CD | NW | ET.
    pub const CR0: u64 = 0x6000_0010;
    pub const RFLAGS: u64 = 0x2;
    pub const RIP: u64 = 0xfff0;
    pub const CS_SELECTOR: u16 = 0xf000;
    pub const CS_BASE: u64 = 0xffff_0000;
    /// Every segment's limit, and the GDTR/IDTR limits.
    pub const SEGMENT_LIMIT: u32 = 0xffff;
    pub const DR7: u64 = 0x400;
    // IA32_PAT, the MTRRs and the x87/SSE state are left as they were (INIT
    // does not change them); EDX holds the processor signature (CPUID.1:EAX),
    // every other general-purpose register is 0.
}

/// Exception vectors the generic code injects.
pub mod vector {
    pub const UD: u8 = 6;
    pub const GP: u8 = 13;
    pub const MC: u8 = 18;
}
