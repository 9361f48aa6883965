//! Generic exit handling, written once for every backend.
//!
//! [`handle_exit`] emulates what the exit asks for (CPUID, the MSRs the
//! backend intercepts, port I/O, hypercalls, XSETBV, the cache, counter and
//! monitor instructions), steps RIP over the instruction, and answers whether
//! the partition goes on ([`Flow`]). It
//! never panics on guest input: anything it cannot or may not do stops the
//! partition with a [`StopReason`] (the caller logs it) or injects a fault.

use super::{Access, ExitReason, IoAccess, IoDir, VmExit};
use crate::hypercall::{self, CallOutcome};
use crate::launch::ipi::Refused;
use crate::mem::second_level::SecondLevel;
use crate::mem::PhysMem;
use crate::partition::{Kind, PartitionConfig, StopReason};
use crate::stats::Stats;
use crate::vcpu::{vector, CpuMode, Gpr, Vcpu};
use nexus_abi::cpuid::{self, CpuidResult, Features, Info, Transport};
use nexus_abi::{HypercallArgs, ABI_VERSION};
use nexus_drivers::apic::Icr;

/// What the exit handler needs from the CPU it runs on.
pub trait ExitHost {
    /// Bytes the guest wrote to its console (hypercall or trapped COM1);
    /// the host turns them into `[<partition>] ` lines.
    fn console(&mut self, bytes: &[u8]);
    /// CPUID as the physical CPU answers it.
    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult;
    /// An IPI the guest wrote into its (trapped) ICR, `x2apic` when through the MSR: the host
    /// routes it (`launch::ipi`). `Err` means refused: the write takes #GP. The default
    /// refuses everything (a host with no other CPU to signal).
    fn ipi(&mut self, _icr: Icr, _x2apic: bool) -> Result<(), Refused> {
        Err(Refused)
    }
    /// The guest-physical page of the xAPIC registers whose writes trap (the primary's),
    /// if any.
    fn apic_page(&self) -> Option<u64> {
        None
    }
    /// A trapped write of xAPIC register `offset` (16-byte aligned, 32 bits): the host
    /// forwards it to the hardware, or routes it (the ICR). With `exchange` (XCHG) it
    /// returns the register's old value.
    fn apic_write(&mut self, _offset: u64, _value: u32, _exchange: bool) -> u32 {
        0
    }
    /// A write of IA32_APIC_BASE; `false` refuses it (#GP).
    fn apic_base_write(&mut self, _value: u64) -> bool {
        false
    }
    /// The guest-physical page of this partition's MMIO hypercall doorbell, if any.
    fn doorbell(&self) -> Option<u64> {
        None
    }
    /// The I/O base of a UART this partition sees as an idle device that takes every byte
    /// and never has input (the hypervisor's own console, where the primary's firmware and
    /// OS find a UART they also know of): writes vanish, the line status reads empty.
    fn silent_uart(&self) -> Option<u16> {
        None
    }
    /// The partition touched `gpa`, which its table does not map (or not for `access`):
    /// `true` when the host made the access harmless and the guest may retry it (the
    /// primary's accesses to memory it does not own: logged, then served by a sink page),
    /// `false` to stop the partition (everyone else).
    fn foreign_access(&mut self, _gpa: u64, _access: Access) -> bool {
        false
    }
    /// Add the counters of every CPU of this partition into `into` (`partition_stats`);
    /// returns how many CPUs were summed, `None` for a host that keeps no counters (the call
    /// then answers `ServiceUnavailable`).
    fn partition_stats(&self, _into: &crate::stats::Stats) -> Option<u32> {
        None
    }
    /// The machine's partitions, for the management calls; `None` for a host that knows no
    /// other partition (they then answer `NotFound`).
    fn partitions(&self) -> Option<&dyn crate::hypercall::manage::Partitions> {
        None
    }
    /// Write back and invalidate this CPU's caches (WBINVD), for the primary's
    /// INVD or WBINVD (MTRR/PAT changes, non-coherent devices). The default
    /// executes the instruction (host mode on the UEFI target; nothing on the
    /// build host, where tests override it).
    fn write_back_caches(&mut self) {
        #[cfg(target_os = "uefi")]
        // SAFETY: host mode at CPL 0; WBINVD changes no architectural state.
        unsafe {
            crate::platform::instructions::wbinvd()
        };
    }
}

