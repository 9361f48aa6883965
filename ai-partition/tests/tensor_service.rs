//! The tensor and GPU groups end to end in the AI service: requests encoded into a
//! guest's ring and answered by `serve_slot` as the calling partition, bulk bytes
//! through the ring's data area; the same service over HTTP; the ledger in /metrics.

mod service_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nexus_abi::ring::{
    Axes, DType, Direction, FillKind, GpuAllocRequest, GpuExecRequest, GpuStatusRequest,
    GpuSyncRequest, HandleRequest, OpCode, Placement, Ring, RingMut, RingReply, RingRequest, Shape,
    TensorCreateRequest, TensorFillRequest, TensorOpRequest, TensorTransferRequest, VramRegion,
};
use nexus_abi::Status;
use nexus_ai::abi::serve_slot;
use nexus_ai::api::ApiConfig;
use nexus_ai::engine::{LoadOptions, SamplingParams};
use nexus_ai::service::{GenerateJob, KeepAlive, Prompt, Service, ServiceConfig, ServiceError};
use nexus_tensor::{Budgets, ChargeKind, Pool, Tenant};
use serde_json::{json, Value};
use service_support::{eventually, Control, FAKE_KV_CACHE, FAKE_WEIGHTS};

/// A partition's ring.
struct Guest {
    tenant: Tenant,
    mem: Vec<u8>,
}

impl Guest {
    fn new(id: u32) -> Self {
        let mut mem = vec![0u8; 256 << 10];
        RingMut::init(&mut mem, 4).unwrap();
        Self {
            tenant: Tenant::partition(id),
            mem,
        }
    }

