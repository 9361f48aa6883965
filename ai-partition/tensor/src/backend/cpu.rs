//! The CPU backend: "device" memory is host memory; every operation runs on
//! the host kernels.

use nexus_abi::ring::GpuBackend;

use super::Backend;
use crate::error::{Result, TensorError};
use crate::plan::Plan;
use crate::storage::{HostBuf, Memory};

pub struct CpuBackend;

impl Backend for CpuBackend {
    fn kind(&self) -> GpuBackend {
        GpuBackend::Cpu
    }

    fn describe(&self) -> String {
        "cpu (device memory emulated in host memory)".into()
    }

    fn memory_info(&self) -> (u64, u64) {
        (0, 0)
    }

    fn alloc(&self, len: usize) -> Result<Memory> {
        Ok(Memory::Host(HostBuf::zeroed(len)?))
    }

    fn write(&self, mem: &mut Memory, offset: usize, data: &[u8]) -> Result<()> {
        match mem {
            Memory::Host(h) => {
                h.bytes_mut()[offset..offset + data.len()].copy_from_slice(data);
                Ok(())
            }
            #[allow(unreachable_patterns)]
            _ => Err(TensorError::internal(
                "the CPU backend was handed device memory",
            )),
        }
    }

    fn read(&self, mem: &Memory, offset: usize, out: &mut [u8]) -> Result<()> {
        match mem {
            Memory::Host(h) => {
                out.copy_from_slice(&h.bytes()[offset..offset + out.len()]);
                Ok(())
            }
            #[allow(unreachable_patterns)]
            _ => Err(TensorError::internal(
                "the CPU backend was handed device memory",
            )),
        }
    }

    fn run(&self, _: &Plan, _: &[&Memory], _: &mut Memory) -> Result<bool> {
        Ok(false)
    }
}
