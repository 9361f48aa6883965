//! Moving the running hypervisor image into reserved pages (UEFI only).
//!
//! The firmware loads the hypervisor as `EfiLoaderCode` and frees that memory as soon as the
//! application returns (EDK2 unloads returning applications), while the APs keep executing
//! hypervisor code in host mode and the OS later reclaims all loader memory. So the very
//! first thing `main.rs` does is [`run_relocated`]: copy the loaded image into freshly
//! allocated `EfiReservedMemoryType` pages (the OS booted later neither reclaims nor maps
//! them; runtime-services types Linux maps for its EFI calls), re-apply its base relocations
//! for the new address ([`super::pe_reloc`]), and continue in the copy. Statics are copied with the
//! image, so the uefi crate's image handle and system table pointer carry over.

use super::pe_reloc::{self, PeError};
use core::fmt;
use uefi::boot::{self, AllocateType, MemoryType};
use uefi::proto::loaded_image::LoadedImage;
use uefi::Status;

/// Where the image moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relocation {
    pub from: u64,
    pub to: u64,
    pub bytes: u64,
    /// Relocation targets patched.
    pub patched: usize,
}

/// Why the image could not be moved (it then runs where the firmware loaded it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelocError {
    LoadedImage(Status),
    Alloc(Status),
    Pe(PeError),
}

impl fmt::Display for RelocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelocError::LoadedImage(s) => {
                write!(f, "no LoadedImage protocol for the hypervisor ({s:?})")
            }
            RelocError::Alloc(s) => {
                write!(f, "no reserved pages for the image ({s:?})")
            }
            RelocError::Pe(e) => write!(f, "cannot relocate the image: {e}"),
        }
    }
}

/// The rest of the boot, run in the relocated copy (or in place when moving failed).
pub type Body = fn(Result<Relocation, RelocError>) -> Status;

/// Copy the image to reserved pages and call `body` there.
pub fn run_relocated(body: Body) -> Status {
    match copy_image() {
        Ok(reloc) => {
            let moved = (body as usize as u64).wrapping_add(reloc.to.wrapping_sub(reloc.from));
            // SAFETY: `moved` is `body`'s address inside the copy, which holds the same code
            // with relocations re-applied for its base, so it is a valid `Body`.
            let moved: Body = unsafe { core::mem::transmute::<usize, Body>(moved as usize) };
            moved(Ok(reloc))
        }
        Err(e) => body(Err(e)),
    }
}

/// Where the running image lives once moved, `(base, bytes)`; `(0, 0)` before.
static IMAGE: crate::platform::sync::SpinLock<(u64, u64)> =
    crate::platform::sync::SpinLock::new((0, 0));

/// The moved image's pages, `(base, bytes)` (hidden from the primary partition).
pub fn image_range() -> (u64, u64) {
    *IMAGE.lock()
}

fn copy_image() -> Result<Relocation, RelocError> {
    let (base, size) = {
        let li = boot::open_protocol_exclusive::<LoadedImage>(boot::image_handle())
            .map_err(|e| RelocError::LoadedImage(e.status()))?;
        let (b, s) = li.info();
        (b as u64, s)
    };
    let pages = size.div_ceil(4096) as usize;
    let to = boot::allocate_pages(AllocateType::AnyPages, MemoryType::RESERVED, pages)
        .map_err(|e| RelocError::Alloc(e.status()))?;
    // Set before copying: the copy, which runs from now on, must hold it in its own static.
    *IMAGE.lock() = (to.as_ptr() as u64, pages as u64 * 4096);
    // SAFETY: the firmware's LoadedImage says `[base, base+size)` is our loaded image; the new
    // pages are ours and do not overlap it; both are identity mapped.
    let image = unsafe {
        core::ptr::copy_nonoverlapping(base as *const u8, to.as_ptr(), size as usize);
        core::ptr::write_bytes(
            to.as_ptr().add(size as usize),
            0,
            pages * 4096 - size as usize,
        );
        core::slice::from_raw_parts_mut(to.as_ptr(), size as usize)
    };
    let delta = (to.as_ptr() as u64).wrapping_sub(base);
    match pe_reloc::apply(image, delta) {
        Ok(patched) => Ok(Relocation {
            from: base,
            to: to.as_ptr() as u64,
            bytes: size,
            patched,
        }),
        Err(e) => {
            *IMAGE.lock() = (0, 0);
            // SAFETY: the pages were allocated above and nothing refers to them.
            let _ = unsafe { boot::free_pages(to, pages) };
            Err(RelocError::Pe(e))
        }
    }
}
