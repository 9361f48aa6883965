//! Tenants: who holds a handle or a charge. A partition is a tenant (its
//! index in the policy, as `partition_info` reports it); the HTTP API is one
//! tenant of its own, and the AI service itself holds model memory.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(pub u32);

impl Tenant {
    /// The AI service itself (model weights, KV cache).
    pub const SERVICE: Tenant = Tenant(u32::MAX);
    /// Clients of the HTTP API.
    pub const HTTP: Tenant = Tenant(u32::MAX - 1);

    /// The partition with this index in the policy.
    pub const fn partition(id: u32) -> Tenant {
        Tenant(id)
    }

    /// A short label for metrics and JSON.
    pub fn label(self) -> String {
        match self {
            Tenant::SERVICE => "service".into(),
            Tenant::HTTP => "http".into(),
            Tenant(id) => format!("partition-{id}"),
        }
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}
