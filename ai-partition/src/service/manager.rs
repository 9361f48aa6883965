//! Loaded models: load on demand, keep-alive expiry, a cap on resident models
//! (evicting the least recently used idle one), and per-model memory accounting.
//!
//! Each resident model has its scheduler (`generate`), which batches its requests into
//! parallel slots and queues the rest in arrival order; the model itself sits behind a lock
//! the scheduler loop (or an embedding request) holds while it works.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use super::catalog::{ModelEntry, ModelKind};
use super::error::ServiceError;
use super::generate::{Scheduler, SchedulerLoad};
use super::keep_alive::KeepAlive;
use super::metrics::Metrics;
use crate::engine::{Engine, LoadOptions, LoadedModel, ModelMemory};

/// The engines, one per kind of model.
#[derive(Clone)]
pub struct Engines {
    pub generate: Arc<dyn Engine>,
    pub embedding: Option<Arc<dyn Engine>>,
}

impl Engines {
    fn for_kind(&self, kind: ModelKind) -> Result<&Arc<dyn Engine>, ServiceError> {
        match kind {
            ModelKind::Generate => Ok(&self.generate),
            ModelKind::Embedding => self.embedding.as_ref().ok_or_else(|| {
                ServiceError::BadRequest("no embedding engine is configured".into())
            }),
        }
    }
}

/// The model itself, shared between the manager and the request running on it.
pub type ModelCell = Arc<tokio::sync::Mutex<Box<dyn LoadedModel>>>;

#[derive(Debug)]
struct SlotState {
    /// `None`: never expires.
    expires_at: Option<Instant>,
    last_used: Instant,
    /// Requests holding this slot (queued or running); never evicted while > 0.
    users: usize,
}

/// One resident model.
pub struct Slot {
    pub entry: ModelEntry,
    pub model: ModelCell,
    /// Its generation queue and parallel slots.
    pub scheduler: Arc<Scheduler>,
    pub memory: ModelMemory,
    pub context_len: u32,
    pub loaded_at: SystemTime,
    state: Mutex<SlotState>,
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wall-clock expiry for `/api/ps` (`None`: never).
    pub fn expires_at(&self) -> Option<SystemTime> {
        let st = self.state();
        st.expires_at.map(|t| {
            let now = Instant::now();
            let sys = SystemTime::now();
            if t >= now {
                sys + (t - now)
            } else {
                sys - (now - t)
            }
        })
    }
}

/// A request's hold on a resident model: keeps it from being evicted; on drop,
/// restarts its keep-alive clock and unloads it if it has expired.
pub struct SlotUse {
    manager: Arc<Manager>,
    pub slot: Arc<Slot>,
    keep_alive: KeepAlive,
}

impl SlotUse {
    /// The keep-alive that applies once this request ends.
    pub fn set_keep_alive(&mut self, k: KeepAlive) {
        self.keep_alive = k;
    }
}

impl Drop for SlotUse {
    fn drop(&mut self) {
        let now = Instant::now();
        let idle = {
            let mut st = self.slot.state();
            st.users -= 1;
            st.last_used = now;
            st.expires_at = self.keep_alive.deadline(now);
            st.users == 0
        };
        if idle {
            self.manager.idle.notify_waiters();
            if self.keep_alive.unloads_now() {
                self.manager.remove_if_idle(&self.slot.entry.name, true);
            }
        }
    }
}

/// A resident model as `/api/ps` and `ai_model_list` report it.
#[derive(Clone, Debug)]
pub struct RunningModel {
    pub entry: ModelEntry,
    pub memory: ModelMemory,
    pub context_len: u32,
    pub expires_at: Option<SystemTime>,
    pub busy: bool,
    /// Parallel slots in use and requests waiting for one.
    pub load: SchedulerLoad,
}

pub struct Manager {
    engines: Engines,
    load_options: LoadOptions,
    max_loaded: usize,
    /// Most bytes all resident models may hold together (`None`: no cap).
    max_memory: Option<u64>,
    /// The GPU ledger: a model that offloads to the GPU needs room in model storage
    /// before it loads.
    vram: Arc<nexus_tensor::Ledger>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// Serialises loads so two requests for one model load it once.
    load_lock: tokio::sync::Mutex<()>,
    /// Signalled whenever a slot becomes idle (a waiting load may evict it).
    idle: Notify,
    metrics: Arc<Metrics>,
}

