//! [`Platform`] as the backend's [`LaunchHost`]: the page pool, reserved regions, images and
//! MP services of the platform layer (UEFI only).

use super::Platform;
use crate::hv_println;
use crate::launch::{ApEntry, HostError, LaunchHost};
use core::ffi::c_void;

impl LaunchHost for Platform {
    fn alloc_pages(&mut self, pages: usize) -> Result<u64, HostError> {
        Platform::alloc_pages(self, pages).ok_or(HostError("hypervisor page pool exhausted"))
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

    /// The page pool (host page tables, IDT, GDTs/TSSs/stacks, control blocks, NPT/EPT; all
    /// of `[machine] hypervisor_memory` when the policy places it) and the guest image
    /// pages. Not the heap: the boot CPU still frees heap objects in guest mode after
    /// `launch` returns.
    fn hypervisor_ranges(&self, out: &mut dyn FnMut(u64, u64)) {
        let (base, bytes) = super::pages::claimed_range();
        if bytes != 0 {
            out(base, bytes);
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
