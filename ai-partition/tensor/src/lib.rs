//! NexusOS tensor service and GPU scheduler: tensors and GPU allocations per
//! tenant (partition), a VRAM ledger built from the policy's GPU regions,
//! per-tenant streams, a CPU backend (always) and a CUDA backend (feature
//! `cuda`). Pure Rust and independent of the inference engine; the AI
//! service (`nexus-ai`) serves it over the hypercall ring and HTTP.
//!
//! Specification: docs/ai-tensor.md.

pub mod abi;
pub mod backend;
pub mod cpu;
pub mod dtype;
pub mod error;
pub mod exec;
pub mod ledger;
pub mod plan;
pub mod policy;
pub mod service;
pub mod shape;
pub mod storage;
pub mod streams;
pub mod tenant;

pub use dtype::DType;
pub use error::{Result, TensorError};
pub use ledger::{
    Budgets, ChargeKind, Ledger, LedgerSnapshot, Pool, ResidentModel, ResidentModels,
};
pub use service::{Command, Config, Fill, Reclaimed, StatusView, TensorInfo, TensorService};
pub use shape::Shape;
pub use tenant::Tenant;
