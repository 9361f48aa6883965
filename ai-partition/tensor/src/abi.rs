//! The GPU (450–499) and tensor (500–549) groups of the hypercall ABI,
//! answered from their ring encoding. Bulk bytes of `tensor_transfer` and
//! `tensor_stream` travel separately: the caller copies the request's span
//! out of the ring before ([`bulk_in`]) and the reply's bytes into it after
//! ([`Answer::bulk_out`]), so answering never holds the ring.

use std::time::Duration;

use nexus_abi::ring::{
    Direction, FenceReply, FreeReply, GpuAllocReply, GpuStatusReply, GpuSyncReply, List,
    RegionStatus, RingReply, RingRequest, TensorCreateReply, TensorDataReply, VramRegion,
    GPU_ALLOC_ZERO,
};
use nexus_abi::{Hypercall, Status};

use crate::dtype::DType;
use crate::ledger::Pool;
use crate::service::{Fill, TensorService};
use crate::shape::Shape;
use crate::tenant::Tenant;
use crate::TensorError;

/// A reply, plus bytes to write into the ring's data area at an offset.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub reply: Vec<u8>,
    pub bulk_out: Option<(u32, Vec<u8>)>,
}

/// The span of the ring data area whose bytes the request consumes (a
/// transfer into a tensor), as `(offset, len)`.
pub fn bulk_in(req: &RingRequest<'_>) -> Option<(u32, u32)> {
    match req {
        RingRequest::TensorTransfer(t) if t.direction == Direction::ToTensor => {
            Some((t.ring_offset, t.len))
        }
        _ => None,
    }
}

/// Whether this crate answers `call`.
pub fn serves(call: Hypercall) -> bool {
    matches!(
        call.group(),
        nexus_abi::Group::Gpu | nexus_abi::Group::Tensors
    )
}

fn encode(reply: RingReply<'_>) -> Result<Vec<u8>, Status> {
    let mut buf = vec![0; reply.encoded_len()?];
    reply.encode(&mut buf)?;
    Ok(buf)
}

fn fail(tenant: Tenant, call: Hypercall, e: TensorError) -> Status {
    tracing::info!(%tenant, %call, "refused: {e}");
    e.status
}