/// Everything a handler may touch for one partition on one CPU.
pub struct ExitContext<'a, M: PhysMem, H: ExitHost + ?Sized> {
    pub partition: &'a PartitionConfig,
    /// The partition's second-level tables (NPT or EPT): guest buffers are
    /// checked against what the processor walks.
    pub second_level: &'a dyn SecondLevel<M>,
    pub mem: &'a mut M,
    pub host: &'a mut H,
    pub stats: &'a Stats,
    /// The hypercall instruction of this backend (announced in CPUID).
    pub transport: Transport,
}

/// Whether the partition keeps running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop(StopReason),
    /// The vCPU took INIT ([`Vcpu::init_reset`]) and must not run until a
    /// start-up IPI: the run loop either waits for one from the partition's
    /// other CPUs, or (hardware wait-for-SIPI) simply re-enters.
    WaitForSipi,
}

pub const MSR_EFER: u32 = 0xc000_0080;
pub const MSR_VM_CR: u32 = 0xc001_0114;
/// VM_CR as guests see it: SVM disabled (bit 4) and locked (bit 3).
const VM_CR_GUEST: u64 = 0x18;
pub const MSR_FEATURE_CONTROL: u32 = 0x3a;
/// IA32_FEATURE_CONTROL as guests on VMX see it: locked (bit 0), VMXON disabled inside and
/// outside SMX (bits 1 and 2 clear), so an OS finds VMX off instead of taking a #GP.
const FEATURE_CONTROL_GUEST: u64 = 0x1;
/// The x2APIC interrupt command register: every partition's writes are routed by the host.
pub const MSR_X2APIC_ICR: u32 = nexus_drivers::apic::X2APIC_ICR_MSR;
pub const MSR_APIC_BASE: u32 = nexus_drivers::apic::APIC_BASE_MSR;
pub const COM1: u16 = 0x3f8;
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

