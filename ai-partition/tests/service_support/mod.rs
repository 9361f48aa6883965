//! Test doubles for the service core (an engine and a catalogue that need no model
//! files), plus helpers to run the HTTP API on an ephemeral loopback port.
//!
//! The fake engine is only for queueing, cancellation and keep-alive behaviour; real
//! inference is tested with SmolLM2 and MiniLM in `api_real.rs` and `clients_python.rs`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nexus_ai::api::{self, ApiConfig, AppState};
use nexus_ai::engine::{
    ChatMessage, Engine, EngineError, FinishReason, GenerationStats, LoadOptions, LoadedModel,
    ModelMemory, SamplingParams, SeqEvent,
};
use nexus_ai::service::{
    Catalog, CatalogError, Engines, ModelDetails, ModelEntry, ModelKind, PullProgress, Service,
    ServiceConfig,
};

/// What the fake engine saw; tests read it to check order, exclusivity and cancellation.
#[derive(Default)]
pub struct Control {
    /// Delay per generated token.
    pub delay: Mutex<Duration>,
    /// Prompt texts, in the order their generations started.
    pub order: Mutex<Vec<String>>,
    pub active: AtomicUsize,
    pub max_active: AtomicUsize,
    pub cancelled: AtomicUsize,
    pub loads: AtomicUsize,
    pub drops: AtomicUsize,
    /// Batched steps taken, and the most sequences one step advanced.
    pub steps: AtomicUsize,
    pub max_batch: AtomicUsize,
    /// When set, generations produce this text (one character per token) instead of
    /// "w0 w1 ...", and record the output format they were asked for.
    pub script: Mutex<Option<String>>,
    pub formats: Mutex<Vec<Option<nexus_ai::engine::OutputFormat>>>,
}

impl Control {
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }
    pub fn order(&self) -> Vec<String> {
        self.order.lock().unwrap().clone()
    }
}

/// What a fake model holds: weights and KV cache.
pub const FAKE_WEIGHTS: u64 = 750_000;
pub const FAKE_KV_CACHE: u64 = 250_000;
pub const FAKE_MEMORY: u64 = FAKE_WEIGHTS + FAKE_KV_CACHE;

pub struct FakeEngine(pub Arc<Control>);

impl Engine for FakeEngine {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn load(&self, path: &Path, opts: &LoadOptions) -> Result<Box<dyn LoadedModel>, EngineError> {
        if path.to_string_lossy().contains("broken") {
            return Err(EngineError::Load {
                path: path.display().to_string(),
                reason: "bad file".into(),
            });
        }
        self.0.loads.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(FakeModel {
            ctl: self.0.clone(),
            runs: (0..opts.n_parallel.max(1)).map(|_| None).collect(),
            on_gpu: opts.n_gpu_layers > 0,
        }))
    }
    /// As a GPU build: any offloaded layer puts the whole model in GPU memory.
    fn vram_estimate(&self, _file_bytes: u64, opts: &LoadOptions) -> u64 {
        if opts.n_gpu_layers > 0 {
            FAKE_WEIGHTS
        } else {
            0
        }
    }
}

/// A running fake generation: `n` tokens, `made` so far.
struct FakeRun {
    n: u32,
    made: u32,
    script: Option<Vec<char>>,
    prompt_tokens: u32,
    started: Instant,
}

/// A model with `runs.len()` parallel slots; each step advances every running sequence
/// by one token and sleeps the configured delay once (one batched decode).
pub struct FakeModel {
    ctl: Arc<Control>,
    runs: Vec<Option<FakeRun>>,
    /// Loaded with layers offloaded: weights and KV cache count as GPU memory.
    on_gpu: bool,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.ctl.drops.fetch_add(1, Ordering::SeqCst);
    }
}

impl FakeModel {
    fn end(&mut self, slot: usize, reason: FinishReason) -> Option<GenerationStats> {
        let r = self.runs[slot].take()?;
        self.ctl.active.fetch_sub(1, Ordering::SeqCst);
        if reason == FinishReason::Cancelled {
            self.ctl.cancelled.fetch_add(1, Ordering::SeqCst);
        }
        Some(GenerationStats {
            prompt_tokens: r.prompt_tokens,
            prompt_tokens_evaluated: r.prompt_tokens,
            prompt_eval_ns: 1000,
            generated_tokens: r.made,
            eval_ns: r.started.elapsed().as_nanos() as u64,
            compute: None,
        })
    }
}

