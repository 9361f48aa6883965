//! The HTTP API over a fake engine on an ephemeral loopback port: status codes and
//! JSON errors for bad input, auth, the body limit, the full queue, concurrency,
//! cancellation on disconnect, streaming shapes, load/unload, pull and delete.

mod service_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use nexus_ai::api::ApiConfig;
use nexus_ai::service::ServiceConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};
use service_support::{eventually, fake_service, fake_text, serve};

async fn setup(
    config: ServiceConfig,
    api: ApiConfig,
) -> (String, std::sync::Arc<service_support::Control>) {
    let (svc, ctl) = fake_service(config);
    let addr = serve(svc, api).await;
    (format!("http://{addr}"), ctl)
}

async fn post_raw(url: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, v)
}

async fn post(url: &str, body: Value) -> (StatusCode, Value) {
    post_raw(url, body.to_string()).await
}

fn error_text(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error string in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_and_wrong_types_are_400_with_a_json_error() {
    let (base, _) = setup(ServiceConfig::default(), ApiConfig::default()).await;
    for (path, body) in [
        ("/api/generate", "{\"model\": "),
        ("/api/generate", "not json"),
        ("/api/chat", "[1,2]"),
        ("/api/generate", ""),
        ("/api/generate", "{\"model\": 5, \"prompt\": \"x\"}"),
        (
            "/api/generate",
            "{\"model\": \"alpha\", \"prompt\": \"x\", \"stream\": \"yes\"}",
        ),
        (
            "/api/generate",
            "{\"model\": \"alpha\", \"prompt\": \"x\", \"options\": {\"temperature\": \"hot\"}}",
        ),
        (
            "/api/generate",
            "{\"model\": \"alpha\", \"prompt\": \"x\", \"keep_alive\": \"soon\"}",
        ),
        (
            "/api/chat",
            "{\"model\": \"alpha\", \"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}",
        ),
        ("/api/chat", "{\"model\": \"alpha\", \"messages\": \"hi\"}"),
        ("/api/embed", "{\"model\": \"embedder\", \"input\": 42}"),
        ("/api/show", "{}"),
        ("/api/pull", "{\"model\": [1]}"),
    ] {
        let (status, v) = post_raw(&format!("{base}{path}"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {v}");
        assert!(!error_text(&v).is_empty());
    }
    // OpenAI routes: 400 with OpenAI's error object.
    let (status, v) = post_raw(&format!("{base}/v1/chat/completions"), "{oops").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_are_404() {
    let (base, _) = setup(ServiceConfig::default(), ApiConfig::default()).await;
    for (path, body) in [
        ("/api/generate", json!({"model": "nope", "prompt": "x"})),
        (
            "/api/chat",
            json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        ),
        ("/api/show", json!({"model": "nope"})),
        ("/api/embed", json!({"model": "nope", "input": "x"})),
        ("/api/generate", json!({"model": "nope", "prompt": ""})),
    ] {
        let (status, v) = post(&format!("{base}{path}"), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {v}");
        assert!(error_text(&v).contains("nope"), "{v}");
    }
    let r = reqwest::Client::new()
        .delete(format!("{base}/api/delete"))
        .body(json!({"model": "nope"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (status, v) = post(
        &format!("{base}/v1/chat/completions"),
        json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["error"]["message"].as_str().unwrap().contains("nope"));
    // Unknown routes and methods answer JSON too.
    let r = reqwest::get(format!("{base}/api/nothing")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = reqwest::get(format!("{base}/api/generate")).await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let (base, _) = setup(
        ServiceConfig::default(),
        ApiConfig {
            max_body_bytes: 1024,
            ..Default::default()
        },
    )
    .await;
    let big = json!({"model": "alpha", "prompt": "x".repeat(4096)}).to_string();
    let (status, v) = post_raw(&format!("{base}/api/generate"), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(error_text(&v).contains("too large"));
    // Just under the limit is fine.
    let (status, _) = post(
        &format!("{base}/api/generate"),
        json!({"model": "alpha", "prompt": "x".repeat(900), "stream": false}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_required() {
    let (base, _) = setup(
        ServiceConfig::default(),
        ApiConfig {
            token: Some("s3cret".into()),
            ..Default::default()
        },
    )
    .await;
    let c = reqwest::Client::new();
    let r = c.get(format!("{base}/api/tags")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("token"));
    let r = c
        .get(format!("{base}/api/tags"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .post(format!("{base}/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(format!("{base}/api/tags"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["models"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_503() {
    let (base, ctl) = setup(
        ServiceConfig {
            max_queue: 1,
            ..Default::default()
        },
        ApiConfig::default(),
    )
    .await;
    ctl.set_delay(Duration::from_millis(5));
    let c = reqwest::Client::new();
    let mut first = c
        .post(format!("{base}/api/generate"))
        .body(
            json!({"model": "alpha", "prompt": "hold", "options": {"num_predict": 400}})
                .to_string(),
        )
        .send()
        .await
        .unwrap()
        .bytes_stream();
    assert!(first.next().await.is_some(), "first request is streaming");
    let (status, v) = post(
        &format!("{base}/api/generate"),
        json!({"model": "alpha", "prompt": "x", "stream": false}),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(error_text(&v).contains("busy"));
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_all_complete_one_generation_at_a_time() {
    let (base, ctl) = setup(ServiceConfig::default(), ApiConfig::default()).await;
    ctl.set_delay(Duration::from_millis(2));
    let c = reqwest::Client::new();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (c, base) = (c.clone(), base.clone());
            tokio::spawn(async move {
                let body = json!({"model": "alpha", "prompt": format!("p{i}"), "stream": i % 2 == 0, "options": {"num_predict": 4}});
                let r = c.post(format!("{base}/api/generate")).body(body.to_string()).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                let text = r.text().await.unwrap();
                // Streamed or not, the concatenated responses are the whole text.
                let mut out = String::new();
                for line in text.lines() {
                    out.push_str(serde_json::from_str::<Value>(line).unwrap()["response"].as_str().unwrap());
                }
                assert_eq!(out, fake_text(4), "request {i}");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut seen = ctl.order();
    seen.sort();
    let mut want: Vec<String> = (0..16).map(|i| format!("user: p{i}\n")).collect();
    want.sort();
    assert_eq!(seen, want, "every request ran exactly once");
    assert_eq!(ctl.max_active.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnecting_mid_stream_cancels_its_generation() {
    let (base, ctl) = setup(ServiceConfig::default(), ApiConfig::default()).await;
    ctl.set_delay(Duration::from_millis(2));
    let c = reqwest::Client::new();
    for path in ["/api/generate", "/v1/chat/completions"] {
        let before = ctl.cancelled.load(Ordering::SeqCst);
        let body = if path == "/api/generate" {
            json!({"model": "alpha", "prompt": "forever", "options": {"num_predict": 1_000_000}})
        } else {
            json!({"model": "alpha", "stream": true, "max_tokens": 1_000_000, "messages": [{"role": "user", "content": "forever"}]})
        };
        let r = c
            .post(format!("{base}{path}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let mut s = r.bytes_stream();
        s.next().await.unwrap().unwrap();
        s.next().await.unwrap().unwrap();
        drop(s);
        eventually("the engine sees the cancellation", || {
            ctl.cancelled.load(Ordering::SeqCst) == before + 1
        })
        .await;
    }
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("nexus_ai_generations_cancelled_total 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_and_single_replies_have_ollamas_shape() {
    let (base, _) = setup(ServiceConfig::default(), ApiConfig::default()).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/api/chat"))
        .body(json!({"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 3}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    for l in &lines[..3] {
        assert_eq!(l["done"], false);
        assert_eq!(l["message"]["role"], "assistant");
        assert_eq!(l["model"], "alpha:latest");
        assert!(l["created_at"].as_str().unwrap().ends_with('Z'));
    }
    let last = &lines[3];
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "length");
    assert_eq!(last["eval_count"], 3);
    assert_eq!(last["prompt_eval_count"], "user: hi\n".len());
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(last[k].is_u64(), "{k} in {last}");
    }
    let (status, v) = post(
        &format!("{base}/api/generate"),
        json!({"model": "alpha", "prompt": "hi", "stream": false, "options": {"num_predict": 2}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["response"], fake_text(2));
    assert_eq!(v["done"], true);
    assert_eq!(v["eval_count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_prompt_loads_and_keep_alive_zero_unloads() {
    let (base, _) = setup(ServiceConfig::default(), ApiConfig::default()).await;
    let (status, v) = post(
        &format!("{base}/api/generate"),
        json!({"model": "alpha", "stream": false}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["done_reason"], "load");
    let ps: Value = reqwest::get(format!("{base}/api/ps"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ps["models"][0]["name"], "alpha:latest");
    assert_eq!(ps["models"][0]["size"], service_support::FAKE_MEMORY);
    let (_, v) = post(
        &format!("{base}/api/chat"),
        json!({"model": "alpha", "messages": [], "keep_alive": 0, "stream": false}),
    )
    .await;
    assert_eq!(v["done_reason"], "unload");
    let ps: Value = reqwest::get(format!("{base}/api/ps"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ps["models"], json!([]));
    // keep_alive 0 on a real request unloads after it.
    let (_, v) = post(
        &format!("{base}/api/generate"),
        json!({"model": "alpha", "prompt": "x", "keep_alive": "0s", "stream": false}),
    )
    .await;
    assert_eq!(v["done"], true);
    let ps: Value = reqwest::get(format!("{base}/api/ps"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ps["models"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_streams_progress_and_delete_removes() {
    let (base, _) = setup(ServiceConfig::default(), ApiConfig::default()).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/api/pull"))
        .body(json!({"model": "delta"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let lines: Vec<Value> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["status"], "pulling manifest");
    assert!(lines
        .iter()
        .any(|l| l["completed"] == 50 && l["total"] == 100));
    assert_eq!(lines.last().unwrap()["status"], "success");
    let (status, v) = post(&format!("{base}/api/pull"), json!({"model": "llama3:70b"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_text(&v).contains("offline"), "{v}");

    let c = reqwest::Client::new();
    let r = c
        .delete(format!("{base}/api/delete"))
        .body(json!({"model": "delta"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tags: Value = reqwest::get(format!("{base}/api/tags"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "delta:latest"));
    let r = c
        .delete(format!("{base}/api/delete"))
        .body(json!({"model": "delta"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_routes_have_openais_shape() {
    let (base, _) = setup(ServiceConfig::default(), ApiConfig::default()).await;
    let body = json!({"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": true, "stream_options": {"include_usage": true}});
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, fake_text(3));
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "length"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 3);
    assert_eq!(
        usage["total_tokens"],
        usage["prompt_tokens"].as_u64().unwrap() + 3
    );

    let (status, v) = post(
        &format!("{base}/v1/chat/completions"),
        json!({"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], fake_text(2));
    assert_eq!(v["usage"]["completion_tokens"], 2);

    let models: Value = reqwest::get(format!("{base}/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "alpha:latest"));

    let (status, v) = post(
        &format!("{base}/v1/embeddings"),
        json!({"model": "embedder", "input": ["aaaa", "bbbb"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"][0]["embedding"], json!([1.0, 0.0, 0.0, 0.0]));
    assert_eq!(v["data"][1]["index"], 1);
    let (_, v) = post(
        &format!("{base}/v1/embeddings"),
        json!({"model": "embedder", "input": "aaaa", "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(v["data"][0]["embedding"], "AACAPwAAAAAAAAAAAAAAAA==");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_giving_up_on_a_non_streamed_request_cancels_it() {
    let (base, ctl) = setup(ServiceConfig::default(), ApiConfig::default()).await;
    ctl.set_delay(Duration::from_millis(2));
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let body = json!({"model": "alpha", "prompt": "forever", "stream": false, "options": {"num_predict": 1_000_000}});
    let r = c
        .post(format!("{base}/api/generate"))
        .body(body.to_string())
        .send()
        .await;
    assert!(r.is_err(), "the client timed out");
    eventually("the engine sees the cancellation", || {
        ctl.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
}