pub fn handle_exit<V: Vcpu, M: PhysMem, H: ExitHost + ?Sized>(
    vcpu: &mut V,
    exit: VmExit,
    cx: &mut ExitContext<'_, M, H>,
) -> Flow {
    cx.stats.count_exit(&exit.reason);
    if exit.reason.is_instruction() && exit.insn_len == 0 {
        return Flow::Stop(StopReason::Undecodable { rip: vcpu.rip() });
    }
    let step = |vcpu: &mut V| {
        let rip = vcpu.rip().wrapping_add(exit.insn_len as u64);
        vcpu.set_rip(rip);
        Flow::Continue
    };
    match exit.reason {
        ExitReason::Hypercall => {
            if vcpu.mode() != (CpuMode::Long { cs_l: true }) || vcpu.cpl() != 0 {
                vcpu.inject_exception(vector::UD, None);
                return Flow::Continue;
            }
            match hypercall_from_registers(vcpu, cx) {
                Some(stop) => Flow::Stop(stop),
                None => step(vcpu),
            }
        }
        ExitReason::Cpuid => {
            let leaf = vcpu.gpr(Gpr::Rax) as u32;
            let subleaf = vcpu.gpr(Gpr::Rcx) as u32;
            let r = cpuid_result(leaf, subleaf, vcpu, cx);
            vcpu.set_gpr(Gpr::Rax, r.eax as u64);
            vcpu.set_gpr(Gpr::Rbx, r.ebx as u64);
            vcpu.set_gpr(Gpr::Rcx, r.ecx as u64);
            vcpu.set_gpr(Gpr::Rdx, r.edx as u64);
            step(vcpu)
        }
        ExitReason::Msr { write } => {
            let index = vcpu.gpr(Gpr::Rcx) as u32;
            let value = (vcpu.gpr(Gpr::Rdx) << 32) | (vcpu.gpr(Gpr::Rax) & 0xffff_ffff);
            let read = match (index, write) {
                (MSR_X2APIC_ICR, true) => {
                    if cx.host.ipi(Icr::from_x2apic(value), true).is_err() {
                        vcpu.inject_exception(vector::GP, Some(0));
                        return Flow::Continue;
                    }
                    None
                }
                (MSR_APIC_BASE, true) => {
                    if !cx.host.apic_base_write(value) {
                        vcpu.inject_exception(vector::GP, Some(0));
                        return Flow::Continue;
                    }
                    None
                }
                // Every partition's EFER reads exit (the primary's too): the backends'
                // `efer()` leaves SVME out, so SVM is as absent as CPUID says.
                (MSR_EFER, false) => Some(vcpu.efer()),
                (MSR_EFER, true) => {
                    let supported =
                        super::efer::supported(|leaf, sub| cx.host.host_cpuid(leaf, sub));
                    match super::efer::check_write(
                        vcpu.efer(),
                        value,
                        paging(vcpu.mode()),
                        supported,
                    ) {
                        Ok(efer) => vcpu.set_efer(efer),
                        Err(_) => {
                            vcpu.inject_exception(vector::GP, Some(0));
                            return Flow::Continue;
                        }
                    }
                    None
                }
                (MSR_VM_CR, false) => Some(VM_CR_GUEST),
                // Only Intel CPUs have it; on AMD hardware the read faults, so it does here.
                (MSR_FEATURE_CONTROL, false) if cx.transport == Transport::Vmcall => {
                    Some(FEATURE_CONTROL_GUEST)
                }
                _ => {
                    // Not an MSR this partition may use: #GP, as hardware
                    // does for an MSR that does not exist.
                    vcpu.inject_exception(vector::GP, Some(0));
                    return Flow::Continue;
                }
            };
            if let Some(v) = read {
                vcpu.set_gpr(Gpr::Rax, v & 0xffff_ffff);
                vcpu.set_gpr(Gpr::Rdx, v >> 32);
            }
            step(vcpu)
        }
        ExitReason::Io(io) => match port_io(vcpu, io, cx) {
            Flow::Continue => step(vcpu),
            stop => stop,
        },
        ExitReason::NestedPageFault { gpa, access } => {
            super::mmio::page_fault(vcpu, gpa, access, cx)
        }
        ExitReason::Hlt => match cx.partition.kind {
            // Test guests end through partition_exit; a HLT would wait forever.
            Kind::Test | Kind::Deferred => Flow::Stop(StopReason::Halted),
            Kind::Primary => step(vcpu),
        },
        ExitReason::Xsetbv => {
            // #UD (guest CR4.OSXSAVE clear) and #GP (CPL > 0) are raised by the processor
            // before the exit (SDM 26.1.1, APM 15.9), so they are not checked again here.
            let index = vcpu.gpr(Gpr::Rcx) as u32;
            let value = (vcpu.gpr(Gpr::Rdx) << 32) | (vcpu.gpr(Gpr::Rax) & 0xffff_ffff);
            let r = cx.host.host_cpuid(0xd, 0);
            let supported = ((r.edx as u64) << 32) | r.eax as u64;
            if !crate::xcr0::valid(index, value, supported) {
                vcpu.inject_exception(vector::GP, Some(0));
                return Flow::Continue;
            }
            vcpu.set_xcr0(value);
            step(vcpu)
        }
        // Test partitions' memory is write-back RAM that no device writes, so
        // there is nothing to write back: both are no-ops (a hostile guest
        // cannot drop dirty lines of the host or a sibling, nor flush the
        // shared caches in a loop). The primary may own non-coherent devices:
        // the host writes back and invalidates for it (INVD never discards).
        ExitReason::Invd | ExitReason::Wbinvd => {
            if cx.partition.kind == Kind::Primary {
                cx.host.write_back_caches();
            }
            step(vcpu)
        }
        // Only test partitions intercept RDPMC: the counters also count the
        // host and other partitions (a side channel), so no counter exists.
        ExitReason::Rdpmc => {
            vcpu.inject_exception(vector::GP, Some(0));
            Flow::Continue
        }
        // Only test partitions intercept these. MONITOR arms nothing and MWAIT
        // returns at once, as a spurious wake-up would (which the architecture
        // allows): the guest's idle loop becomes a busy loop on its own CPU.
        ExitReason::Monitor | ExitReason::Mwait => step(vcpu),
        // The primary owns machine-check handling: it gets the #MC as it would
        // natively. A test partition is stopped with the reason.
        ExitReason::MachineCheck => match cx.partition.kind {
            Kind::Primary => {
                vcpu.inject_exception(vector::MC, None);
                Flow::Continue
            }
            _ => Flow::Stop(StopReason::MachineCheck),
        },
        ExitReason::Shutdown => Flow::Stop(StopReason::TripleFault),
        ExitReason::Exception { vector, .. } => Flow::Stop(StopReason::Exception { vector }),
        ExitReason::Interrupt | ExitReason::Nmi => Flow::Continue,
        ExitReason::Init => match vcpu.init_reset() {
            Ok(()) => Flow::WaitForSipi,
            Err(_) => Flow::Stop(StopReason::InitNotEmulated),
        },
        ExitReason::Sipi { vector } => {
            vcpu.sipi_start(vector);
            Flow::Continue
        }
        ExitReason::EntryFailed { code } => Flow::Stop(StopReason::EntryFailed { code }),
        ExitReason::Unknown { code, .. } => Flow::Stop(StopReason::ExitNotHandled { code }),
    }
}

