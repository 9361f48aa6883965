//! GPU calls (450–455): alloc, exec, sync, cuda_launch; free and status since 1.3.

use crate::ring::codec::{List, Payload, Reader, Writer};
use crate::ring::{MAX_NAME, MAX_PAYLOAD_BLOB, PAGE_SIZE};
use crate::status::Status;

wire_enum! {
    /// The VRAM region an allocation comes from (the policy sizes each).
    pub enum VramRegion {
        ModelStorage = 0,
        InferenceCache = 1,
        Graphics = 2,
    }
}

/// `gpu_alloc` flag: zero the allocation.
pub const GPU_ALLOC_ZERO: u32 = 1 << 0;
/// Every `gpu_alloc` flag this version defines.
pub const GPU_ALLOC_FLAGS: u32 = GPU_ALLOC_ZERO;
/// Largest single allocation (16 GiB, the card's VRAM).
pub const MAX_GPU_ALLOC: u64 = 16 << 30;
/// Most threads per block `cuda_launch` accepts (CUDA's limit).
pub const MAX_BLOCK_THREADS: u64 = 1024;
/// Most bytes of kernel parameters.
pub const MAX_KERNEL_PARAMS: usize = 4096;

/// `gpu_alloc`: `bytes` (a non-zero multiple of 4096) of VRAM from `region`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuAllocRequest {
    pub bytes: u64,
    pub region: VramRegion,
    pub flags: u32,
}

impl GpuAllocRequest {
    fn check(&self) -> Result<(), Status> {
        if self.bytes == 0 || !self.bytes.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Status::InvalidArgument);
        }
        if self.flags & !GPU_ALLOC_FLAGS != 0 {
            return Err(Status::InvalidArgument);
        }
        if self.bytes > MAX_GPU_ALLOC {
            return Err(Status::LimitExceeded);
        }
        Ok(())
    }
}

impl<'a> Payload<'a> for GpuAllocRequest {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        self.check()?;
        w.u64(self.bytes);
        self.region.write(w)?;
        w.u32(self.flags);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let req = GpuAllocRequest {
            bytes: r.u64()?,
            region: VramRegion::read(r)?,
            flags: r.u32()?,
        };
        req.check()?;
        Ok(req)
    }
}

/// Reply to `gpu_alloc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuAllocReply {
    /// Non-zero handle naming the allocation in later calls.
    pub handle: u64,
    /// Bytes granted (at least those asked for).
    pub bytes: u64,
}

impl<'a> Payload<'a> for GpuAllocReply {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u64(self.handle);
        w.u64(self.bytes);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(GpuAllocReply {
            handle: r.u64()?,
            bytes: r.u64()?,
        })
    }
}

/// `gpu_exec`: submit a command buffer (service-defined format) to `stream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuExecRequest<'a> {
    pub stream: u32,
    /// 1..=65_000 bytes.
    pub commands: &'a [u8],
}

impl<'a> Payload<'a> for GpuExecRequest<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        if self.commands.is_empty() {
            return Err(Status::InvalidArgument);
        }
        w.u32(self.stream);
        w.blob(self.commands, MAX_PAYLOAD_BLOB)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let stream = r.u32()?;
        let commands = r.blob(MAX_PAYLOAD_BLOB)?;
        if commands.is_empty() {
            return Err(Status::InvalidArgument);
        }
        Ok(GpuExecRequest { stream, commands })
    }
}

/// Reply to work submissions (`gpu_exec`, `cuda_launch`, `tensor_compute`):
/// a fence to wait for with `gpu_sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceReply {
    pub fence: u64,
}

impl<'a> Payload<'a> for FenceReply {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u64(self.fence);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(FenceReply { fence: r.u64()? })
    }
}

/// `gpu_sync`: wait until `fence` completes, at most `timeout_ms`
/// (0: just poll). `Busy` when it has not completed in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuSyncRequest {
    pub fence: u64,
    pub timeout_ms: u32,
}

impl<'a> Payload<'a> for GpuSyncRequest {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u64(self.fence);
        w.u32(self.timeout_ms);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(GpuSyncRequest {
            fence: r.u64()?,
            timeout_ms: r.u32()?,
        })
    }
}

/// Reply to `gpu_sync`: the latest fence completed on the fence's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuSyncReply {
    pub completed_fence: u64,
}

impl<'a> Payload<'a> for GpuSyncReply {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u64(self.completed_fence);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(GpuSyncReply {
            completed_fence: r.u64()?,
        })
    }
}

/// `cuda_launch`: launch `function` of the loaded `module`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaLaunchRequest<'a> {
    pub module: &'a str,
    pub function: &'a str,
    /// Blocks per grid, each dimension >= 1.
    pub grid: [u32; 3],
    /// Threads per block, each dimension >= 1, product <= 1024.
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
    pub stream: u32,
    /// Packed kernel parameters, <= 4096 bytes.
    pub params: &'a [u8],
}

