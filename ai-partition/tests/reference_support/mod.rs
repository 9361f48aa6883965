//! Shared by the model tests: where the installed models are, loading them pinned to one
//! thread, and the reference fixtures made by ai-partition/reference/*.py.
#![allow(dead_code)]

use std::path::PathBuf;

use nexus_ai::engine::llama::LlamaLoaded;
use nexus_ai::engine::LoadOptions;
use nexus_ai::models::ModelStore;

/// Reason shown for tests skipped because the models are not installed.
pub const NEEDS_MODELS: &str = "model not installed: run `cargo xtask models fetch`";

pub fn model_path(name: &str) -> PathBuf {
    let store = ModelStore::open_default().expect("models directory");
    match store.resolve(name) {
        Ok(m) => m.path,
        Err(e) => panic!("{name}: {e} (run `cargo xtask models fetch`)"),
    }
}

/// SmolLM2 on one thread (tests must not depend on the machine's load).
pub fn smollm2(n_ctx: u32) -> LlamaLoaded {
    let opts = LoadOptions {
        n_ctx,
        n_threads: 1,
        n_gpu_layers: 0,
        n_parallel: 1,
    };
    LlamaLoaded::load(&model_path("smollm2:135m"), &opts).expect("load SmolLM2")
}

pub fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}
