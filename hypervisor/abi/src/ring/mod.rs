//! The shared-memory ring through which AI calls carry their requests and
//! replies. See `docs/abi.md`, "Shared-memory ring".

/// Most descriptors a ring may have.
pub const MAX_CAPACITY: u32 = 64;
