//! The VRAM ledger: the policy's GPU regions as budgets. Every allocation
//! (gpu_alloc, tensors, model weights, KV cache) holds a [`Charge`] against a
//! pool and a tenant; dropping the charge gives the bytes back.
//!
//! Over budget, idle models are evicted first (through [`ResidentModels`],
//! the model manager's own notion of idle and keep-alive), then the request
//! is refused with `NoMemory`. Gaming priority gives the graphics region back
//! to its owner: new borrowing from it answers `Busy`, and the service moves
//! what other tenants hold there to host memory (`TensorService::set_gaming`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use nexus_abi::ring::VramRegion;

use crate::error::{Result, TensorError};
use crate::tenant::Tenant;

/// What a charge is drawn from: a VRAM region or host memory (host tensors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pool {
    Vram(VramRegion),
    Host,
}

impl Pool {
    pub const ALL: [Pool; 4] = [
        Pool::Vram(VramRegion::ModelStorage),
        Pool::Vram(VramRegion::InferenceCache),
        Pool::Vram(VramRegion::Graphics),
        Pool::Host,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Pool::Vram(VramRegion::ModelStorage) => "model-storage",
            Pool::Vram(VramRegion::InferenceCache) => "inference-cache",
            Pool::Vram(VramRegion::Graphics) => "graphics",
            Pool::Host => "host",
        }
    }

    fn index(self) -> usize {
        match self {
            Pool::Vram(VramRegion::ModelStorage) => 0,
            Pool::Vram(VramRegion::InferenceCache) => 1,
            Pool::Vram(VramRegion::Graphics) => 2,
            Pool::Host => 3,
        }
    }
}

/// What a charge pays for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChargeKind {
    GpuAlloc,
    Tensor,
    ModelWeights,
    KvCache,
}

/// Budgets, from the policy (see `crate::policy`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// Bytes per pool, in [`Pool::ALL`] order.
    pub bytes: [u64; 4],
    /// The tenant owning the graphics region (the gaming partition), if any.
    pub graphics_owner: Option<Tenant>,
}

/// A model resident on the GPU, as the model manager sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResidentModel {
    pub name: String,
    /// Weights in VRAM (model-storage region).
    pub weights_bytes: u64,
    /// KV cache and compute buffers in VRAM (inference-cache region).
    pub cache_bytes: u64,
    /// A request is using it.
    pub busy: bool,
    /// When its keep-alive runs out (`None`: kept until unloaded).
    pub expires_at: Option<Instant>,
}

/// The model manager, seen from the ledger. Models are charged by what this
/// reports; the ledger never keeps a second list of its own.
pub trait ResidentModels: Send + Sync {
    fn resident(&self) -> Vec<ResidentModel>;
    /// Unload an idle model now; false if it is busy or gone.
    fn evict(&self, name: &str) -> bool;
}

#[derive(Default)]
struct PoolState {
    used: u64,
    by_tenant: HashMap<Tenant, u64>,
    by_kind: HashMap<ChargeKind, u64>,
}

struct State {
    budgets: Budgets,
    pools: [PoolState; 4],
    gaming: bool,
    /// Charges held for resident models, by name.
    models: HashMap<String, [Option<Charge>; 2]>,
    evictions: u64,
    refusals: u64,
}

pub struct Ledger {
    state: Mutex<State>,
    models: Mutex<Option<Arc<dyn ResidentModels>>>,
    me: Weak<Ledger>,
}

/// Bytes held against a pool for a tenant; dropping it releases them.
#[derive(Debug)]
pub struct Charge {
    ledger: Weak<Ledger>,
    pool: Pool,
    tenant: Tenant,
    kind: ChargeKind,
    bytes: u64,
}

impl Charge {
    pub fn pool(&self) -> Pool {
        self.pool
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn tenant(&self) -> Tenant {
        self.tenant
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(l) = self.ledger.upgrade() {
            l.release(self.pool, self.tenant, self.kind, self.bytes);
        }
    }
}

/// One pool in a [`LedgerSnapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSnapshot {
    pub pool: Pool,
    pub budget: u64,
    pub used: u64,
    pub by_tenant: Vec<(Tenant, u64)>,
    pub by_kind: Vec<(ChargeKind, u64)>,
}

/// The ledger at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerSnapshot {
    pub gaming: bool,
    pub pools: Vec<PoolSnapshot>,
    pub evictions: u64,
    pub refusals: u64,
}

