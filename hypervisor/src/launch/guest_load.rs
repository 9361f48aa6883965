//! Claiming a partition's memory and zeroing it (test and managed partitions), and loading a
//! test partition's image there (both backends, on the boot CPU).

use super::LaunchHost;
use crate::hv_println;
use crate::mem::identity::IdentityMem;
use crate::partition::guest_setup::{self, GuestStart};
use crate::partition::{elf, PartitionConfig};

/// Reserve the partition's regions at their exact addresses (so the primary's OS never gets
/// them) and zero them (nothing the firmware or an earlier OS left there reaches the guest),
/// logging how many bytes of each were not zero.
pub fn reserve_and_zero(
    host: &mut (impl LaunchHost + ?Sized),
    config: &PartitionConfig,
) -> Result<(), &'static str> {
    for r in config.regions() {
        host.reserve_at(r.start, r.size())
            .map_err(|_| "its memory region is not free (the firmware refused to reserve it)")?;
        // SAFETY: the region was just reserved for this partition at this exact, 4 KiB
        // aligned address; host mode identity-maps it and nothing else uses it yet.
        let words = unsafe {
            core::slice::from_raw_parts_mut(r.start as *mut u64, (r.size() / 8) as usize)
        };
        let stale = crate::mem::scrub::scrub(words);
        hv_println!(
            "partition {}: memory {:#x}..{:#x} zeroed before loading ({stale} byte(s) were not zero)",
            config.name,
            r.start,
            r.end
        );
    }
    Ok(())
}

/// Reserve and zero the partition's regions, load its image into them and prepare its page
/// tables and stack: where the image went and how the guest starts.
pub fn load_guest(
    host: &mut impl LaunchHost,
    config: &PartitionConfig,
) -> Result<(elf::Loaded, GuestStart), &'static str> {
    reserve_and_zero(host, config)?;
    let image = host
        .image(config.image.as_str())
        .ok_or("its image was not loaded from the ESP")?;
    // SAFETY: an empty pool; used only to write the partition's own, just
    // reserved, identity-mapped memory.
    let mut mem = unsafe { IdentityMem::new(0, 0) };
    let loaded = elf::load(image, config, &mut mem).map_err(|e| {
        hv_println!("partition {}: image rejected: {e:?}", config.name);
        "its image does not fit the partition"
    })?;
    let start = guest_setup::prepare(config, loaded.end, loaded.entry, &mut mem)
        .map_err(|_| "no room for the guest's page tables and stack")?;
    Ok((loaded, start))
}
