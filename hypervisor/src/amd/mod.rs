//! The AMD SVM backend: VMCB set-up, the VMRUN loop (`vmrun.S`), MSR and
//! I/O permission maps, exit decoding, and [`Vcpu`](crate::vcpu::Vcpu) for
//! SVM ([`vcpu::SvmVcpu`]). Everything above the vCPU is generic
//! ([`crate::exit`]).

pub mod backend;
pub mod bitmaps;
pub mod event;
pub mod exit;
pub mod features;
pub mod guest_vmcb;
pub mod host_state_check;
pub mod insn_len;
pub mod run_state;
pub mod svm;
pub mod vcpu;
pub mod vmcb;

pub use backend::Svm;
