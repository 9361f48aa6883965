//! The boot steps `main.rs` runs, each logging what it found (UEFI target only).
//!
//! Every failure becomes a [`BootError`] whose text ends up in `NEXUS RESULT: FAIL (...)`.

use super::acpi::{AcpiFailure, AcpiSummary, MadtCpu};
use super::cpu_info::CoreType;
use super::cpu_info::CpuSummary;
use super::esp::{self, EspError, Keep};
use super::esp_path::{self, BadImageName, EspPath};
use super::host_cpu::{self, HostCpu, HostEnvError};
use super::memory_map::{MapEntry, MemoryMapSummary};
use super::mp::Mp;
use super::policy_fit::{self, CpuPlan, FailSummary, MachineFacts, Misfit};
use super::{firmware, heap, pages, Platform};
use crate::hv_println;
use alloc::vec::Vec;
use core::fmt;
use nexus_policy::compiled::{CompiledPolicy, DecodeError};

/// What discovery found on the boot CPU.
pub struct Discovery {
    pub cpu: CpuSummary,
    pub memory_map: Vec<MapEntry>,
    /// `None` when the firmware publishes no ACPI tables at all (OVMF under Bochs).
    pub acpi: Option<AcpiSummary>,
    /// The CPUs the policy is checked against: the MADT's, or, without ACPI, the
    /// processors UEFI MP services reports (all enabled ones).
    pub cpus: Vec<MadtCpu>,
}

/// A guest image read from the ESP for a partition.
#[derive(Debug, Clone, Copy)]
pub struct GuestImage {
    /// The `image` field of the partition(s) that use it.
    pub name: &'static str,
    /// The ELF file, in reserved pages (never reclaimed or mapped by the OS).
    pub bytes: &'static [u8],
}

/// Why the hypervisor refuses to start.
pub enum BootError {
    Pool(uefi::Error),
    /// The policy's `[machine] hypervisor_memory` cannot be claimed.
    HypervisorMemory {
        base: u64,
        bytes: u64,
        /// The first memory-map descriptor in the range that is not free, if any.
        busy: Option<MapEntry>,
        status: Option<uefi::Status>,
    },
    MemoryMap(uefi::Error),
    HostEnv(HostEnvError),
    Acpi(AcpiFailure),
    File {
        path: EspPath,
        error: EspError,
    },
    Policy(DecodeError),
    Misfit(Vec<Misfit<'static>>),
    BadImage {
        partition: &'static str,
        error: BadImageName,
    },
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::Pool(e) => {
                write!(
                    f,
                    "cannot allocate the hypervisor page pool ({:?})",
                    e.status()
                )
            }
            BootError::HypervisorMemory {
                base,
                bytes,
                busy,
                status,
            } => {
                write!(
                    f,
                    "policy [machine] hypervisor_memory {base:#x}+{} MiB is not free memory",
                    bytes >> 20
                )?;
                if let Some(e) = busy {
                    write!(
                        f,
                        ": {:#x}..{:#x} is {}",
                        e.base,
                        e.end(),
                        super::memory_map::type_name(e.ty)
                    )?;
                }
                if let Some(s) = status {
                    write!(f, " (AllocatePages(AllocateAddress): {s:?})")?;
                }
                f.write_str("; choose a range the firmware leaves free")
            }
            BootError::HostEnv(e) => write!(f, "host environment: {e}"),
            BootError::MemoryMap(e) => {
                write!(f, "cannot read the UEFI memory map ({:?})", e.status())
            }
            BootError::Acpi(e) => write!(f, "{e}"),
            BootError::File { path, error } => write!(f, "ESP file {path}: {error}"),
            BootError::Policy(e) => write!(
                f,
                "{} is not a valid compiled policy: {e}",
                esp_path::POLICY_PATH
            ),
            BootError::Misfit(m) => write!(f, "{}", FailSummary(m)),
            BootError::BadImage { partition, error } => {
                write!(f, "partition '{partition}' image: {error}")
            }
        }
    }
}