/// Whether the guest runs with CR0.PG set.
fn paging(mode: CpuMode) -> bool {
    match mode {
        CpuMode::Real => false,
        CpuMode::Protected { paging, .. } => paging,
        CpuMode::Long { .. } => true,
    }
}

/// Dispatch the hypercall in the vCPU's registers (number in RAX, arguments in RDI, RSI,
/// RDX, R10, R8, R9) and put the reply in RAX/RDX; `Some` when the call stops the
/// partition. The caller steps over the instruction that made it.
pub(super) fn hypercall_from_registers<V: Vcpu, M: PhysMem, H: ExitHost + ?Sized>(
    vcpu: &mut V,
    cx: &mut ExitContext<'_, M, H>,
) -> Option<StopReason> {
    let args = HypercallArgs::from_registers(
        vcpu.gpr(Gpr::Rax),
        vcpu.gpr(Gpr::Rdi),
        vcpu.gpr(Gpr::Rsi),
        vcpu.gpr(Gpr::Rdx),
        vcpu.gpr(Gpr::R10),
        vcpu.gpr(Gpr::R8),
        vcpu.gpr(Gpr::R9),
    );
    cx.stats.count_call(args.number);
    match hypercall::dispatch(&args, cx.partition, cx.second_level, cx.mem, cx.host) {
        CallOutcome::Reply(reply) => {
            let (rax, rdx) = reply.registers();
            vcpu.set_gpr(Gpr::Rax, rax);
            vcpu.set_gpr(Gpr::Rdx, rdx);
            None
        }
        CallOutcome::Exit { code } => Some(StopReason::Exited { code }),
    }
}

