//! Backends: where device memory lives and device work runs. The CPU
//! backend is always there (device memory emulated in host memory, kernels
//! on the CPU, budgets enforced as on a GPU). The CUDA backend (feature
//! `cuda`) keeps device tensors in GPU memory and runs what it has kernels
//! for there; the service falls back to the host kernels for any plan a
//! backend declines (docs/ai-tensor.md lists which).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use std::borrow::Cow;
use std::sync::Arc;

use nexus_abi::ring::GpuBackend;

use crate::error::Result;
use crate::plan::Plan;
use crate::storage::{HostBuf, Memory};

/// A built-in `cuda_launch` kernel over f32 elements, with its operands.
pub enum Saxpy<'a> {
    /// `x *= alpha`
    Scale { x: &'a mut Memory },
    /// `y += alpha * x`
    Axpy { x: &'a Memory, y: &'a mut Memory },
    /// `y += alpha * y` (x and y name the same buffer)
    AxpySelf { y: &'a mut Memory },
}

pub trait Backend: Send + Sync {
    fn kind(&self) -> GpuBackend;
    /// A readable description for logs and status (device name).
    fn describe(&self) -> String;
    /// Device memory in total and free (0, 0 without a GPU).
    fn memory_info(&self) -> (u64, u64);
    /// `len` zeroed bytes of device memory.
    fn alloc(&self, len: usize) -> Result<Memory>;
    /// Copy `data` into `mem` at `offset` (bounds checked by the caller).
    fn write(&self, mem: &mut Memory, offset: usize, data: &[u8]) -> Result<()>;
    /// Copy `out.len()` bytes of `mem` from `offset`.
    fn read(&self, mem: &Memory, offset: usize, out: &mut [u8]) -> Result<()>;
    /// Run `plan` where all operands are device memory of this backend and
    /// none of the inputs is the output. `Ok(false)`: no device kernel for
    /// it; the caller runs it on the host.
    fn run(&self, plan: &Plan, inputs: &[&Memory], out: &mut Memory) -> Result<bool>;
    /// Run a built-in `cuda_launch` kernel over the first `n` elements of
    /// device memory. `Ok(false)`: no device kernel; the caller runs it on
    /// the host.
    fn saxpy(&self, op: Saxpy<'_>, alpha: f32, n: usize) -> Result<bool> {
        let _ = (op, alpha, n);
        Ok(false)
    }
}

/// The bytes of `mem` on the host: borrowed for host memory, copied from
/// the device otherwise.
pub fn host_bytes<'a>(backend: &dyn Backend, mem: &'a Memory, len: usize) -> Result<Cow<'a, [u8]>> {
    match mem {
        Memory::Host(h) => Ok(Cow::Borrowed(&h.bytes()[..len])),
        #[allow(unreachable_patterns)]
        other => {
            let mut buf = HostBuf::zeroed(len)?;
            backend.read(other, 0, buf.bytes_mut())?;
            Ok(Cow::Owned(buf.bytes().to_vec()))
        }
    }
}

/// Which backend `NEXUS_TENSOR_BACKEND` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// CUDA when this build has it and a device answers, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

impl Choice {
    /// `auto` (also unset or empty), `cpu` or `cuda`.
    pub fn parse(s: &str) -> std::result::Result<Choice, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Choice::Auto),
            "cpu" => Ok(Choice::Cpu),
            "cuda" | "gpu" => Ok(Choice::Cuda),
            other => Err(format!(
                "NEXUS_TENSOR_BACKEND={other:?}: expected auto, cpu or cuda"
            )),
        }
    }
}

/// The backend to use: the CUDA backend when this build has it (feature
/// `cuda`), `NEXUS_TENSOR_BACKEND` does not say `cpu`, and device 0 opens;
/// the CPU backend otherwise. The choice and the reason are logged.
pub fn detect() -> Arc<dyn Backend> {
    let choice = match Choice::parse(&std::env::var("NEXUS_TENSOR_BACKEND").unwrap_or_default()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("{e}; choosing automatically");
            Choice::Auto
        }
    };
    select(choice)
}

/// [`detect`] for an explicit choice.
pub fn select(choice: Choice) -> Arc<dyn Backend> {
    let why_cpu = match choice {
        Choice::Cpu => "NEXUS_TENSOR_BACKEND=cpu".to_string(),
        Choice::Auto | Choice::Cuda => match open_cuda() {
            Ok(b) => {
                tracing::info!(device = %b.describe(), "tensor backend: CUDA");
                return b;
            }
            Err(e) => e,
        },
    };
    if choice == Choice::Cuda {
        tracing::error!("tensor backend: CUDA was asked for but {why_cpu}; using the CPU");
    } else {
        tracing::info!("tensor backend: CPU ({why_cpu})");
    }
    Arc::new(cpu::CpuBackend)
}

/// The CUDA backend on device 0, or why not.
pub fn open_cuda() -> std::result::Result<Arc<dyn Backend>, String> {
    #[cfg(feature = "cuda")]
    {
        cuda::CudaBackend::open(0).map(|b| Arc::new(b) as Arc<dyn Backend>)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err("this build has no CUDA backend (cargo feature `cuda` of nexus-tensor)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_is_read_and_the_cpu_is_always_there() {
        assert_eq!(Choice::parse(""), Ok(Choice::Auto));
        assert_eq!(Choice::parse(" CUDA "), Ok(Choice::Cuda));
        assert_eq!(Choice::parse("cpu"), Ok(Choice::Cpu));
        assert!(Choice::parse("tpu")
            .unwrap_err()
            .contains("auto, cpu or cuda"));
        assert_eq!(select(Choice::Cpu).kind(), GpuBackend::Cpu);
        // Whatever this machine has, automatic selection gives a backend
        // that can hold memory; without a GPU (or the feature) it is the CPU.
        let auto = select(Choice::Auto);
        let mut m = auto.alloc(16).unwrap();
        auto.write(&mut m, 4, &[1, 2, 3]).unwrap();
        let mut back = [0u8; 8];
        auto.read(&m, 0, &mut back).unwrap();
        assert_eq!(back, [0, 0, 0, 0, 1, 2, 3, 0]);
        if open_cuda().is_err() {
            assert_eq!(auto.kind(), GpuBackend::Cpu);
        }
    }
}
