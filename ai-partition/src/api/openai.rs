//! OpenAI-compatible routes: `POST /v1/chat/completions` (SSE ending `data: [DONE]`),
//! `GET /v1/models`, `GET /v1/models/{model}`, `POST /v1/embeddings`.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::json::OpenAiJson;
use super::ollama::embed::{inputs, truncate_dims};
use super::tools::{self, Reply, ToolUse};
use super::AppState;
use super::{format, options, stream};
use crate::engine::{ChatMessage, FinishReason, SamplingParams};
use crate::service::{GenEvent, GenerateJob, Prompt, ServiceError};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn oa(e: impl Into<ApiError>) -> ApiError {
    e.into().openai()
}

#[derive(Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
pub struct ChatCompletionRequest {
    model: String,
    messages: Vec<OaMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
}

#[derive(Deserialize)]
pub struct OaMessage {
    role: String,
    #[serde(default)]
    content: Value,
    /// An assistant turn's earlier tool calls (`arguments` a JSON string).
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    /// The call a `tool` message answers.
    #[serde(default)]
    tool_call_id: Option<String>,
}

/// `content` as a string or a list of `{type: "text", text}` parts.
fn content_text(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    _ => {
                        return Err(
                            ApiError::bad_request("only text content parts are supported").openai(),
                        )
                    }
                }
            }
            Ok(out)
        }
        other => Err(ApiError::bad_request(format!(
            "message content must be a string or a list of parts, not {other}"
        ))
        .openai()),
    }
}

fn params(req: &ChatCompletionRequest) -> Result<SamplingParams, ApiError> {
    // OpenAI's defaults: temperature 1, top_p 1, no repeat penalty.
    let mut p = SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        repeat_penalty: 1.0,
        ..SamplingParams::default()
    };
    if let Some(t) = req.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::bad_request("temperature must be between 0 and 2").openai());
        }
        p.temperature = t as f32;
    }
    if let Some(t) = req.top_p {
        if !(0.0..=1.0).contains(&t) {
            return Err(ApiError::bad_request("top_p must be between 0 and 1").openai());
        }
        p.top_p = t as f32;
    }
    if let Some(n) = req.max_completion_tokens.or(req.max_tokens) {
        if n < 1 {
            return Err(ApiError::bad_request("max_tokens must be at least 1").openai());
        }
        p.num_predict = Some(u32::try_from(n).unwrap_or(u32::MAX));
    }
    p.seed = req.seed.map(|s| s as u64);
    if let Some(s) = &req.stop {
        p.stop = options::stop_list(s).map_err(ApiError::openai)?;
    }
    // Map OpenAI's additive penalties onto the engine's multiplicative one, as Ollama does
    // for frequency_penalty; presence_penalty has no equivalent and is accepted as a no-op.
    if let Some(f) = req.frequency_penalty.filter(|f| *f > 0.0) {
        p.repeat_penalty = 1.0 + f as f32;
    }
    let _ = req.presence_penalty;
    Ok(p)
}

fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

