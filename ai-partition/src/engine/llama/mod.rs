//! The llama.cpp engine (through the `llama-cpp-2` crate, llama.cpp vendored; its CPU kernels
//! are chosen at run time for the CPU it runs on, see `backends`). Chosen by measurement: on
//! this machine llama.cpp decodes SmolLM2-135M Q4_1 at ~136 tokens/s on one thread against
//! candle's ~35 (see docs/ai-models.md).

pub mod backends;
mod generate;
pub mod huge_pages;
mod owned;
mod sampling;

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::template::ChatTemplate;
use super::{ChatMessage, Engine, EngineError, LoadOptions, LoadedModel, ModelMemory};
use generate::Sequence;
use owned::OwnedContext;

/// Largest context we allocate when the caller leaves `n_ctx` at 0 (the model's own may be
/// far larger than the KV cache memory anyone wants by default).
const DEFAULT_MAX_CTX: u32 = 8192;
/// Prompt tokens evaluated per llama.cpp batch.
const N_BATCH: u32 = 512;
/// Most parallel slots (llama.cpp allows 256 sequences; a decode step of this many tokens
/// is already far past what a CPU gains from batching).
pub const MAX_PARALLEL: u32 = 64;
/// `LLAMA_FLASH_ATTN_TYPE_DISABLED` (llama.h; the wrapper does not re-export the enum).
/// Plain attention is what llama-cpp-python runs by default, and its f32 accumulation is
/// what the reference test's number-format emulation reproduces.
const FLASH_ATTN_DISABLED: i32 = 0;

/// llama.cpp is initialised once per process and never torn down, with its CPU kernels
/// (`backends::cpu`) loaded.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs every tensor at load, and ggml each backend it opens; only show
            // it when asked.
            if std::env::var_os("NEXUS_LLAMA_LOG").is_none() {
                backends::silence_logs();
            }
            // Our CPU variant first: llama_backend_init registers ggml's own pick (by ggml's
            // rules, from the build folder, the AMX variant included) when none is loaded.
            backends::cpu().map_err(|e| e.to_string())?;
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Inference(format!("cannot initialise llama.cpp: {e}")))
}

/// The CPU kernels llama.cpp runs on here (initialising llama.cpp if it is not yet).
pub fn cpu_backend() -> Result<&'static backends::CpuBackend, EngineError> {
    backend()?;
    backends::cpu().map_err(|e| EngineError::Inference(e.to_string()))
}

/// Threads to use when the caller says 0: all available cores.
fn default_threads() -> i32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as i32)
}

#[derive(Debug, Default)]
pub struct LlamaCppEngine;

impl Engine for LlamaCppEngine {
    fn name(&self) -> &'static str {
        "llama.cpp"
    }

    fn load(&self, path: &Path, opts: &LoadOptions) -> Result<Box<dyn LoadedModel>, EngineError> {
        Ok(Box::new(LlamaLoaded::load(path, opts)?))
    }

    /// The whole file when any layer is offloaded: the layer count is only known once the
    /// header is read, so the estimate errs on the side of room.
    fn vram_estimate(&self, file_bytes: u64, opts: &LoadOptions) -> u64 {
        if GPU_OFFLOAD && opts.n_gpu_layers > 0 {
            file_bytes
        } else {
            0
        }
    }
}

/// Whether this build of llama.cpp offloads layers to a GPU (nexus-ai's `cuda` feature);
/// without it `n_gpu_layers` is ignored and everything stays in host memory.
const GPU_OFFLOAD: bool = cfg!(feature = "cuda");

/// Weights and KV cache, and the share of each that offloading `n_gpu_layers` of the
/// model's layers puts in GPU memory (llama.cpp keeps an offloaded layer's KV cache
/// beside its weights).
fn model_memory(weights: u64, kv_cache: u64, n_layer: u32, n_gpu_layers: u32) -> ModelMemory {
    let on_gpu = |bytes: u64| {
        if !GPU_OFFLOAD || n_layer == 0 {
            return 0;
        }
        let layers = u64::from(n_gpu_layers.min(n_layer));
        (u128::from(bytes) * u128::from(layers) / u128::from(n_layer)) as u64
    };
    ModelMemory {
        weights,
        kv_cache,
        vram_weights: on_gpu(weights),
        vram_kv_cache: on_gpu(kv_cache),
    }
}

/// A GGUF model with its context, its KV cache (one slot of `n_ctx` tokens per parallel
/// sequence) and reusable buffers.
pub struct LlamaLoaded {
    owned: OwnedContext,
    template: Option<ChatTemplate>,
    /// One per slot; slot `i` is llama.cpp sequence `i`, in its own KV stream.
    seqs: Vec<Sequence>,
    batch: LlamaBatch<'static>,
    /// Context per slot.
    n_ctx: u32,
    n_batch: u32,
    memory: ModelMemory,
    piece: Vec<u8>,
    /// Token ids of the last generation that ended (reused buffer).
    generated: Vec<u32>,
    /// Starts so far; a slot's `last_used` orders reuse of empty slots.
    clock: u64,
}

