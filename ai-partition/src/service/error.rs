//! Service errors; the HTTP layer and the ABI map each kind to their status codes.

use super::catalog::CatalogError;
use crate::engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request itself is wrong (bad option, wrong model kind for the call, ...).
    #[error("{0}")]
    BadRequest(String),
    #[error("model '{0}' not found, try pulling it first")]
    ModelNotFound(String),
    /// The request queue is full.
    #[error("server busy, please try again: {0} requests are already queued")]
    QueueFull(usize),
    /// The model does not fit the memory cap even with every other model unloaded.
    #[error("{0}")]
    InsufficientMemory(String),
    /// The model cannot be fetched offline.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Internal(String),
}

impl From<CatalogError> for ServiceError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::NotFound(name) => ServiceError::ModelNotFound(name),
            CatalogError::Unavailable(msg) => ServiceError::Unavailable(msg),
            CatalogError::Io(msg) => ServiceError::Internal(msg),
        }
    }
}

impl From<tokio::task::JoinError> for ServiceError {
    fn from(e: tokio::task::JoinError) -> Self {
        ServiceError::Internal(format!("worker task failed: {e}"))
    }
}
