//! The hypercall ABI's model calls (`ai_model_load`, `ai_model_unload`,
//! `ai_model_list`, `ai_model_info`), decoded from the ring encoding of `nexus-abi`
//! and answered by the same service functions the HTTP API calls, so a guest sees
//! exactly what an HTTP client sees. The GPU and tensor groups go to the tensor
//! service (`nexus_tensor::abi`), as the calling partition's tenant.

use std::time::Duration;

use nexus_abi::ring::{
    Descriptor, List, ModelEntry as AbiEntry, ModelInfo, ModelListReply, ModelLoadReply,
    ModelUnloadReply, Ring, RingMut, RingReply, RingRequest, MAX_NAME,
};
use nexus_abi::{Hypercall, Status};

use nexus_tensor::Tenant;

use crate::service::{KeepAlive, ModelEntry, Service, ServiceError};

/// The ABI status for a service error.
pub fn status_of(e: &ServiceError) -> Status {
    match e {
        ServiceError::ModelNotFound(_) | ServiceError::Unavailable(_) => Status::NotFound,
        ServiceError::QueueFull(_) => Status::Busy,
        ServiceError::InsufficientMemory(_) => Status::NoMemory,
        ServiceError::BadRequest(_)
        | ServiceError::Engine(crate::engine::EngineError::InvalidRequest(_)) => {
            Status::InvalidArgument
        }
        ServiceError::Engine(_) | ServiceError::Internal(_) => Status::Internal,
    }
}

fn fail(e: ServiceError) -> Status {
    tracing::info!("model call failed: {e}");
    status_of(&e)
}

/// At most `MAX_NAME` bytes, cut at a character boundary (strings the service
/// holds can be longer than the ABI allows).
fn clip(s: &str) -> &str {
    if s.len() <= MAX_NAME {
        return s;
    }
    let mut end = MAX_NAME;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn keep_alive(secs: i64) -> KeepAlive {
    if secs < 0 {
        KeepAlive::Forever
    } else {
        KeepAlive::For(Duration::from_secs(secs as u64))
    }
}

fn encode(reply: &RingReply<'_>) -> Result<Vec<u8>, Status> {
    let mut buf = vec![0; reply.encoded_len()?];
    reply.encode(&mut buf)?;
    Ok(buf)
}

fn entry<'a>(e: &'a ModelEntry, loaded: bool) -> AbiEntry<'a> {
    AbiEntry {
        name: clip(&e.name),
        size_bytes: e.size,
        loaded,
        family: clip(&e.details.family),
        parameter_size: clip(&e.details.parameter_size),
        quantization: clip(&e.details.quantization_level),
    }
}

