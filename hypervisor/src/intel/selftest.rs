//! VMX self-test on the boot CPU: two tiny 64-bit guests run through the real
//! backend (VMXON, VMCS, EPT, VPID, the `.S` entry path) and the shared exit
//! handler. Guest "vmx-smoke" does CPUID 0x40000000, writes to COM1, calls
//! `version` and `partition_exit(0)` with VMCALL; guest "vmx-isolation" reads
//! the other guest's memory and must be stopped by an EPT violation.
//! Used where the policy-driven launch flow is not wired for VMX yet.

use super::ept::{Ept, EptPerms};
use super::memtype::Mtrrs;
use super::run::run_to_stop;
use super::vcpu::{Intercepts, Unusual, VcpuConfig, VmxCpu, VmxError, VmxVcpu};
use super::{host, instructions as vmx};
use crate::exit::handler::ExitHost;
use crate::hv_println;
use crate::mem::identity::IdentityMem;
use crate::mem::{PhysMem, Range};
use crate::npt::{Npt, NptOptions, Perm};
use crate::partition::{guest_setup, Expectation, FixedStr, Kind, PartitionConfig, StopReason};
use crate::platform::console::LineBuffer;
use crate::platform::instructions::rdmsr;
use crate::platform::log;
use crate::stats::Stats;
use alloc::string::String;
use nexus_abi::cpuid::{CpuidResult, Transport};
use nexus_abi::GroupSet;
use uefi::boot::{self, AllocateType, MemoryType};

/// Pages for VMX structures and tables, and per guest region.
const POOL_PAGES: usize = 64;
const GUEST_PAGES: usize = 32;

struct Host {
    line: LineBuffer,
}

impl ExitHost for Host {
    fn console(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.line.push(&log::CONSOLE, b);
        }
    }
    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        let [eax, ebx, ecx, edx] = vmx::cpuid(leaf, subleaf);
        CpuidResult { eax, ebx, ecx, edx }
    }
}

fn pages(n: usize) -> Option<u64> {
    boot::allocate_pages(AllocateType::AnyPages, MemoryType::RUNTIME_SERVICES_DATA, n)
        .ok()
        .map(|p| p.as_ptr() as u64)
}

/// Guest code of "vmx-smoke" (64-bit).
const SMOKE_CODE: &[u8] = &[
    0xB8, 0x00, 0x00, 0x00, 0x40, // mov eax, 0x40000000
    0x31, 0xC9, // xor ecx, ecx
    0x0F, 0xA2, // cpuid
    0x66, 0xBA, 0xF8, 0x03, // mov dx, 0x3f8
    0xB0, b'o', 0xEE, // mov al, 'o'; out dx, al
    0xB0, b'k', 0xEE, // mov al, 'k'; out dx, al
    0xB0, b'\n', 0xEE, // mov al, '\n'; out dx, al
    0xB8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1 (version)
    0x31, 0xFF, // xor edi, edi
    0x0F, 0x01, 0xC1, // vmcall
    0xB8, 0x05, 0x00, 0x00, 0x00, // mov eax, 5 (partition_exit)
    0x31, 0xFF, // xor edi, edi
    0x0F, 0x01, 0xC1, // vmcall
    0xF4, // hlt (not reached)
];

/// Guest code of "vmx-isolation": `mov rax, [target]; hlt`.
fn isolation_code(target: u64) -> [u8; 11] {
    let mut c = [0u8; 11];
    c[0] = 0x48;
    c[1] = 0xA1;
    c[2..10].copy_from_slice(&target.to_le_bytes());
    c[10] = 0xF4;
    c
}

fn partition(id: u8, name: &str, region: Range, expect: Expectation) -> PartitionConfig {
    let mut regions = [Range::default(); crate::partition::MAX_REGIONS];
    regions[0] = region;
    PartitionConfig {
        id,
        name: FixedStr::new(name),
        kind: Kind::Test,
        image: FixedStr::EMPTY,
        cmdline: FixedStr::EMPTY,
        groups: GroupSet::ALL,
        regions,
        region_count: 1,
        apic_ids: [0; crate::partition::MAX_CPUS],
        cpu_count: 1,
        expect,
    }
}