/// What the guest sees for CPUID: NexusOS leaves at 0x4000_0000, the
/// hypervisor-present bit, no SVM/VMX (no nested virtualization), and the
/// bits that describe the guest's own state rather than the host's: OSXSAVE
/// (1.ECX[27]) and OSPKE (7.0.ECX[4]) from its CR4, the XSAVE area sizes
/// (0xD.0.EBX, 0xD.1.EBX) from its XCR0 (and IA32_XSS). The processor answers
/// those for the CR4 and XCR0 loaded when the host runs CPUID, i.e. the host's.
fn cpuid_result<V: Vcpu, M: PhysMem, H: ExitHost + ?Sized>(
    leaf: u32,
    subleaf: u32,
    vcpu: &V,
    cx: &ExitContext<'_, M, H>,
) -> CpuidResult {
    const CR4_OSXSAVE: u64 = 1 << 18;
    const CR4_PKE: u64 = 1 << 22;
    let bit = |on: bool, at: u32| (on as u32) << at;
    if (cpuid::BASE_LEAF..=cpuid::BASE_LEAF + 0xff).contains(&leaf) {
        let info = Info {
            version: ABI_VERSION,
            transport: cx.transport,
            features: Features::CONSOLE,
            groups: cx.partition.groups,
            // The primary's root-only path for user space (docs/abi.md, "Who may call what").
            doorbell: cx.host.doorbell(),
        };
        return cpuid::respond(leaf, cpuid::BASE_LEAF, &info).unwrap_or_default();
    }
    let mut r = cx.host.host_cpuid(leaf, subleaf);
    match leaf {
        1 => {
            r.ecx |= 1 << 31; // hypervisor present
            r.ecx &= !(1 << 5); // VMX
            r.ecx = (r.ecx & !(1 << 27)) | bit(vcpu.cr4() & CR4_OSXSAVE != 0, 27);
        }
        7 if subleaf == 0 => {
            r.ecx = (r.ecx & !(1 << 4)) | bit(vcpu.cr4() & CR4_PKE != 0, 4);
        }
        0xd if cx.host.host_cpuid(1, 0).ecx & (1 << 26) != 0 => {
            let component = |i: u32| {
                let c = cx.host.host_cpuid(0xd, i);
                crate::xcr0::Component {
                    size: c.eax,
                    offset: c.ebx,
                    align64: c.ecx & (1 << 1) != 0,
                }
            };
            match subleaf {
                0 => r.ebx = crate::xcr0::standard_size(vcpu.xcr0(), component),
                1 => r.ebx = crate::xcr0::compacted_size(vcpu.xcr0() | vcpu.xss(), component),
                _ => {}
            }
        }
        0x8000_0001 => r.ecx &= !(1 << 2), // SVM
        0x8000_000a => r = CpuidResult::default(),
        _ => {}
    }
    r
}

/// Port I/O: test partitions get an emulated COM1 transmitter and nothing
/// else; nobody may end the machine through the debug-exit port.
fn port_io<V: Vcpu, M: PhysMem, H: ExitHost + ?Sized>(
    vcpu: &mut V,
    io: IoAccess,
    cx: &mut ExitContext<'_, M, H>,
) -> Flow {
    let is_com1 = (COM1..COM1 + 8).contains(&io.port);
    if let Some(base) = cx.host.silent_uart() {
        if (base..base + 8).contains(&io.port) && !io.string {
            if io.dir == IoDir::In {
                let v = if io.port == base + 5 { 0x60 } else { 0 };
                set_in(vcpu, io.size, v);
            }
            return Flow::Continue;
        }
    }
    if io.string || !is_com1 {
        return match cx.partition.kind {
            // The primary owns the machine's devices; only the debug-exit
            // port is trapped, and its writes are dropped.
            Kind::Primary => {
                if io.dir == IoDir::In {
                    set_in(vcpu, io.size, u32::MAX);
                }
                Flow::Continue
            }
            _ => Flow::Stop(StopReason::PortDenied { port: io.port }),
        };
    }
    match io.dir {
        IoDir::Out => {
            if io.port == COM1 {
                let byte = vcpu.gpr(Gpr::Rax) as u8;
                cx.host.console(&[byte]);
            }
            // Other UART registers (divisor, line control, ...) are accepted
            // and ignored.
        }
        IoDir::In => {
            // LSR (base + 5): transmitter empty and idle; everything else 0.
            let v = if io.port == COM1 + 5 { 0x60 } else { 0 };
            set_in(vcpu, io.size, v);
        }
    }
    Flow::Continue
}

/// IN writes AL/AX/EAX (EAX zero-extends into RAX, the narrower ones merge).
fn set_in<V: Vcpu>(vcpu: &mut V, size: u8, value: u32) {
    let rax = vcpu.gpr(Gpr::Rax);
    let new = match size {
        1 => (rax & !0xff) | (value as u64 & 0xff),
        2 => (rax & !0xffff) | (value as u64 & 0xffff),
        _ => value as u64,
    };
    vcpu.set_gpr(Gpr::Rax, new);
}

#[cfg(test)]
mod tests;
