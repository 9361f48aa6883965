//! [`Platform`] as the backend's [`LaunchHost`]: the page pool, reserved regions, images and
//! MP services of the platform layer (UEFI only).

use super::memory_map::ty;
use super::Platform;
use crate::hv_println;
use crate::launch::{ApEntry, Facts, HandOver, HostError, LaunchHost};
use crate::mem::Range;
use core::ffi::c_void;

impl LaunchHost for Platform {
    fn alloc_pages(&mut self, pages: usize) -> Result<u64, HostError> {
        Platform::alloc_pages(self, pages).ok_or(HostError("hypervisor page pool exhausted"))
    }

    fn alloc_pages_aligned(&mut self, pages: usize, align: u64) -> Result<u64, HostError> {
        super::pages::alloc_aligned(pages, (align / 4096).max(1) as usize)
            .ok_or(HostError("hypervisor page pool exhausted"))
    }

    fn facts(&self) -> Facts {
        let boot_cpu = self.discovery.cpu.apic_id;
        let mut cpus: alloc::vec::Vec<u32> = self
            .cpus()
            .iter()
            .filter(|p| p.is_bsp || (p.enabled && p.healthy))
            .map(|p| p.apic_id)
            .collect();
        if !cpus.contains(&boot_cpu) {
            cpus.insert(0, boot_cpu);
        }
        let ram = self
            .discovery
            .memory_map
            .iter()
            .filter(|e| {
                matches!(
                    e.ty,
                    ty::LOADER_CODE
                        | ty::LOADER_DATA
                        | ty::BOOT_SERVICES_CODE
                        | ty::BOOT_SERVICES_DATA
                        | ty::CONVENTIONAL
                        | ty::ACPI_RECLAIM
                        | ty::PERSISTENT
                )
            })
            .map(|e| Range::new(e.base, e.pages * 4096))
            .collect();
        // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU; CPL 0 on the boot CPU.
        let apic_base = unsafe { super::instructions::rdmsr(nexus_drivers::apic::APIC_BASE_MSR) }
            & nexus_drivers::apic::APIC_BASE_ADDR_MASK;
        Facts {
            cpus,
            boot_cpu,
            owners: self.plan.owners.clone(),
            unplaced: self.plan.unplaced.clone(),
            ram,
            apic_base,
            gib_pages: false,
        }
    }

    fn hand_over(&mut self, loader: Option<(&str, &str)>) -> Result<HandOver, HostError> {
        super::handover::prepare(loader)
    }

    fn reserve_at(&mut self, base: u64, size: u64) -> Result<(), HostError> {
        Platform::reserve_at(self, base, size).map_err(|e| {
            hv_println!("reserve: {e}");
            HostError("the firmware refused to reserve a partition region")
        })
    }

    fn image(&self, name: &str) -> Option<&'static [u8]> {
        Platform::image(self, name)
    }

    fn start_on_cpu(
        &mut self,
        apic_id: u32,
        entry: ApEntry,
        arg: *mut c_void,
    ) -> Result<(), HostError> {
        self.run_on_ap(apic_id, entry, arg).map_err(|e| {
            hv_println!("mp: {e}");
            HostError("MP services could not start the AP")
        })
    }

    fn stall_us(&mut self, us: u64) {
        Platform::stall_us(self, us)
    }

    /// Everything the hypervisor keeps: its moved image (code and statics), its heap, the
    /// page pool (host page tables, IDT, GDTs/TSSs/stacks, control blocks, NPT/EPT; all of
    /// `[machine] hypervisor_memory` when the policy places it) and the guest image pages.
    /// The boot CPU never runs hypervisor code as the primary's guest (it continues in the
    /// hand-over stub), so none of it stays mapped for the primary.
    fn hypervisor_ranges(&self, out: &mut dyn FnMut(u64, u64)) {
        for (base, bytes) in [
            super::pages::claimed_range(),
            super::heap::range(),
            super::relocate::image_range(),
        ] {
            if bytes != 0 {
                out(base, bytes);
            }
        }
        for image in &self.images {
            let base = image.bytes.as_ptr() as u64;
            out(
                base,
                (image.bytes.len() as u64).next_multiple_of(4096).max(4096),
            );
        }
    }
}