/// Answer one GPU or tensor call for `tenant`. `payload` is the request's
/// ring encoding; `bulk` the bytes of [`bulk_in`]'s span (empty otherwise).
/// Blocking: `gpu_sync` and `tensor_stream` wait up to their timeouts
/// (capped by the service's `max_wait`); run it off an async executor.
pub fn answer(
    svc: &TensorService,
    tenant: Tenant,
    call: Hypercall,
    payload: &[u8],
    bulk: &[u8],
) -> Result<Answer, Status> {
    let req = RingRequest::decode(call, payload)?;
    let f = |e| fail(tenant, call, e);
    let reply = |r| -> Result<Answer, Status> {
        Ok(Answer {
            reply: encode(r)?,
            bulk_out: None,
        })
    };
    match req {
        RingRequest::GpuAlloc(r) => {
            let (handle, bytes) = svc.gpu_alloc(tenant, r.bytes, r.region).map_err(f)?;
            // Allocations start zeroed whatever the flag says (no stale data
            // crosses tenants); the ZERO flag is accepted for compatibility.
            let _ = r.flags & GPU_ALLOC_ZERO;
            reply(RingReply::GpuAlloc(GpuAllocReply { handle, bytes }))
        }
        RingRequest::GpuFree(r) => {
            let bytes = svc.gpu_free(tenant, r.handle).map_err(f)?;
            reply(RingReply::GpuFree(FreeReply { bytes }))
        }
        RingRequest::GpuExec(r) => {
            let cmds = TensorService::parse_commands(r.commands).map_err(f)?;
            let fence = svc.gpu_exec(tenant, r.stream, &cmds).map_err(f)?;
            reply(RingReply::GpuExec(FenceReply { fence }))
        }
        RingRequest::GpuSync(r) => {
            let completed = svc
                .sync(tenant, r.fence, Duration::from_millis(r.timeout_ms as u64))
                .map_err(f)?;
            reply(RingReply::GpuSync(GpuSyncReply {
                completed_fence: completed,
            }))
        }
        RingRequest::CudaLaunch(r) => {
            let fence = svc
                .launch(tenant, r.module, r.function, r.stream, r.params)
                .map_err(f)?;
            reply(RingReply::CudaLaunch(FenceReply { fence }))
        }
        RingRequest::GpuStatus(_) => {
            let st = svc.status();
            let regions: Vec<RegionStatus> = [
                VramRegion::ModelStorage,
                VramRegion::InferenceCache,
                VramRegion::Graphics,
            ]
            .into_iter()
            .map(|region| {
                let p = st.ledger.pool(Pool::Vram(region));
                RegionStatus {
                    region,
                    budget: p.budget,
                    used: p.used,
                    caller: st.ledger.tenant_bytes(Pool::Vram(region), tenant),
                }
            })
            .collect();
            let host = st.ledger.pool(Pool::Host);
            reply(RingReply::GpuStatus(GpuStatusReply {
                backend: st.backend,
                gaming: st.ledger.gaming,
                device_total: st.device_total,
                device_free: st.device_free,
                host_budget: host.budget,
                host_used: host.used,
                host_caller: st.ledger.tenant_bytes(Pool::Host, tenant),
                regions: List::new(&regions),
            }))
        }
        RingRequest::TensorCreate(r) => {
            let dtype = DType::from_wire(r.dtype).map_err(f)?;
            let shape = Shape::new(r.shape.dims()).map_err(f)?;
            let info = svc.create(tenant, dtype, shape, r.placement).map_err(f)?;
            reply(RingReply::TensorCreate(TensorCreateReply {
                tensor: info.handle,
                bytes: info.bytes,
            }))
        }
        RingRequest::TensorFree(r) => {
            let bytes = svc.free(tenant, r.handle).map_err(f)?;
            reply(RingReply::TensorFree(FreeReply { bytes }))
        }
        RingRequest::TensorCompute(r) => {
            let inputs: Vec<u64> = [r.a, r.b].into_iter().filter(|&h| h != 0).collect();
            let (fence, _) = svc
                .op(
                    tenant,
                    0,
                    r.op.into(),
                    &inputs,
                    Some(r.output),
                    &[],
                    1e-5,
                    None,
                )
                .map_err(f)?;
            reply(RingReply::TensorCompute(FenceReply { fence }))
        }
        RingRequest::TensorOp(r) => {
            let (fence, _) = svc
                .op(
                    tenant,
                    r.stream,
                    r.op,
                    r.inputs(),
                    Some(r.output),
                    r.axes.as_slice(),
                    r.eps(),
                    None,
                )
                .map_err(f)?;
            reply(RingReply::TensorOp(FenceReply { fence }))
        }
        RingRequest::TensorFill(r) => {
            let how = Fill {
                kind: r.kind,
                seed: r.seed,
                a: r.a,
                b: r.b,
            };
            let fence = svc.fill(tenant, r.tensor, r.stream, how).map_err(f)?;
            reply(RingReply::TensorFill(FenceReply { fence }))
        }
        RingRequest::TensorTransfer(r) => match r.direction {
            Direction::ToTensor => {
                if bulk.len() != r.len as usize {
                    return Err(Status::Internal);
                }
                let remaining = svc
                    .write(tenant, r.tensor, r.tensor_offset, bulk)
                    .map_err(f)?;
                reply(RingReply::TensorTransfer(TensorDataReply {
                    bytes: r.len,
                    remaining,
                }))
            }
            Direction::ToRing => {
                let info = svc.info(tenant, r.tensor).map_err(f)?;
                if r.tensor_offset
                    .checked_add(r.len as u64)
                    .is_none_or(|e| e > info.bytes)
                {
                    return Err(fail(
                        tenant,
                        call,
                        TensorError::invalid("transfer past the end of the tensor"),
                    ));
                }
                let (bytes, remaining) = svc
                    .read(
                        tenant,
                        r.tensor,
                        r.tensor_offset,
                        r.len as u64,
                        svc.config().max_wait,
                    )
                    .map_err(f)?;
                Ok(Answer {
                    reply: encode(RingReply::TensorTransfer(TensorDataReply {
                        bytes: bytes.len() as u32,
                        remaining,
                    }))?,
                    bulk_out: Some((r.ring_offset, bytes)),
                })
            }
        },
        RingRequest::TensorStream(r) => {
            let (bytes, remaining) = svc
                .read(
                    tenant,
                    r.tensor,
                    r.tensor_offset,
                    r.max_len as u64,
                    Duration::from_millis(r.timeout_ms as u64),
                )
                .map_err(f)?;
            Ok(Answer {
                reply: encode(RingReply::TensorStream(TensorDataReply {
                    bytes: bytes.len() as u32,
                    remaining,
                }))?,
                bulk_out: Some((r.ring_offset, bytes)),
            })
        }
        _ => Err(Status::InvalidCall),
    }
}
