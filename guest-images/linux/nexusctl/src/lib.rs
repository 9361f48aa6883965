//! `nexus_client`: NexusOS from a Linux guest's user space.
//!
//! - [`discovery`]: find NexusOS through CPUID (works for every process);
//! - [`doorbell`]: calls through the user-space doorbell page (root only: it is reached
//!   through `/dev/mem`, and buffers are guest-physical addresses from `/proc/self/pagemap`);
//! - [`pagemap`]: decoding `/proc/self/pagemap` entries;
//! - [`report`]: the text `nexusctl` prints;
//! - [`cli`]: `nexusctl`'s command line; [`error`]: what can fail, with exit codes.
//!
//! Who may call what inside a guest is specified in docs/abi.md, section 2.2. All `unsafe`
//! code (mappings, the doorbell store) is in the private `sys` module.

pub mod cli;
pub mod discovery;
pub mod doorbell;
pub mod error;
pub mod pagemap;
pub mod report;
mod sys;

pub use error::Error;

/// Size of the pages this tool maps and locks (x86_64 base pages).
pub const PAGE_SIZE: usize = 4096;