    async fn call(&mut self, svc: &Service, req: RingRequest<'_>) -> Result<RingReply<'_>, Status> {
        let call = req.call();
        RingMut::open(&mut self.mem)
            .unwrap()
            .submit_in_slot(0, 1, &req)
            .unwrap();
        serve_slot(svc, self.tenant, &mut self.mem, 0, call)
            .await
            .unwrap();
        Ring::new(&self.mem).unwrap().reply(0).map(|(_, r)| r)
    }
}

fn fence(r: Result<RingReply<'_>, Status>) -> u64 {
    match r.unwrap() {
        RingReply::TensorOp(f) | RingReply::TensorFill(f) | RingReply::TensorCompute(f) => f.fence,
        other => panic!("{other:?}"),
    }
}

async fn create(g: &mut Guest, svc: &Service, dims: &[u64]) -> u64 {
    let req = RingRequest::TensorCreate(TensorCreateRequest {
        dtype: DType::F32,
        shape: Shape::new(dims).unwrap(),
        placement: Placement::Gpu,
    });
    match g.call(svc, req).await.unwrap() {
        RingReply::TensorCreate(c) => c.tensor,
        other => panic!("{other:?}"),
    }
}

/// The data area offset used for bulk bytes (past the slot's request and reply).
const BULK: u32 = 128 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tensor_calls_through_the_ring() {
    let (svc, _) = service_support::fake_service(ServiceConfig::default());
    let mut g = Guest::new(3);
    let a = create(&mut g, &svc, &[2, 3]).await;
    let b = create(&mut g, &svc, &[3, 2]).await;
    let c = create(&mut g, &svc, &[2, 2]).await;
    // a = 1..6 written through the data area.
    let vals: Vec<u8> = (1..=6).flat_map(|v| (v as f32).to_le_bytes()).collect();
    let data = Ring::new(&g.mem).unwrap().header().data_offset as usize;
    g.mem[data + BULK as usize..][..24].copy_from_slice(&vals);
    let t = TensorTransferRequest {
        tensor: a,
        direction: Direction::ToTensor,
        tensor_offset: 0,
        ring_offset: BULK,
        len: 24,
    };
    assert!(g.call(&svc, RingRequest::TensorTransfer(t)).await.is_ok());
    let fill = TensorFillRequest {
        tensor: b,
        stream: 1,
        kind: FillKind::Constant,
        seed: 0,
        a: 0.5,
        b: 0.0,
    };
    let f1 = fence(g.call(&svc, RingRequest::TensorFill(fill)).await);
    // c = a @ b on stream 1, after the fill.
    let op = TensorOpRequest::new(OpCode::MatMul, 1, &[a, b], c, Axes::default(), 0.0).unwrap();
    let f2 = fence(g.call(&svc, RingRequest::TensorOp(op)).await);
    assert!(f2 > f1);
    let sync = GpuSyncRequest {
        fence: f2,
        timeout_ms: 10_000,
    };
    assert!(
        matches!(g.call(&svc, RingRequest::GpuSync(sync)).await.unwrap(), RingReply::GpuSync(s) if s.completed_fence == f2)
    );
    let t = TensorTransferRequest {
        tensor: c,
        direction: Direction::ToRing,
        tensor_offset: 0,
        ring_offset: BULK,
        len: 16,
    };
    assert!(g.call(&svc, RingRequest::TensorTransfer(t)).await.is_ok());
    let out: Vec<f32> = g.mem[data + BULK as usize..][..16]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(out, [3.0, 3.0, 7.5, 7.5]);
    // Bad input: a shape mismatch, a transfer past the end.
    let bad = TensorOpRequest::new(OpCode::MatMul, 0, &[a, a], c, Axes::default(), 0.0).unwrap();
    assert_eq!(
        g.call(&svc, RingRequest::TensorOp(bad)).await.err(),
        Some(Status::ShapeMismatch)
    );
    let past = TensorTransferRequest {
        tensor: c,
        direction: Direction::ToRing,
        tensor_offset: 8,
        ring_offset: BULK,
        len: 16,
    };
    assert_eq!(
        g.call(&svc, RingRequest::TensorTransfer(past)).await.err(),
        Some(Status::InvalidArgument)
    );
    // Another partition cannot name these tensors.
    let mut other = Guest::new(4);
    let steal = TensorTransferRequest {
        tensor: c,
        direction: Direction::ToRing,
        tensor_offset: 0,
        ring_offset: BULK,
        len: 16,
    };
    assert_eq!(
        other
            .call(&svc, RingRequest::TensorTransfer(steal))
            .await
            .err(),
        Some(Status::NotFound)
    );
    assert_eq!(
        other
            .call(&svc, RingRequest::TensorFree(HandleRequest { handle: c }))
            .await
            .err(),
        Some(Status::NotFound)
    );
    // The ledger as the caller sees it, then everything freed.
    let alloc = GpuAllocRequest {
        bytes: 1 << 20,
        region: VramRegion::ModelStorage,
        flags: 0,
    };
    let h = match g.call(&svc, RingRequest::GpuAlloc(alloc)).await.unwrap() {
        RingReply::GpuAlloc(a) => a.handle,
        other => panic!("{other:?}"),
    };
    match g
        .call(&svc, RingRequest::GpuStatus(GpuStatusRequest))
        .await
        .unwrap()
    {
        RingReply::GpuStatus(s) => {
            let regions: Vec<_> = s.regions.iter().collect();
            assert_eq!(regions[0].budget, 8 << 30);
            assert_eq!(regions[0].caller, 1 << 20);
            assert_eq!(regions[1].caller, 24 + 24 + 16);
            assert!(!s.gaming);
        }
        other => panic!("{other:?}"),
    }
    assert!(g
        .call(&svc, RingRequest::GpuFree(HandleRequest { handle: h }))
        .await
        .is_ok());
    for t in [a, b, c] {
        assert!(g
            .call(&svc, RingRequest::TensorFree(HandleRequest { handle: t }))
            .await
            .is_ok());
    }
    assert_eq!(
        g.call(&svc, RingRequest::TensorFree(HandleRequest { handle: a }))
            .await
            .err(),
        Some(Status::NotFound)
    );
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = client.request(method, url);
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tensor_routes_over_http() {
    let (svc, _) = service_support::fake_service(ServiceConfig::default());
    let addr = service_support::serve(svc, ApiConfig::default()).await;
    let base = format!("http://{addr}");
    let c = reqwest::Client::new();
    use reqwest::Method as M;
    let (s, a) = send(
        &c,
        M::POST,
        format!("{base}/api/tensor/create"),
        Some(json!({"dtype": "f32", "shape": [2, 2], "data": [1, 2, 3, 4]})),
    )
    .await;
    assert_eq!(s, 201, "{a}");
    let (s, b) = send(&c, M::POST, format!("{base}/api/tensor/create"), Some(json!({"dtype": "bf16", "shape": [2, 2], "placement": "gpu", "fill": {"kind": "constant", "value": 2}}))).await;
    assert_eq!(s, 201, "{b}");
    let (ha, hb) = (a["tensor"].as_u64().unwrap(), b["tensor"].as_u64().unwrap());
    // Mixed types are refused with the reason.
    let (s, e) = send(
        &c,
        M::POST,
        format!("{base}/api/tensor/compute"),
        Some(json!({"op": "mul", "inputs": [ha, hb]})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        e["error"].as_str().unwrap().contains("dtype mismatch"),
        "{e}"
    );
    let (s, r) = send(
        &c,
        M::POST,
        format!("{base}/api/tensor/compute"),
        Some(json!({"op": "mul", "inputs": [ha, ha]})),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let out = r["output"].as_u64().unwrap();
    let (_, d) = send(&c, M::GET, format!("{base}/api/tensor/{out}/data"), None).await;
    assert_eq!(d["data"], json!([1.0, 4.0, 9.0, 16.0]));
    // Raw bytes in and out.
    let raw: Vec<u8> = [5f32, 6.0, 7.0, 8.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let resp = c
        .put(format!("{base}/api/tensor/{ha}/data"))
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = c
        .get(format!("{base}/api/tensor/{ha}/data?format=raw"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), raw.as_slice());
    let resp = c
        .put(format!("{base}/api/tensor/{ha}/data?offset=12"))
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Unknown handles, bad bodies, over budget, gaming priority.
    assert_eq!(
        send(&c, M::GET, format!("{base}/api/tensor/999"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        send(
            &c,
            M::POST,
            format!("{base}/api/tensor/create"),
            Some(json!({"dtype": "f64", "shape": [1]}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        send(
            &c,
            M::POST,
            format!("{base}/api/tensor/create"),
            Some(json!({"dtype": "f32", "shape": [0]}))
        )
        .await
        .0,
        400
    );
    let (s, _) = send(
        &c,
        M::POST,
        format!("{base}/api/gpu/alloc"),
        Some(json!({"bytes": 5u64 << 30, "region": "graphics"})),
    )
    .await;
    assert_eq!(s, 507);
    let (s, g) = send(
        &c,
        M::POST,
        format!("{base}/api/gpu/alloc"),
        Some(json!({"bytes": 1 << 20, "region": "graphics"})),
    )
    .await;
    assert_eq!(s, 201, "{g}");
    let (s, p) = send(
        &c,
        M::PUT,
        format!("{base}/api/gpu/priority"),
        Some(json!({"gaming": true})),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["reclaimed_bytes"], json!(1 << 20));
    let (s, _) = send(
        &c,
        M::POST,
        format!("{base}/api/gpu/alloc"),
        Some(json!({"bytes": 4096, "region": "graphics"})),
    )
    .await;
    assert_eq!(s, 503);
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("nexus_gpu_budget_bytes{pool=\"model-storage\"} 8589934592"),
        "{metrics}"
    );
    assert!(metrics.contains("nexus_gpu_gaming_priority 1"), "{metrics}");
    assert!(
        metrics.contains("nexus_gpu_tenant_bytes{pool=\"host\",tenant=\"http\"}"),
        "{metrics}"
    );
    let (_, st) = send(&c, M::GET, format!("{base}/api/gpu/status"), None).await;
    assert_eq!(st["gaming_priority"], json!(true));
    assert_eq!(st["graphics_owner"], json!("partition-0"));
}

const MODELS: Pool = Pool::Vram(VramRegion::ModelStorage);
const CACHE: Pool = Pool::Vram(VramRegion::InferenceCache);
const GRAPHICS: Pool = Pool::Vram(VramRegion::Graphics);

/// A service whose fake engine offloads every layer (as a GPU build does), with small
/// budgets: model storage for two fake models and a half, 8 MiB of inference cache,
/// 4 MiB of graphics owned by partition 0, 64 MiB of host memory.
fn gpu_service() -> (Service, Arc<Control>) {
    let budgets = Budgets {
        bytes: [
            2 * FAKE_WEIGHTS + FAKE_WEIGHTS / 2,
            8 << 20,
            4 << 20,
            64 << 20,
        ],
        graphics_owner: Some(Tenant::partition(0)),
    };
    service_support::fake_service(ServiceConfig {
        max_loaded: 8,
        load: LoadOptions {
            n_gpu_layers: 99,
            ..LoadOptions::default()
        },
        tensor: Some(nexus_tensor::Config::new(budgets)),
        ..ServiceConfig::default()
    })
}

fn resident(svc: &Service) -> Vec<String> {
    svc.running().into_iter().map(|r| r.entry.name).collect()
}

fn minutes(m: u64) -> Option<KeepAlive> {
    Some(KeepAlive::For(Duration::from_secs(60 * m)))
}

/// Bytes `kind` holds in `pool`.
fn held(svc: &Service, pool: Pool, kind: ChargeKind) -> u64 {
    let snap = svc.tensors().ledger().snapshot();
    snap.pool(pool)
        .by_kind
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(0, |(_, b)| *b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offloaded_models_are_charged_and_idle_ones_evicted_by_keep_alive() {
    let (svc, ctl) = gpu_service();
    // Weights to model storage, KV cache to the inference cache, both as the service's.
    svc.load("alpha", minutes(60)).await.unwrap();
    svc.load("beta", minutes(5)).await.unwrap();
    assert_eq!(
        held(&svc, MODELS, ChargeKind::ModelWeights),
        2 * FAKE_WEIGHTS
    );
    assert_eq!(held(&svc, CACHE, ChargeKind::KvCache), 2 * FAKE_KV_CACHE);
    let snap = svc.tensors().ledger().snapshot();
    assert_eq!(snap.tenant_bytes(MODELS, Tenant::SERVICE), 2 * FAKE_WEIGHTS);
    let ps = svc.running();
    assert!(ps
        .iter()
        .all(|m| m.memory.vram() == FAKE_WEIGHTS + FAKE_KV_CACHE));

    // No room for a third: the idle model whose keep-alive runs out first goes (beta,
    // though alpha was used longer ago: alpha asked to stay an hour).
    svc.load("gamma", minutes(5)).await.unwrap();
    assert_eq!(resident(&svc), ["alpha:latest", "gamma:latest"]);
    assert_eq!(svc.tensors().ledger().snapshot().evictions, 1);
    assert_eq!(
        held(&svc, MODELS, ChargeKind::ModelWeights),
        2 * FAKE_WEIGHTS
    );
    assert_eq!(held(&svc, CACHE, ChargeKind::KvCache), 2 * FAKE_KV_CACHE);

    // Equal keep-alives: the least recently used goes (gamma; alpha was just used).
    svc.load("alpha", minutes(5)).await.unwrap();
    svc.load("beta", minutes(5)).await.unwrap();
    assert_eq!(resident(&svc), ["alpha:latest", "beta:latest"]);
    assert_eq!(svc.tensors().ledger().snapshot().evictions, 2);

    // keep_alive -1 is respected, and a model serving a request is never evicted: with
    // alpha kept forever and beta busy, gamma is refused and nothing is unloaded.
    svc.load("alpha", Some(KeepAlive::Forever)).await.unwrap();
    ctl.set_delay(Duration::from_millis(2));
    let busy = svc
        .generate(GenerateJob {
            model: "beta".into(),
            prompt: Prompt::Raw("endless".into()),
            params: SamplingParams {
                num_predict: Some(1_000_000),
                ..SamplingParams::default()
            },
            keep_alive: minutes(5),
            stream: true,
        })
        .await
        .unwrap();
    eventually("beta is generating", || {
        ctl.active.load(Ordering::SeqCst) == 1
    })
    .await;
    let err = svc.load("gamma", minutes(5)).await.expect_err("no room");
    assert!(
        matches!(err, ServiceError::InsufficientMemory(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("GPU memory"), "{err}");
    assert_eq!(resident(&svc), ["alpha:latest", "beta:latest"]);
    let snap = svc.tensors().ledger().snapshot();
    assert_eq!(snap.evictions, 2);
    assert_eq!(
        snap.pool(MODELS).used,
        2 * FAKE_WEIGHTS,
        "the refused reservation was returned"
    );

    // Tensor work makes room the same way: once beta is idle, an allocation in model
    // storage evicts it (alpha stays, kept forever).
    drop(busy);
    eventually("beta is idle", || svc.running().iter().all(|m| !m.busy)).await;
    let tenant = Tenant::partition(3);
    let room = FAKE_WEIGHTS.next_multiple_of(4096);
    let (h, _) = svc
        .tensors()
        .gpu_alloc(tenant, room, VramRegion::ModelStorage)
        .unwrap();
    assert_eq!(resident(&svc), ["alpha:latest"]);
    assert_eq!(held(&svc, CACHE, ChargeKind::KvCache), FAKE_KV_CACHE);
    // Unloading gives everything back.
    svc.unload("alpha").await.unwrap();
    svc.tensors().gpu_free(tenant, h).unwrap();
    let snap = svc.tensors().ledger().snapshot();
    assert!(snap.pools.iter().all(|p| p.used == 0), "{snap:?}");
    let metrics = svc.render_metrics();
    assert!(metrics.contains("nexus_gpu_evictions_total 3"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_kept_in_host_memory_hold_no_vram() {
    // No layers offloaded: the ledger charges nothing and reserves nothing.
    let (svc, _) = service_support::fake_service(ServiceConfig::default());
    svc.load("alpha", None).await.unwrap();
    let snap = svc.tensors().ledger().snapshot();
    assert!(snap.pools.iter().all(|p| p.used == 0), "{snap:?}");
    assert_eq!(svc.running()[0].memory.vram(), 0);
}

fn commands(cmds: &[(u8, &[u64], Option<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (op, fields, byte) in cmds {
        out.push(*op);
        for f in *fields {
            out.extend(f.to_le_bytes());
        }
        out.extend(byte.iter());
    }
    out
}

async fn gpu_alloc(
    g: &mut Guest,
    svc: &Service,
    bytes: u64,
    region: VramRegion,
) -> Result<u64, Status> {
    let req = GpuAllocRequest {
        bytes,
        region,
        flags: 0,
    };
    match g.call(svc, RingRequest::GpuAlloc(req)).await? {
        RingReply::GpuAlloc(a) => Ok(a.handle),
        other => panic!("{other:?}"),
    }
}

async fn sync(g: &mut Guest, svc: &Service, fence: u64) {
    let req = GpuSyncRequest {
        fence,
        timeout_ms: 10_000,
    };
    assert!(matches!(
        g.call(svc, RingRequest::GpuSync(req)).await.unwrap(),
        RingReply::GpuSync(s) if s.completed_fence == fence
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaming_priority_takes_the_graphics_region_back_at_once() {
    let (svc, _) = gpu_service();
    let mut ai = Guest::new(3);
    let mut game = Guest::new(0);
    // Partition 3 borrows 1 MiB of the graphics region and writes a pattern into it.
    let buf = gpu_alloc(&mut ai, &svc, 1 << 20, VramRegion::Graphics)
        .await
        .unwrap();
    let out = create(&mut ai, &svc, &[4]).await;
    let fill = commands(&[(1, &[buf, 0, 1 << 20], Some(0xAB))]);
    let req = GpuExecRequest {
        stream: 0,
        commands: &fill,
    };
    let f = match ai.call(&svc, RingRequest::GpuExec(req)).await.unwrap() {
        RingReply::GpuExec(f) => f.fence,
        other => panic!("{other:?}"),
    };
    sync(&mut ai, &svc, f).await;
    // The game can take only what is left while priority is off.
    assert_eq!(
        gpu_alloc(&mut game, &svc, 4 << 20, VramRegion::Graphics)
            .await
            .err(),
        Some(Status::NoMemory)
    );

    let back = svc.tensors().set_gaming(true).unwrap();
    assert_eq!((back.buffers, back.bytes), (1, 1 << 20));
    let snap = svc.tensors().ledger().snapshot();
    assert_eq!(snap.tenant_bytes(GRAPHICS, ai.tenant), 0);
    assert_eq!(snap.tenant_bytes(Pool::Host, ai.tenant), 1 << 20);
    // The whole region is the game's at once; the AI partition is told to wait.
    let whole = gpu_alloc(&mut game, &svc, 4 << 20, VramRegion::Graphics)
        .await
        .unwrap();
    assert_eq!(
        gpu_alloc(&mut ai, &svc, 4096, VramRegion::Graphics)
            .await
            .err(),
        Some(Status::Busy)
    );
    // The moved buffer kept its handle and its bytes.
    let copy = commands(&[(2, &[buf, 100, out, 0, 16], None)]);
    let req = GpuExecRequest {
        stream: 0,
        commands: &copy,
    };
    let f = match ai.call(&svc, RingRequest::GpuExec(req)).await.unwrap() {
        RingReply::GpuExec(f) => f.fence,
        other => panic!("{other:?}"),
    };
    sync(&mut ai, &svc, f).await;
    let t = TensorTransferRequest {
        tensor: out,
        direction: Direction::ToRing,
        tensor_offset: 0,
        ring_offset: BULK,
        len: 16,
    };
    assert!(ai.call(&svc, RingRequest::TensorTransfer(t)).await.is_ok());
    let data = Ring::new(&ai.mem).unwrap().header().data_offset as usize + BULK as usize;
    assert_eq!(ai.mem[data..data + 16], [0xAB; 16]);
    match ai
        .call(&svc, RingRequest::GpuStatus(GpuStatusRequest))
        .await
        .unwrap()
    {
        RingReply::GpuStatus(s) => {
            assert!(s.gaming);
            assert_eq!(s.host_caller, 1 << 20);
            let graphics = s.regions.iter().nth(2).unwrap();
            assert_eq!((graphics.used, graphics.caller), (4 << 20, 0));
        }
        other => panic!("{other:?}"),
    }
    // Priority off: borrowing resumes once the game lets go.
    svc.tensors().set_gaming(false).unwrap();
    game.call(&svc, RingRequest::GpuFree(HandleRequest { handle: whole }))
        .await
        .unwrap();
    gpu_alloc(&mut ai, &svc, 4096, VramRegion::Graphics)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocating_and_freeing_through_the_ring_returns_the_ledger_to_zero() {
    let (svc, _) = gpu_service();
    let mut g = Guest::new(5);
    for i in 0..64u64 {
        let x = create(&mut g, &svc, &[1 + i % 7, 33]).await;
        let y = create(&mut g, &svc, &[1 + i % 7, 33]).await;
        let fill = TensorFillRequest {
            tensor: x,
            stream: 1,
            kind: FillKind::Uniform,
            seed: i,
            a: -1.0,
            b: 1.0,
        };
        fence(g.call(&svc, RingRequest::TensorFill(fill)).await);
        let op = TensorOpRequest::new(OpCode::Gelu, 1, &[x], y, Axes::default(), 0.0).unwrap();
        let f = fence(g.call(&svc, RingRequest::TensorOp(op)).await);
        // Every other round frees before the work is done: the bytes come back when the
        // work drops them.
        if i % 2 == 0 {
            sync(&mut g, &svc, f).await;
        }
        let region = [
            VramRegion::ModelStorage,
            VramRegion::InferenceCache,
            VramRegion::Graphics,
        ][i as usize % 3];
        let a = gpu_alloc(&mut g, &svc, 4096 * (1 + i % 5), region)
            .await
            .unwrap();
        for h in [x, y] {
            g.call(&svc, RingRequest::TensorFree(HandleRequest { handle: h }))
                .await
                .unwrap();
        }
        g.call(&svc, RingRequest::GpuFree(HandleRequest { handle: a }))
            .await
            .unwrap();
        // Double frees, unknown handles and requests over budget change nothing.
        for h in [x, a, y + 1000, u64::MAX] {
            assert_eq!(
                g.call(&svc, RingRequest::TensorFree(HandleRequest { handle: h }))
                    .await
                    .err(),
                Some(Status::NotFound)
            );
            assert_eq!(
                g.call(&svc, RingRequest::GpuFree(HandleRequest { handle: h }))
                    .await
                    .err(),
                Some(Status::NotFound)
            );
        }
        assert_eq!(
            gpu_alloc(&mut g, &svc, 16 << 20, region).await.err(),
            Some(Status::NoMemory)
        );
    }
    let ledger = svc.tensors().ledger().clone();
    eventually("queued work has dropped the freed tensors", || {
        ledger.snapshot().pools.iter().all(|p| p.used == 0)
    })
    .await;
    match g
        .call(&svc, RingRequest::GpuStatus(GpuStatusRequest))
        .await
        .unwrap()
    {
        RingReply::GpuStatus(s) => {
            assert_eq!(s.host_caller, 0);
            assert!(s.regions.iter().all(|r| r.caller == 0 && r.used == 0));
        }
        other => panic!("{other:?}"),
    }
    let snap = ledger.snapshot();
    assert!(snap.refusals >= 64, "{snap:?}");
}
