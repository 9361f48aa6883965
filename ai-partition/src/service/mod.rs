//! The service core: one set of functions answering both the HTTP API and the
//! hypercall ABI's model calls.
//!
//! A request is admitted (bounded queue, `QueueFull` past the limit), its model is
//! resolved in the catalog and made resident (`manager`), then it joins the model's FIFO
//! queue; the model's scheduler (`generate`) runs it in a free parallel slot, batched with
//! the others. Generated text streams back through a channel; when the receiver goes away
//! (client disconnected), the scheduler cancels the generation and frees its slot.

pub mod catalog;
pub mod error;
pub mod generate;
pub mod keep_alive;
pub mod manager;
pub mod metrics;
pub mod queue;
mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use catalog::{Catalog, CatalogError, ModelDetails, ModelEntry, ModelKind, PullProgress};
pub use error::ServiceError;
pub use generate::{GenEvent, GenerateJob, Generation, GenerationDone, Prompt, SchedulerLoad};
pub use keep_alive::KeepAlive;
pub use manager::{Engines, RunningModel};
pub use metrics::Metrics;

use crate::engine::LoadOptions;
use manager::Manager;
use queue::Admission;

/// Service limits and defaults.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Most models resident at once (Ollama: 3 per GPU).
    pub max_loaded: usize,
    /// Most requests admitted at once before 503 (Ollama: 512).
    pub max_queue: usize,
    pub default_keep_alive: KeepAlive,
    pub load: LoadOptions,
    /// Most bytes all loaded models may hold together; least recently used idle
    /// models are unloaded to stay under it (`None`: no cap).
    pub max_memory: Option<u64>,
    /// The tensor service and GPU scheduler (budgets from the policy;
    /// `None`: the reference layout, 8/4/4 GiB).
    pub tensor: Option<nexus_tensor::Config>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            max_loaded: 3,
            max_queue: 512,
            default_keep_alive: KeepAlive::default(),
            load: LoadOptions::default(),
            max_memory: None,
            tensor: None,
        }
    }
}

/// What loading a model reported.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub name: String,
    pub load_duration: Duration,
    pub memory_bytes: u64,
    pub context_len: u32,
}

/// Embeddings of a batch of inputs.
#[derive(Clone, Debug)]
pub struct Embeddings {
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
    pub load_duration: Duration,
    pub total_duration: Duration,
}

pub(crate) struct Inner {
    catalog: Arc<dyn Catalog>,
    manager: Arc<Manager>,
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
    tensors: Arc<nexus_tensor::TensorService>,
    config: ServiceConfig,
}

pub(crate) type ServiceInner = Inner;

impl Inner {
    /// Resident models (for the GPU ledger).
    pub(crate) fn running(&self) -> Vec<RunningModel> {
        self.manager.running()
    }

    /// Unload `name` now if no request holds it (the GPU ledger making room).
    pub(crate) fn unload_idle(&self, name: &str) -> bool {
        let idle = self
            .manager
            .running()
            .iter()
            .any(|m| m.entry.name == name && !m.busy);
        idle && self.manager.unload(name)
    }
}

/// The AI service; cheap to clone (shared state).
#[derive(Clone)]
pub struct Service(Arc<Inner>);

impl Service {
    pub fn new(catalog: Arc<dyn Catalog>, engines: Engines, config: ServiceConfig) -> Self {
        let metrics = Arc::new(Metrics::default());
        let tensor_config = config.tensor.clone().unwrap_or_else(|| {
            nexus_tensor::Config::new(nexus_tensor::policy::reference_budgets(
                nexus_tensor::policy::DEFAULT_HOST_BYTES,
            ))
        });
        let tensors = nexus_tensor::TensorService::new(tensor_config);
        let manager = Manager::new(
            engines,
            config.load.clone(),
            config.max_loaded,
            config.max_memory,
            tensors.ledger().clone(),
            metrics.clone(),
        );
        let inner = Arc::new(Inner {
            catalog,
            manager,
            admission: Admission::new(config.max_queue),
            metrics,
            tensors: tensors.clone(),
            config,
        });
        let models = crate::gpu::ManagerModels::new(Arc::downgrade(&inner));
        tensors.ledger().set_resident_models(Arc::new(models));
        Service(inner)
    }

    /// The service over a model store with the real engines (llama.cpp for GGUF,
    /// MiniLM for embeddings).
    pub fn with_store(store: crate::models::ModelStore, config: ServiceConfig) -> Self {
        let engines = Engines {
            generate: crate::engine::default_engine(),
            embedding: Some(crate::engine::embedding_engine()),
        };
        Self::new(Arc::new(store), engines, config)
    }

