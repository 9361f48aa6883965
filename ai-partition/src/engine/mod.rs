//! The inference engine boundary.
//!
//! Everything above this module (model manager, scheduler, HTTP API, hypercall
//! model calls) talks to inference only through these traits, so another engine
//! can be added without touching the service. Implementations live in
//! submodules (one file or folder per engine).

pub mod llama;
pub mod minilm;
pub mod schema;
pub mod stream;
pub mod template;

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use crate::models::ModelKind;

/// The engine for text generation: llama.cpp.
pub fn default_engine() -> Arc<dyn Engine> {
    Arc::new(llama::LlamaCppEngine)
}

/// The engine for sentence embeddings (BERT-family safetensors models such as MiniLM).
pub fn embedding_engine() -> Arc<dyn Engine> {
    Arc::new(minilm::MiniLmEngine)
}

/// The engine that loads a stored model of this kind (`StoredModel::kind`; load `StoredModel::path`).
pub fn engine_for(kind: ModelKind) -> Arc<dyn Engine> {
    match kind {
        ModelKind::Generate => default_engine(),
        ModelKind::Embedding => embedding_engine(),
    }
}

/// A chat message as the chat template sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    pub content: String,
}

/// How a model is loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Context window in tokens of each parallel slot (0: the model's own, capped by the
    /// engine's default). The KV cache holds `n_ctx * n_parallel` tokens, as Ollama sizes it.
    pub n_ctx: u32,
    /// Sequences decoded together in one batch (continuous batching); each has its own
    /// KV-cache slot of `n_ctx` tokens.
    pub n_parallel: u32,
    /// Threads for decoding and prompt processing (0: engine default).
    pub n_threads: u32,
    /// Layers to offload to a GPU (ignored by builds without GPU offload).
    pub n_gpu_layers: u32,
}

/// Memory a loaded model holds: its weights and its KV cache (the context of every slot),
/// and how much of each lives in GPU memory (offloaded layers). The GPU ledger charges the
/// GPU parts: weights to model storage, KV cache to the inference cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelMemory {
    pub weights: u64,
    pub kv_cache: u64,
    pub vram_weights: u64,
    pub vram_kv_cache: u64,
}

impl ModelMemory {
    /// All of it, wherever it lives.
    pub fn total(&self) -> u64 {
        self.weights.saturating_add(self.kv_cache)
    }

    /// The part in GPU memory.
    pub fn vram(&self) -> u64 {
        self.vram_weights.saturating_add(self.vram_kv_cache)
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            n_ctx: 2048,
            n_parallel: 1,
            n_threads: 0,
            n_gpu_layers: 0,
        }
    }
}

/// Sampling and stopping parameters, with Ollama's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0.0 means greedy (argmax).
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub repeat_penalty: f32,
    /// How many of the last tokens the repeat penalty looks at.
    pub repeat_last_n: u32,
    pub seed: Option<u64>,
    /// Maximum tokens to generate; `None` means until end-of-generation or the context is full.
    pub num_predict: Option<u32>,
    /// Generation stops before any of these strings; the stop string is not returned.
    pub stop: Vec<String>,
    /// Constrain the output to JSON (`None`: free text).
    pub format: Option<OutputFormat>,
}

/// A constraint on what the model may generate (structured output).
#[derive(Clone, Debug, PartialEq)]
pub enum OutputFormat {
    /// Any JSON object (Ollama's `format: "json"`, OpenAI's `json_object`).
    JsonObject,
    /// JSON valid against this schema (checked with [`schema::check`] first).
    Schema(serde_json::Value),
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: None,
            num_predict: None,
            stop: Vec::new(),
            format: None,
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `num_predict` or the context limit reached.
    Length,
    /// The caller's callback asked to stop (for example, a client disconnected).
    Cancelled,
}

/// Counts and timings of one generation, in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenerationStats {
    pub prompt_tokens: u32,
    /// Prompt tokens actually evaluated (fewer when a cached prefix was reused).
    pub prompt_tokens_evaluated: u32,
    pub prompt_eval_ns: u64,
    pub generated_tokens: u32,
    /// The per-token loop: decode, pick, detokenise, stop-string check (Ollama's
    /// `eval_duration`).
    pub eval_ns: u64,
    /// The engine's compute alone, where it measures it (llama.cpp's `llama_perf_context`).
    pub compute: Option<ComputeTimings>,
}

/// `llama_decode` time alone, counted as llama.cpp's `llama_perf_context` counts it: batches of
/// several tokens are prompt evaluation, single-token batches are decodes. Sampling and
/// detokenising are not in it. Benchmarks use it to compare like with like against llama.cpp
/// run directly; clients are told `eval_ns`, which includes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ComputeTimings {
    pub prompt_ns: u64,
    pub prompt_tokens: u32,
    pub decode_ns: u64,
    pub decodes: u32,
}

