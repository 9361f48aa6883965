//! Reading the hypervisor's files from the ESP it was loaded from (UEFI target only).

use super::esp_path::EspPath;
use alloc::vec::Vec;
use core::fmt;
use uefi::boot::{self, AllocateType, MemoryType};
use uefi::proto::media::file::{File, FileAttribute, FileInfo, FileMode};
use uefi::CStr16;

/// Largest file the hypervisor reads (guest images and policies are far smaller).
pub const FILE_MAX: u64 = 64 << 20;

/// Why a file could not be read.
#[derive(Debug)]
pub enum EspError {
    /// The loaded image's device has no simple file system.
    NoFileSystem(uefi::Error),
    NotFound,
    NotAFile,
    TooLarge(u64),
    Io(uefi::Error),
    OutOfMemory,
}

impl fmt::Display for EspError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EspError::NoFileSystem(e) => {
                write!(f, "the boot volume has no file system ({:?})", e.status())
            }
            EspError::NotFound => write!(f, "not found"),
            EspError::NotAFile => write!(f, "is a directory"),
            EspError::TooLarge(n) => write!(f, "is {n} bytes, more than {FILE_MAX}"),
            EspError::Io(e) => write!(f, "read error {:?}", e.status()),
            EspError::OutOfMemory => write!(f, "no memory for its contents"),
        }
    }
}

/// Where a file's bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// On the hypervisor heap (reserved memory): small files such as the policy.
    Heap,
    /// In whole pages of `EfiReservedMemoryType`, which a later OS neither reclaims nor maps:
    /// guest images, whose bytes the partition loader may need while partitions run.
    ReservedPages,
    /// In `EfiLoaderData` pages, which the OS booted later reclaims: bytes only needed before
    /// the hand-over (the OS loader, which `LoadImage` copies).
    LoaderPages,
}

/// Read `path` (e.g. `\NEXUS\POLICY.BIN`) from the volume this image was loaded from.
/// The bytes live for the rest of the hypervisor's life.
pub fn read(path: &EspPath, keep: Keep) -> Result<&'static [u8], EspError> {
    read_path(path.as_str(), keep)
}

/// [`read`] for any path on the volume (the policy's OS loader, say).
pub fn read_path(path: &str, keep: Keep) -> Result<&'static [u8], EspError> {
    let mut name_buf = [0u16; 256];
    let name = CStr16::from_str_with_buf(path, &mut name_buf).map_err(|_| EspError::NotFound)?;
    let mut fs =
        boot::get_image_file_system(boot::image_handle()).map_err(EspError::NoFileSystem)?;
    let mut root = fs.open_volume().map_err(EspError::Io)?;
    let handle = match root.open(name, FileMode::Read, FileAttribute::empty()) {
        Ok(h) => h,
        Err(e) if e.status() == uefi::Status::NOT_FOUND => return Err(EspError::NotFound),
        Err(e) => return Err(EspError::Io(e)),
    };
    let mut file = handle.into_regular_file().ok_or(EspError::NotAFile)?;
    let info = file.get_boxed_info::<FileInfo>().map_err(EspError::Io)?;
    let size = info.file_size();
    if size > FILE_MAX {
        return Err(EspError::TooLarge(size));
    }
    let size = size as usize;
    let buf: &'static mut [u8] = match keep {
        Keep::Heap => {
            let mut v = Vec::new();
            v.try_reserve_exact(size)
                .map_err(|_| EspError::OutOfMemory)?;
            v.resize(size, 0);
            v.leak()
        }
        Keep::ReservedPages | Keep::LoaderPages => {
            let pages = size.div_ceil(4096).max(1);
            let ty = if keep == Keep::ReservedPages {
                MemoryType::RESERVED
            } else {
                MemoryType::LOADER_DATA
            };
            let p = boot::allocate_pages(AllocateType::AnyPages, ty, pages)
                .map_err(|_| EspError::OutOfMemory)?;
            // SAFETY: the firmware just gave us `pages` whole pages for good; we zero them
            // before creating the slice, and nothing else refers to them.
            unsafe {
                core::ptr::write_bytes(p.as_ptr(), 0, pages * 4096);
                core::slice::from_raw_parts_mut(p.as_ptr(), size)
            }
        }
    };
    let mut done = 0;
    while done < size {
        let n = file.read(&mut buf[done..]).map_err(EspError::Io)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    if done != size {
        return Err(EspError::Io(uefi::Error::from(uefi::Status::END_OF_FILE)));
    }
    Ok(buf)
}
