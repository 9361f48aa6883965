//! The only `unsafe` code of the crate: memory mappings (mmap, mlock, munmap) and the store to
//! the doorbell page. Everything here is small and hands out safe types.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;

use nexus_abi::{HypercallArgs, Reply};

use crate::PAGE_SIZE;

/// A mapping of `len` bytes, unmapped when dropped.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// `mmap` with the given protection, flags, file and offset; `len` is a multiple of
    /// the page size.
    fn map(len: usize, flags: libc::c_int, fd: libc::c_int, offset: u64) -> io::Result<Mapping> {
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), so no existing
        // Rust object is affected; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(Mapping { ptr, len })
    }

    /// One page of private anonymous memory, zeroed, touched and locked in RAM (`mlock`),
    /// for a buffer the hypervisor reads or writes by its guest-physical address.
    pub fn locked_page() -> io::Result<Mapping> {
        let map = Mapping::map(PAGE_SIZE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)?;
        // SAFETY: the range is this mapping, alive until `map` is dropped.
        if unsafe { libc::mlock(map.ptr.as_ptr().cast(), map.len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // A write makes the page private and present (mlock already faulted it in; this
        // keeps it so even where the zero page was mapped read-only).
        // SAFETY: in bounds of the mapping, which is readable and writable.
        unsafe { map.ptr.as_ptr().write_volatile(0) };
        Ok(map)
    }

    /// Address of the first byte (for pagemap look-ups).
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Copies the first `len` bytes out with volatile reads: the hypervisor wrote them
    /// behind the compiler's back.
    pub fn read_volatile(&self, len: usize) -> Vec<u8> {
        let len = len.min(self.len);
        (0..len)
            // SAFETY: `i < len <= self.len`: inside the live, readable mapping.
            .map(|i| unsafe { self.ptr.as_ptr().add(i).read_volatile() })
            .collect()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly this mapping, which nothing refers to any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The user-space doorbell page, mapped uncached through `/dev/mem`.
pub struct DoorbellPage {
    map: Mapping,
    offset: usize,
}

impl DoorbellPage {
    /// Maps the page holding `gpa`, the doorbell address discovered through CPUID (the
    /// caller passes nothing else: a store through this mapping must reach the doorbell).
    /// `open` and `mmap` errors are returned as they are (EACCES/EPERM when not root or in
    /// lockdown).
    pub(crate) fn open(gpa: u64) -> Result<DoorbellPage, (&'static str, io::Error)> {
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_SYNC) // uncached mapping
            .open("/dev/mem")
            .map_err(|e| ("cannot open /dev/mem", e))?;
        let page = gpa & !(PAGE_SIZE as u64 - 1);
        let map = Mapping::map(PAGE_SIZE, libc::MAP_SHARED, file.as_raw_fd(), page)
            .map_err(|e| ("cannot map the doorbell page through /dev/mem", e))?;
        Ok(DoorbellPage {
            map,
            offset: (gpa - page) as usize,
        })
    }

    /// Rings the doorbell: `mov dword [r11], eax` with the call's registers.
    pub(crate) fn ring(&self, args: &HypercallArgs) -> Reply {
        // Inside the mapping: `offset < PAGE_SIZE`, and 4-byte aligned for a doorbell that
        // is 4 KiB aligned (ABI 1.1) or an MMIO transport address (which the ABI leaves to
        // the hypervisor; a store straddling the page would fault, not corrupt).
        let bell = self
            .map
            .ptr
            .as_ptr()
            .wrapping_add(self.offset)
            .cast::<u32>();
        // SAFETY: `bell` lies in the live mapping of the discovered doorbell page (see
        // `open`), so the store reaches the hypervisor and no Rust object; the call's guest
        // memory arguments are the caller's locked pages.
        unsafe { nexus_abi::guest::mmio_call(bell, args) }
    }
}
