//! [`Tracked`]: the launch's view of the platform for both backends. It
//! remembers every page range handed to the hypervisor, so that the primary
//! partition's nested page table (NPT or EPT) can leave them out, and works
//! out what that table maps.

use super::{ApEntry, Facts, HandOver, HostError, LaunchHost};
use crate::hv_println;
use crate::mem::Range;
use crate::partition::plan::{self, Plan};
use crate::partition::PartitionConfig;
use crate::platform::host_cpu::{HostCpu, PAGES_PER_CPU};
use alloc::vec::Vec;
use core::ffi::c_void;

/// A [`LaunchHost`] that records the pages it allocates.
pub struct Tracked<'h, H: LaunchHost + ?Sized> {
    host: &'h mut H,
    /// Every range allocated through this host (and the host tables of
    /// [`Tracked::host_env`]).
    pub ranges: Vec<Range>,
}

/// What the primary partition's nested page table maps.
#[derive(Debug, PartialEq, Eq)]
pub struct PrimaryMap {
    /// The identity-mapped ranges below the limit, in order.
    pub ranges: Vec<Range>,
    /// How many separate hypervisor and partition ranges were left out.
    pub holes: usize,
}

impl<'h, H: LaunchHost + ?Sized> Tracked<'h, H> {
    pub fn new(host: &'h mut H) -> Self {
        Tracked {
            host,
            ranges: Vec::new(),
        }
    }

    /// The platform's host environment for the CPU with `apic_id`; its pages
    /// are recorded so that the primary's table leaves them out.
    pub fn host_env(&mut self, apic_id: u32) -> Option<HostCpu> {
        match HostCpu::new(apic_id) {
            Ok(h) => {
                self.ranges
                    .push(Range::new(h.gdt & !0xfff, PAGES_PER_CPU as u64 * 4096));
                Some(h)
            }
            Err(e) => {
                hv_println!(
                    "cpu {apic_id}: no host environment ({e}); host mode keeps the firmware's tables"
                );
                None
            }
        }
    }

    /// Everything below `limit` except the pages recorded so far, the
    /// hypervisor's own memory, the other partitions' regions and `holes` (pages the
    /// hypervisor traps). Called after the primary's own allocations, so they are left out
    /// too.
    pub fn primary_map(
        &self,
        primary: &PartitionConfig,
        plan: &Plan,
        limit: u64,
        holes: &[Range],
    ) -> Result<PrimaryMap, &'static str> {
        let mut excluded: Vec<Range> = self.ranges.clone();
        excluded.extend_from_slice(holes);
        self.host
            .hypervisor_ranges(&mut |base, bytes| excluded.push(Range::new(base, bytes)));
        for other in plan.iter().filter(|c| c.id != primary.id) {
            excluded.extend_from_slice(other.regions());
        }
        let mut ranges = alloc::vec![Range::default(); excluded.len() + 1];
        let n =
            plan::complement(limit, &mut excluded, &mut ranges).map_err(|_| "too many holes")?;
        ranges.truncate(n);
        Ok(PrimaryMap {
            ranges,
            holes: plan::normalize(&mut excluded),
        })
    }
}

impl<H: LaunchHost + ?Sized> LaunchHost for Tracked<'_, H> {
    fn alloc_pages(&mut self, pages: usize) -> Result<u64, HostError> {
        let pa = self.host.alloc_pages(pages)?;
        self.ranges.push(Range::new(pa, pages as u64 * 4096));
        Ok(pa)
    }
    fn alloc_pages_aligned(&mut self, pages: usize, align: u64) -> Result<u64, HostError> {
        let pa = self.host.alloc_pages_aligned(pages, align)?;
        self.ranges.push(Range::new(pa, pages as u64 * 4096));
        Ok(pa)
    }
    fn facts(&self) -> Facts {
        self.host.facts()
    }
    fn hand_over(&mut self, loader: Option<(&str, &str)>) -> Result<HandOver, HostError> {
        self.host.hand_over(loader)
    }
    fn reserve_at(&mut self, base: u64, size: u64) -> Result<(), HostError> {
        self.host.reserve_at(base, size)
    }
    fn image(&self, name: &str) -> Option<&'static [u8]> {
        self.host.image(name)
    }
    fn start_on_cpu(
        &mut self,
        apic_id: u32,
        entry: ApEntry,
        arg: *mut c_void,
    ) -> Result<(), HostError> {
        self.host.start_on_cpu(apic_id, entry, arg)
    }
    fn stall_us(&mut self, us: u64) {
        self.host.stall_us(us)
    }
    fn hypervisor_ranges(&self, out: &mut dyn FnMut(u64, u64)) {
        self.host.hypervisor_ranges(out)
    }
}

#[cfg(test)]
mod tests;