/// Errors an engine reports; the service maps them to HTTP or ABI status codes.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot load model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("prompt of {tokens} tokens does not fit the context of {n_ctx} tokens")]
    ContextOverflow { tokens: usize, n_ctx: u32 },
    #[error("model does not support {0}")]
    Unsupported(&'static str),
    /// The request cannot be served as asked (a bad schema, no free slot).
    #[error("{0}")]
    InvalidRequest(String),
    #[error("inference failed: {0}")]
    Inference(String),
}

/// An inference engine: turns model files into loaded models.
pub trait Engine: Send + Sync {
    /// Short name for logs and `/api/show` (for example `llama.cpp`).
    fn name(&self) -> &'static str;
    fn load(&self, path: &Path, opts: &LoadOptions) -> Result<Box<dyn LoadedModel>, EngineError>;
    /// GPU memory that loading a model file of `file_bytes` with `opts` will take for its
    /// weights, estimated before loading so the GPU ledger can make room or refuse first
    /// (0: the engine keeps everything in host memory).
    fn vram_estimate(&self, file_bytes: u64, opts: &LoadOptions) -> u64 {
        let _ = (file_bytes, opts);
        0
    }
}

/// What a sequence reports during [`LoadedModel::step`].
#[derive(Debug)]
pub enum SeqEvent<'a> {
    /// Text produced (stop strings already held back). The callback may answer `Break` to
    /// cancel the sequence; it then ends with [`FinishReason::Cancelled`].
    Piece(&'a str),
    /// The sequence ended and its slot is free; always the sequence's last event.
    Done(Result<(FinishReason, GenerationStats), EngineError>),
}

/// A model resident in memory.
///
/// Generation is batched: up to [`LoadedModel::slots`] sequences run at once, each in its
/// own KV-cache slot. [`LoadedModel::start`] puts a request in a free slot and
/// [`LoadedModel::step`] advances every running sequence together (one batched decode for
/// the sequences that are generating, plus a chunk of each waiting prompt). The scheduler
/// owns the model (`&mut self`) and drives the loop; [`LoadedModel::generate`] is the same
/// loop for one request on its own.
pub trait LoadedModel: Send {
    /// Tokenize with the model's own tokenizer. `parse_special` turns text such as
    /// `<|im_start|>` into its special token.
    fn tokenize(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, EngineError>;
    /// Text of the given tokens (special tokens rendered when `render_special`).
    fn detokenize(&self, tokens: &[u32], render_special: bool) -> Result<String, EngineError>;
    /// The prompt text produced by the model's own chat template.
    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, EngineError>;
    /// Parallel generation slots (0: the model does not generate).
    fn slots(&self) -> usize {
        0
    }
    /// Slots with a running sequence.
    fn slots_busy(&self) -> usize {
        0
    }
    /// Start generating from `prompt` in a free slot and return the slot. Nothing is
    /// evaluated yet; errors known up front (prompt too long, bad token, bad format, no free
    /// slot) come back here. Implementations reuse the KV cache of the free slot that shares
    /// the longest prefix with `prompt`.
    fn start(&mut self, prompt: &[u32], params: &SamplingParams) -> Result<usize, EngineError> {
        let _ = (prompt, params);
        Err(EngineError::Unsupported("generation"))
    }
    /// Advance every running sequence by one step, reporting through `events(slot, event)`.
    fn step(&mut self, events: &mut dyn FnMut(usize, SeqEvent<'_>) -> ControlFlow<()>) {
        let _ = events;
    }
    /// End the sequence in `slot` now (its client went away); the slot is free at once.
    /// Returns what it had done, `None` if nothing ran there.
    fn cancel(&mut self, slot: usize) -> Option<GenerationStats> {
        let _ = slot;
        None
    }
    /// Evaluate `prompt` and generate on its own (no other sequence may be running).
    /// `on_piece` receives each piece of text as it is produced and may return `Break` to
    /// cancel.
    fn generate(
        &mut self,
        prompt: &[u32],
        params: &SamplingParams,
        on_piece: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<(FinishReason, GenerationStats), EngineError> {
        let slot = self.start(prompt, params)?;
        let mut outcome = None;
        while outcome.is_none() {
            self.step(&mut |s, ev| match ev {
                SeqEvent::Piece(p) if s == slot => on_piece(p),
                SeqEvent::Done(r) if s == slot => {
                    outcome = Some(r);
                    ControlFlow::Continue(())
                }
                // Another caller's sequence: not ours to report (there should be none).
                _ => ControlFlow::Continue(()),
            });
        }
        outcome.unwrap_or_else(|| {
            Err(EngineError::Inference(
                "generation ended without a result".into(),
            ))
        })
    }
    /// Sentence embeddings (L2-normalised), for embedding models.
    fn embed(&mut self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EngineError> {
        let _ = inputs;
        Err(EngineError::Unsupported("embeddings"))
    }
    /// Memory this model holds (weights and KV cache, host and GPU), for accounting.
    fn memory(&self) -> ModelMemory;
    /// Context window in tokens (of each slot).
    fn context_len(&self) -> u32;
}
