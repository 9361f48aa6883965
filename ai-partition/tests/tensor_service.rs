//! The tensor and GPU groups end to end in the AI service: requests encoded into a
//! guest's ring and answered by `serve_slot` as the calling partition, bulk bytes
//! through the ring's data area; the same service over HTTP; the ledger in /metrics.

mod service_support;

use nexus_abi::ring::{
    Axes, DType, Direction, FillKind, GpuAllocRequest, GpuStatusRequest, GpuSyncRequest,
    HandleRequest, OpCode, Placement, Ring, RingMut, RingReply, RingRequest, Shape,
    TensorCreateRequest, TensorFillRequest, TensorOpRequest, TensorTransferRequest, VramRegion,
};
use nexus_abi::Status;
use nexus_ai::abi::serve_slot;
use nexus_ai::api::ApiConfig;
use nexus_ai::service::{Service, ServiceConfig};
use nexus_tensor::Tenant;
use serde_json::{json, Value};

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
