//! Ollama-compatible routes (`/api/*`).

pub mod embed;
pub mod generate;
pub mod models;
