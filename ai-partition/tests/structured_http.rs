//! Structured output and tool calls over HTTP with the test-double engine: what reaches the
//! engine for each `format` / `response_format`, how tool calls are shaped for Ollama and
//! OpenAI clients (streamed and not), and 400s for every malformed or unsupported request.
//! That the grammar really constrains a model's output is tested with SmolLM2 in
//! `structured_real.rs`.

mod service_support;

use std::sync::Arc;

use futures_util::StreamExt;
use nexus_ai::api::ApiConfig;
use nexus_ai::engine::OutputFormat;
use nexus_ai::service::ServiceConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};
use service_support::{fake_service, serve, Control};

async fn setup() -> (String, Arc<Control>) {
    let (svc, ctl) = fake_service(ServiceConfig::default());
    let addr = serve(svc, ApiConfig::default()).await;
    (format!("http://{addr}"), ctl)
}

async fn post(url: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text})),
    )
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_reach_the_engine_as_grammar_constraints() {
    let (base, ctl) = setup().await;
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]});
    let cases = [
        (
            "/api/generate",
            json!({"model": "alpha", "prompt": "x", "stream": false, "format": "json"}),
            Some(OutputFormat::JsonObject),
        ),
        (
            "/api/generate",
            json!({"model": "alpha", "prompt": "x", "stream": false, "format": ""}),
            None,
        ),
        (
            "/api/chat",
            json!({"model": "alpha", "messages": user("x"), "stream": false, "format": schema}),
            Some(OutputFormat::Schema(schema.clone())),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "alpha", "messages": user("x"), "response_format": {"type": "json_object"}}),
            Some(OutputFormat::JsonObject),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "alpha", "messages": user("x"), "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": true}}}),
            Some(OutputFormat::Schema(schema.clone())),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "alpha", "messages": user("x"), "response_format": {"type": "text"}}),
            None,
        ),
    ];
    for (path, body, want) in cases {
        let (status, v) = post(&format!("{base}{path}"), body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}: {v}");
        assert_eq!(ctl.formats.lock().unwrap().pop().unwrap(), want, "{body}");
    }
    // The schema's property order is kept (a model answers in the order it is asked).
    let Some(OutputFormat::Schema(s)) = ({
        post(&format!("{base}/api/generate"), json!({"model": "alpha", "prompt": "x", "stream": false, "format": {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "string"}}}})).await;
        ctl.formats.lock().unwrap().pop().unwrap()
    }) else {
        panic!("a schema")
    };
    let keys: Vec<&String> = s["properties"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["zeta", "alpha"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_unsupported_formats_are_400() {
    let (base, ctl) = setup().await;
    for (body, says) in [
        (
            json!({"model": "alpha", "prompt": "x", "format": "yaml"}),
            "format must be",
        ),
        (
            json!({"model": "alpha", "prompt": "x", "format": 3}),
            "format must be",
        ),
        (
            json!({"model": "alpha", "prompt": "x", "format": {"type": "object", "properties": {"a": {"type": "string", "pattern": "^a"}}}}),
            "\"pattern\" at /properties/a",
        ),
        (
            json!({"model": "alpha", "prompt": "x", "format": {"type": "object", "required": ["missing"]}}),
            "required property \"missing\"",
        ),
        (
            json!({"model": "alpha", "prompt": "x", "format": {"type": "widget"}}),
            "unknown type",
        ),
        (
            json!({"model": "alpha", "messages": user("x"), "format": {"$ref": "#/$defs/Nope"}}),
            "cannot resolve",
        ),
    ] {
        let path = if body.get("messages").is_some() {
            "/api/chat"
        } else {
            "/api/generate"
        };
        let (status, v) = post(&format!("{base}{path}"), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(says), "{body}: {e}");
    }
    for (rf, says) in [
        (json!("json"), "must be an object"),
        (json!({"type": "xml"}), "text, json_object or json_schema"),
        (json!({"type": "json_schema"}), "json_schema"),
        (
            json!({"type": "json_schema", "json_schema": {"name": "x"}}),
            "schema is required",
        ),
        (
            json!({"type": "json_schema", "json_schema": {"schema": {"type": "object", "if": {}}}}),
            "\"if\"",
        ),
    ] {
        let (status, v) = post(
            &format!("{base}/v1/chat/completions"),
            json!({"model": "alpha", "messages": user("x"), "response_format": rf}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{rf}: {v}");
        let e = v["error"]["message"].as_str().unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(e.contains(says), "{rf}: {e}");
    }
    assert!(ctl.order().is_empty(), "nothing bad reached the engine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tool_shapes_are_400() {
    let (base, ctl) = setup().await;
    let bad_tools = [
        (json!("get_weather"), "invalid request"),
        (json!(["get_weather"]), "tools[0] must be an object"),
        (json!([{"type": "function"}]), "tools[0].function"),
        (
            json!([{"type": "function", "function": {"description": "no name"}}]),
            "name must be a string",
        ),
        (
            json!([{"type": "function", "function": {"name": "a b"}}]),
            "letters",
        ),
        (
            json!([{"type": "code_interpreter", "function": {"name": "x"}}]),
            "\"function\"",
        ),
        (
            json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "string", "format": "email"}}}}}]),
            "format",
        ),
        (json!([weather_tool(), weather_tool()]), "two tools"),
    ];
    for (tools, says) in &bad_tools {
        let (status, v) = post(
            &format!("{base}/api/chat"),
            json!({"model": "alpha", "messages": user("x"), "tools": tools}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{tools}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{tools}: {v}");
        let (status, v) = post(
            &format!("{base}/v1/chat/completions"),
            json!({"model": "alpha", "messages": user("x"), "tools": tools}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{tools}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{tools}: {v}"
        );
    }
    for (body, says) in [
        (
            json!({"model": "alpha", "messages": user("x"), "tool_choice": "required"}),
            "only allowed when tools",
        ),
        (
            json!({"model": "alpha", "messages": user("x"), "tools": [weather_tool()], "tool_choice": "always"}),
            "tool_choice must be",
        ),
        (
            json!({"model": "alpha", "messages": user("x"), "tools": [weather_tool()], "tool_choice": {"type": "function", "function": {"name": "other"}}}),
            "not in tools",
        ),
        (
            json!({"model": "alpha", "messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{not json"}}]}]}),
            "arguments",
        ),
    ] {
        let (status, v) = post(&format!("{base}/v1/chat/completions"), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {v}"
        );
    }
    let (status, v) = post(&format!("{base}/api/chat"), json!({"model": "alpha", "messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]}]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(ctl.order().is_empty(), "nothing bad reached the engine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_come_back_in_ollamas_and_openais_shapes() {
    let (base, ctl) = setup().await;
    *ctl.script.lock().unwrap() =
        Some(r#"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}"#.into());
    let (status, v) = post(&format!("{base}/api/chat"), json!({"model": "alpha", "messages": user("Weather in Paris?"), "tools": [weather_tool()], "stream": false})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["message"]["content"], "");
    assert_eq!(
        v["message"]["tool_calls"],
        json!([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}])
    );
    assert_eq!(v["done"], true);
    // The engine was asked for the tool-call grammar, and the tools were described to it.
    let Some(OutputFormat::Schema(s)) = ctl.formats.lock().unwrap().pop().unwrap() else {
        panic!("a grammar")
    };
    assert!(s.to_string().contains("get_weather"), "{s}");
    assert!(
        ctl.order().last().unwrap().contains("get_weather"),
        "{:?}",
        ctl.order()
    );

    // Streamed: one chunk with the calls, then the end.
    let r = reqwest::Client::new()
        .post(format!("{base}/api/chat"))
        .body(
            json!({"model": "alpha", "messages": user("Weather?"), "tools": [weather_tool()]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let lines: Vec<Value> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        lines[0]["message"]["tool_calls"][0]["function"]["arguments"]["city"],
        "Paris"
    );
    assert_eq!(lines[1]["done"], true);

    let (status, v) = post(
        &format!("{base}/v1/chat/completions"),
        json!({"model": "alpha", "messages": user("Weather in Paris?"), "tools": [weather_tool()]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));

    // OpenAI streamed: the calls in a delta with indexes, then finish_reason tool_calls.
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .body(json!({"model": "alpha", "stream": true, "messages": user("Weather?"), "tools": [weather_tool()]}).to_string())
        .send()
        .await
        .unwrap();
    let mut body = String::new();
    let mut s = r.bytes_stream();
    while let Some(b) = s.next().await {
        body.push_str(&String::from_utf8_lossy(&b.unwrap()));
    }
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    let first: Value = serde_json::from_str(events[0].trim_start_matches("data: ")).unwrap();
    assert_eq!(first["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
    assert_eq!(
        first["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let end: Value = serde_json::from_str(events[1].trim_start_matches("data: ")).unwrap();
    assert_eq!(end["choices"][0]["finish_reason"], "tool_calls");

    // A direct answer is plain content.
    *ctl.script.lock().unwrap() = Some(r#"{"response": "It is sunny."}"#.into());
    let (_, v) = post(&format!("{base}/api/chat"), json!({"model": "alpha", "messages": user("hi"), "tools": [weather_tool()], "stream": false})).await;
    assert_eq!(v["message"]["content"], "It is sunny.");
    assert!(v["message"].get("tool_calls").is_none(), "{v}");
    let (_, v) = post(&format!("{base}/v1/chat/completions"), json!({"model": "alpha", "messages": user("hi"), "tools": [weather_tool()], "tool_choice": "auto"})).await;
    assert_eq!(v["choices"][0]["message"]["content"], "It is sunny.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_conversation_round_trip_reaches_the_template() {
    let (base, ctl) = setup().await;
    *ctl.script.lock().unwrap() = Some(r#"{"response": "18 degrees."}"#.into());
    let messages = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_7", "content": "18 C"},
    ]);
    let (status, v) = post(
        &format!("{base}/v1/chat/completions"),
        json!({"model": "alpha", "messages": messages, "tools": [weather_tool()]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "18 degrees.");
    let prompt = ctl.order().pop().unwrap();
    assert!(
        prompt.contains(
            r#"assistant: {"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}"#
        ),
        "{prompt}"
    );
    assert!(
        prompt.contains(r#"tool: {"tool_response":{"name":"get_weather","content":"18 C"}}"#),
        "{prompt}"
    );
    // tool_choice "none": no tools described, no grammar.
    let (status, _) = post(&format!("{base}/v1/chat/completions"), json!({"model": "alpha", "messages": user("hi"), "tools": [weather_tool()], "tool_choice": "none"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ctl.formats.lock().unwrap().pop().unwrap(), None);
    assert!(!ctl.order().pop().unwrap().contains("get_weather"));
}
