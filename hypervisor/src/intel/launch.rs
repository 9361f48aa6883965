//! Running a policy's test partitions on VMX.
//!
//! The test partitions run one after another on the boot CPU, before it
//! returns to the firmware: each gets its reserved memory, its image, its own
//! EPT (memory types from the MTRRs) and VPID, and runs through the shared exit
//! handler until it stops. This is what the Bochs machine needs (Bochs 2.7 is
//! only dependable with VMX on one CPU) and works on any VMX machine; starting
//! each partition on its own AP, as the SVM launch does, is the next step.
//!
//! The boot CPU's state is preserved around the runs: interrupts stay off
//! while guests run (external interrupts are left pending for the firmware),
//! the x87/SSE state is saved and restored (and reset between partitions so
//! none sees another's registers), and VMX is switched off again at the end,
//! because the primary partition is not virtualized on VMX yet.

use super::ept::{Ept, EptPerms};
use super::memtype::Mtrrs;
use super::run::run_to_stop;
use super::vcpu::{Intercepts, Unusual, VcpuConfig, VmxCpu, VmxVcpu};
use super::{host, instructions as vmx};
use crate::exit::ExitHost;
use crate::hv_println;
use crate::launch::summary::{self, Result as PartResult};
use crate::launch::{LaunchHost, Verdict};
use crate::mem::identity::IdentityMem;
use crate::npt::{Npt, NptOptions, Perm};
use crate::partition::plan::Plan;
use crate::partition::{elf, guest_setup, Kind, PartitionConfig, StopReason};
use crate::platform::console::LineBuffer;
use crate::platform::instructions::{self, rdmsr};
use crate::platform::log::CONSOLE;
use crate::stats::Stats;
use alloc::vec::Vec;
use nexus_abi::cpuid::{CpuidResult, Transport};

/// Frames for VMXON, the TSS/GDT copy, and per partition its VMCS and bitmaps.
const VMX_POOL_PAGES: u64 = 64;
/// Frames for one partition's EPT and its NPT-format view.
const TABLE_POOL_PAGES: u64 = 64;

/// The exit handler's view of the boot CPU.
struct BspHost {
    line: LineBuffer,
}

impl ExitHost for BspHost {
    fn console(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.line.push(&CONSOLE, b);
        }
    }

    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        let [eax, ebx, ecx, edx] = vmx::cpuid(leaf, subleaf);
        CpuidResult { eax, ebx, ecx, edx }
    }
}

/// Run every test partition of `plan` and judge the run.
pub fn run(host: &mut impl LaunchHost, plan: &Plan) -> Verdict {
    let mut fx = vmx::FxArea::zeroed();
    // SAFETY: CPL 0 on the boot CPU; interrupts go back on (if they were) below.
    let interrupts = unsafe {
        let on = instructions::interrupts_enabled();
        instructions::cli();
        vmx::fxsave(&mut fx);
        on
    };
    let verdict = run_all(host, plan);
    // SAFETY: restores exactly what was saved above on this CPU.
    unsafe {
        vmx::fxrstor(&fx);
        if interrupts {
            instructions::sti();
        }
    }
    verdict
}

fn run_all(host: &mut impl LaunchHost, plan: &Plan) -> Verdict {
    let pool = match host.alloc_pages(VMX_POOL_PAGES as usize) {
        Ok(p) => p,
        Err(e) => return Verdict::fail(format_args!("vmx: no memory for VMX structures: {e}")),
    };
    // SAFETY: the pool was just allocated for the hypervisor alone, identity mapped.
    let mut mem = unsafe { IdentityMem::new(pool, VMX_POOL_PAGES) };
    // SAFETY: boot CPU, ring 0, interrupts off; the GDT copy keeps the firmware's selectors.
    if unsafe { host::ensure_task_register(&mut mem) }.is_none() {
        return Verdict::fail(format_args!(
            "vmx: cannot give the boot CPU a task register"
        ));
    }
    // SAFETY: once on this CPU, with frames from the pool.
    let cpu = match unsafe { VmxCpu::enable(&mut mem) } {
        Ok(c) => c,
        Err(e) => return Verdict::fail(format_args!("vmx: {e}")),
    };
    let ept_caps = cpu.ept_caps();
    hv_println!(
        "vmx: VMXON ok: VMCS revision {:#x}, TRUE controls {}, EPT 2M={} 1G={} INVEPT={} INVVPID={}; \
         controls pin={:#x} proc={:#x} proc2={:#x} exit={:#x} entry={:#x}",
        cpu.caps.revision_id(),
        if cpu.caps.has_true_controls() { "yes" } else { "no" },
        ept_caps.pages_2m(),
        ept_caps.pages_1g(),
        ept_caps.invept(),
        ept_caps.invvpid(),
        cpu.controls.pin,
        cpu.controls.proc,
        cpu.controls.proc2,
        cpu.controls.exit,
        cpu.controls.entry
    );
    let phys_bits = vmx::cpuid(0x8000_0008, 0)[0] as u8;
    // SAFETY: the MTRR MSRs exist on every CPU with VMX.
    let mtrrs = Mtrrs::read(|m| unsafe { rdmsr(m) }, phys_bits);
    hv_println!(
        "vmx: MTRRs {}, default type {}, {} variable range(s); EPT memory types follow them",
        if mtrrs.enabled { "enabled" } else { "disabled" },
        mtrrs.default_type.short(),
        mtrrs.variable_count
    );

    let mut results: Vec<(PartitionConfig, StopReason, Stats)> = Vec::new();
    for config in plan.iter() {
        match config.kind {
            Kind::Test => {}
            Kind::Primary => {
                hv_println!(
                    "partition {}: primary, stays with the firmware on the boot CPU",
                    config.name
                );
                continue;
            }
            Kind::Deferred => {
                hv_println!(
                    "partition {}: started later through management calls (not by this version)",
                    config.name
                );
                continue;
            }
        }
        let mut stats = Stats::new();
        let stop = match run_one(host, &cpu, &mut mem, &mtrrs, config, &mut stats) {
            Ok(stop) => stop,
            Err(why) => {
                hv_println!("partition {}: not started: {why}", config.name);
                StopReason::SetupFailed
            }
        };
        results.push((config.clone(), stop, stats));
    }
    // SAFETY: no guest runs any more on this CPU; the primary is not virtualized on VMX yet.
    if let Err(e) = unsafe { vmx::vmxoff() } {
        hv_println!("vmx: VMXOFF failed: {e}");
    }
    let parts: Vec<PartResult<'_>> = results
        .iter()
        .map(|(config, stop, stats)| PartResult {
            config,
            stop: Some(*stop),
            stats,
        })
        .collect();
    summary::summarize(&parts, |line| hv_println!("{line}"))
}

