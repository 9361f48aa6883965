//! [`Platform`]: everything the boot found and the services the backends use (UEFI only).

use super::boot::{Discovery, GuestImage};
use super::host_cpu::{self, HostCpu, HostEnvError};
use super::mp::{Mp, MpError, Processor};
use super::pages;
use super::policy_fit::CpuPlan;
use alloc::vec::Vec;
use core::ffi::c_void;
use core::fmt;
use nexus_policy::compiled::CompiledPolicy;
use uefi::boot::{self, AllocateType, MemoryType};
use uefi::proto::pi::mp::Procedure;

/// Why a region could not be reserved for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveError {
    /// Base or size not 4 KiB aligned, or size zero.
    Unaligned { base: u64, size: u64 },
    /// The firmware refused (the range is in use or not RAM).
    Refused {
        base: u64,
        size: u64,
        status: uefi::Status,
    },
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReserveError::Unaligned { base, size } => {
                write!(f, "region {base:#x}+{size:#x} is not page aligned")
            }
            ReserveError::Refused { base, size, status } => write!(
                f,
                "the firmware refused to reserve {:#x}..{:#x} ({status:?})",
                base,
                base.saturating_add(*size)
            ),
        }
    }
}

/// The machine as the boot found it, and the platform services on it.
pub struct Platform {
    pub discovery: Discovery,
    pub policy: CompiledPolicy<'static>,
    /// Which CPU (APIC ID) runs which partition.
    pub plan: CpuPlan,
    pub images: Vec<GuestImage>,
    mp: Option<Mp>,
    /// Regions claimed with [`Platform::reserve_at`], for hiding from the primary partition.
    reserved: Vec<(u64, u64)>,
    /// The BSP's host state (built at boot; the backend loads it).
    pub bsp_host: HostCpu,
}

impl Platform {
    pub(super) fn new(
        discovery: Discovery,
        policy: CompiledPolicy<'static>,
        plan: CpuPlan,
        images: Vec<GuestImage>,
        mp: Option<Mp>,
        bsp_host: HostCpu,
    ) -> Self {
        Platform {
            discovery,
            policy,
            plan,
            images,
            mp,
            reserved: Vec::new(),
            bsp_host,
        }
    }

    /// Zeroed, identity-mapped pages from the runtime-data pool (never reclaimed by the OS).
    /// Any CPU, any time; `None` when the pool is exhausted.
    pub fn alloc_pages(&self, n: usize) -> Option<u64> {
        pages::alloc(n)
    }

    /// Claim exactly `[base, base+size)` as reserved memory (`AllocatePages(AllocateAddress)`,
    /// `EfiReservedMemoryType`: the OS never uses it). BSP only, before returning to firmware.
    pub fn reserve_at(&mut self, base: u64, size: u64) -> Result<(), ReserveError> {
        if !base.is_multiple_of(pages::PAGE) || !size.is_multiple_of(pages::PAGE) || size == 0 {
            return Err(ReserveError::Unaligned { base, size });
        }
        boot::allocate_pages(
            AllocateType::Address(base),
            MemoryType::RESERVED,
            (size / pages::PAGE) as usize,
        )
        .map_err(|e| ReserveError::Refused {
            base,
            size,
            status: e.status(),
        })?;
        self.reserved.push((base, size));
        Ok(())
    }

    /// Regions reserved so far.
    pub fn reserved(&self) -> &[(u64, u64)] {
        &self.reserved
    }

    /// The hypervisor's own memory: heap and page pool (all of `hypervisor_memory` when the
    /// policy places it), `(base, bytes)` each.
    pub fn hypervisor_memory(&self) -> [(u64, u64); 2] {
        [super::heap::range(), pages::claimed_range()]
    }

    /// Processors as MP services lists them (empty without the protocol).
    pub fn cpus(&self) -> &[Processor] {
        self.mp.as_ref().map_or(&[], |m| m.processors())
    }

    /// Start `f(arg)` on the AP with `apic_id`, non-blocking (see [`Mp::start_on`]).
    pub fn run_on_ap(&self, apic_id: u32, f: Procedure, arg: *mut c_void) -> Result<(), MpError> {
        self.mp
            .as_ref()
            .ok_or(MpError::NoProtocol)?
            .start_on(apic_id, f, arg)
    }

    /// Host CR3 (identity map of all memory) for host mode on every CPU.
    pub fn host_cr3(&self) -> u64 {
        host_cpu::host_cr3()
    }

    /// Fresh host state (GDT, TSS, stacks) for the CPU with `apic_id`.
    pub fn host_cpu(&self, apic_id: u32) -> Result<HostCpu, HostEnvError> {
        HostCpu::new(apic_id)
    }

    /// The guest image a partition's `image` field names.
    pub fn image(&self, name: &str) -> Option<&'static [u8]> {
        self.images.iter().find(|i| i.name == name).map(|i| i.bytes)
    }

    /// Busy-wait about `us` microseconds through the firmware (BSP, before returning to it).
    pub fn stall_us(&self, us: u64) {
        boot::stall(core::time::Duration::from_micros(us));
    }
}
