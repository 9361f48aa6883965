//! Intel VMX backend: VMXON/VMCS management, EPT, control adjustment, memory
//! types and exit decoding (the hybrid-core topology is in [`crate::topology`]).
//!
//! Pure modules (host-tested): [`controls`], [`cr_write`], [`ept`], [`memtype`], [`vm_error`],
//! [`exit_reason`], [`vmcs`] (field encodings). Hardware modules
//! ([`instructions`], [`vcpu`]) only touch the processor through the
//! `unsafe fn`s in `instructions`. See `docs/vmx.md`.

pub mod ap_state;
pub mod backend;
pub mod bitmaps;
pub mod capture;
pub mod controls;
pub mod cr_write;
pub mod decode;
pub mod ept;
pub mod event;
pub mod exit_reason;
pub mod host;
pub mod instructions;
pub mod memtype;
pub mod vcpu;
pub mod vm_error;
pub mod vmcs;

pub use backend::Vmx;
