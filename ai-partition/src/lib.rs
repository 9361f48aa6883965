//! NexusOS AI partition: model management, inference and the Ollama/OpenAI-compatible API.

pub mod abi;
pub mod api;
pub mod cli;
pub mod engine;
pub mod gpu;
pub mod models;
pub mod service;
