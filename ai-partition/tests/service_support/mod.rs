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
    SamplingParams,
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
}

impl Control {
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }
    pub fn order(&self) -> Vec<String> {
        self.order.lock().unwrap().clone()
    }
}

pub const FAKE_MEMORY: u64 = 1_000_000;

pub struct FakeEngine(pub Arc<Control>);

impl Engine for FakeEngine {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn load(&self, path: &Path, _opts: &LoadOptions) -> Result<Box<dyn LoadedModel>, EngineError> {
        if path.to_string_lossy().contains("broken") {
            return Err(EngineError::Load {
                path: path.display().to_string(),
                reason: "bad file".into(),
            });
        }
        self.0.loads.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(FakeModel(self.0.clone())))
    }
}

pub struct FakeModel(Arc<Control>);

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.0.drops.fetch_add(1, Ordering::SeqCst);
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
    fn generate(
        &mut self,
        prompt: &[u32],
        params: &SamplingParams,
        on_piece: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<(FinishReason, GenerationStats), EngineError> {
        let text = self.detokenize(prompt, false)?;
        self.0.order.lock().unwrap().push(text);
        let now = self.0.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.max_active.fetch_max(now, Ordering::SeqCst);
        let delay = *self.0.delay.lock().unwrap();
        let n = params.num_predict.unwrap_or(8);
        let started = Instant::now();
        let mut reason = FinishReason::Length;
        let mut made = 0;
        for i in 0..n {
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            made += 1;
            if on_piece(&format!("w{i} ")).is_break() {
                self.0.cancelled.fetch_add(1, Ordering::SeqCst);
                reason = FinishReason::Cancelled;
                break;
            }
        }
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        Ok((
            reason,
            GenerationStats {
                prompt_tokens: prompt.len() as u32,
                prompt_tokens_evaluated: prompt.len() as u32,
                prompt_eval_ns: 1000,
                generated_tokens: made,
                eval_ns: started.elapsed().as_nanos() as u64,
                compute: None,
            },
        ))
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
    fn memory_bytes(&self) -> u64 {
        FAKE_MEMORY
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
