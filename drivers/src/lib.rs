//! NexusOS `no_std` drivers.
//!
//! Hardware is reached only through thin traits (for example [`port::PortIo`]) so every
//! driver's logic runs in host unit tests against a fake device.
#![cfg_attr(not(test), no_std)]

pub mod apic;
pub mod port;
pub mod uart16550;