pub async fn chat_completions(
    State(st): State<AppState>,
    OpenAiJson(req): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    if req.model.trim().is_empty() {
        return Err(ApiError::bad_request("model is required").openai());
    }
    if req.messages.is_empty() {
        return Err(ApiError::bad_request("messages must not be empty").openai());
    }
    let answer_format = format::openai(req.response_format.as_ref())?;
    let tool_use = match req.tools.as_deref() {
        Some(t) if !t.is_empty() => {
            let parsed = tools::parse(t).map_err(|e| ApiError::bad_request(e).openai())?;
            tools::choice(req.tool_choice.as_ref(), &parsed)
                .map_err(|e| ApiError::bad_request(e).openai())?
                .map(|choice| ToolUse {
                    tools: parsed,
                    choice,
                })
        }
        _ if req.tool_choice.as_ref().is_some_and(|c| !c.is_null()) => {
            return Err(
                ApiError::bad_request("tool_choice is only allowed when tools are given").openai(),
            )
        }
        _ => None,
    };
    let mut msgs = Vec::with_capacity(req.messages.len() + 1);
    // Earlier calls' ids, so a tool result can name the tool it answers.
    let mut call_names = std::collections::HashMap::new();
    for m in &req.messages {
        let role = match m.role.as_str() {
            "developer" => "system",
            r @ ("system" | "user" | "assistant" | "tool") => r,
            other => {
                return Err(
                    ApiError::bad_request(format!("invalid message role {other:?}")).openai(),
                )
            }
        };
        let mut content = content_text(&m.content)?;
        if let Some(calls) = m.tool_calls.as_deref().filter(|c| !c.is_empty()) {
            let parsed =
                tools::history_calls(calls).map_err(|e| ApiError::bad_request(e).openai())?;
            for (raw, c) in calls.iter().zip(&parsed) {
                if let Some(id) = raw.get("id").and_then(Value::as_str) {
                    call_names.insert(id.to_string(), c.name.clone());
                }
            }
            content = tools::calls_as_text(&parsed);
        } else if role == "tool" {
            let name = m
                .tool_call_id
                .as_ref()
                .and_then(|id| call_names.get(id))
                .map(String::as_str);
            content = tools::result_as_text(name, &content);
        }
        msgs.push(ChatMessage {
            role: role.into(),
            content,
        });
    }
    let mut p = params(&req)?;
    p.format = match &tool_use {
        Some(u) => {
            u.apply(&mut msgs);
            Some(u.format(answer_format.as_ref()))
        }
        None => answer_format,
    };
    let job = GenerateJob {
        model: req.model.clone(),
        prompt: Prompt::Chat(msgs),
        params: p,
        keep_alive: None,
        // A tool call is only known once the whole reply is there.
        stream: req.stream && tool_use.is_none(),
    };
    let mut g = st.service.generate(job).await.map_err(oa)?;
    let id = format!("chatcmpl-{}", st.next_id());
    let created = unix_now();
    let model = g.model.clone();
    if !req.stream || tool_use.is_some() {
        let (text, d) = g.collect().await.map_err(oa)?;
        let (pt, ct) = (d.stats.prompt_tokens, d.stats.generated_tokens);
        let usage = json!({"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct});
        let (message, finish) = match tool_use.is_some().then(|| tools::reply(&text)) {
            Some(Reply::Calls(calls)) => {
                let n = id.trim_start_matches("chatcmpl-");
                let calls: Vec<Value> = calls
                    .iter()
                    .enumerate()
                    .map(|(i, c)| json!({"id": format!("call_{n}_{i}"), "type": "function", "function": {"name": c.name, "arguments": c.arguments.to_string()}}))
                    .collect();
                (
                    json!({"role": "assistant", "content": null, "tool_calls": calls}),
                    "tool_calls",
                )
            }
            Some(Reply::Text(t)) => (
                json!({"role": "assistant", "content": t}),
                finish_reason(d.finish),
            ),
            None => (
                json!({"role": "assistant", "content": text}),
                finish_reason(d.finish),
            ),
        };
        if !req.stream {
            return Ok(Json(json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": "fp_nexus",
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
                "usage": usage,
            }))
            .into_response());
        }
        // Streamed with tools: the whole reply in one delta, then the end.
        let chunk = |delta: Value, finish: Value| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_nexus",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
            })
        };
        let mut delta = message;
        if let Some(calls) = delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
            for (i, c) in calls.iter_mut().enumerate() {
                c["index"] = json!(i);
            }
        }
        let mut body = String::new();
        for v in [chunk(delta, Value::Null), chunk(json!({}), json!(finish))] {
            body.push_str(&format!("data: {v}\n\n"));
        }
        if req.stream_options.as_ref().is_some_and(|o| o.include_usage) {
            let mut u = chunk(json!({}), Value::Null);
            u["choices"] = json!([]);
            u["usage"] = usage;
            body.push_str(&format!("data: {u}\n\n"));
        }
        body.push_str("data: [DONE]\n\n");
        return Ok(stream::response(
            "text/event-stream",
            futures_util::stream::iter([axum::body::Bytes::from(body)]),
        ));
    }
    let first = match g.events.recv().await {
        Some(GenEvent::Done(Err(e))) => return Err(oa(e)),
        Some(ev) => ev,
        None => {
            return Err(oa(ServiceError::Internal(
                "generation ended without a result".into(),
            )))
        }
    };
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let chunk = move |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_nexus",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    };
    // The first chunk carries the role, as OpenAI's does.
    let opening =
        stream::sse(&chunk(json!({"role": "assistant", "content": ""}), Value::Null).to_string());
    let body = futures_util::stream::unfold(
        (Some(first), g.events, 0u8),
        move |(pending, mut rx, phase)| {
            let chunk = chunk.clone();
            async move {
                if phase == 2 {
                    return None;
                }
                let ev = match pending {
                    Some(ev) => ev,
                    None => rx.recv().await?,
                };
                let out = match ev {
                    GenEvent::Piece(p) => (
                        stream::sse(&chunk(json!({"content": p}), Value::Null).to_string()),
                        (None, rx, 1),
                    ),
                    GenEvent::Done(Ok(d)) => {
                        let mut s = chunk(json!({}), json!(finish_reason(d.finish))).to_string();
                        s = String::from_utf8(stream::sse(&s).to_vec()).unwrap_or_default();
                        if include_usage {
                            let (pt, ct) = (d.stats.prompt_tokens, d.stats.generated_tokens);
                            let mut u = chunk(json!({}), Value::Null);
                            u["choices"] = json!([]);
                            u["usage"] = json!({"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct});
                            s.push_str(&format!("data: {u}\n\n"));
                        }
                        s.push_str("data: [DONE]\n\n");
                        (s.into(), (None, rx, 2))
                    }
                    GenEvent::Done(Err(e)) => {
                        let err = json!({"error": {"message": e.to_string(), "type": "api_error"}});
                        (
                            format!("data: {err}\n\ndata: [DONE]\n\n").into(),
                            (None, rx, 2),
                        )
                    }
                };
                Some(out)
            }
        },
    );
    let body = futures_util::StreamExt::chain(futures_util::stream::iter([opening]), body);
    Ok(stream::response("text/event-stream", body))
}

fn model_object(name: &str, modified: SystemTime) -> Value {
    let created = modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({"id": name, "object": "model", "created": created, "owned_by": "library"})
}

pub async fn models(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let data: Vec<Value> = st
        .service
        .list()
        .await
        .map_err(oa)?
        .iter()
        .map(|e| model_object(&e.name, e.modified_at))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

pub async fn model(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let e = st.service.show(&name).await.map_err(oa)?;
    Ok(Json(model_object(&e.name, e.modified_at)))
}

#[derive(Deserialize)]
pub struct EmbeddingsRequest {
    model: String,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
}

/// Standard base64 of little-endian f32s (OpenAI's `encoding_format: "base64"`).
fn base64_f32(v: &[f32]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub async fn embeddings(
    State(st): State<AppState>,
    OpenAiJson(req): OpenAiJson<EmbeddingsRequest>,
) -> Result<Json<Value>, ApiError> {
    let texts = inputs(&req.input).map_err(ApiError::openai)?;
    if texts.is_empty() {
        return Err(ApiError::bad_request("input must not be empty").openai());
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "encoding_format must be float or base64, not {other:?}"
            ))
            .openai())
        }
    };
    let mut e = st
        .service
        .embed(&req.model, texts, None)
        .await
        .map_err(oa)?;
    if let Some(d) = req.dimensions {
        truncate_dims(&mut e.vectors, d).map_err(ApiError::openai)?;
    }
    let data: Vec<Value> = e
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let emb = if base64 {
                json!(base64_f32(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "embedding": emb, "index": i})
        })
        .collect();
    Ok(Json(json!({
        "object": "list", "data": data, "model": e.model,
        "usage": {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens},
    })))
}

#[cfg(test)]
mod tests {
    use super::base64_f32;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        // 1.0f32 = 00 00 80 3f
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
    }
}