impl CudaLaunchRequest<'_> {
    fn check(&self) -> Result<(), Status> {
        if self.grid.contains(&0) || self.block.contains(&0) {
            return Err(Status::InvalidArgument);
        }
        // Three u32 factors can overflow u64: multiply checked.
        let threads = self
            .block
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        if threads.is_none_or(|t| t > MAX_BLOCK_THREADS) {
            return Err(Status::LimitExceeded);
        }
        Ok(())
    }
}

impl<'a> Payload<'a> for CudaLaunchRequest<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        self.check()?;
        w.name(self.module, MAX_NAME)?;
        w.name(self.function, MAX_NAME)?;
        for d in self.grid.iter().chain(&self.block) {
            w.u32(*d);
        }
        w.u32(self.shared_mem_bytes);
        w.u32(self.stream);
        w.blob(self.params, MAX_KERNEL_PARAMS)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let module = r.name(MAX_NAME)?;
        let function = r.name(MAX_NAME)?;
        let mut dims = [0u32; 6];
        for d in &mut dims {
            *d = r.u32()?;
        }
        let req = CudaLaunchRequest {
            module,
            function,
            grid: [dims[0], dims[1], dims[2]],
            block: [dims[3], dims[4], dims[5]],
            shared_mem_bytes: r.u32()?,
            stream: r.u32()?,
            params: r.blob(MAX_KERNEL_PARAMS)?,
        };
        req.check()?;
        Ok(req)
    }
}

/// A request naming one handle (`gpu_free`, `tensor_free`; since 1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleRequest {
    /// Non-zero handle.
    pub handle: u64,
}

impl<'a> Payload<'a> for HandleRequest {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        if self.handle == 0 {
            return Err(Status::InvalidArgument);
        }
        w.u64(self.handle);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        let handle = r.u64()?;
        if handle == 0 {
            return Err(Status::InvalidArgument);
        }
        Ok(HandleRequest { handle })
    }
}

/// Reply to `gpu_free` and `tensor_free`: the bytes given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeReply {
    pub bytes: u64,
}

impl<'a> Payload<'a> for FreeReply {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        w.u64(self.bytes);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(FreeReply { bytes: r.u64()? })
    }
}

/// `gpu_status` takes no fields (an empty payload; since 1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuStatusRequest;

impl<'a> Payload<'a> for GpuStatusRequest {
    fn write(&self, _: &mut Writer<'_>) -> Result<(), Status> {
        Ok(())
    }

    fn read(_: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(GpuStatusRequest)
    }
}

wire_enum! {
    /// What executes GPU work.
    pub enum GpuBackend {
        /// No GPU: device memory and kernels are emulated on the CPU; budgets
        /// apply as on a GPU.
        Cpu = 0,
        /// An NVIDIA GPU through CUDA.
        Cuda = 1,
    }
}

/// Most regions [`GpuStatusReply`] lists.
pub const MAX_STATUS_REGIONS: usize = 8;

/// One VRAM region in the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionStatus {
    pub region: VramRegion,
    /// What the policy gives the region.
    pub budget: u64,
    /// Charged to it, all tenants (allocations, tensors, models).
    pub used: u64,
    /// Charged to it by the calling partition.
    pub caller: u64,
}

impl<'a> Payload<'a> for RegionStatus {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        self.region.write(w)?;
        w.u64(self.budget);
        w.u64(self.used);
        w.u64(self.caller);
        Ok(())
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(RegionStatus {
            region: VramRegion::read(r)?,
            budget: r.u64()?,
            used: r.u64()?,
            caller: r.u64()?,
        })
    }
}

/// Reply to `gpu_status`: the VRAM ledger as the caller may see it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuStatusReply<'a> {
    pub backend: GpuBackend,
    /// Gaming priority: the graphics region is the gaming partition's alone.
    pub gaming: bool,
    /// Device memory in total and free as the driver reports it (0 without a GPU).
    pub device_total: u64,
    pub device_free: u64,
    /// Host memory for host tensors: budget, used (all tenants), the caller's.
    pub host_budget: u64,
    pub host_used: u64,
    pub host_caller: u64,
    pub regions: List<'a, RegionStatus>,
}

impl<'a> Payload<'a> for GpuStatusReply<'a> {
    fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
        self.backend.write(w)?;
        w.bool(self.gaming);
        w.u64(self.device_total);
        w.u64(self.device_free);
        w.u64(self.host_budget);
        w.u64(self.host_used);
        w.u64(self.host_caller);
        self.regions.write(w, MAX_STATUS_REGIONS)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, Status> {
        Ok(GpuStatusReply {
            backend: GpuBackend::read(r)?,
            gaming: r.bool()?,
            device_total: r.u64()?,
            device_free: r.u64()?,
            host_budget: r.u64()?,
            host_used: r.u64()?,
            host_caller: r.u64()?,
            regions: List::read(r, MAX_STATUS_REGIONS)?,
        })
    }
}
