//! Claiming a test partition's memory and loading its image there (both
//! backends, on the boot CPU).

use super::LaunchHost;
use crate::hv_println;
use crate::mem::identity::IdentityMem;
use crate::partition::guest_setup::{self, GuestStart};
use crate::partition::{elf, PartitionConfig};

/// Reserve the partition's regions, load its image into them and prepare its
/// page tables and stack: where the image went and how the guest starts.
pub fn load_guest(
    host: &mut impl LaunchHost,
    config: &PartitionConfig,
) -> Result<(elf::Loaded, GuestStart), &'static str> {
    for r in config.regions() {
        host.reserve_at(r.start, r.size())
            .map_err(|_| "its memory region is not free (the firmware refused to reserve it)")?;
    }
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
