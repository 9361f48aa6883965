//! Continuous batching in the service, with the test-double engine: requests share a
//! model's parallel slots and advance in the same steps, wait in arrival order when every
//! slot is taken, give their slot up at once when the client leaves, and show in /api/ps
//! and /metrics. A full queue is still 503. Real-model batching (identical greedy output
//! alone and batched) is in `api_real.rs`.

mod service_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nexus_ai::api::ApiConfig;
use nexus_ai::engine::{FinishReason, LoadOptions, SamplingParams};
use nexus_ai::service::{GenEvent, GenerateJob, Prompt, ServiceConfig, ServiceError};
use reqwest::StatusCode;
use serde_json::{json, Value};
use service_support::{eventually, fake_service, fake_text, serve};

fn parallel(n: u32) -> ServiceConfig {
    ServiceConfig {
        load: LoadOptions {
            n_parallel: n,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn job(prompt: &str, n: u32) -> GenerateJob {
    GenerateJob {
        model: "alpha".into(),
        prompt: Prompt::Raw(prompt.into()),
        params: SamplingParams {
            num_predict: Some(n),
            ..Default::default()
        },
        keep_alive: None,
        stream: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_decode_together_in_the_models_slots() {
    let (svc, ctl) = fake_service(parallel(4));
    ctl.set_delay(Duration::from_millis(5));
    let mut gens = Vec::new();
    for i in 0..4 {
        gens.push(svc.generate(job(&format!("r{i}"), 20)).await.unwrap());
    }
    let handles: Vec<_> = gens
        .into_iter()
        .map(|g| tokio::spawn(g.collect()))
        .collect();
    for h in handles {
        let (text, done) = h.await.unwrap().unwrap();
        assert_eq!(text, fake_text(20));
        assert_eq!(done.finish, FinishReason::Length);
    }
    assert_eq!(
        ctl.max_active.load(Ordering::SeqCst),
        4,
        "all four ran at once"
    );
    assert_eq!(ctl.max_batch.load(Ordering::SeqCst), 4, "in the same steps");
    // 4 x 20 tokens in about 20 steps (a few more while requests trickle in), not 80.
    let steps = ctl.steps.load(Ordering::SeqCst);
    assert!(steps < 40, "{steps} steps for 80 tokens");
    assert_eq!(ctl.loads.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_slots_requests_wait_in_arrival_order() {
    let (svc, ctl) = fake_service(parallel(2));
    ctl.set_delay(Duration::from_millis(3));
    let mut gens = Vec::new();
    for i in 0..8 {
        gens.push(svc.generate(job(&format!("r{i}"), 3)).await.unwrap());
    }
    let handles: Vec<_> = gens
        .into_iter()
        .map(|g| tokio::spawn(g.collect()))
        .collect();
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap().0, fake_text(3));
    }
    let want: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    assert_eq!(ctl.order(), want, "started in arrival order");
    assert_eq!(
        ctl.max_active.load(Ordering::SeqCst),
        2,
        "never more than the slots"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_frees_its_slot_for_the_next_at_once() {
    let (svc, ctl) = fake_service(parallel(1));
    ctl.set_delay(Duration::from_millis(2));
    let mut endless = svc.generate(job("endless", 1_000_000)).await.unwrap();
    assert!(matches!(
        endless.events.recv().await,
        Some(GenEvent::Piece(_))
    ));
    // Queued behind the only slot.
    let next = svc.generate(job("next", 2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        ctl.order(),
        vec!["endless".to_string()],
        "the slot is taken"
    );
    let dropped = Instant::now();
    drop(endless);
    let (text, _) = next.collect().await.unwrap();
    assert_eq!(text, fake_text(2));
    // A liveness bound (a few steps of 2 ms), not a timing benchmark.
    assert!(dropped.elapsed() < Duration::from_secs(5));
    assert_eq!(ctl.cancelled.load(Ordering::SeqCst), 1);
    assert_eq!(svc.metrics().cancelled(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_limit_still_answers_busy_with_batching() {
    let (svc, ctl) = fake_service(ServiceConfig {
        max_queue: 3,
        ..parallel(2)
    });
    ctl.set_delay(Duration::from_millis(5));
    let a = svc.generate(job("a", 50)).await.unwrap();
    let b = svc.generate(job("b", 50)).await.unwrap();
    let c = svc.generate(job("c", 5)).await.unwrap();
    let err = svc.generate(job("d", 5)).await.err().expect("refused");
    assert!(matches!(err, ServiceError::QueueFull(3)), "{err:?}");
    for g in [a, b, c] {
        g.collect().await.unwrap();
    }
    svc.generate(job("e", 1))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ps_and_metrics_show_slots_in_use_and_queued() {
    let (svc, ctl) = fake_service(parallel(2));
    ctl.set_delay(Duration::from_millis(5));
    let addr = serve(svc.clone(), ApiConfig::default()).await;
    let base = format!("http://{addr}");
    let gens: Vec<_> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(svc.generate(job(&format!("r{i}"), 400)).await.unwrap());
        }
        v
    };
    eventually("two slots busy, one queued", || {
        svc.running()
            .first()
            .is_some_and(|r| r.load.slots_busy == 2 && r.load.queued == 1)
    })
    .await;
    let ps: Value = reqwest::get(format!("{base}/api/ps"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let m = &ps["models"][0];
    assert_eq!(
        (
            m["parallel"].as_u64(),
            m["slots_busy"].as_u64(),
            m["queued"].as_u64()
        ),
        (Some(2), Some(2), Some(1)),
        "{m}"
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "nexus_ai_parallel_slots{model=\"alpha:latest\"} 2",
        "nexus_ai_slots_busy{model=\"alpha:latest\"} 2",
        "nexus_ai_requests_queued{model=\"alpha:latest\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    drop(gens);
    eventually("all slots free again", || {
        svc.running()
            .first()
            .is_some_and(|r| r.load.slots_busy == 0 && r.load.queued == 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http_a_disconnect_mid_stream_lets_the_waiting_request_run() {
    let (svc, ctl) = fake_service(parallel(1));
    ctl.set_delay(Duration::from_millis(2));
    let addr = serve(svc, ApiConfig::default()).await;
    let base = format!("http://{addr}");
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{base}/api/generate"))
        .body(
            json!({"model": "alpha", "prompt": "forever", "options": {"num_predict": 1_000_000}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let mut s = r.bytes_stream();
    s.next().await.unwrap().unwrap();
    let waiting = tokio::spawn({
        let (c, base) = (c.clone(), base.clone());
        async move {
            let r = c
                .post(format!("{base}/api/generate"))
                .body(json!({"model": "alpha", "prompt": "next", "stream": false, "options": {"num_predict": 3}}).to_string())
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!waiting.is_finished(), "the only slot is busy");
    drop(s);
    let (status, v) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["response"], fake_text(3));
}

#[test]
fn parallel_zero_is_refused_with_a_clear_error() {
    let exe = env!("CARGO_BIN_EXE_nexus-ai");
    for (args, env, says) in [
        (vec!["serve", "--parallel", "0"], None, "--parallel"),
        (vec!["serve", "--parallel", "many"], None, "--parallel"),
        (
            vec!["serve"],
            Some(("NEXUS_AI_NUM_PARALLEL", "0")),
            "parallel",
        ),
        (
            vec!["serve", "--port", "0"],
            Some(("OLLAMA_NUM_PARALLEL", "0")),
            "OLLAMA_NUM_PARALLEL",
        ),
    ] {
        let mut c = std::process::Command::new(exe);
        c.args(&args)
            .env_remove("NEXUS_AI_NUM_PARALLEL")
            .env_remove("OLLAMA_NUM_PARALLEL");
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?} was accepted");
        assert!(err.contains(says), "{args:?} {env:?}: {err}");
    }
}
