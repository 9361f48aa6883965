//! The shared-memory ring through which AI calls carry their requests and
//! replies (see `docs/abi.md`, "Shared-memory ring").
//!
//! A ring is one page-aligned region of the partition's memory named by its
//! policy: a [`RingHeader`], a table of [`Descriptor`]s and a data area.
//! The guest writes a request payload into the data area, fills a
//! descriptor and makes the AI call naming the descriptor's slot; the
//! service writes the reply payload, status and `DONE` into the descriptor.
//!
//! [`Ring`] reads a ring (hypervisor, service, guest reading replies);
//! [`RingMut`] writes one (guest submitting, service completing). All
//! offsets, lengths and indices are checked with checked arithmetic against
//! the region; malformed rings are rejected with a [`crate::Status`].

pub mod codec;
pub mod descriptor;
pub mod header;
pub mod payload;
mod view;

#[cfg(test)]
mod tests;

pub use codec::{List, Payload, Reader, Writer};
pub use descriptor::{Descriptor, DESCRIPTOR_SIZE, FLAG_DONE};
pub use header::{RingHeader, HEADER_SIZE, RING_MAGIC, RING_MAJOR, RING_MINOR};
pub use payload::*;
pub use view::{Ring, RingMut, SlotArea};

/// Page size the ring's alignment rules use.
pub const PAGE_SIZE: u32 = 4096;
/// Most descriptors a ring may have.
pub const MAX_CAPACITY: u32 = 64;
/// Smallest ring: one page of header and table, one page of data.
pub const MIN_RING_SIZE: u32 = 2 * PAGE_SIZE;
/// Largest ring (256 MiB).
pub const MAX_RING_SIZE: u32 = 256 << 20;
/// Most bytes of one request or reply payload.
pub const MAX_PAYLOAD: u32 = 64 << 10;
/// Most bytes of one blob field (command buffers, HTTP bodies, manifests).
pub const MAX_PAYLOAD_BLOB: usize = 60 << 10;
/// Most bytes of a name (models, functions, namespaces, containers).
pub const MAX_NAME: usize = 255;
/// Most bytes of a text field (image references, paths, arguments, cmdline).
pub const MAX_TEXT: usize = 1024;
/// Most entries of a listing.
pub const MAX_LIST: usize = 256;
