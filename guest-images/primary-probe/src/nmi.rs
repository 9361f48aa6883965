//! The probe's NMI handler, registered for vector 2 through the firmware's
//! EFI_CPU_ARCH_PROTOCOL (PI spec, DXE CIS): it counts. The firmware's exception entry
//! calls it with the interrupted context and returns with IRET.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU32, Ordering};
use uefi::boot::{self, OpenProtocolAttributes, OpenProtocolParams};
use uefi::proto::unsafe_protocol;
use uefi::Status;

const NMI_VECTOR: isize = 2;

type Handler = extern "efiapi" fn(vector: isize, context: *mut c_void);

/// EFI_CPU_ARCH_PROTOCOL; only RegisterInterruptHandler is called.
#[repr(C)]
#[unsafe_protocol("26baccb1-6f42-11d4-bce7-0080c73c8881")]
struct CpuArch {
    flush_data_cache: usize,
    enable_interrupt: usize,
    disable_interrupt: usize,
    get_interrupt_state: usize,
    init: usize,
    register_interrupt_handler: unsafe extern "efiapi" fn(
        this: *const CpuArch,
        vector: isize,
        handler: Option<Handler>,
    ) -> Status,
    get_timer_value: usize,
    set_memory_attributes: usize,
    number_of_timers: u32,
    dma_buffer_alignment: u32,
}

static COUNT: AtomicU32 = AtomicU32::new(0);

extern "efiapi" fn on_nmi(_vector: isize, _context: *mut c_void) {
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// NMIs the handler counted so far.
pub fn count() -> u32 {
    COUNT.load(Ordering::SeqCst)
}

fn register_handler(handler: Option<Handler>) -> Result<(), Status> {
    let handle = boot::get_handle_for_protocol::<CpuArch>().map_err(|e| e.status())?;
    // SAFETY: GetProtocol does not take the protocol from its driver; the firmware's CPU
    // protocol outlives this application.
    let cpu = unsafe {
        boot::open_protocol::<CpuArch>(
            OpenProtocolParams {
                handle,
                agent: boot::image_handle(),
                controller: None,
            },
            OpenProtocolAttributes::GetProtocol,
        )
    }
    .map_err(|e| e.status())?;
    let this: &CpuArch = &cpu;
    // SAFETY: the protocol's own function with its own `this`; the handler is a plain
    // function of this image, which stays loaded (the probe never returns).
    let status = unsafe { (this.register_interrupt_handler)(this, NMI_VECTOR, handler) };
    if status.is_success() {
        Ok(())
    } else {
        Err(status)
    }
}

/// Install the counting handler for vector 2.
pub fn install() -> Result<(), Status> {
    register_handler(Some(on_nmi))
}

/// Give vector 2 back to the firmware.
pub fn uninstall() -> Result<(), Status> {
    register_handler(None)
}
