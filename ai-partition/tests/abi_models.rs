//! The hypercall ABI's model calls end to end through the ring encoding: a guest-side
//! request is encoded into a ring, decoded and answered by the service core, the reply
//! encoded back and decoded as the guest would, and compared with what the HTTP API
//! reports for the same service.

mod service_support;

use nexus_abi::ring::{
    ModelListRequest, ModelLoadRequest, ModelName, Ring, RingMut, RingReply, RingRequest,
};
use nexus_abi::{Hypercall, Status};
use nexus_ai::abi::serve_slot;
use nexus_ai::api::ApiConfig;
use nexus_ai::service::{Service, ServiceConfig};
use nexus_tensor::Tenant;
use serde_json::{json, Value};

/// A guest's ring plus the service answering it.
struct Guest {
    mem: Vec<u8>,
    next_id: u64,
}

impl Guest {
    fn new() -> Self {
        let mut mem = vec![0u8; 64 << 10];
        RingMut::init(&mut mem, 8).unwrap();
        Self { mem, next_id: 1 }
    }

    /// Submit `req` in slot 0, let the service answer, and return the descriptor's
    /// status and a copy of the reply bytes.
    async fn call(&mut self, svc: &Service, req: RingRequest<'_>) -> (Status, Vec<u8>) {
        let call = req.call();
        let id = self.next_id;
        self.next_id += 1;
        RingMut::open(&mut self.mem)
            .unwrap()
            .submit_in_slot(0, id, &req)
            .unwrap();
        let done = serve_slot(svc, Tenant::partition(1), &mut self.mem, 0, call)
            .await
            .unwrap();
        assert!(done.is_done());
        assert_eq!(done.request_id, id);
        let ring = Ring::new(&self.mem).unwrap();
        assert_eq!(ring.header().consumer, ring.header().producer, "completed");
        let d = ring.descriptor(0).unwrap();
        (
            d.status,
            ring.data(d.reply_offset, d.reply_len).unwrap().to_vec(),
        )
    }
}

