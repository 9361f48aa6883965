//! Sentence embeddings with BERT-family sentence-transformers models (all-MiniLM-L6-v2):
//! `tokenizer.json` through Hugging Face's `tokenizers` crate, the encoder in plain Rust
//! (`bert.rs`), mean pooling and L2 normalisation as sentence-transformers does.

mod bert;
mod ops;

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use super::{ChatMessage, Engine, EngineError, LoadOptions, LoadedModel, SamplingParams};
use bert::{Bert, BertConfig};

#[derive(Debug, Default)]
pub struct MiniLmEngine;

impl Engine for MiniLmEngine {
    fn name(&self) -> &'static str {
        "nexus-bert"
    }

    /// `path` is the weights file (`model.safetensors`) or the model's directory; the
    /// tokenizer and configuration are read from the same directory.
    fn load(&self, path: &Path, _opts: &LoadOptions) -> Result<Box<dyn LoadedModel>, EngineError> {
        Ok(Box::new(MiniLm::load(path)?))
    }
}

pub struct MiniLm {
    bert: Bert,
    tokenizer: Tokenizer,
    max_seq: usize,
}

impl MiniLm {
    pub fn load(path: &Path) -> Result<Self, EngineError> {
        let (dir, weights): (PathBuf, PathBuf) = if path.is_dir() {
            (path.to_path_buf(), path.join("model.safetensors"))
        } else {
            (
                path.parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
                path.to_path_buf(),
            )
        };
        let err = |reason: String| EngineError::Load {
            path: path.display().to_string(),
            reason,
        };
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| err(format!("{name}: {e}")))
        };
        let config: BertConfig = serde_json::from_str(&read("config.json")?)
            .map_err(|e| err(format!("config.json: {e}")))?;
        // sentence-transformers truncates at max_seq_length (256 for MiniLM), not at the
        // position table's 512.
        let max_seq = read("sentence_bert_config.json")
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["max_seq_length"].as_u64())
            .map_or(config.max_position_embeddings, |n| n as usize)
            .min(config.max_position_embeddings);
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| err(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_seq,
                ..Default::default()
            }))
            .map_err(|e| err(format!("tokenizer truncation: {e}")))?;
        let bytes =
            std::fs::read(&weights).map_err(|e| err(format!("{}: {e}", weights.display())))?;
        let bert = Bert::from_safetensors(&bytes, config).map_err(err)?;
        Ok(MiniLm {
            bert,
            tokenizer,
            max_seq,
        })
    }

    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError> {
        self.tokenizer
            .encode(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| EngineError::Inference(format!("tokenizer: {e}")))
    }
}

impl LoadedModel for MiniLm {
    /// BERT's `[CLS] … [SEP]` are added when `add_bos`; its special tokens are always parsed.
    fn tokenize(
        &self,
        text: &str,
        add_bos: bool,
        _parse_special: bool,
    ) -> Result<Vec<u32>, EngineError> {
        self.encode(text, add_bos)
    }

    fn detokenize(&self, tokens: &[u32], render_special: bool) -> Result<String, EngineError> {
        self.tokenizer
            .decode(tokens, !render_special)
            .map_err(|e| EngineError::Inference(format!("tokenizer: {e}")))
    }

    fn apply_chat_template(&self, _: &[ChatMessage], _: bool) -> Result<String, EngineError> {
        Err(EngineError::Unsupported("chat (embedding model)"))
    }

    fn start(&mut self, _: &[u32], _: &SamplingParams) -> Result<usize, EngineError> {
        Err(EngineError::Unsupported("generation (embedding model)"))
    }

    fn embed(&mut self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EngineError> {
        inputs
            .iter()
            .map(|text| {
                let ids = self.encode(text, true)?;
                self.bert.embed(&ids).map_err(EngineError::Inference)
            })
            .collect()
    }

    fn memory(&self) -> super::ModelMemory {
        // Host memory only; activations are per request, not a cache.
        super::ModelMemory {
            weights: self.bert.weight_bytes(),
            ..Default::default()
        }
    }

    fn context_len(&self) -> u32 {
        self.max_seq as u32
    }
}
