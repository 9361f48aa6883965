//! The NexusOS hypercall ABI.
//!
//! One crate, shared by every side of the interface: the hypervisor (UEFI), the
//! `no_std` test guests, the VMM and the AI service (std). It holds only data
//! definitions and pure, total encoders/decoders: no allocator, no I/O, and no
//! decoder ever panics on malformed input; every rejection is a [`Status`].
//!
//! The specification a guest author implements from is `docs/abi.md`.
//!
//! - [`numbers`]: call numbers, [`Group`]s and the [`GroupSet`] policy mask;
//! - [`status`]: the status codes returned in RAX and stored in ring descriptors;
//! - [`version`]: ABI version and compatibility rule;
//! - [`cpuid`]: discovery leaves at 0x4000_0000;
//! - [`call`]: register calling convention, [`decode`] and [`Request`];
//! - [`manage`]: the start state and state word of the management calls;
//! - [`ring`]: the shared-memory ring and the request/reply payloads;
//! - [`guest`]: inline-assembly call helpers for x86_64 guests.
#![cfg_attr(not(test), no_std)]
// Only the guest call helpers need `unsafe`; they opt in locally.
#![deny(unsafe_code)]

pub mod call;
pub mod cpuid;
#[cfg(target_arch = "x86_64")]
pub mod guest;
pub mod manage;
pub mod numbers;
pub mod ring;
pub mod status;
pub mod version;

pub use call::{decode, HypercallArgs, Reply, Request};
pub use numbers::{group_of, Group, GroupSet, Hypercall};
pub use status::Status;
pub use version::{AbiVersion, ABI_VERSION};