/// Set up one test partition and run it to its stop on this CPU.
fn run_one(
    host: &mut impl LaunchHost,
    cpu: &VmxCpu,
    mem: &mut IdentityMem,
    mtrrs: &Mtrrs,
    config: &PartitionConfig,
    stats: &mut Stats,
) -> Result<StopReason, &'static str> {
    for r in config.regions() {
        host.reserve_at(r.start, r.size())
            .map_err(|_| "its memory region is not free (the firmware refused to reserve it)")?;
    }
    let image = host
        .image(config.image.as_str())
        .ok_or("its image was not loaded from the ESP")?;
    // SAFETY: an empty pool: only writes the partition's own, just reserved,
    // identity-mapped memory.
    let mut guest_mem = unsafe { IdentityMem::new(0, 0) };
    let loaded = elf::load(image, config, &mut guest_mem).map_err(|e| {
        hv_println!("partition {}: image rejected: {e:?}", config.name);
        "its image does not fit the partition"
    })?;
    let start = guest_setup::prepare(config, loaded.end, loaded.entry, &mut guest_mem)
        .map_err(|_| "no room for the guest's page tables and stack")?;

    let pool = host
        .alloc_pages(TABLE_POOL_PAGES as usize)
        .map_err(|_| "out of memory for its EPT")?;
    // SAFETY: the pool was just allocated for this partition's tables alone.
    let mut tables = unsafe { IdentityMem::new(pool, TABLE_POOL_PAGES) };
    let mut ept = Ept::new(&mut tables, cpu.ept_caps()).map_err(|_| "out of EPT frames")?;
    // The shared hypercall code checks guest buffers against an NPT-format
    // view of the same regions; the processor only ever walks the EPT.
    let mut npt = Npt::new(
        &mut tables,
        NptOptions {
            huge_pages: false,
            nx: false,
        },
    )
    .map_err(|_| "out of table frames")?;
    for r in config.regions() {
        ept.map_identity(&mut tables, r.start, r.size(), EptPerms::RWX, mtrrs)
            .map_err(|_| "cannot map its region in the EPT")?;
        npt.map_identity(&mut tables, r.start, r.size(), Perm::RWX)
            .map_err(|_| "cannot map its region in the NPT view")?;
    }
    let vpid = config.id as u16 + 1;
    let cfg = VcpuConfig {
        eptp: ept.eptp(),
        vpid,
        start,
    };
    // SAFETY: on the CPU that executed VMXON; frames from the identity-mapped pool;
    // the EPT lives in `tables`, which stays allocated (runtime pages are never freed).
    let mut vcpu =
        unsafe { VmxVcpu::new_long_mode(cpu, mem, cfg, Intercepts::TEST) }.map_err(|e| {
            hv_println!("partition {}: {e}", config.name);
            "its VMCS could not be set up"
        })?;
    let mt = mtrrs
        .uniform_type(config.regions()[0].start, config.regions()[0].size())
        .map_or("mixed", |t| t.short());
    hv_println!(
        "partition {}: image {} at {:#x}..{:#x} (entry {:#x}), EPT {:#x} maps {} region(s) \
         ({} x 4 KiB, {} x 2 MiB, memory type {mt}), VPID {vpid}, on the boot CPU",
        config.name,
        config.image,
        loaded.start,
        loaded.end,
        loaded.entry,
        ept.pml4(),
        config.region_count,
        ept.stats.pages_4k,
        ept.stats.pages_2m,
    );
    // Each partition starts from clean x87/SSE state.
    // SAFETY: CPL 0; FNINIT only resets the FPU of this CPU (saved by `run`).
    unsafe { vmx::fpu_reset() };
    let mut bsp = BspHost {
        line: LineBuffer::new(config.name.as_str()),
    };
    // SAFETY: an empty pool: guest memory is only read and written through
    // the NPT-format view, which covers the partition's regions alone.
    let mut access = unsafe { IdentityMem::new(0, 0) };
    let stop = run_to_stop(
        &mut vcpu,
        config,
        &npt,
        &mut access,
        &mut bsp,
        stats,
        Transport::Vmcall,
        |why| {
            hv_println!("partition {}: {}", config.name, Unusual(*why));
        },
    );
    if bsp.line.pending() > 0 {
        bsp.line.flush(&CONSOLE);
    }
    hv_println!(
        "partition {} stopped at rip {:#x}: {stop}",
        config.name,
        crate::vcpu::Vcpu::rip(&vcpu)
    );
    Ok(stop)
}