/// Every boot step up to the backend: page pool, discovery, MP services, policy and its
/// fit, guest images, host environment.
pub fn start() -> Result<Platform, BootError> {
    let discovery = discover()?;
    // Host mode's clock (console budgets): the TSC against the firmware's stall.
    let per_ms =
        super::clock::calibrate(|us| uefi::boot::stall(core::time::Duration::from_micros(us)));
    hv_println!(
        "clock: TSC at {}.{:03} MHz (measured against the firmware's stall)",
        per_ms / 1000,
        per_ms % 1000
    );
    let flush = crate::mitigations::EntryFlush::for_this_cpu();
    let yes = |on: bool| if on { "yes" } else { "no" };
    hv_println!(
        "mitigations (boot CPU): before entering a test partition L1D flush {}, VERW {}; IBPB when a CPU switches partitions {}",
        yes(flush.l1d),
        yes(flush.verw),
        yes(flush.ibpb_on_switch)
    );
    let mp = match Mp::open() {
        Ok(mp) => {
            log_processors(&mp, &discovery);
            Some(mp)
        }
        Err(e) => {
            hv_println!("mp: {e}; only the boot CPU can be used");
            None
        }
    };
    let mut discovery = discovery;
    if discovery.acpi.is_none() {
        discovery.cpus = cpus_without_acpi(mp.as_ref(), discovery.cpu.apic_id);
    }
    let bsp_type = discovery.cpu.core_type.map(|t| (discovery.cpu.apic_id, t));
    let core_types = match &mp {
        Some(mp) => mp.core_types(bsp_type).unwrap_or_else(|e| {
            hv_println!("mp: core-type probe failed: {e}");
            bsp_type.into_iter().collect()
        }),
        None => bsp_type.into_iter().collect(),
    };
    let policy = load_policy()?;
    let plan = check_policy(&policy, &discovery, &core_types)?;
    page_pool(&policy, &discovery)?;
    hide_partition_cpus(&policy, &plan, &discovery);
    let images = load_images(&policy)?;
    let bsp_host = host_environment(&discovery)?;
    Ok(Platform::new(discovery, policy, plan, images, mp, bsp_host))
}

/// The page pool: at the policy's `[machine] hypervisor_memory` when it names one (refusing
/// to start when that memory is not free), else wherever the firmware puts 32 MiB.
fn page_pool(policy: &CompiledPolicy<'static>, d: &Discovery) -> Result<(), BootError> {
    let at = policy.machine().hypervisor_memory();
    if let Some((base, bytes)) = at {
        if !super::memory_map::is_free_range(&d.memory_map, base, bytes) {
            let end = base.saturating_add(bytes);
            let busy = d
                .memory_map
                .iter()
                .find(|e| {
                    e.base < end && base < e.end() && e.ty != super::memory_map::ty::CONVENTIONAL
                })
                .copied();
            return Err(BootError::HypervisorMemory {
                base,
                bytes,
                busy,
                status: None,
            });
        }
    }
    let (pool, pool_bytes) = pages::init(at).map_err(|e| match at {
        Some((base, bytes)) => BootError::HypervisorMemory {
            base,
            bytes,
            busy: None,
            status: Some(e.status()),
        },
        None => BootError::Pool(e),
    })?;
    let (heap_base, heap_bytes) = heap::range();
    hv_println!(
        "memory: heap {heap_base:#x} ({} KiB), page pool {pool:#x} ({} MiB, {}), both EfiReservedMemoryType",
        heap_bytes >> 10,
        pool_bytes >> 20,
        if at.is_some() { "policy hypervisor_memory" } else { "placed by the firmware" }
    );
    Ok(())
}

/// CPUs the primary does not own (other partitions', and those no partition owns, which
/// stay parked in the hypervisor) are removed from the MADT the primary OS will read: an OS
/// that finds a CPU there tries to start it, and nothing it sends reaches that CPU.
fn hide_partition_cpus(policy: &CompiledPolicy<'static>, plan: &CpuPlan, d: &Discovery) {
    let Some(acpi) = &d.acpi else { return };
    let Some(primary) = policy
        .partitions()
        .find(|p| p.role() == nexus_policy::Role::Primary)
        .map(|p| p.index())
    else {
        return;
    };
    let others = plan.not_owned_by(primary, acpi.cpus.iter().map(|c| c.apic_id));
    if others.is_empty() {
        return;
    }
    // SAFETY: `madt_at` is where discovery read the MADT; BSP, before the OS boots.
    let hidden = unsafe { firmware::hide_cpus_in_madt(acpi.madt_at, &others) };
    // Read the tables again through the acpi crate (checksums included) to be sure.
    let verified = firmware::acpi().is_ok_and(|again| {
        hidden
            .iter()
            .all(|&a| again.cpus.iter().all(|c| c.apic_id != a))
    });
    hv_println!(
        "acpi: MADT at {:#x}: APIC ID(s) [{}] removed so the primary partition's OS never sees them ({})",
        acpi.madt_at.0,
        CpuList(hidden),
        if verified { "re-read: absent, checksum valid" } else { "WARNING: re-read still lists them" }
    );
}