/// Text the fake model generates for `n` tokens: "w0 w1 ... w{n-1} ".
pub fn fake_text(n: u32) -> String {
    (0..n).map(|i| format!("w{i} ")).collect()
}

impl LoadedModel for FakeModel {
    fn tokenize(
        &self,
        text: &str,
        _add_bos: bool,
        _special: bool,
    ) -> Result<Vec<u32>, EngineError> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn detokenize(&self, tokens: &[u32], _render_special: bool) -> Result<String, EngineError> {
        Ok(tokens.iter().map(|&t| t as u8 as char).collect())
    }
    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        _gen: bool,
    ) -> Result<String, EngineError> {
        Ok(messages
            .iter()
            .map(|m| format!("{}: {}\n", m.role, m.content))
            .collect())
    }
    fn slots(&self) -> usize {
        self.runs.len()
    }
    fn slots_busy(&self) -> usize {
        self.runs.iter().flatten().count()
    }
    fn start(&mut self, prompt: &[u32], params: &SamplingParams) -> Result<usize, EngineError> {
        let slot = self
            .runs
            .iter()
            .position(Option::is_none)
            .ok_or_else(|| EngineError::InvalidRequest("all slots are busy".into()))?;
        let text = self.detokenize(prompt, false)?;
        self.ctl.order.lock().unwrap().push(text);
        let now = self.ctl.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.ctl.max_active.fetch_max(now, Ordering::SeqCst);
        self.ctl.formats.lock().unwrap().push(params.format.clone());
        let script: Option<Vec<char>> = self
            .ctl
            .script
            .lock()
            .unwrap()
            .as_ref()
            .map(|s| s.chars().collect());
        self.runs[slot] = Some(FakeRun {
            n: match &script {
                Some(s) => params
                    .num_predict
                    .map_or(s.len() as u32, |n| n.min(s.len() as u32)),
                None => params.num_predict.unwrap_or(8),
            },
            made: 0,
            script,
            prompt_tokens: prompt.len() as u32,
            started: Instant::now(),
        });
        Ok(slot)
    }
    fn step(&mut self, events: &mut dyn FnMut(usize, SeqEvent<'_>) -> ControlFlow<()>) {
        let delay = *self.ctl.delay.lock().unwrap();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let running = self.runs.iter().flatten().count();
        self.ctl.steps.fetch_add(1, Ordering::SeqCst);
        self.ctl.max_batch.fetch_max(running, Ordering::SeqCst);
        for slot in 0..self.runs.len() {
            let Some(r) = self.runs[slot].as_mut() else {
                continue;
            };
            if r.made >= r.n {
                let stats = self.end(slot, FinishReason::Length);
                let _ = events(
                    slot,
                    SeqEvent::Done(Ok((FinishReason::Length, stats.unwrap()))),
                );
                continue;
            }
            let piece = match &r.script {
                Some(s) => s[r.made as usize].to_string(),
                None => format!("w{} ", r.made),
            };
            r.made += 1;
            let reason = if events(slot, SeqEvent::Piece(&piece)).is_break() {
                FinishReason::Cancelled
            } else if r
                .script
                .as_ref()
                .is_some_and(|s| r.made as usize >= s.len())
            {
                // The scripted text is all out: the model's end-of-generation.
                FinishReason::Stop
            } else if r.made >= r.n {
                FinishReason::Length
            } else {
                continue;
            };
            let stats = self.end(slot, reason);
            let _ = events(slot, SeqEvent::Done(Ok((reason, stats.unwrap()))));
        }
    }
    fn cancel(&mut self, slot: usize) -> Option<GenerationStats> {
        self.end(slot, FinishReason::Cancelled)
    }
    fn embed(&mut self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EngineError> {
        // Letter histogram over a..d, normalised: deterministic and easy to check.
        Ok(inputs
            .iter()
            .map(|s| {
                let mut v = [0f32; 4];
                for c in s.chars() {
                    if ('a'..='d').contains(&c) {
                        v[(c as u8 - b'a') as usize] += 1.0;
                    }
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
                v.iter().map(|x| x / n).collect()
            })
            .collect())
    }
    fn memory(&self) -> ModelMemory {
        let vram = |b: u64| if self.on_gpu { b } else { 0 };
        ModelMemory {
            weights: FAKE_WEIGHTS,
            kv_cache: FAKE_KV_CACHE,
            vram_weights: vram(FAKE_WEIGHTS),
            vram_kv_cache: vram(FAKE_KV_CACHE),
        }
    }
    fn context_len(&self) -> u32 {
        128
    }
}

/// An in-memory catalogue.
pub struct FakeCatalog {
    models: Mutex<Vec<ModelEntry>>,
}

pub fn entry(name: &str, kind: ModelKind) -> ModelEntry {
    ModelEntry {
        name: name.to_string(),
        path: PathBuf::from(format!("/fake/{name}")),
        size: 1234 + name.len() as u64,
        digest: format!("sha256:{:064x}", name.len()),
        modified_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        kind,
        details: ModelDetails {
            parent_model: String::new(),
            format: "gguf".into(),
            family: "fakellama".into(),
            families: vec!["fakellama".into()],
            parameter_size: "1M".into(),
            quantization_level: "Q4_1".into(),
        },
        model_info: serde_json::from_value(
            serde_json::json!({"general.architecture": "fakellama"}),
        )
        .unwrap(),
        context_length: Some(128),
        embedding_length: Some(4),
        template: String::new(),
        license: String::new(),
    }
}

impl FakeCatalog {
    pub fn new() -> Self {
        let models = vec![
            entry("alpha:latest", ModelKind::Generate),
            entry("beta:latest", ModelKind::Generate),
            entry("gamma:latest", ModelKind::Generate),
            entry("embedder:latest", ModelKind::Embedding),
            entry("broken:latest", ModelKind::Generate),
        ];
        Self {
            models: Mutex::new(models),
        }
    }
}

fn canonical(name: &str) -> String {
    if name.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

impl Catalog for FakeCatalog {
    fn list(&self) -> Result<Vec<ModelEntry>, CatalogError> {
        Ok(self.models.lock().unwrap().clone())
    }
    fn resolve(&self, name: &str) -> Result<ModelEntry, CatalogError> {
        let n = canonical(name);
        self.models
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.name == n)
            .cloned()
            .ok_or(CatalogError::NotFound(n))
    }
    fn delete(&self, name: &str) -> Result<(), CatalogError> {
        let n = canonical(name);
        let mut m = self.models.lock().unwrap();
        let before = m.len();
        m.retain(|e| e.name != n);
        if m.len() == before {
            return Err(CatalogError::NotFound(n));
        }
        Ok(())
    }
    fn pull(&self, name: &str, progress: &mut dyn FnMut(PullProgress)) -> Result<(), CatalogError> {
        let n = canonical(name);
        if n != "delta:latest" {
            return Err(CatalogError::Unavailable(format!(
                "cannot pull {n} offline: not in the catalogue"
            )));
        }
        progress(PullProgress {
            status: "pulling manifest".into(),
            ..Default::default()
        });
        for done in [0u64, 50, 100] {
            progress(PullProgress {
                status: "pulling delta".into(),
                digest: Some("sha256:00".into()),
                total: Some(100),
                completed: Some(done),
            });
        }
        self.models
            .lock()
            .unwrap()
            .push(entry(&n, ModelKind::Generate));
        progress(PullProgress {
            status: "success".into(),
            ..Default::default()
        });
        Ok(())
    }
}

/// A service over the fakes.
pub fn fake_service(config: ServiceConfig) -> (Service, Arc<Control>) {
    let ctl = Arc::new(Control::default());
    let engines = Engines {
        generate: Arc::new(FakeEngine(ctl.clone())),
        embedding: Some(Arc::new(FakeEngine(ctl.clone()))),
    };
    (
        Service::new(Arc::new(FakeCatalog::new()), engines, config),
        ctl,
    )
}

/// Serve `service` on an ephemeral loopback port; the server stops when the runtime ends.
pub async fn serve(service: Service, config: ApiConfig) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::new(service, config);
    tokio::spawn(api::serve(listener, state, std::future::pending()));
    addr
}

/// Wait (up to 20 s, a liveness bound, not a timing check) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
