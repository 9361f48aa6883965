//! [`LaunchHost`] straight from UEFI boot services, until the platform
//! layer's own `Platform` (reserved page pool, MP services wrapper) takes
//! over: it implements the same trait.

use super::{ApEntry, HostError, LaunchHost};
use crate::platform::boot::GuestImage;
use core::ffi::c_void;
use uefi::boot::{self, AllocateType, EventType, MemoryType, ScopedProtocol, Tpl};
use uefi::proto::pi::mp::MpServices;

pub struct FirmwareHost<'a> {
    images: &'a [GuestImage],
    mp: Option<ScopedProtocol<MpServices>>,
}

impl<'a> FirmwareHost<'a> {
    pub fn new(images: &'a [GuestImage]) -> Self {
        let mp = boot::get_handle_for_protocol::<MpServices>()
            .ok()
            .and_then(|h| boot::open_protocol_exclusive::<MpServices>(h).ok());
        FirmwareHost { images, mp }
    }
}

impl LaunchHost for FirmwareHost<'_> {
    fn alloc_pages(&mut self, pages: usize) -> Result<u64, HostError> {
        let p = boot::allocate_pages(
            AllocateType::AnyPages,
            MemoryType::RUNTIME_SERVICES_DATA,
            pages,
        )
        .map_err(|_| HostError("out of memory for hypervisor pages"))?;
        // SAFETY: the firmware just handed us these pages.
        unsafe { core::ptr::write_bytes(p.as_ptr(), 0, pages * 4096) };
        Ok(p.as_ptr() as u64)
    }

    fn reserve_at(&mut self, base: u64, size: u64) -> Result<(), HostError> {
        boot::allocate_pages(
            AllocateType::Address(base),
            MemoryType::RESERVED,
            size.div_ceil(4096) as usize,
        )
        .map(|_| ())
        .map_err(|_| HostError("the firmware refused to reserve the range (in use?)"))
    }

    fn image(&self, name: &str) -> Option<&'static [u8]> {
        self.images.iter().find(|i| i.name == name).map(|i| i.bytes)
    }

    fn start_on_cpu(
        &mut self,
        apic_id: u32,
        entry: ApEntry,
        arg: *mut c_void,
    ) -> Result<(), HostError> {
        let mp = self
            .mp
            .as_ref()
            .ok_or(HostError("no UEFI MP services protocol"))?;
        let count = mp
            .get_number_of_processors()
            .map_err(|_| HostError("MP services: cannot count processors"))?;
        let index = (0..count.total)
            .find(|&n| {
                mp.get_processor_info(n)
                    .is_ok_and(|i| i.processor_id == apic_id as u64 && !i.is_bsp())
            })
            .ok_or(HostError("no enabled AP with that APIC ID"))?;
        // A completion event makes the start non-blocking: the AP keeps
        // running the partition while the BSP goes on.
        // SAFETY: a plain event with no notification function.
        let event = unsafe { boot::create_event(EventType::empty(), Tpl::CALLBACK, None, None) }
            .map_err(|_| HostError("cannot create an MP completion event"))?;
        mp.startup_this_ap(index, entry, arg, Some(event), None)
            .map_err(|_| HostError("MP services refused to start the AP"))
    }

    fn stall_us(&mut self, us: u64) {
        boot::stall(core::time::Duration::from_micros(us));
    }
}
