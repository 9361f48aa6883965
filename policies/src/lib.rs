//! NexusOS partition policies.
//!
//! A policy says which CPUs, memory, GPU memory, PCI devices and hypercall
//! groups each partition gets. It is written in TOML (`policies/*.toml`),
//! parsed and validated on the host (feature `std`), and compiled into a small
//! binary form that the hypervisor decodes without an allocator
//! ([`compiled`]). Schema, rules and byte layout: docs/policy.md.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod boot;
pub mod compiled;
pub mod groups;
pub mod limits;
pub mod types;
pub mod units;

#[cfg(feature = "std")]
mod compile;
#[cfg(feature = "std")]
mod error;
#[cfg(feature = "std")]
mod report;
#[cfg(feature = "std")]
mod schema;
#[cfg(feature = "std")]
mod validate;

pub use groups::{Group, GroupSet};
pub use types::{Bdf, CoreClass, MemoryType, Role};

#[cfg(feature = "std")]
pub use compile::{compile, decompile};
#[cfg(feature = "std")]
pub use error::{PolicyError, Span, ValidationError};
#[cfg(feature = "std")]
pub use schema::{
    CpuCounts, CpuRequest, Gpu, HypervisorMemory, Machine, MachineCpu, MemoryRegion, Partition,
    PciDevice, Policy, VramRegion,
};
#[cfg(feature = "std")]
pub use validate::validate;

/// Parses and validates a policy from TOML text.
#[cfg(feature = "std")]
pub fn parse_str(text: &str) -> Result<Policy, PolicyError> {
    let policy = parse_unchecked(text)?;
    validate(&policy).map_err(|errors| PolicyError::Invalid { file: None, errors })?;
    Ok(policy)
}

/// Parses TOML into a [`Policy`] without validating it (tests and tools that
/// want to inspect a broken layout).
#[cfg(feature = "std")]
pub fn parse_unchecked(text: &str) -> Result<Policy, PolicyError> {
    let parse_error = |path: String, e: toml::de::Error| PolicyError::Parse {
        file: None,
        path,
        message: e.to_string(),
    };
    let de = toml::Deserializer::parse(text).map_err(|e| parse_error(String::new(), e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        parse_error(path, e.into_inner())
    })
}

/// Reads, parses and validates a policy file; errors name the file.
#[cfg(feature = "std")]
pub fn load_file(path: impl AsRef<std::path::Path>) -> Result<Policy, PolicyError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|error| PolicyError::Io {
        file: path.to_path_buf(),
        error,
    })?;
    parse_str(&text).map_err(|e| e.with_file(path.to_path_buf()))
}

#[cfg(feature = "std")]
impl Policy {
    /// A readable table of the layout (partitions, cores, memory, VRAM, ABI
    /// groups, image), as printed by `cargo xtask policy check`.
    pub fn table(&self) -> String {
        report::render(self)
    }

    /// The partition called `name`.
    pub fn partition(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }

    /// The primary partition (validation guarantees exactly one).
    pub fn primary(&self) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.role == Role::Primary)
    }
}