    /// Start the task that unloads models whose keep-alive ran out. It ends when the
    /// service is dropped.
    pub fn spawn_expiry(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            loop {
                let next = match weak.upgrade() {
                    Some(inner) => inner.manager.expire(),
                    None => return,
                };
                // Wake at the next deadline, but at least every second so keep-alives
                // set after this sweep are honoured promptly.
                let cap = Instant::now() + Duration::from_secs(1);
                let at = next.map_or(cap, |t| t.min(cap));
                tokio::time::sleep_until(at.into()).await;
            }
        })
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.0.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The tensor service and GPU scheduler.
    pub fn tensors(&self) -> &Arc<nexus_tensor::TensorService> {
        &self.0.tensors
    }

    /// Prometheus text for `GET /metrics`.
    pub fn render_metrics(&self) -> String {
        let loaded: Vec<metrics::LoadedGauge> = self
            .running()
            .into_iter()
            .map(|r| metrics::LoadedGauge {
                name: r.entry.name,
                memory_bytes: r.memory.total(),
                load: r.load,
            })
            .collect();
        let mut out =
            self.0
                .metrics
                .render(&loaded, self.0.admission.depth(), self.0.admission.limit());
        crate::gpu::render_metrics(&self.0.tensors, &mut out);
        out
    }

    fn admit(&self) -> Result<queue::Permit, ServiceError> {
        self.0.admission.admit().inspect_err(|_| {
            self.0
                .metrics
                .rejected_queue_full
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
    }

    fn keep_alive(&self, k: Option<KeepAlive>) -> KeepAlive {
        k.unwrap_or(self.0.config.default_keep_alive)
    }

    /// Installed models.
    pub async fn list(&self) -> Result<Vec<ModelEntry>, ServiceError> {
        let c = self.0.catalog.clone();
        let mut v = tokio::task::spawn_blocking(move || c.list()).await??;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// One installed model (`ModelNotFound` when unknown).
    pub async fn show(&self, name: &str) -> Result<ModelEntry, ServiceError> {
        let c = self.0.catalog.clone();
        let n = name.to_string();
        Ok(tokio::task::spawn_blocking(move || c.resolve(&n)).await??)
    }

    /// Resident models.
    pub fn running(&self) -> Vec<RunningModel> {
        self.0.manager.running()
    }

    /// Make `name` resident (if it is not) and set its keep-alive.
    pub async fn load(
        &self,
        name: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<LoadReport, ServiceError> {
        let _permit = self.admit()?;
        let entry = self.show(name).await?;
        let (hold, took) = self
            .0
            .manager
            .acquire(&entry, self.keep_alive(keep_alive))
            .await?;
        Ok(LoadReport {
            name: entry.name,
            load_duration: took,
            memory_bytes: hold.slot.memory.total(),
            context_len: hold.slot.context_len,
        })
    }

    /// Unload `name` now, or when its running requests end. Returns the canonical name
    /// and whether it was resident.
    pub async fn unload(&self, name: &str) -> Result<(String, bool), ServiceError> {
        let entry = self.show(name).await?;
        let was = self.0.manager.unload(&entry.name);
        Ok((entry.name, was))
    }

    /// Unload and remove an installed model.
    pub async fn delete(&self, name: &str) -> Result<String, ServiceError> {
        let entry = self.show(name).await?;
        self.0.manager.unload(&entry.name);
        let c = self.0.catalog.clone();
        let n = entry.name.clone();
        tokio::task::spawn_blocking(move || c.delete(&n)).await??;
        Ok(entry.name)
    }

    /// Install a model from the package cache; progress lines stream through the
    /// returned channel, the last item is the outcome.
    pub fn pull(&self, name: &str) -> mpsc::Receiver<Result<PullProgress, ServiceError>> {
        let (tx, rx) = mpsc::channel(64);
        let c = self.0.catalog.clone();
        let n = name.to_string();
        tokio::task::spawn_blocking(move || {
            let res = c.pull(&n, &mut |p| {
                let _ = tx.blocking_send(Ok(p));
            });
            if let Err(e) = res {
                let _ = tx.blocking_send(Err(e.into()));
            }
        });
        rx
    }

    /// Queue a generation. Errors known before it is queued (unknown model, queue full,
    /// load failure) come back here; the text and the outcome come through the events.
    pub async fn generate(&self, job: GenerateJob) -> Result<Generation, ServiceError> {
        let started = Instant::now();
        let permit = self.admit()?;
        let entry = self.show(&job.model).await?;
        if entry.kind != ModelKind::Generate {
            return Err(ServiceError::BadRequest(format!(
                "\"{}\" does not support generate",
                entry.name
            )));
        }
        let keep_alive = self.keep_alive(job.keep_alive);
        let (hold, load_duration) = self.0.manager.acquire(&entry, keep_alive).await?;
        Ok(generate::start(
            job,
            entry.name,
            hold,
            permit,
            started,
            load_duration,
        ))
    }

    /// Embed `inputs` with an embedding model.
    pub async fn embed(
        &self,
        model: &str,
        inputs: Vec<String>,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Embeddings, ServiceError> {
        let started = Instant::now();
        let _permit = self.admit()?;
        let entry = self.show(model).await?;
        if entry.kind != ModelKind::Embedding {
            return Err(ServiceError::BadRequest(format!(
                "\"{}\" does not support embeddings",
                entry.name
            )));
        }
        let (hold, load_duration) = self
            .0
            .manager
            .acquire(&entry, self.keep_alive(keep_alive))
            .await?;
        let mut guard = hold.slot.model.clone().lock_owned().await;
        let n = inputs.len();
        let (vectors, prompt_tokens) = tokio::task::spawn_blocking(move || {
            let tokens: usize = inputs
                .iter()
                .map(|s| guard.tokenize(s, true, false).map_or(0, |t| t.len()))
                .sum();
            guard.embed(&inputs).map(|v| (v, tokens as u32))
        })
        .await??;
        self.0.metrics.record_embedding(&entry.name, n);
        drop(hold);
        Ok(Embeddings {
            model: entry.name,
            vectors,
            prompt_tokens,
            load_duration,
            total_duration: started.elapsed(),
        })
    }
}
