//! NexusOS AI partition: model management, inference and the Ollama/OpenAI-compatible API.

pub mod engine;
pub mod models;
