//! The AMD SVM backend: VMCB set-up, the VMRUN loop (`vmrun.S`), MSR and
//! I/O permission maps, exit decoding, and [`Vcpu`](crate::vcpu::Vcpu) for
//! SVM ([`vcpu::SvmVcpu`]). Everything above the vCPU is generic
//! ([`crate::exit`]).

pub mod bitmaps;
#[cfg(target_os = "uefi")]
pub mod bluepill;
pub mod exit;
pub mod features;
pub mod guest_vmcb;
pub mod insn_len;
#[cfg(target_os = "uefi")]
pub mod launch;
pub mod run_state;
#[cfg(target_os = "uefi")]
pub mod svm;
pub mod vcpu;
pub mod vmcb;
