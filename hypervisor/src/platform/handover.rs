//! The hand-over: where the boot CPU goes once it is the primary partition's guest.
//!
//! The guest must not run hypervisor code (the primary's table leaves the hypervisor's image
//! and heap out), so it continues in a small stub copied into memory the primary owns
//! (`EfiLoaderCode`, with its own stack in `EfiLoaderData`). The stub is entered with
//! interrupts off and executes CPUID (its first exit shows the host that the boot CPU runs in
//! guest mode: no firmware interrupt handler runs before it), turns interrupts back on when
//! the firmware had them on, then `StartImage` of the OS loader the policy names, loaded
//! here beforehand with `LoadImage` from the hypervisor's own volume and given its command
//! line as load options (a Linux EFI stub, Garuda's boot loader); should that return, or without a loader, it ends the hypervisor's UEFI
//! application with `Exit`, so the firmware goes on with its boot order as if the
//! application had returned. Chain-loading this way starts the next stage at once (OVMF
//! would open its setup menu after an application returned success).

use crate::launch::{HandOver, HostError};
use crate::partition::FixedStr;
use alloc::vec::Vec;
use uefi::boot::{self, AllocateType, LoadImageSource, MemoryType};
use uefi::proto::device_path::build::{self, DevicePathBuilder};
use uefi::proto::device_path::DevicePath;
use uefi::proto::loaded_image::LoadedImage;
use uefi::CStr16;

core::arch::global_asm!(
    r#"
    .section .text
    .balign 16
    .global nexus_handover_stub
    .global nexus_handover_data
    .global nexus_handover_end
nexus_handover_stub:
    mov eax, 0x40000000
    xor ecx, ecx
    cpuid
    cmp qword ptr [rip + 14f], 0
    je 4f
    sti
4:
    and rsp, -16
    sub rsp, 0x20
    mov rcx, [rip + 10f]
    test rcx, rcx
    jz 1f
    xor edx, edx
    xor r8d, r8d
    call [rip + 11f]
    jmp 2f
1:
    xor eax, eax
2:
    mov rdx, rax
    mov rcx, [rip + 12f]
    xor r8d, r8d
    xor r9d, r9d
    call [rip + 13f]
3:
    hlt
    jmp 3b
    .balign 8
nexus_handover_data:
10: .quad 0
11: .quad 0
12: .quad 0
13: .quad 0
14: .quad 0
nexus_handover_end:
"#
);

extern "C" {
    fn nexus_handover_stub();
    fn nexus_handover_data();
    fn nexus_handover_end();
}

/// Pages of the stub's stack (the OS loader runs on it until it switches to its own).
const STACK_PAGES: usize = 64;
/// Longest load options (UCS-2 characters).
const OPTIONS_MAX: usize = 1024;

/// Load the OS loader (if any) and place the stub; see the module docs.
pub fn prepare(loader: Option<(&str, &str)>) -> Result<HandOver, HostError> {
    let us = boot::image_handle();
    let mut name = None;
    let os_handle = match loader {
        None => 0,
        Some((path, options)) => {
            let handle = load(path, options)?;
            name = Some(FixedStr::new(path));
            handle
        }
    };
    let (stub, data, end) = (
        nexus_handover_stub as *const () as usize,
        nexus_handover_data as *const () as usize,
        nexus_handover_end as *const () as usize,
    );
    let code = boot::allocate_pages(AllocateType::AnyPages, MemoryType::LOADER_CODE, 1)
        .map_err(|_| HostError("no page for the hand-over stub"))?;
    let stack = boot::allocate_pages(AllocateType::AnyPages, MemoryType::LOADER_DATA, STACK_PAGES)
        .map_err(|_| HostError("no pages for the hand-over stack"))?;
    let bt = uefi::table::system_table_raw().ok_or(HostError("no system table"))?;
    // SAFETY: the system table pointer is the firmware's, valid during boot services.
    let bs = unsafe { &*(*bt.as_ptr()).boot_services };
    let words = [
        os_handle,
        bs.start_image as usize as u64,
        us.as_ptr() as u64,
        bs.exit as usize as u64,
        u64::from(crate::platform::instructions::interrupts_enabled()),
    ];
    // SAFETY: the stub's bytes lie between the two labels of the assembly above; the page
    // was just allocated for it (and is larger than the stub); the data words are 8-byte
    // aligned at the same offset in the copy.
    unsafe {
        let dst = code.as_ptr();
        core::ptr::copy_nonoverlapping(stub as *const u8, dst, end - stub);
        let slots = dst.add(data - stub) as *mut u64;
        for (i, w) in words.iter().enumerate() {
            slots.add(i).write_volatile(*w);
        }
    }
    Ok(HandOver {
        rip: code.as_ptr() as u64,
        rsp: stack.as_ptr() as u64 + (STACK_PAGES * 4096) as u64,
        loader: name,
    })
}

