//! NexusOS AI partition: model management, inference and the Ollama/OpenAI-compatible API.

pub mod api;
pub mod engine;
pub mod models;
pub mod service;