/// Answer one model call: `payload` is the request's ring encoding, the result is the
/// reply's ring encoding (at most `reply_capacity` bytes for listings, which page).
pub async fn answer(
    service: &Service,
    call: Hypercall,
    payload: &[u8],
    reply_capacity: u32,
) -> Result<Vec<u8>, Status> {
    match RingRequest::decode(call, payload)? {
        RingRequest::ModelLoad(r) => {
            let k = keep_alive(r.keep_alive_secs);
            if k.unloads_now() {
                // As Ollama's keep_alive 0: unload.
                service.unload(r.name).await.map_err(fail)?;
                return encode(&RingReply::ModelLoad(ModelLoadReply {
                    size_bytes: 0,
                    load_duration_ns: 0,
                }));
            }
            let rep = service.load(r.name, Some(k)).await.map_err(fail)?;
            encode(&RingReply::ModelLoad(ModelLoadReply {
                size_bytes: rep.memory_bytes,
                load_duration_ns: rep.load_duration.as_nanos() as u64,
            }))
        }
        RingRequest::ModelUnload(r) => {
            let (_, was_loaded) = service.unload(r.name).await.map_err(fail)?;
            encode(&RingReply::ModelUnload(ModelUnloadReply { was_loaded }))
        }
        RingRequest::ModelList(r) => {
            let all = service.list().await.map_err(fail)?;
            let running = service.running();
            let loaded = |e: &ModelEntry| running.iter().any(|m| m.entry.name == e.name);
            let total = u32::try_from(all.len()).unwrap_or(u32::MAX);
            let page: Vec<AbiEntry<'_>> = all
                .iter()
                .skip(r.start as usize)
                .take(r.max_entries as usize)
                .map(|e| entry(e, loaded(e)))
                .collect();
            // No more entries than fit the reply buffer: drop from the end until it fits.
            let mut n = page.len();
            loop {
                let reply = RingReply::ModelList(ModelListReply {
                    total,
                    entries: List::new(&page[..n]),
                });
                let len = reply.encoded_len()?;
                if len <= reply_capacity as usize || n == 0 {
                    return encode(&reply);
                }
                n -= 1;
            }
        }
        RingRequest::ModelInfo(r) => {
            let e = service.show(r.name).await.map_err(fail)?;
            let loaded = service.running().iter().any(|m| m.entry.name == e.name);
            let u32_of = |v: Option<u64>| v.map_or(0, |x| u32::try_from(x).unwrap_or(u32::MAX));
            encode(&RingReply::ModelInfo(ModelInfo {
                name: clip(&e.name),
                family: clip(&e.details.family),
                format: clip(&e.details.format),
                parameter_size: clip(&e.details.parameter_size),
                quantization: clip(&e.details.quantization_level),
                context_length: u32_of(e.context_length),
                embedding_length: u32_of(e.embedding_length),
                size_bytes: e.size,
                loaded,
            }))
        }
        // Other groups are served by other parts of the AI partition.
        _ => Err(Status::Unsupported),
    }
}

/// A GPU or tensor call for `tenant`, answered off the async executor (it may
/// wait for fences); bulk bytes to the ring are written into `ring`.
async fn answer_tensor(
    service: &Service,
    tenant: Tenant,
    call: Hypercall,
    payload: Vec<u8>,
    bulk: Vec<u8>,
    ring: &mut [u8],
) -> Result<Vec<u8>, Status> {
    let tensors = service.tensors().clone();
    let answer = tokio::task::spawn_blocking(move || {
        nexus_tensor::abi::answer(&tensors, tenant, call, &payload, &bulk)
    })
    .await
    .map_err(|_| Status::Internal)??;
    if let Some((offset, bytes)) = answer.bulk_out {
        let len = u32::try_from(bytes.len()).map_err(|_| Status::Internal)?;
        RingMut::open(ring)?
            .data_mut(offset, len)?
            .copy_from_slice(&bytes);
    }
    Ok(answer.reply)
}

/// Service side of the ring: take the request in `slot` for `call` from the
/// partition `tenant`, answer it and complete the descriptor (status, reply,
/// `DONE`, consumer index). Errors in the ring itself are returned without
/// touching it.
pub async fn serve_slot(
    service: &Service,
    tenant: Tenant,
    ring: &mut [u8],
    slot: u32,
    call: Hypercall,
) -> Result<Descriptor, Status> {
    // Copy the request (and any bulk bytes it consumes) out before answering, so
    // what was validated is what is used.
    let (desc, payload, bulk) = {
        let view = Ring::new(ring)?;
        match view.request(slot, call) {
            Ok((d, req)) => {
                let bulk = match nexus_tensor::abi::bulk_in(&req) {
                    Some((offset, len)) => view.data(offset, len)?.to_vec(),
                    None => Vec::new(),
                };
                (Ok(d), view.data(d.req_offset, d.req_len)?.to_vec(), bulk)
            }
            Err(Status::BadRing) => return Err(Status::BadRing),
            Err(e) => (Err(e), Vec::new(), Vec::new()),
        }
    };
    let result = match desc {
        Ok(_) if nexus_tensor::abi::serves(call) => {
            answer_tensor(service, tenant, call, payload, bulk, ring).await
        }
        Ok(d) => answer(service, call, &payload, d.reply_capacity).await,
        Err(e) => Err(e),
    };
    let mut ring = RingMut::open(ring)?;
    match &result {
        Ok(bytes) => {
            let reply = RingReply::decode(call, bytes)?;
            ring.complete(slot, Ok(&reply))
        }
        Err(e) => ring.complete(slot, Err(*e)),
    }
}
