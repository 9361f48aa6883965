//! Budgets from a policy's `[[vram]]` regions.
//!
//! A region's kind comes from its name: one containing "model" is model
//! storage, one containing "cache" or "inference" the inference cache, one
//! containing "gaming" or "graphics", or owned by the primary partition,
//! the graphics region (its owner may always use it, others only while
//! gaming priority is off). Regions of one kind add up; a region matching
//! none is reported and left out.

use nexus_abi::ring::VramRegion;
use nexus_policy::{Policy, Role};

use crate::ledger::{Budgets, Pool};
use crate::tenant::Tenant;

/// Host memory for host tensors when nothing else is said (all tenants).
pub const DEFAULT_HOST_BYTES: u64 = 8 << 30;

/// The kind of a `[[vram]]` region, from its name and owner.
pub fn region_kind(name: &str, owner_role: Option<Role>) -> Option<VramRegion> {
    let n = name.to_ascii_lowercase();
    if n.contains("gaming") || n.contains("graphics") || owner_role == Some(Role::Primary) {
        Some(VramRegion::Graphics)
    } else if n.contains("model") {
        Some(VramRegion::ModelStorage)
    } else if n.contains("cache") || n.contains("inference") {
        Some(VramRegion::InferenceCache)
    } else {
        None
    }
}

/// Budgets from `policy`, host memory `host_bytes`; also the regions left out.
pub fn budgets(policy: &Policy, host_bytes: u64) -> (Budgets, Vec<String>) {
    let mut bytes = [0u64; 4];
    let mut graphics_owner = None;
    let mut skipped = Vec::new();
    for v in &policy.vram {
        let owner = policy.partitions.iter().position(|p| p.name == v.owner);
        let role = owner.map(|i| policy.partitions[i].role);
        match region_kind(&v.name, role) {
            Some(kind) => {
                let i = Pool::ALL
                    .iter()
                    .position(|p| *p == Pool::Vram(kind))
                    .unwrap_or(0);
                bytes[i] = bytes[i].saturating_add(v.size);
                if kind == VramRegion::Graphics {
                    graphics_owner = owner.map(|i| Tenant::partition(i as u32));
                }
            }
            None => skipped.push(v.name.clone()),
        }
    }
    bytes[3] = host_bytes;
    (
        Budgets {
            bytes,
            graphics_owner,
        },
        skipped,
    )
}

/// The reference layout (policies/i9-13900hx-rtx4080.toml): 8 GiB model
/// storage, 4 GiB inference cache, 4 GiB graphics owned by partition 0.
pub fn reference_budgets(host_bytes: u64) -> Budgets {
    Budgets {
        bytes: [8 << 30, 4 << 30, 4 << 30, host_bytes],
        graphics_owner: Some(Tenant::partition(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_policy_gives_the_reference_budgets() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../policies/i9-13900hx-rtx4080.toml"
        );
        let policy = nexus_policy::load_file(path).unwrap();
        let (b, skipped) = budgets(&policy, DEFAULT_HOST_BYTES);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(b, reference_budgets(DEFAULT_HOST_BYTES));
    }

    #[test]
    fn kinds_follow_names_and_owner() {
        assert_eq!(
            region_kind("model-storage", Some(Role::Ai)),
            Some(VramRegion::ModelStorage)
        );
        assert_eq!(
            region_kind("kv-cache", None),
            Some(VramRegion::InferenceCache)
        );
        assert_eq!(
            region_kind("frames", Some(Role::Primary)),
            Some(VramRegion::Graphics)
        );
        assert_eq!(region_kind("scratch", Some(Role::Ai)), None);
    }
}