/// `LoadImage` of `path` on the hypervisor's own volume, with `options` as load options.
fn load(path: &str, options: &str) -> Result<u64, HostError> {
    let mut name_buf = [0u16; 256];
    let name = CStr16::from_str_with_buf(path, &mut name_buf)
        .map_err(|_| HostError("the OS loader path is not valid UCS-2"))?;
    let bytes = super::esp::read_path(path, super::esp::Keep::LoaderPages).map_err(|e| {
        crate::hv_println!("hand-over: {path}: {e}");
        HostError("the OS loader could not be read from the ESP")
    })?;
    // The full device path: the volume's, then the file's (so the loader finds its volume).
    let device = {
        let li = boot::open_protocol_exclusive::<LoadedImage>(boot::image_handle())
            .map_err(|_| HostError("no LoadedImage protocol"))?;
        li.device()
            .ok_or(HostError("the hypervisor's image has no device"))?
    };
    let volume = boot::open_protocol_exclusive::<DevicePath>(device)
        .map_err(|_| HostError("the boot volume has no device path"))?;
    let mut buf: Vec<u8> = Vec::new();
    let mut b = DevicePathBuilder::with_vec(&mut buf);
    for node in volume.node_iter() {
        b = b
            .push(&node)
            .map_err(|_| HostError("cannot build the OS loader's device path"))?;
    }
    let file_path = b
        .push(&build::media::FilePath { path_name: name })
        .and_then(|b| b.finalize())
        .map_err(|_| HostError("cannot build the OS loader's device path"))?;
    let handle = boot::load_image(
        boot::image_handle(),
        LoadImageSource::FromBuffer {
            buffer: bytes,
            file_path: Some(file_path),
        },
    )
    .map_err(|e| {
        crate::hv_println!("hand-over: LoadImage {path}: {:?}", e.status());
        HostError("the firmware refused to load the OS loader")
    })?;
    if !options.is_empty() {
        let units: Vec<u16> = options
            .encode_utf16()
            .take(OPTIONS_MAX)
            .chain(core::iter::once(0))
            .collect();
        let bytes = units.len() * 2;
        let keep = boot::allocate_pool(MemoryType::LOADER_DATA, bytes)
            .map_err(|_| HostError("no memory for the load options"))?;
        // SAFETY: `keep` holds `bytes` bytes just allocated; the loader owns them from now.
        unsafe {
            core::ptr::copy_nonoverlapping(units.as_ptr() as *const u8, keep.as_ptr(), bytes)
        };
        let mut li = boot::open_protocol_exclusive::<LoadedImage>(handle)
            .map_err(|_| HostError("the OS loader has no LoadedImage protocol"))?;
        // SAFETY: the options stay allocated (loader data) for the loader's life.
        unsafe { li.set_load_options(keep.as_ptr(), bytes as u32) };
    }
    Ok(handle.as_ptr() as u64)
}
