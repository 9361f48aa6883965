//! `/api/tensor/*` and `/api/gpu/*`: the tensor service and the GPU ledger
//! over HTTP, as one tenant (`http`). Same checks and statuses as the ring
//! calls; docs/ai-tensor.md lists routes, bodies and errors.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use nexus_abi::ring::{FillKind, Placement, VramRegion};
use nexus_abi::Status;
use nexus_tensor::{DType, Fill, Pool, Shape, Tenant, TensorError, TensorInfo, TensorService};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

/// Every HTTP client is this one tenant.
const TENANT: Tenant = Tenant::HTTP;
/// Bytes per chunk when streaming tensor data.
const CHUNK: u64 = 1 << 20;

fn http_status(s: Status) -> StatusCode {
    match s {
        Status::NotFound => StatusCode::NOT_FOUND,
        Status::NoMemory => StatusCode::INSUFFICIENT_STORAGE,
        Status::LimitExceeded => StatusCode::PAYLOAD_TOO_LARGE,
        Status::Busy => StatusCode::SERVICE_UNAVAILABLE,
        Status::Internal | Status::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl From<TensorError> for ApiError {
    fn from(e: TensorError) -> Self {
        ApiError::new(
            http_status(e.status),
            format!("{} ({})", e.message, e.status.name()),
        )
    }
}

fn tensors(st: &AppState) -> Arc<TensorService> {
    st.service.tensors().clone()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> nexus_tensor::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

fn info_json(i: &TensorInfo) -> Value {
    json!({
        "tensor": i.handle,
        "dtype": i.dtype.name(),
        "shape": i.shape.dims(),
        "bytes": i.bytes,
        "placement": match i.placement { Placement::Host => "host", Placement::Gpu => "gpu" },
        "pending_writes": i.pending_writes,
    })
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn placement(s: Option<&str>) -> Result<Placement, ApiError> {
    match s.unwrap_or("host") {
        "host" => Ok(Placement::Host),
        "gpu" => Ok(Placement::Gpu),
        other => Err(ApiError::bad_request(format!(
            "placement \"{other}\" is not host or gpu"
        ))),
    }
}

fn region(s: &str) -> Result<VramRegion, ApiError> {
    match s {
        "model-storage" => Ok(VramRegion::ModelStorage),
        "inference-cache" => Ok(VramRegion::InferenceCache),
        "graphics" => Ok(VramRegion::Graphics),
        other => Err(ApiError::bad_request(format!(
            "region \"{other}\" is not model-storage, inference-cache or graphics"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FillBody {
    kind: String,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    value: f64,
    #[serde(default)]
    low: f64,
    #[serde(default = "one")]
    high: f64,
    #[serde(default)]
    mean: f64,
    #[serde(default = "one")]
    std: f64,
}

fn one() -> f64 {
    1.0
}

impl FillBody {
    fn to_fill(&self) -> Result<Fill, ApiError> {
        let (kind, a, b, seed) = match self.kind.as_str() {
            "zeros" => (FillKind::Zeros, 0.0, 0.0, 0),
            "constant" => (FillKind::Constant, self.value, 0.0, 0),
            "uniform" => (FillKind::Uniform, self.low, self.high, self.seed),
            "normal" => (FillKind::Normal, self.mean, self.std, self.seed),
            other => {
                return Err(ApiError::bad_request(format!(
                    "fill kind \"{other}\" is not zeros, constant, uniform or normal"
                )))
            }
        };
        Ok(Fill { kind, seed, a, b })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    dtype: String,
    shape: Vec<u64>,
    placement: Option<String>,
    data: Option<Vec<f64>>,
    fill: Option<FillBody>,
}

/// `POST /api/tensor/create`
pub async fn create(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let b: CreateBody = parse(&body)?;
    let dtype = DType::from_name(&b.dtype)?;
    let shape = Shape::new(&b.shape)?;
    let placement = placement(b.placement.as_deref())?;
    if b.data.is_some() && b.fill.is_some() {
        return Err(ApiError::bad_request("give data or fill, not both"));
    }
    let fill = b.fill.as_ref().map(FillBody::to_fill).transpose()?;
    let bytes = match &b.data {
        Some(d) if d.len() != shape.numel() => {
            return Err(ApiError::bad_request(format!(
                "data has {} values but shape {shape} holds {}",
                d.len(),
                shape.numel()
            )))
        }
        Some(d) => {
            let vals: Vec<f32> = d.iter().map(|&v| v as f32).collect();
            let mut out = vec![0u8; vals.len() * dtype.size()];
            nexus_tensor::dtype::from_f32(dtype, &vals, &mut out);
            Some(out)
        }
        None => None,
    };
    let svc = tensors(&st);
    let info = blocking(move || {
        let info = svc.create(TENANT, dtype, shape, placement)?;
        let undo = |e: TensorError| {
            let _ = svc.free(TENANT, info.handle);
            e
        };
        if let Some(bytes) = bytes {
            svc.write(TENANT, info.handle, 0, &bytes).map_err(undo)?;
        }
        if let Some(f) = fill {
            let fence = svc.fill(TENANT, info.handle, 0, f).map_err(undo)?;
            svc.sync(TENANT, fence, svc.config().max_wait)?;
        }
        svc.info(TENANT, info.handle)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(info_json(&info))).into_response())
}

/// `GET /api/tensor`
pub async fn list(State(st): State<AppState>) -> Json<Value> {
    let all: Vec<Value> = tensors(&st).list(TENANT).iter().map(info_json).collect();
    Json(json!({ "tensors": all }))
}

/// `GET /api/tensor/{id}`
pub async fn info(
    State(st): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(info_json(&tensors(&st).info(TENANT, id)?)))
}

/// `DELETE /api/tensor/{id}`
pub async fn free(
    State(st): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let bytes = tensors(&st).free(TENANT, id)?;
    Ok(Json(json!({ "freed_bytes": bytes })))
}

#[derive(Deserialize)]
pub struct DataQuery {
    format: Option<String>,
    offset: Option<u64>,
    wait_ms: Option<u64>,
}

/// `GET /api/tensor/{id}/data`: JSON values, or `?format=raw` little-endian
/// bytes streamed in 1 MiB chunks (the next chunk is read when the client
/// has taken the last).
pub async fn read(
    State(st): State<AppState>,
    Path(id): Path<u64>,
    Query(q): Query<DataQuery>,
) -> Result<Response, ApiError> {
    let svc = tensors(&st);
    let info = svc.info(TENANT, id)?;
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(30_000));
    match q.format.as_deref().unwrap_or("json") {
        "json" => {
            let s = svc.clone();
            let (bytes, _) = blocking(move || s.read(TENANT, id, 0, info.bytes, wait)).await?;
            let mut vals = vec![0f32; info.shape.numel()];
            nexus_tensor::dtype::to_f32(info.dtype, &bytes, &mut vals);
            let data: Vec<Value> = if info.dtype == DType::I32 {
                vals.iter().map(|&v| json!(v as i64)).collect()
            } else {
                vals.iter().map(|&v| json!(v)).collect()
            };
            Ok(Json(json!({ "tensor": id, "dtype": info.dtype.name(), "shape": info.shape.dims(), "data": data })).into_response())
        }
        "raw" => {
            let start = q.offset.unwrap_or(0);
            if start > info.bytes {
                return Err(ApiError::bad_request(format!(
                    "offset {start} is past the tensor's {} bytes",
                    info.bytes
                )));
            }
            // The first chunk checks readiness, so errors come back as a status, not a cut body.
            let s = svc.clone();
            let first = blocking(move || s.read(TENANT, id, start, CHUNK, wait)).await?;
            let stream = futures_util::stream::unfold(Some((start, first)), move |state| {
                let svc = svc.clone();
                async move {
                    let (at, (bytes, rest)) = state?;
                    let next_at = at + bytes.len() as u64;
                    let next = if rest == 0 {
                        None
                    } else {
                        let s = svc.clone();
                        tokio::task::spawn_blocking(move || {
                            s.read(TENANT, id, next_at, CHUNK, wait)
                        })
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                        .map(|r| (next_at, r))
                    };
                    Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), next))
                }
            });
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            );
            Ok(r)
        }
        other => Err(ApiError::bad_request(format!(
            "format \"{other}\" is not json or raw"
        ))),
    }
}

/// `PUT /api/tensor/{id}/data?offset=N`: raw little-endian bytes, written as
/// they arrive (no body size limit beyond the tensor's own size).
pub async fn write(
    State(st): State<AppState>,
    Path(id): Path<u64>,
    Query(q): Query<DataQuery>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let svc = tensors(&st);
    let info = svc.info(TENANT, id)?;
    let mut at = q.offset.unwrap_or(0);
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if at
            .checked_add(chunk.len() as u64)
            .is_none_or(|end| end > info.bytes)
        {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body runs past the tensor's {} bytes (offset {at})",
                    info.bytes
                ),
            ));
        }
        let s = svc.clone();
        let n = chunk.len() as u64;
        let offset = at;
        blocking(move || s.write(TENANT, id, offset, &chunk)).await?;
        at += n;
        written += n;
    }
    Ok(Json(
        json!({ "written": written, "remaining": info.bytes - at }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComputeBody {
    op: String,
    inputs: Vec<u64>,
    output: Option<u64>,
    #[serde(default)]
    axes: Vec<u8>,
    eps: Option<f32>,
    /// Target shape of a reshape that creates its output.
    shape: Option<Vec<u64>>,
    #[serde(default)]
    stream: u32,
    /// Wait for the result (default true).
    wait: Option<bool>,
}

/// `POST /api/tensor/compute`
pub async fn compute(State(st): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let b: ComputeBody = parse(&body)?;
    let op = nexus_tensor::plan::op_from_name(&b.op)?;
    if b.inputs.len() > 3 {
        return Err(ApiError::bad_request("at most 3 inputs"));
    }
    let to = b.shape.as_deref().map(Shape::new).transpose()?;
    let svc = tensors(&st);
    let eps = b.eps.unwrap_or(1e-5);
    let wait = b.wait.unwrap_or(true);
    let (fence, out, done) = blocking(move || {
        let (fence, out) = svc.op(
            TENANT,
            b.stream,
            op,
            &b.inputs,
            b.output,
            &b.axes,
            eps,
            to.as_ref(),
        )?;
        let done = if wait {
            Some(svc.sync(TENANT, fence, svc.config().max_wait)?)
        } else {
            None
        };
        Ok((fence, out, done))
    })
    .await?;
    Ok(Json(
        json!({ "fence": fence, "output": out, "completed": done.is_some() }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocBody {
    bytes: u64,
    region: String,
}

/// `POST /api/gpu/alloc`
pub async fn alloc(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let b: AllocBody = parse(&body)?;
    let r = region(&b.region)?;
    let (handle, bytes) = tensors(&st).gpu_alloc(TENANT, b.bytes, r)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "handle": handle, "bytes": bytes, "region": b.region })),
    )
        .into_response())
}

/// `DELETE /api/gpu/alloc/{handle}`
pub async fn dealloc(
    State(st): State<AppState>,
    Path(h): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "freed_bytes": tensors(&st).gpu_free(TENANT, h)? }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncBody {
    fence: u64,
    #[serde(default)]
    timeout_ms: u64,
}

/// `POST /api/gpu/sync`
pub async fn sync(State(st): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let b: SyncBody = parse(&body)?;
    let svc = tensors(&st);
    let done =
        blocking(move || svc.sync(TENANT, b.fence, Duration::from_millis(b.timeout_ms))).await?;
    Ok(Json(json!({ "completed_fence": done })))
}

/// The ledger as JSON (also used by `/api/gpu/priority`).
fn status_json(svc: &TensorService) -> Value {
    let s = svc.status();
    let pools: Vec<Value> = s
        .ledger
        .pools
        .iter()
        .map(|p| {
            let tenants: serde_json::Map<String, Value> =
                p.by_tenant.iter().map(|(t, b)| (t.label(), json!(b))).collect();
            let kinds: serde_json::Map<String, Value> = p
                .by_kind
                .iter()
                .map(|(k, b)| (format!("{k:?}").to_lowercase(), json!(b)))
                .collect();
            json!({ "pool": p.pool.name(), "budget": p.budget, "used": p.used, "free": p.budget.saturating_sub(p.used), "tenants": tenants, "kinds": kinds })
        })
        .collect();
    json!({
        "backend": s.backend_name,
        "device_total": s.device_total,
        "device_free": s.device_free,
        "gaming_priority": s.ledger.gaming,
        "pools": pools,
        "evictions": s.ledger.evictions,
        "refusals": s.ledger.refusals,
        "pending_work": s.pending_work,
        "graphics_owner": svc.ledger().budgets().graphics_owner.map(|t| t.label()),
        "pool_names": Pool::ALL.iter().map(|p| p.name()).collect::<Vec<_>>(),
    })
}

/// `GET /api/gpu/status`
pub async fn status(State(st): State<AppState>) -> Json<Value> {
    Json(status_json(&tensors(&st)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriorityBody {
    gaming: bool,
}

/// `PUT /api/gpu/priority`: `{"gaming": true}` gives the graphics region back
/// to the gaming partition at once.
pub async fn priority(State(st): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let b: PriorityBody = parse(&body)?;
    let svc = tensors(&st);
    let s = svc.clone();
    let r = blocking(move || s.set_gaming(b.gaming)).await?;
    let mut v = status_json(&svc);
    v["reclaimed_buffers"] = json!(r.buffers);
    v["reclaimed_bytes"] = json!(r.bytes);
    Ok(Json(v))
}