/// Without ACPI: every enabled, healthy processor MP services lists (or just the BSP).
fn cpus_without_acpi(mp: Option<&Mp>, bsp_apic_id: u32) -> Vec<MadtCpu> {
    let cpu = |uid: u32, apic_id: u32| MadtCpu {
        uid,
        apic_id,
        enabled: true,
        online_capable: false,
        x2apic: false,
    };
    match mp {
        Some(mp) => mp
            .processors()
            .iter()
            .filter(|p| p.enabled && p.healthy)
            .map(|p| cpu(p.index as u32, p.apic_id))
            .collect(),
        None => alloc::vec![cpu(0, bsp_apic_id)],
    }
}

fn log_processors(mp: &Mp, d: &Discovery) {
    let cpus = mp.processors();
    hv_println!("mp: {} processor(s) from UEFI MP services", cpus.len());
    for p in cpus {
        let in_madt = d
            .acpi
            .as_ref()
            .is_none_or(|a| a.cpu_by_apic_id(p.apic_id).is_some());
        hv_println!(
            "mp:   #{} apic-id {}{}{}{}",
            p.index,
            p.apic_id,
            if p.is_bsp { " bsp" } else { "" },
            if p.enabled && p.healthy {
                ""
            } else {
                " (disabled or unhealthy)"
            },
            if in_madt {
                ""
            } else {
                " (not an enabled CPU in the MADT!)"
            }
        );
    }
}

/// Host page tables, IDT and the BSP's GDT/TSS/stacks; loads them once and goes back to the
/// firmware's, to prove they work before a backend relies on them.
fn host_environment(d: &Discovery) -> Result<HostCpu, BootError> {
    let top = MemoryMapSummary::from_entries(d.memory_map.iter().copied()).map_top;
    let cr3 = host_cpu::init(top, d.cpu.gib_pages).map_err(BootError::HostEnv)?;
    let bsp = HostCpu::new(d.cpu.apic_id).map_err(BootError::HostEnv)?;
    // SAFETY: we are the BSP at CPL 0 in boot services, after `host_cpu::init`; the
    // firmware's tables are intact, and the self test restores them.
    let fw = unsafe { host_cpu::self_test(&bsp) }.map_err(BootError::HostEnv)?;
    let (used, cap) = pages::usage();
    hv_println!(
        "host: cr3 {cr3:#x} ({} identity map), idt {:#x}, bsp gdt {:#x} stack top {:#x}; load test passed (firmware cr3 {:#x} gdt {:#x})",
        if d.cpu.gib_pages { "1 GiB-page" } else { "2 MiB-page" },
        host_cpu::host_idt(),
        bsp.gdt,
        bsp.stack_top,
        fw.cr3,
        { fw.gdtr.base }
    );
    hv_println!("host: page pool {used} of {cap} pages used");
    Ok(bsp)
}

/// CPUID, UEFI memory map and ACPI, each logged as a summary.
pub fn discover() -> Result<Discovery, BootError> {
    let cpu = firmware::cpu_summary();
    hv_println!("{cpu}");
    let memory_map = firmware::memory_map().map_err(BootError::MemoryMap)?;
    hv_println!(
        "{}",
        MemoryMapSummary::from_entries(memory_map.iter().copied())
    );
    let acpi = match firmware::acpi() {
        Ok(acpi) => {
            hv_println!("{acpi}");
            Some(acpi)
        }
        Err(AcpiFailure::NoRsdp) => {
            hv_println!(
                "acpi: the firmware publishes no ACPI tables; CPUs come from UEFI MP services"
            );
            None
        }
        Err(e) => return Err(BootError::Acpi(e)),
    };
    let cpus = acpi.as_ref().map_or_else(Vec::new, |a| a.cpus.clone());
    Ok(Discovery {
        cpu,
        memory_map,
        acpi,
        cpus,
    })
}