impl LedgerSnapshot {
    pub fn pool(&self, pool: Pool) -> &PoolSnapshot {
        &self.pools[pool.index()]
    }

    pub fn tenant_bytes(&self, pool: Pool, tenant: Tenant) -> u64 {
        self.pool(pool)
            .by_tenant
            .iter()
            .find(|(t, _)| *t == tenant)
            .map_or(0, |(_, b)| *b)
    }
}

impl Ledger {
    pub fn new(budgets: Budgets) -> Arc<Ledger> {
        Arc::new_cyclic(|me| Ledger {
            state: Mutex::new(State {
                budgets,
                pools: Default::default(),
                gaming: false,
                models: HashMap::new(),
                evictions: 0,
                refusals: 0,
            }),
            models: Mutex::new(None),
            me: me.clone(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connect the model manager (once the service that owns it exists).
    pub fn set_resident_models(&self, models: Arc<dyn ResidentModels>) {
        *self.models.lock().unwrap_or_else(|e| e.into_inner()) = Some(models);
        self.sync_models();
    }

    fn resident_models(&self) -> Option<Arc<dyn ResidentModels>> {
        self.models
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn budgets(&self) -> Budgets {
        self.state().budgets.clone()
    }

    pub fn gaming(&self) -> bool {
        self.state().gaming
    }

    /// Switch gaming priority; returns the previous setting. With it on, only
    /// the graphics region's owner may charge it.
    pub fn set_gaming(&self, on: bool) -> bool {
        std::mem::replace(&mut self.state().gaming, on)
    }

    fn release(&self, pool: Pool, tenant: Tenant, kind: ChargeKind, bytes: u64) {
        let mut st = self.state();
        let p = &mut st.pools[pool.index()];
        p.used = p.used.saturating_sub(bytes);
        if let Some(t) = p.by_tenant.get_mut(&tenant) {
            *t = t.saturating_sub(bytes);
            if *t == 0 {
                p.by_tenant.remove(&tenant);
            }
        }
        if let Some(k) = p.by_kind.get_mut(&kind) {
            *k = k.saturating_sub(bytes);
            if *k == 0 {
                p.by_kind.remove(&kind);
            }
        }
    }

    fn book(
        &self,
        st: &mut State,
        pool: Pool,
        tenant: Tenant,
        kind: ChargeKind,
        bytes: u64,
    ) -> Charge {
        let p = &mut st.pools[pool.index()];
        p.used += bytes;
        *p.by_tenant.entry(tenant).or_default() += bytes;
        *p.by_kind.entry(kind).or_default() += bytes;
        Charge {
            ledger: self.me.clone(),
            pool,
            tenant,
            kind,
            bytes,
        }
    }

    /// Charge `bytes` to `pool` for `tenant`, evicting idle models if that
    /// makes room. `NoMemory` when it cannot fit, `Busy` when gaming priority
    /// keeps the graphics region for its owner.
    pub fn charge(
        &self,
        pool: Pool,
        tenant: Tenant,
        kind: ChargeKind,
        bytes: u64,
    ) -> Result<Charge> {
        self.sync_models();
        let mut tried_eviction = false;
        loop {
            {
                let mut st = self.state();
                if pool == Pool::Vram(VramRegion::Graphics)
                    && st.gaming
                    && st.budgets.graphics_owner != Some(tenant)
                {
                    st.refusals += 1;
                    return Err(TensorError::busy(
                        "gaming priority is on: the graphics region belongs to the gaming partition \
                         until it ends; retry later or use another region",
                    ));
                }
                let budget = st.budgets.bytes[pool.index()];
                let used = st.pools[pool.index()].used;
                if used.checked_add(bytes).is_some_and(|t| t <= budget) {
                    return Ok(self.book(&mut st, pool, tenant, kind, bytes));
                }
                if tried_eviction || bytes > budget {
                    st.refusals += 1;
                    let models: u64 = st.pools[pool.index()]
                        .by_kind
                        .iter()
                        .filter(|(k, _)| {
                            matches!(k, ChargeKind::ModelWeights | ChargeKind::KvCache)
                        })
                        .map(|(_, b)| b)
                        .sum();
                    return Err(TensorError::no_memory(format!(
                        "{} region: {bytes} bytes asked, {} of {budget} free ({models} held by busy \
                         or kept-alive models)",
                        pool.name(),
                        budget.saturating_sub(used)
                    )));
                }
            }
            tried_eviction = true;
            self.evict_for(pool, bytes);
        }
    }

    /// Charge without a budget check, for memory that exists already and must
    /// be accounted somewhere (reclaimed graphics memory moved to the host).
    pub fn charge_unchecked(
        &self,
        pool: Pool,
        tenant: Tenant,
        kind: ChargeKind,
        bytes: u64,
    ) -> Charge {
        let mut st = self.state();
        self.book(&mut st, pool, tenant, kind, bytes)
    }

    /// Evict idle models charged to `pool`, soonest keep-alive deadline
    /// first (least recently used when keep-alives are equal; a model kept
    /// forever is never evicted), until `bytes` more fit.
    fn evict_for(&self, pool: Pool, bytes: u64) {
        let Some(models) = self.resident_models() else {
            return;
        };
        let slot = match pool {
            Pool::Vram(VramRegion::ModelStorage) => 0,
            Pool::Vram(VramRegion::InferenceCache) => 1,
            _ => return,
        };
        let mut candidates: Vec<ResidentModel> = models
            .resident()
            .into_iter()
            .filter(|m| !m.busy && m.expires_at.is_some())
            .filter(|m| [m.weights_bytes, m.cache_bytes][slot] > 0)
            .collect();
        candidates.sort_by_key(|m| m.expires_at);
        for m in candidates {
            {
                let st = self.state();
                let p = &st.pools[pool.index()];
                if p.used.saturating_add(bytes) <= st.budgets.bytes[pool.index()] {
                    return;
                }
            }
            if models.evict(&m.name) {
                tracing::info!(model = %m.name, pool = pool.name(), "evicted an idle model to make room in VRAM");
                self.state().evictions += 1;
                self.sync_models();
            }
        }
    }

    /// Bring model charges in line with what the model manager reports.
    pub fn sync_models(&self) {
        let Some(models) = self.resident_models() else {
            return;
        };
        let now = models.resident();
        // Charges dropped below release into the state: drop them unlocked.
        let mut old = Vec::new();
        let mut st = self.state();
        let gone: Vec<String> = st
            .models
            .keys()
            .filter(|name| !now.iter().any(|m| &m.name == *name))
            .cloned()
            .collect();
        for name in gone {
            old.extend(st.models.remove(&name));
        }
        for m in now {
            let bytes = |c: &Option<Charge>| c.as_ref().map_or(0, |c| c.bytes);
            let have = st.models.get(&m.name).map(|c| [bytes(&c[0]), bytes(&c[1])]);
            if have == Some([m.weights_bytes, m.cache_bytes]) {
                continue;
            }
            // Models are charged to the AI service's own tenant; they are
            // loaded already, so they count even past the budget.
            let w = (m.weights_bytes > 0).then(|| {
                let pool = Pool::Vram(VramRegion::ModelStorage);
                self.book(
                    &mut st,
                    pool,
                    Tenant::SERVICE,
                    ChargeKind::ModelWeights,
                    m.weights_bytes,
                )
            });
            let c = (m.cache_bytes > 0).then(|| {
                let pool = Pool::Vram(VramRegion::InferenceCache);
                self.book(
                    &mut st,
                    pool,
                    Tenant::SERVICE,
                    ChargeKind::KvCache,
                    m.cache_bytes,
                )
            });
            old.extend(st.models.insert(m.name.clone(), [w, c]));
        }
        drop(st);
        drop(old);
    }

    pub fn snapshot(&self) -> LedgerSnapshot {
        self.sync_models();
        let st = self.state();
        let pools = Pool::ALL
            .iter()
            .map(|&pool| {
                let p = &st.pools[pool.index()];
                let mut by_tenant: Vec<_> = p.by_tenant.iter().map(|(t, b)| (*t, *b)).collect();
                by_tenant.sort();
                let mut by_kind: Vec<_> = p.by_kind.iter().map(|(k, b)| (*k, *b)).collect();
                by_kind.sort_by_key(|(k, _)| *k as u8);
                PoolSnapshot {
                    pool,
                    budget: st.budgets.bytes[pool.index()],
                    used: p.used,
                    by_tenant,
                    by_kind,
                }
            })
            .collect();
        LedgerSnapshot {
            gaming: st.gaming,
            pools,
            evictions: st.evictions,
            refusals: st.refusals,
        }
    }
}
