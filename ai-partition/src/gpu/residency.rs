//! The model manager seen through `nexus_tensor::ResidentModels`: the
//! ledger charges resident models from what the manager reports and asks it
//! to unload idle ones; it keeps no list of its own.

use std::sync::Weak;
use std::time::{Instant, SystemTime};

use nexus_tensor::{ResidentModel, ResidentModels};

/// Resident models of a service, with the GPU memory each holds as its engine reports
/// it: offloaded weights (model storage) and offloaded KV cache (inference cache). A
/// model kept in host memory holds none and is charged nothing.
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
        s.running()
            .into_iter()
            .map(|m| ResidentModel {
                name: m.entry.name,
                weights_bytes: m.memory.vram_weights,
                cache_bytes: m.memory.vram_kv_cache,
                busy: m.busy,
                expires_at: m.expires_at.map(instant_of),
            })
            .collect()
    }

    fn evict(&self, name: &str) -> bool {
        self.service.upgrade().is_some_and(|s| s.unload_idle(name))
    }
}