/// Read and decode `\NEXUS\POLICY.BIN`.
pub fn load_policy() -> Result<CompiledPolicy<'static>, BootError> {
    let mut path = EspPath::default();
    let _ = fmt::Write::write_str(&mut path, esp_path::POLICY_PATH);
    let bytes = esp::read(&path, Keep::Heap).map_err(|error| BootError::File { path, error })?;
    let policy = CompiledPolicy::decode(bytes).map_err(BootError::Policy)?;
    let (major, minor) = policy.version();
    hv_println!(
        "policy: \"{}\" format {major}.{minor}, {} bytes, {} partition(s)",
        policy.machine().name(),
        bytes.len(),
        policy.partition_count()
    );
    Ok(policy)
}

/// Check the policy against the machine; log every misfit, or the CPU plan.
pub fn check_policy(
    policy: &CompiledPolicy<'static>,
    d: &Discovery,
    core_types: &[(u32, CoreType)],
) -> Result<CpuPlan, BootError> {
    let smt_shift = crate::topology::smt_shift(|leaf, sub| {
        let r = core::arch::x86_64::__cpuid_count(leaf, sub);
        [r.eax, r.ebx, r.ecx, r.edx]
    });
    let facts = MachineFacts {
        cpus: &d.cpus,
        core_types,
        smt_shift,
        bsp_apic_id: d.cpu.apic_id,
        memory_map: &d.memory_map,
        can_virtualize: d.cpu.backend().is_some(),
    };
    match policy_fit::check(policy, &facts) {
        Ok(plan) => {
            for p in policy.partitions() {
                let cpus = CpuList(plan.cpus_of(p.index()).collect());
                hv_println!(
                    "policy: partition '{}' ({}) cpus [{cpus}]",
                    p.name(),
                    p.role()
                );
            }
            if plan.shared_cores.is_empty() {
                hv_println!(
                    "policy: SMT: {smt_shift} APIC ID bit(s) name the thread; no two partitions share a core"
                );
            }
            for (core, a, b) in &plan.shared_cores {
                let name = |i: &usize| policy.partition(*i).map_or("?", |p| p.name());
                hv_println!(
                    "policy: SMT: partitions '{}' and '{}' share core {core} (both set share_smt_core)",
                    name(a),
                    name(b)
                );
            }
            for (apic_id, index) in &plan.unplaced {
                let name = policy.partition(*index).map_or("?", |p| p.name());
                hv_println!(
                    "policy: single-CPU machine: partition '{name}' names APIC ID {apic_id}, which is not online; it runs on the boot CPU"
                );
            }
            Ok(plan)
        }
        Err(misfits) => {
            for m in &misfits {
                hv_println!("policy does not fit: {m}");
            }
            Err(BootError::Misfit(misfits))
        }
    }
}

/// Read each distinct guest image the partitions name.
pub fn load_images(policy: &CompiledPolicy<'static>) -> Result<Vec<GuestImage>, BootError> {
    let mut images: Vec<GuestImage> = Vec::new();
    for p in policy.partitions() {
        let Some(name) = p.image() else { continue };
        if images.iter().any(|i| i.name == name) {
            continue;
        }
        let path = esp_path::image_path(name).map_err(|error| BootError::BadImage {
            partition: p.name(),
            error,
        })?;
        let bytes = esp::read(&path, Keep::ReservedPages).map_err(|error| BootError::File {
            path: path.clone(),
            error,
        })?;
        hv_println!(
            "image: {path} ({} bytes) for partition '{}'",
            bytes.len(),
            p.name()
        );
        images.push(GuestImage { name, bytes });
    }
    let (used, free) = heap::usage();
    hv_println!("heap: {} KiB used, {} KiB free", used / 1024, free / 1024);
    Ok(images)
}

struct CpuList(Vec<u32>);

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}