/// Run one guest to its stop; logs the outcome and counters.
fn run_guest(
    cpu: &VmxCpu,
    mem: &mut IdentityMem,
    mtrrs: &Mtrrs,
    part: &PartitionConfig,
    code: &[u8],
) -> Result<StopReason, VmxError> {
    let region = part.regions()[0];
    mem.write(region.start, code);
    let start = guest_setup::prepare(part, region.start + code.len() as u64, region.start, mem)
        .map_err(|_| VmxError::NoMemory)?;
    let mut ept = Ept::new(mem, cpu.ept_caps()).map_err(|_| VmxError::NoMemory)?;
    ept.map_identity(mem, region.start, region.size(), EptPerms::RWX, mtrrs)
        .map_err(|_| VmxError::NoMemory)?;
    // The shared hypercall code checks guest buffers against an NPT-format
    // view of the same regions (see docs/vmx.md).
    let mut npt = Npt::new(
        mem,
        NptOptions {
            huge_pages: false,
            nx: false,
        },
    )
    .map_err(|_| VmxError::NoMemory)?;
    npt.map_identity(mem, region.start, region.size(), Perm::RWX)
        .map_err(|_| VmxError::NoMemory)?;
    let cfg = VcpuConfig {
        eptp: ept.eptp(),
        vpid: part.id as u16 + 1,
        start,
    };
    // SAFETY: on the CPU that executed VMXON; frames come from the identity-mapped pool.
    let mut vcpu = unsafe { VmxVcpu::new_long_mode(cpu, mem, cfg, Intercepts::TEST)? };
    let mut host = Host {
        line: LineBuffer::new(part.name.as_str()),
    };
    let mut stats = Stats::default();
    let stop = run_to_stop(
        &mut vcpu,
        part,
        &npt,
        mem,
        &mut host,
        &mut stats,
        Transport::Vmcall,
        |why| {
            hv_println!("{}: {}", part.name, Unusual(*why));
        },
    );
    if host.line.pending() > 0 {
        host.line.flush(&log::CONSOLE);
    }
    let mut s = String::new();
    let _ = stats.write_to(&mut s);
    hv_println!("{}: stopped: {}", part.name, stop);
    for line in s.lines() {
        hv_println!("{}: {}", part.name, line);
    }
    Ok(stop)
}

/// Run the self-test; true when both guests ended as expected.
pub fn run() -> bool {
    match try_run() {
        Ok(pass) => pass,
        Err(e) => {
            hv_println!("vmx: self-test could not run: {e}");
            false
        }
    }
}

fn try_run() -> Result<bool, VmxError> {
    let pool = pages(POOL_PAGES).ok_or(VmxError::NoMemory)?;
    let a = pages(GUEST_PAGES).ok_or(VmxError::NoMemory)?;
    let b = pages(GUEST_PAGES).ok_or(VmxError::NoMemory)?;
    // SAFETY: the pool was just allocated as runtime data for the hypervisor
    // alone and the firmware's page tables identity-map it.
    let mut mem = unsafe { IdentityMem::new(pool, POOL_PAGES as u64) };
    // SAFETY: BSP in ring 0, interrupts as the firmware left them; the GDT copy keeps
    // every firmware selector.
    unsafe { host::ensure_task_register(&mut mem) }.ok_or(VmxError::NoMemory)?;
    // SAFETY: on this CPU, once, with frames from the pool.
    let cpu = unsafe { VmxCpu::enable(&mut mem)? };
    let phys_bits = vmx::cpuid(0x8000_0008, 0)[0] as u8;
    // SAFETY: the MTRR MSRs exist on every CPU with VMX.
    let mtrrs = Mtrrs::read(|m| unsafe { rdmsr(m) }, phys_bits);
    hv_println!(
        "vmx: VMXON ok (VMCS revision {:#x}); controls pin={:#x} proc={:#x} proc2={:#x} exit={:#x} entry={:#x}",
        cpu.caps.revision_id(),
        cpu.controls.pin,
        cpu.controls.proc,
        cpu.controls.proc2,
        cpu.controls.exit,
        cpu.controls.entry
    );
    hv_println!(
        "vmx: MTRRs {} default {}; region {:#x} is {}",
        if mtrrs.enabled { "enabled" } else { "disabled" },
        mtrrs.default_type.short(),
        a,
        mtrrs.type_of(a).short()
    );
    let size = GUEST_PAGES as u64 * 4096;
    let smoke = partition(0, "vmx-smoke", Range::new(a, size), Expectation::ExitZero);
    let iso = partition(
        1,
        "vmx-isolation",
        Range::new(b, size),
        Expectation::Contained,
    );
    let s1 = run_guest(&cpu, &mut mem, &mtrrs, &smoke, SMOKE_CODE)?;
    let s2 = run_guest(&cpu, &mut mem, &mtrrs, &iso, &isolation_code(a))?;
    let mut pass = true;
    for (p, stop) in [(&smoke, s1), (&iso, s2)] {
        let ok = stop.passes(p.expect);
        pass &= ok;
        hv_println!("vmx: {} {}", p.name, if ok { "passed" } else { "FAILED" });
    }
    Ok(pass)
}
