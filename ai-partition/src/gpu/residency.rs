//! The model manager seen through `nexus_tensor::ResidentModels`: the
//! ledger charges resident models from what the manager reports and asks it
//! to unload idle ones; it keeps no list of its own.

use std::sync::Weak;
use std::time::{Instant, SystemTime};

use nexus_tensor::{ResidentModel, ResidentModels};

/// Resident models of a service. With no GPU offload (`n_gpu_layers` 0)
/// models hold no VRAM and are charged nothing; with offload their memory is
/// charged to model storage (weights and KV cache are not told apart by the
/// engine, so all of it counts as weights).
pub struct ManagerModels {
    service: Weak<crate::service::ServiceInner>,
}

impl ManagerModels {
    pub(crate) fn new(service: Weak<crate::service::ServiceInner>) -> Self {
        Self { service }
    }
}

fn instant_of(t: SystemTime) -> Instant {
    let now_sys = SystemTime::now();
    let now = Instant::now();
    match t.duration_since(now_sys) {
        Ok(ahead) => now + ahead,
        Err(behind) => now.checked_sub(behind.duration()).unwrap_or(now),
    }
}

impl ResidentModels for ManagerModels {
    fn resident(&self) -> Vec<ResidentModel> {
        let Some(s) = self.service.upgrade() else {
            return Vec::new();
        };
        let offload = s.offloads_to_gpu();
        s.running()
            .into_iter()
            .map(|m| ResidentModel {
                name: m.entry.name,
                weights_bytes: if offload { m.memory_bytes } else { 0 },
                cache_bytes: 0,
                busy: m.busy,
                expires_at: m.expires_at.map(instant_of),
            })
            .collect()
    }

    fn evict(&self, name: &str) -> bool {
        self.service.upgrade().is_some_and(|s| s.unload_idle(name))
    }
}