async fn get(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}{path}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn show(base: &str, model: &str) -> Value {
    reqwest::Client::new()
        .post(format!("{base}/api/show"))
        .body(json!({"model": model}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Drive load, list, info and unload for `model` and compare with HTTP.
async fn model_calls_match_http(svc: Service, model: &str) {
    let addr = service_support::serve(svc.clone(), ApiConfig::default()).await;
    let base = format!("http://{addr}");
    let mut g = Guest::new();

    // ai_model_load
    let (st, bytes) = g
        .call(
            &svc,
            RingRequest::ModelLoad(ModelLoadRequest {
                name: model,
                keep_alive_secs: -1,
            }),
        )
        .await;
    assert_eq!(st, Status::Success);
    let RingReply::ModelLoad(load) = RingReply::decode(Hypercall::AiModelLoad, &bytes).unwrap()
    else {
        panic!()
    };
    let ps = get(&base, "/api/ps").await;
    let canonical = ps["models"][0]["name"].as_str().unwrap().to_string();
    assert_eq!(
        load.size_bytes,
        ps["models"][0]["size"].as_u64().unwrap(),
        "memory as /api/ps reports it"
    );
    assert!(load.size_bytes > 0);
    // Loading again is free.
    let (_, bytes) = g
        .call(
            &svc,
            RingRequest::ModelLoad(ModelLoadRequest {
                name: model,
                keep_alive_secs: -1,
            }),
        )
        .await;
    let RingReply::ModelLoad(again) = RingReply::decode(Hypercall::AiModelLoad, &bytes).unwrap()
    else {
        panic!()
    };
    assert_eq!(again.load_duration_ns, 0);

    // ai_model_list, in pages of one, against /api/tags
    let tags = get(&base, "/api/tags").await;
    let tags = tags["models"].as_array().unwrap();
    let mut listed = Vec::new();
    let mut start = 0;
    loop {
        let (st, bytes) = g
            .call(
                &svc,
                RingRequest::ModelList(ModelListRequest {
                    start,
                    max_entries: 1,
                }),
            )
            .await;
        assert_eq!(st, Status::Success);
        let RingReply::ModelList(page) = RingReply::decode(Hypercall::AiModelList, &bytes).unwrap()
        else {
            panic!()
        };
        assert_eq!(page.total as usize, tags.len());
        let entries: Vec<_> = page.entries.iter().collect();
        if entries.is_empty() {
            break;
        }
        assert_eq!(entries.len(), 1, "no more than asked for");
        let e = entries[0];
        listed.push((
            e.name.to_string(),
            e.size_bytes,
            e.loaded,
            e.family.to_string(),
            e.parameter_size.to_string(),
            e.quantization.to_string(),
        ));
        start += 1;
    }
    let from_http: Vec<_> = tags
        .iter()
        .map(|t| {
            let name = t["name"].as_str().unwrap().to_string();
            let loaded = name == canonical;
            let d = &t["details"];
            (
                name,
                t["size"].as_u64().unwrap(),
                loaded,
                d["family"].as_str().unwrap().to_string(),
                d["parameter_size"].as_str().unwrap().to_string(),
                d["quantization_level"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(listed, from_http);

    // ai_model_info against /api/show
    let (st, bytes) = g
        .call(&svc, RingRequest::ModelInfo(ModelName { name: model }))
        .await;
    assert_eq!(st, Status::Success);
    let RingReply::ModelInfo(info) = RingReply::decode(Hypercall::AiModelInfo, &bytes).unwrap()
    else {
        panic!()
    };
    let sh = show(&base, model).await;
    assert_eq!(info.name, canonical);
    assert_eq!(info.family, sh["details"]["family"]);
    assert_eq!(info.format, sh["details"]["format"]);
    assert_eq!(info.parameter_size, sh["details"]["parameter_size"]);
    assert_eq!(info.quantization, sh["details"]["quantization_level"]);
    assert!(info.loaded);
    assert!(info.context_length > 0);

    // ai_model_unload, then HTTP sees it gone
    let (_, bytes) = g
        .call(&svc, RingRequest::ModelUnload(ModelName { name: model }))
        .await;
    let RingReply::ModelUnload(u) = RingReply::decode(Hypercall::AiModelUnload, &bytes).unwrap()
    else {
        panic!()
    };
    assert!(u.was_loaded);
    assert_eq!(get(&base, "/api/ps").await["models"], json!([]));
    let (_, bytes) = g
        .call(&svc, RingRequest::ModelUnload(ModelName { name: model }))
        .await;
    let RingReply::ModelUnload(u) = RingReply::decode(Hypercall::AiModelUnload, &bytes).unwrap()
    else {
        panic!()
    };
    assert!(!u.was_loaded);

    // Errors are ABI statuses, with nothing written.
    for req in [
        RingRequest::ModelLoad(ModelLoadRequest {
            name: "no-such-model",
            keep_alive_secs: 5,
        }),
        RingRequest::ModelInfo(ModelName {
            name: "no-such-model",
        }),
        RingRequest::ModelUnload(ModelName {
            name: "no-such-model",
        }),
    ] {
        let (st, bytes) = g.call(&svc, req).await;
        assert_eq!(st, Status::NotFound);
        assert!(bytes.is_empty());
    }
    // HTTP says 404 for the same model.
    let r = reqwest::Client::new()
        .post(format!("{base}/api/show"))
        .body(json!({"model": "no-such-model"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_calls_through_the_ring_match_http_fake_engine() {
    let (svc, _) = service_support::fake_service(ServiceConfig::default());
    model_calls_match_http(svc, "alpha").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
async fn model_calls_through_the_ring_match_http_real_models() {
    let store = nexus_ai::models::ModelStore::open_default().unwrap();
    let config = ServiceConfig {
        load: nexus_ai::engine::LoadOptions {
            n_threads: 1,
            n_ctx: 512,
            ..Default::default()
        },
        ..Default::default()
    };
    model_calls_match_http(Service::with_store(store, config), "smollm2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_call_or_garbage_is_rejected() {
    let (svc, _) = service_support::fake_service(ServiceConfig::default());
    let mut g = Guest::new();
    // A descriptor for ai_model_info served as ai_model_load: InvalidArgument.
    RingMut::open(&mut g.mem)
        .unwrap()
        .submit_in_slot(0, 9, &RingRequest::ModelInfo(ModelName { name: "alpha" }))
        .unwrap();
    let d = serve_slot(
        &svc,
        Tenant::partition(1),
        &mut g.mem,
        0,
        Hypercall::AiModelLoad,
    )
    .await
    .unwrap();
    assert_eq!(d.status, Status::InvalidArgument);
    // A call from another group: Unsupported by the model service.
    let reply = nexus_ai::abi::answer(&svc, Hypercall::GpuSync, &[0u8; 12], 64).await;
    assert_eq!(reply, Err(Status::Unsupported));
    // A truncated payload: InvalidArgument.
    assert_eq!(
        nexus_ai::abi::answer(&svc, Hypercall::AiModelLoad, &[5, 0, b'a'], 64).await,
        Err(Status::InvalidArgument)
    );
    // A broken ring is reported, not answered.
    let mut junk = vec![0u8; 8192];
    assert_eq!(
        serve_slot(
            &svc,
            Tenant::partition(1),
            &mut junk,
            0,
            Hypercall::AiModelList
        )
        .await
        .err(),
        Some(Status::BadRing)
    );
}
