//! NexusOS hypervisor core: everything that is not firmware glue.
//!
//! The UEFI entry point and the host environment live in the binary
//! (`main.rs`, `platform/`). This library holds the backend-neutral core
//! ([`vcpu`], [`exit`], [`hypercall`], [`partition`], [`stats`]), the pure
//! builders ([`npt`], [`insn`]) and the AMD SVM backend ([`amd`]). Pure
//! parts are unit-tested on the host; see `docs/hypervisor.md`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod amd;
pub mod exit;
pub mod hypercall;
pub mod insn;
pub mod launch;
// Intel VMX backend (VMX helper).
pub mod intel;
pub mod mem;
/// Microarchitectural flushes around guest entries (L1D flush, VERW, IBPB).
pub mod mitigations;
pub mod npt;
pub mod partition;
/// UEFI/hardware platform layer (platform helper): console, discovery, host environment.
pub mod platform;
pub mod stats;
/// P/E-core classes and policy CPU requests → APIC IDs (both vendors; used by the fit check).
pub mod topology;
pub mod vcpu;
/// Guests' XCR0: valid XSETBV values and the switch around entries (both backends).
pub mod xcr0;