impl Manager {
    pub fn new(
        engines: Engines,
        load_options: LoadOptions,
        max_loaded: usize,
        max_memory: Option<u64>,
        vram: Arc<nexus_tensor::Ledger>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            engines,
            load_options,
            max_loaded: max_loaded.max(1),
            max_memory,
            vram,
            slots: Mutex::new(HashMap::new()),
            load_lock: tokio::sync::Mutex::new(()),
            idle: Notify::new(),
            metrics,
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_use(self: &Arc<Self>, name: &str, keep_alive: KeepAlive) -> Option<SlotUse> {
        let slots = self.slots();
        let slot = slots.get(name)?.clone();
        {
            let mut st = slot.state();
            st.users += 1;
            st.last_used = Instant::now();
        }
        Some(SlotUse {
            manager: self.clone(),
            slot,
            keep_alive,
        })
    }

    /// The resident model for `entry`, loading it (and evicting an idle one) if needed.
    /// Returns the hold and how long loading took (zero when it was resident).
    pub async fn acquire(
        self: &Arc<Self>,
        entry: &ModelEntry,
        keep_alive: KeepAlive,
    ) -> Result<(SlotUse, Duration), ServiceError> {
        // Before loading, the model's size on disk is the estimate of what it will hold;
        // the real figure (weights + KV cache) is known once it is loaded.
        let need = entry.size;
        if let Some(cap) = self.max_memory.filter(|&cap| need > cap) {
            return Err(ServiceError::InsufficientMemory(format!(
                "model '{}' needs at least {} MiB but the memory cap is {} MiB",
                entry.name,
                need >> 20,
                cap >> 20
            )));
        }
        loop {
            if let Some(u) = self.try_use(&entry.name, keep_alive) {
                return Ok((u, Duration::ZERO));
            }
            // Register for "a slot went idle" before looking, so a release between the
            // look and the wait is not missed.
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let guard = self.load_lock.lock().await;
            if let Some(u) = self.try_use(&entry.name, keep_alive) {
                return Ok((u, Duration::ZERO));
            }
            if !self.make_room(Some(need)) {
                // Every resident model is busy: wait until one goes idle, then retry.
                drop(guard);
                tracing::info!(model = %entry.name, "no room (at most {} models, memory cap {:?}) and every resident model is busy; waiting for one to go idle", self.max_loaded, self.max_memory);
                notified.await;
                continue;
            }
            let engine = self.engines.for_kind(entry.kind)?.clone();
            let path = entry.path.clone();
            let opts = self.load_options.clone();
            // Held until the model is resident and charged by what it really holds.
            let reservation = self.reserve_vram(entry, engine.vram_estimate(need, &opts))?;
            tracing::info!(model = %entry.name, path = %path.display(), engine = engine.name(), "loading model");
            let started = Instant::now();
            let model = tokio::task::spawn_blocking(move || engine.load(&path, &opts)).await??;
            let took = started.elapsed();
            let memory = model.memory();
            let context_len = model.context_len();
            let scheduler = Scheduler::new(entry.name.clone(), model.slots(), self.metrics.clone());
            tracing::info!(model = %entry.name, memory_mib = memory.total() >> 20, vram_mib = memory.vram() >> 20, context_len, "loaded in {:.2}s", took.as_secs_f64());
            self.metrics
                .loads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.metrics
                .load_ns
                .fetch_add(took.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
            let now = Instant::now();
            let slot = Arc::new(Slot {
                entry: entry.clone(),
                model: Arc::new(tokio::sync::Mutex::new(model)),
                scheduler,
                memory,
                context_len,
                loaded_at: SystemTime::now(),
                state: Mutex::new(SlotState {
                    expires_at: keep_alive.deadline(now),
                    last_used: now,
                    users: 1,
                }),
            });
            self.slots().insert(entry.name.clone(), slot.clone());
            drop(reservation);
            self.vram.sync_models();
            // The estimate may have been low: unload idle models until under the cap.
            if !self.make_room(None) {
                tracing::warn!(model = %entry.name, "resident models hold more than the memory cap, and all are busy");
            }
            drop(guard);
            return Ok((
                SlotUse {
                    manager: self.clone(),
                    slot,
                    keep_alive,
                },
                took,
            ));
        }
    }

    /// Room for `bytes` of a model's weights in the GPU ledger's model storage, evicting
    /// idle models as the ledger orders them (soonest keep-alive deadline first); `None`
    /// when the model offloads nothing.
    fn reserve_vram(
        &self,
        entry: &ModelEntry,
        bytes: u64,
    ) -> Result<Option<nexus_tensor::ledger::Charge>, ServiceError> {
        if bytes == 0 {
            return Ok(None);
        }
        self.vram
            .charge(
                nexus_tensor::Pool::Vram(nexus_abi::ring::VramRegion::ModelStorage),
                nexus_tensor::Tenant::SERVICE,
                nexus_tensor::ChargeKind::ModelWeights,
                bytes,
            )
            .map(Some)
            .map_err(|e| {
                ServiceError::InsufficientMemory(format!(
                    "model '{}' needs {} MiB of GPU memory: {}",
                    entry.name,
                    bytes.div_ceil(1 << 20),
                    e.message
                ))
            })
    }

    /// Unload least recently used idle models until one more model fits: fewer than
    /// `max_loaded` resident and, with a memory cap, `need` more bytes within it
    /// (`None`: no new model, just get back under the cap). False when every resident
    /// model is busy.
    fn make_room(&self, need: Option<u64>) -> bool {
        loop {
            let victim = {
                let slots = self.slots();
                let held: u64 = slots.values().map(|s| s.memory.total()).sum();
                let count_ok = need.is_none() || slots.len() < self.max_loaded;
                let memory_ok = self
                    .max_memory
                    .is_none_or(|cap| held.saturating_add(need.unwrap_or(0)) <= cap);
                if count_ok && memory_ok {
                    return true;
                }
                slots
                    .values()
                    .filter_map(|s| {
                        let st = s.state();
                        (st.users == 0).then(|| (st.last_used, s.entry.name.clone()))
                    })
                    .min()
                    .map(|(_, name)| name)
            };
            match victim {
                Some(name) => {
                    tracing::info!(model = %name, "unloading least recently used idle model to make room");
                    self.remove_if_idle(&name, false);
                }
                None => return false,
            }
        }
    }

    /// Unload `name` if no request holds it (`only_if_expired`: and its keep-alive ran out).
    fn remove_if_idle(&self, name: &str, only_if_expired: bool) -> bool {
        let removed = {
            let mut slots = self.slots();
            let Some(slot) = slots.get(name) else {
                return false;
            };
            let st = slot.state();
            let expired = st.expires_at.is_some_and(|t| t <= Instant::now());
            if st.users > 0 || (only_if_expired && !expired) {
                return false;
            }
            drop(st);
            slots.remove(name)
        };
        if removed.is_some() {
            self.metrics
                .unloads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(model = %name, "unloaded");
        }
        removed.is_some()
    }

    /// Unload now if idle, otherwise as soon as its last request ends.
    /// Returns whether the model was resident.
    pub fn unload(&self, name: &str) -> bool {
        let slot = self.slots().get(name).cloned();
        let Some(slot) = slot else { return false };
        slot.state().expires_at = Some(Instant::now());
        self.remove_if_idle(name, false);
        true
    }

    /// Unload every idle model whose keep-alive ran out; the soonest remaining deadline.
    pub fn expire(&self) -> Option<Instant> {
        let names: Vec<String> = self.slots().keys().cloned().collect();
        for n in &names {
            self.remove_if_idle(n, true);
        }
        self.slots()
            .values()
            .filter_map(|s| s.state().expires_at)
            .min()
    }

    pub fn running(&self) -> Vec<RunningModel> {
        let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
        let mut out: Vec<RunningModel> = slots
            .iter()
            .map(|s| RunningModel {
                entry: s.entry.clone(),
                memory: s.memory,
                context_len: s.context_len,
                expires_at: s.expires_at(),
                busy: s.state().users > 0,
                load: s.scheduler.load(),
            })
            .collect();
        out.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
        out
    }

    pub fn is_loaded(&self, name: &str) -> bool {
        self.slots().contains_key(name)
    }
}
