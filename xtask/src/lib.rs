//! xtask: the project's build, boot and test driver, as a library its commands share.
//!
//! Each command is a module; `main.rs` only parses the command line and dispatches. Image
//! runners and transcript helpers live in the `nexus-e2e` crate (`tests/`), shared with the
//! image tests themselves.

pub mod ai_bundle;
pub mod bench;
pub mod bench_ai;
pub mod bench_batch;
pub mod bench_boot;
pub mod bench_tensor;
pub mod bochs;
pub mod build;
pub mod cargo;
pub mod cmd;
pub mod gpu;
pub mod lint;
pub mod linux;
pub mod models;
pub mod paths;
pub mod policy;
pub mod prereqs;
pub mod pyenv;
pub mod qemu;
pub mod test;
