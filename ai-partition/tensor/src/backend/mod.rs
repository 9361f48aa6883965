//! Backends: where device memory lives and device work runs. The CPU
//! backend is always there (device memory emulated in host memory, kernels
//! on the CPU, budgets enforced as on a GPU). A device backend implements
//! [`Backend`] and adds its buffers to [`Memory`]; the service falls back to
//! the host kernels for any plan it declines. No CUDA backend exists yet
//! (docs/ai-tensor.md).

pub mod cpu;

use std::borrow::Cow;

use nexus_abi::ring::GpuBackend;

use crate::error::Result;
use crate::plan::Plan;
use crate::storage::{HostBuf, Memory};

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
    /// Run `plan` where all operands are device memory of this backend.
    /// `Ok(false)`: no device kernel for it; the caller runs it on the host.
    fn run(&self, plan: &Plan, inputs: &[&Memory], out: &mut Memory) -> Result<bool>;
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

/// The backend this build offers: the CPU.
pub fn detect() -> std::sync::Arc<dyn Backend> {
    std::sync::Arc::new(cpu::CpuBackend)
}
