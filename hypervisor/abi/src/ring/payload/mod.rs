//! Request and reply payloads, and the per-call dispatch enums.
//!
//! Every AI call has one request type and one reply type; the descriptor's
//! call number says which. [`RingRequest`] and [`RingReply`] wrap them so
//! one function can decode any of them given the call.

/// A `u8` enum on the wire: unknown values are `InvalidArgument`.
macro_rules! wire_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $var:ident = $val:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $var = $val),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            pub const fn from_u8(v: u8) -> Option<$name> {
                match v {
                    $($val => Some($name::$var),)+
                    _ => None,
                }
            }
        }

        impl<'a> $crate::ring::codec::Payload<'a> for $name {
            fn write(&self, w: &mut $crate::ring::codec::Writer<'_>) -> Result<(), $crate::status::Status> {
                w.u8(*self as u8);
                Ok(())
            }

            fn read(r: &mut $crate::ring::codec::Reader<'a>) -> Result<Self, $crate::status::Status> {
                Self::from_u8(r.u8()?).ok_or($crate::status::Status::InvalidArgument)
            }
        }
    };
}

pub mod containers;
pub mod gpu;
pub mod models;
pub mod partition;
pub mod tensors;

use crate::numbers::Hypercall;
use crate::status::Status;

use super::codec::{Payload, Reader, Writer};
pub use containers::*;
pub use gpu::*;
pub use models::*;
pub use partition::*;
pub use tensors::*;

/// Generates an enum with one variant per AI call, plus `call()`, `encode()`
/// and `decode(call, bytes)`.
macro_rules! per_call {
    ($(#[$m:meta])* $name:ident { $($var:ident($ty:ty) = $call:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub enum $name<'a> { $($var($ty)),+ }

        impl<'a> $name<'a> {
            /// The call this payload belongs to.
            pub fn call(&self) -> Hypercall {
                match self { $($name::$var(_) => Hypercall::$call),+ }
            }

            /// Encode the payload into `buf`, answering its length.
            pub fn encode(&self, buf: &mut [u8]) -> Result<usize, Status> {
                match self { $($name::$var(p) => p.encode(buf)),+ }
            }

            /// Bytes [`Self::encode`] needs.
            pub fn encoded_len(&self) -> Result<usize, Status> {
                match self { $($name::$var(p) => p.encoded_len()),+ }
            }

            /// Decode the payload of `call` from all of `bytes`.
            /// `InvalidCall` when `call` carries no ring payload.
            pub fn decode(call: Hypercall, bytes: &'a [u8]) -> Result<Self, Status> {
                match call {
                    $(Hypercall::$call => <$ty as Payload<'a>>::decode(bytes).map($name::$var),)+
                    _ => Err(Status::InvalidCall),
                }
            }
        }

        impl<'a> Payload<'a> for $name<'a> {
            fn write(&self, w: &mut Writer<'_>) -> Result<(), Status> {
                match self { $($name::$var(p) => p.write(w)),+ }
            }

            /// Not meaningful without the call number: use [`Self::decode`].
            fn read(_: &mut Reader<'a>) -> Result<Self, Status> {
                Err(Status::InvalidCall)
            }
        }
    };
}

per_call! {
    /// The request payload of any AI call.
    RingRequest {
        ModelLoad(ModelLoadRequest<'a>) = AiModelLoad,
        ModelUnload(ModelUnloadRequest<'a>) = AiModelUnload,
        ModelList(ModelListRequest) = AiModelList,
        ModelInfo(ModelInfoRequest<'a>) = AiModelInfo,
        GpuAlloc(GpuAllocRequest) = GpuAlloc,
        GpuExec(GpuExecRequest<'a>) = GpuExec,
        GpuSync(GpuSyncRequest) = GpuSync,
        CudaLaunch(CudaLaunchRequest<'a>) = CudaLaunch,
        GpuFree(HandleRequest) = GpuFree,
        GpuStatus(GpuStatusRequest) = GpuStatus,
        TensorCreate(TensorCreateRequest) = TensorCreate,
        TensorCompute(TensorComputeRequest) = TensorCompute,
        TensorTransfer(TensorTransferRequest) = TensorTransfer,
        TensorStream(TensorStreamRequest) = TensorStream,
        TensorFree(HandleRequest) = TensorFree,
        TensorOp(TensorOpRequest) = TensorOp,
        TensorFill(TensorFillRequest) = TensorFill,
        ContainerCreate(ContainerCreateRequest<'a>) = ContainerCreate,
        ContainerExec(ContainerExecRequest<'a>) = ContainerExec,
        DockerApi(DockerApiRequest<'a>) = DockerApi,
        K8sSchedule(K8sScheduleRequest<'a>) = K8sSchedule,
    }
}

per_call! {
    /// The reply payload of any AI call (present when its status is Success).
    RingReply {
        ModelLoad(ModelLoadReply) = AiModelLoad,
        ModelUnload(ModelUnloadReply) = AiModelUnload,
        ModelList(ModelListReply<'a>) = AiModelList,
        ModelInfo(ModelInfo<'a>) = AiModelInfo,
        GpuAlloc(GpuAllocReply) = GpuAlloc,
        GpuExec(FenceReply) = GpuExec,
        GpuSync(GpuSyncReply) = GpuSync,
        CudaLaunch(FenceReply) = CudaLaunch,
        GpuFree(FreeReply) = GpuFree,
        GpuStatus(GpuStatusReply<'a>) = GpuStatus,
        TensorCreate(TensorCreateReply) = TensorCreate,
        TensorCompute(FenceReply) = TensorCompute,
        TensorTransfer(TensorDataReply) = TensorTransfer,
        TensorStream(TensorDataReply) = TensorStream,
        TensorFree(FreeReply) = TensorFree,
        TensorOp(FenceReply) = TensorOp,
        TensorFill(FenceReply) = TensorFill,
        ContainerCreate(ContainerCreateReply) = ContainerCreate,
        ContainerExec(ContainerExecReply) = ContainerExec,
        DockerApi(DockerApiReply<'a>) = DockerApi,
        K8sSchedule(K8sScheduleReply<'a>) = K8sSchedule,
    }
}

impl RingRequest<'_> {
    /// The span of the ring data area a bulk request names, if any
    /// (`tensor_transfer`, `tensor_stream`): `(ring_offset, len)`.
    pub fn data_span(&self) -> Option<(u32, u32)> {
        match self {
            RingRequest::TensorTransfer(t) => Some((t.ring_offset, t.len)),
            RingRequest::TensorStream(s) => Some((s.ring_offset, s.max_len)),
            _ => None,
        }
    }
}