impl LlamaLoaded {
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self, EngineError> {
        let load_err = |reason: String| EngineError::Load {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(load_err("no such file".into()));
        }
        if !(1..=MAX_PARALLEL).contains(&opts.n_parallel) {
            return Err(load_err(format!(
                "parallel slots must be between 1 and {MAX_PARALLEL}, not {}",
                opts.n_parallel
            )));
        }
        let backend = backend()?;
        let mparams = LlamaModelParams::default()
            .with_n_gpu_layers(opts.n_gpu_layers)
            .with_use_mmap(!huge_pages::wanted());
        let model = LlamaModel::load_from_file(backend, path, &mparams)
            .map_err(|e| load_err(format!("llama.cpp could not read it as a GGUF model: {e}")))?;

        let n_ctx = match opts.n_ctx {
            0 => model.n_ctx_train().min(DEFAULT_MAX_CTX),
            n => n.min(model.n_ctx_train().max(1)),
        }
        .max(16);
        let slots = opts.n_parallel;
        let n_batch = N_BATCH.min(n_ctx);
        let threads = match opts.n_threads {
            0 => default_threads(),
            n => n as i32,
        };
        let template = match model.meta_val_str("tokenizer.chat_template") {
            Ok(src) => {
                let vocab = model.vocab();
                let text = |t: LlamaToken| {
                    String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
                };
                Some(ChatTemplate::new(
                    &src,
                    &text(vocab.bos()),
                    &text(vocab.eos()),
                )?)
            }
            Err(_) => None,
        };
        let memory = model_memory(
            model.size(),
            kv_cache_bytes(&model, n_ctx * slots),
            model.n_layer(),
            opts.n_gpu_layers,
        );

        // One KV stream per slot (not unified): each sequence attends over its own cells
        // only, at the same cell positions as when it runs alone, so batching changes
        // neither its cost per token nor its greedy output.
        let cparams = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx * slots))
            .with_n_seq_max(slots)
            .with_kv_unified(false)
            .with_n_batch(n_batch)
            .with_n_ubatch(n_batch)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_flash_attention_policy(FLASH_ATTN_DISABLED)
            // llama.cpp's own decode timings (two clock reads per decode) for
            // `GenerationStats::compute`.
            .with_no_perf(false);
        let owned = OwnedContext::new(backend, model, cparams).map_err(|e| {
            load_err(format!(
                "cannot create a context of {slots} x {n_ctx} tokens: {e}"
            ))
        })?;
        Ok(LlamaLoaded {
            owned,
            template,
            seqs: (0..slots).map(|_| Sequence::new(n_ctx)).collect(),
            batch: LlamaBatch::new(n_batch.max(slots) as usize, 1),
            n_ctx,
            n_batch,
            memory,
            piece: Vec::with_capacity(64),
            generated: Vec::with_capacity(256),
            clock: 0,
        })
    }

    /// Tokens held in the KV cache of the slot the last generation ran in (for tests of
    /// prefix reuse).
    pub fn cached_tokens(&self) -> usize {
        self.seqs
            .iter()
            .max_by_key(|s| s.last_used)
            .map_or(0, Sequence::cached_len)
    }

    /// Token ids the last finished generation produced (end-of-generation token excluded),
    /// for comparison with reference implementations.
    pub fn generated_tokens(&self) -> &[u32] {
        &self.generated
    }
}

/// f16 keys and values for every layer and position.
fn kv_cache_bytes(model: &LlamaModel, n_ctx: u32) -> u64 {
    let n_head = u64::from(model.n_head().max(1));
    let head_dim = model.n_embd() as u64 / n_head;
    let kv_dim = head_dim * u64::from(model.n_head_kv());
    2 * 2 * u64::from(model.n_layer()) * u64::from(n_ctx) * kv_dim
}

impl LoadedModel for LlamaLoaded {
    fn tokenize(
        &self,
        text: &str,
        add_bos: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, EngineError> {
        let vocab = self.owned.model().vocab();
        Ok(vocab
            .tokenize(text.as_bytes(), add_bos, parse_special)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect())
    }

    fn detokenize(&self, tokens: &[u32], render_special: bool) -> Result<String, EngineError> {
        let vocab = self.owned.model().vocab();
        let n_vocab = vocab.n_tokens();
        let mut toks = Vec::with_capacity(tokens.len());
        for &t in tokens {
            if t as i64 >= i64::from(n_vocab) {
                return Err(EngineError::Inference(format!(
                    "token {t} is outside the vocabulary of {n_vocab}"
                )));
            }
            toks.push(LlamaToken(t as i32));
        }
        let bytes = vocab.detokenize(&toks, false, render_special);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        match &self.template {
            Some(t) => t.render(messages, add_generation_prompt),
            None => Err(EngineError::Unsupported(
                "chat (the model has no chat template)",
            )),
        }
    }

    fn slots(&self) -> usize {
        self.seqs.len()
    }

    fn slots_busy(&self) -> usize {
        self.seqs.iter().filter(|s| s.is_running()).count()
    }

    fn start(
        &mut self,
        prompt: &[u32],
        params: &super::SamplingParams,
    ) -> Result<usize, EngineError> {
        generate::start(self, prompt, params)
    }

    fn step(
        &mut self,
        events: &mut dyn FnMut(usize, super::SeqEvent<'_>) -> std::ops::ControlFlow<()>,
    ) {
        generate::step(self, events)
    }

    fn cancel(&mut self, slot: usize) -> Option<super::GenerationStats> {
        generate::cancel(self, slot)
    }

    fn memory(&self) -> ModelMemory {
        self.memory
    }

    fn context_len(&self) -> u32 {
        self.n_ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offloaded_share_follows_the_layers_on_the_gpu() {
        let half = model_memory(1000, 400, 30, 15);
        let all = model_memory(1000, 400, 30, 999);
        let none = model_memory(1000, 400, 30, 0);
        assert_eq!((half.weights, half.kv_cache), (1000, 400));
        assert_eq!(none.vram(), 0);
        if GPU_OFFLOAD {
            assert_eq!((half.vram_weights, half.vram_kv_cache), (500, 200));
            assert_eq!(all.vram(), 1400);
        } else {
            // Without GPU offload in the build, n_gpu_layers changes nothing.
            assert_eq!((half.vram(), all.vram()), (0, 0));
        }
    }
}
