//! The service core with a fake engine: FIFO fairness, one generation per model at a
//! time, keep-alive expiry, LRU eviction of idle models, the bounded queue,
//! cancellation, memory accounting.

mod service_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use nexus_ai::engine::{ChatMessage, FinishReason, SamplingParams};
use nexus_ai::service::{GenEvent, GenerateJob, KeepAlive, Prompt, ServiceConfig, ServiceError};
use service_support::{eventually, fake_service, fake_text, FAKE_MEMORY};

fn job(model: &str, prompt: &str, n: u32, keep_alive: Option<KeepAlive>) -> GenerateJob {
    GenerateJob {
        model: model.into(),
        prompt: Prompt::Raw(prompt.into()),
        params: SamplingParams {
            num_predict: Some(n),
            ..Default::default()
        },
        keep_alive,
        stream: true,
    }
}

fn loaded(s: &nexus_ai::service::Service) -> Vec<String> {
    s.running().into_iter().map(|r| r.entry.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_run_one_at_a_time_in_arrival_order_and_none_is_lost() {
    let (svc, ctl) = fake_service(ServiceConfig::default());
    ctl.set_delay(Duration::from_millis(5));
    let mut gens = Vec::new();
    for i in 0..12 {
        gens.push(
            svc.generate(job("alpha", &format!("request {i}"), 3, None))
                .await
                .unwrap(),
        );
    }
    let handles: Vec<_> = gens
        .into_iter()
        .map(|g| tokio::spawn(g.collect()))
        .collect();
    for h in handles {
        let (text, done) = h.await.unwrap().unwrap();
        assert_eq!(text, fake_text(3));
        assert_eq!(done.finish, FinishReason::Length);
        assert_eq!(done.stats.generated_tokens, 3);
    }
    let want: Vec<String> = (0..12).map(|i| format!("request {i}")).collect();
    assert_eq!(ctl.order(), want, "served in arrival order");
    assert_eq!(
        ctl.max_active.load(Ordering::SeqCst),
        1,
        "one generation at a time per model"
    );
    assert_eq!(ctl.loads.load(Ordering::SeqCst), 1, "loaded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_prompts_go_through_the_models_template() {
    let (svc, ctl) = fake_service(ServiceConfig::default());
    let j = GenerateJob {
        model: "alpha:latest".into(),
        prompt: Prompt::Chat(vec![
            ChatMessage {
                role: "system".into(),
                content: "be brief".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: "hi".into(),
            },
        ]),
        params: SamplingParams {
            num_predict: Some(1),
            ..Default::default()
        },
        keep_alive: None,
        stream: true,
    };
    svc.generate(j).await.unwrap().collect().await.unwrap();
    assert_eq!(
        ctl.order(),
        vec!["system: be brief\nuser: hi\n".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_zero_unloads_when_the_request_ends() {
    let (svc, ctl) = fake_service(ServiceConfig::default());
    svc.generate(job("alpha", "x", 2, Some(KeepAlive::For(Duration::ZERO))))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(loaded(&svc).is_empty());
    assert_eq!(ctl.drops.load(Ordering::SeqCst), 1, "the model was freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_expires_and_forever_does_not() {
    let (svc, _ctl) = fake_service(ServiceConfig::default());
    svc.spawn_expiry();
    svc.load("alpha", Some(KeepAlive::For(Duration::from_millis(200))))
        .await
        .unwrap();
    svc.load("beta", Some(KeepAlive::Forever)).await.unwrap();
    let ps = svc.running();
    assert_eq!(ps.len(), 2);
    assert!(ps
        .iter()
        .find(|r| r.entry.name == "beta:latest")
        .unwrap()
        .expires_at
        .is_none());
    assert!(ps
        .iter()
        .find(|r| r.entry.name == "alpha:latest")
        .unwrap()
        .expires_at
        .is_some());
    eventually("alpha's keep-alive expires", || {
        loaded(&svc) == vec!["beta:latest".to_string()]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_recently_used_idle_model_makes_room() {
    let (svc, _ctl) = fake_service(ServiceConfig {
        max_loaded: 2,
        ..Default::default()
    });
    svc.load("alpha", None).await.unwrap();
    svc.load("beta", None).await.unwrap();
    // Use alpha again: beta is now the least recently used.
    svc.generate(job("alpha", "x", 1, None))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    svc.load("gamma", None).await.unwrap();
    assert_eq!(
        loaded(&svc),
        vec!["alpha:latest".to_string(), "gamma:latest".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_model_is_not_evicted_the_new_one_waits() {
    let (svc, ctl) = fake_service(ServiceConfig {
        max_loaded: 1,
        ..Default::default()
    });
    ctl.set_delay(Duration::from_millis(20));
    let running = svc.generate(job("alpha", "long", 10, None)).await.unwrap();
    eventually("alpha is generating", || {
        ctl.active.load(Ordering::SeqCst) == 1
    })
    .await;
    let svc2 = svc.clone();
    let waiting = tokio::spawn(async move { svc2.load("beta", None).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        loaded(&svc),
        vec!["alpha:latest".to_string()],
        "alpha stays while busy"
    );
    let (text, _) = running.collect().await.unwrap();
    assert_eq!(text, fake_text(10));
    waiting.await.unwrap().unwrap();
    assert_eq!(loaded(&svc), vec!["beta:latest".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_and_recovers() {
    let (svc, ctl) = fake_service(ServiceConfig {
        max_queue: 2,
        ..Default::default()
    });
    ctl.set_delay(Duration::from_millis(10));
    let a = svc.generate(job("alpha", "a", 5, None)).await.unwrap();
    let b = svc.generate(job("alpha", "b", 5, None)).await.unwrap();
    let err = svc
        .generate(job("alpha", "c", 5, None))
        .await
        .err()
        .expect("third request refused");
    assert!(matches!(err, ServiceError::QueueFull(2)), "{err:?}");
    assert!(svc
        .render_metrics()
        .contains("nexus_ai_queue_rejected_total 1"));
    a.collect().await.unwrap();
    b.collect().await.unwrap();
    let (text, _) = svc
        .generate(job("alpha", "d", 1, None))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(text, fake_text(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_generation_cancels_it() {
    let (svc, ctl) = fake_service(ServiceConfig::default());
    ctl.set_delay(Duration::from_millis(2));
    let mut g = svc
        .generate(job("alpha", "endless", 100_000, None))
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(g.events.recv().await, Some(GenEvent::Piece(_))));
    }
    drop(g);
    eventually("the engine sees the cancellation", || {
        ctl.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("metrics count it", || svc.metrics().cancelled() == 1).await;
    assert!(svc.metrics().generated_tokens("alpha:latest") < 100_000);
    // The model is free again.
    let (text, _) = svc
        .generate(job("alpha", "next", 2, None))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(text, fake_text(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_while_queued_never_runs() {
    let (svc, ctl) = fake_service(ServiceConfig::default());
    ctl.set_delay(Duration::from_millis(10));
    let first = svc.generate(job("alpha", "first", 10, None)).await.unwrap();
    let queued = svc
        .generate(job("alpha", "queued", 10, None))
        .await
        .unwrap();
    drop(queued);
    first.collect().await.unwrap();
    svc.generate(job("alpha", "last", 1, None))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(ctl.order(), vec!["first".to_string(), "last".to_string()]);
    assert_eq!(svc.metrics().cancelled(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_accounted_per_model() {
    let (svc, _ctl) = fake_service(ServiceConfig::default());
    let r = svc.load("alpha", None).await.unwrap();
    assert_eq!(r.memory_bytes, FAKE_MEMORY);
    svc.load("embedder", None).await.unwrap();
    let ps = svc.running();
    assert!(ps.iter().all(|r| r.memory.total() == FAKE_MEMORY));
    let m = svc.render_metrics();
    assert!(
        m.contains(&format!("nexus_ai_memory_bytes {}", 2 * FAKE_MEMORY)),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "nexus_ai_model_memory_bytes{{model=\"alpha:latest\"}} {FAKE_MEMORY}"
        )),
        "{m}"
    );
    assert!(m.contains("nexus_ai_loaded_models 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_model_kind_unknown_model_and_load_failure_are_errors() {
    let (svc, _ctl) = fake_service(ServiceConfig::default());
    assert!(matches!(
        svc.generate(job("nope", "x", 1, None)).await.err(),
        Some(ServiceError::ModelNotFound(_))
    ));
    assert!(matches!(
        svc.generate(job("embedder", "x", 1, None)).await.err(),
        Some(ServiceError::BadRequest(_))
    ));
    assert!(matches!(
        svc.embed("alpha", vec!["x".into()], None).await.err(),
        Some(ServiceError::BadRequest(_))
    ));
    assert!(matches!(
        svc.load("broken", None).await.err(),
        Some(ServiceError::Engine(_))
    ));
    assert!(loaded(&svc).is_empty());
    // Failed requests left no queue places taken.
    assert!(svc.render_metrics().contains("nexus_ai_queue_depth 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_cap_unloads_idle_models_and_refuses_what_cannot_fit() {
    // Room for two fake models (1 MB each), not three.
    let (svc, _ctl) = fake_service(ServiceConfig {
        max_memory: Some(2 * FAKE_MEMORY + FAKE_MEMORY / 2),
        ..Default::default()
    });
    svc.load("alpha", None).await.unwrap();
    svc.load("beta", None).await.unwrap();
    svc.load("gamma", None).await.unwrap();
    assert_eq!(
        loaded(&svc),
        vec!["beta:latest".to_string(), "gamma:latest".to_string()],
        "the least recently used idle model was unloaded to stay under the cap"
    );
    let held: u64 = svc.running().iter().map(|r| r.memory.total()).sum();
    assert!(held <= 2 * FAKE_MEMORY + FAKE_MEMORY / 2);

    // A cap smaller than the model itself: refused with a clear error, nothing unloaded.
    let (tiny, _) = fake_service(ServiceConfig {
        max_memory: Some(100),
        ..Default::default()
    });
    let err = tiny.load("alpha", None).await.expect_err("refused");
    assert!(
        matches!(err, ServiceError::InsufficientMemory(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("memory cap"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_non_streamed_generation_cancels_it_too() {
    let (svc, ctl) = fake_service(ServiceConfig::default());
    ctl.set_delay(Duration::from_millis(2));
    let mut j = job("alpha", "endless", 100_000, None);
    j.stream = false;
    let g = svc.generate(j).await.unwrap();
    eventually("generation started", || {
        ctl.active.load(Ordering::SeqCst) == 1
    })
    .await;
    drop(g);
    eventually("the engine sees the cancellation", || {
        ctl.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    // Not streamed: the text comes in one piece at the end.
    let mut j = job("alpha", "short", 5, None);
    j.stream = false;
    let mut g = svc.generate(j).await.unwrap();
    assert!(matches!(g.events.recv().await, Some(GenEvent::Piece(p)) if p == fake_text(5)));
    assert!(matches!(g.events.recv().await, Some(GenEvent::Done(Ok(_)))));
}
