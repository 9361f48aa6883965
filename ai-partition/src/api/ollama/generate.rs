//! `POST /api/generate` and `POST /api/chat`: streamed NDJSON by default, one JSON
//! object with `stream: false`; an empty prompt (or no messages) loads the model,
//! and with `keep_alive: 0` unloads it. `format` constrains the output to JSON (any
//! object, or a schema); `tools` in a chat are answered with `message.tool_calls`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::api::stream::{self, NDJSON};
use crate::api::tools::{self, Reply, ToolUse};
use crate::api::AppState;
use crate::api::{format, options};
use crate::engine::{ChatMessage, FinishReason, OutputFormat, SamplingParams};
use crate::service::{GenEvent, GenerateJob, Generation, GenerationDone, KeepAlive, Prompt};

#[derive(Deserialize)]
pub struct GenerateRequest {
    model: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    raw: bool,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    images: Option<Vec<String>>,
}

#[derive(Deserialize)]
pub struct Message {
    role: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    images: Option<Vec<String>>,
    /// An assistant turn's earlier tool calls.
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    /// The tool a `tool` message answers for.
    #[serde(default)]
    tool_name: Option<String>,
}

#[derive(Deserialize)]
pub struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Generate,
    Chat,
}

fn check_model(model: &str) -> Result<(), ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    Ok(())
}

fn check_images(images: &Option<Vec<String>>) -> Result<(), ApiError> {
    match images {
        Some(v) if !v.is_empty() => Err(ApiError::bad_request(
            "this server's models do not accept images",
        )),
        _ => Ok(()),
    }
}

fn sampling(
    opts: Option<&Map<String, Value>>,
    format: Option<OutputFormat>,
) -> Result<SamplingParams, ApiError> {
    let mut p = SamplingParams {
        format,
        ..SamplingParams::default()
    };
    options::apply_ollama(&mut p, opts)?;
    Ok(p)
}

pub async fn generate(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> Result<Response, ApiError> {
    check_model(&req.model)?;
    let format = format::ollama(req.format.as_ref())?;
    check_images(&req.images)?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            "suffix (fill-in-the-middle) is not supported by this model",
        ));
    }
    let keep_alive = options::keep_alive(req.keep_alive.as_ref())?;
    let params = sampling(req.options.as_ref(), format)?;
    let stream = req.stream.unwrap_or(true);
    if req.prompt.is_empty() {
        return load_or_unload(&st, &req.model, keep_alive, stream, Flavor::Generate).await;
    }
    let prompt = if req.raw {
        Prompt::Raw(req.prompt)
    } else {
        let mut msgs = Vec::new();
        if let Some(sys) = req.system.filter(|s| !s.is_empty()) {
            msgs.push(ChatMessage {
                role: "system".into(),
                content: sys,
            });
        }
        msgs.push(ChatMessage {
            role: "user".into(),
            content: req.prompt,
        });
        Prompt::Chat(msgs)
    };
    let job = GenerateJob {
        model: req.model,
        prompt,
        params,
        keep_alive,
        stream,
    };
    respond(
        st.service.generate(job).await?,
        stream,
        Flavor::Generate,
        false,
    )
    .await
}

pub async fn chat(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    check_model(&req.model)?;
    let format = format::ollama(req.format.as_ref())?;
    let tool_use = match req.tools.as_deref() {
        Some(t) if !t.is_empty() => Some(ToolUse {
            tools: tools::parse(t).map_err(ApiError::bad_request)?,
            choice: tools::Choice::Auto,
        }),
        _ => None,
    };
    // With tools, the grammar allows a tool call or an answer in the requested format.
    let format = match &tool_use {
        Some(u) => Some(u.format(format.as_ref())),
        None => format,
    };
    let keep_alive = options::keep_alive(req.keep_alive.as_ref())?;
    let params = sampling(req.options.as_ref(), format)?;
    let stream = req.stream.unwrap_or(true);
    if req.messages.is_empty() {
        return load_or_unload(&st, &req.model, keep_alive, stream, Flavor::Chat).await;
    }
    let mut msgs = Vec::with_capacity(req.messages.len() + 1);
    for m in req.messages {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
            return Err(ApiError::bad_request(format!(
                "invalid message role {:?}: use system, user, assistant or tool",
                m.role
            )));
        }
        check_images(&m.images)?;
        let content = match (&m.tool_calls, m.role.as_str()) {
            (Some(calls), _) if !calls.is_empty() => {
                tools::calls_as_text(&tools::history_calls(calls).map_err(ApiError::bad_request)?)
            }
            (_, "tool") => tools::result_as_text(m.tool_name.as_deref(), &m.content),
            _ => m.content,
        };
        msgs.push(ChatMessage {
            role: m.role,
            content,
        });
    }
    if let Some(u) = &tool_use {
        u.apply(&mut msgs);
    }
    let job = GenerateJob {
        model: req.model,
        prompt: Prompt::Chat(msgs),
        params,
        keep_alive,
        // A tool call is only known once the whole reply is there.
        stream: stream && tool_use.is_none(),
    };
    let g = st.service.generate(job).await?;
    respond(g, stream, Flavor::Chat, tool_use.is_some()).await
}

fn base(flavor: Flavor, model: &str, text: &str, done: bool) -> Value {
    let mut v = json!({"model": model, "created_at": stream::now_rfc3339()});
    match flavor {
        Flavor::Generate => v["response"] = json!(text),
        Flavor::Chat => v["message"] = json!({"role": "assistant", "content": text}),
    }
    v["done"] = json!(done);
    v
}

fn finish(flavor: Flavor, model: &str, text: &str, d: &GenerationDone) -> Value {
    let mut v = base(flavor, model, text, true);
    v["done_reason"] = json!(match d.finish {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    });
    v["total_duration"] = json!(d.total_duration.as_nanos() as u64);
    v["load_duration"] = json!(d.load_duration.as_nanos() as u64);
    v["prompt_eval_count"] = json!(d.stats.prompt_tokens);
    v["prompt_eval_duration"] = json!(d.stats.prompt_eval_ns);
    v["eval_count"] = json!(d.stats.generated_tokens);
    v["eval_duration"] = json!(d.stats.eval_ns);
    v
}

async fn load_or_unload(
    st: &AppState,
    model: &str,
    keep_alive: Option<KeepAlive>,
    stream: bool,
    flavor: Flavor,
) -> Result<Response, ApiError> {
    let v = if keep_alive.is_some_and(|k| k.unloads_now()) {
        let (name, _) = st.service.unload(model).await?;
        let mut v = base(flavor, &name, "", true);
        v["done_reason"] = json!("unload");
        v
    } else {
        let r = st.service.load(model, keep_alive).await?;
        let mut v = base(flavor, &r.name, "", true);
        v["done_reason"] = json!("load");
        v["load_duration"] = json!(r.load_duration.as_nanos() as u64);
        v
    };
    Ok(if stream {
        stream::response(NDJSON, futures_util::stream::iter([stream::line(&v)]))
    } else {
        Json(v).into_response()
    })
}

/// The answer with tool calls read out of the model's constrained reply.
fn tool_reply(model: &str, text: &str, d: &GenerationDone, stream: bool) -> Vec<Value> {
    let (content, calls) = match tools::reply(text) {
        Reply::Text(t) => (t, None),
        Reply::Calls(c) => (String::new(), Some(c)),
    };
    let mut message = json!({"role": "assistant", "content": content});
    if let Some(calls) = &calls {
        message["tool_calls"] = calls
            .iter()
            .map(|c| json!({"function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
    }
    let mut last = finish(Flavor::Chat, model, "", d);
    if !stream {
        last["message"] = message;
        return vec![last];
    }
    let mut first = base(Flavor::Chat, model, "", false);
    first["message"] = message;
    vec![first, last]
}

async fn respond(
    mut g: Generation,
    stream: bool,
    flavor: Flavor,
    tool_use: bool,
) -> Result<Response, ApiError> {
    let model = g.model.clone();
    if tool_use {
        let (text, d) = g.collect().await?;
        let lines = tool_reply(&model, &text, &d, stream);
        return Ok(if stream {
            let lines: Vec<_> = lines.iter().map(stream::line).collect();
            stream::response(NDJSON, futures_util::stream::iter(lines))
        } else {
            Json(lines.into_iter().next().unwrap_or_default()).into_response()
        });
    }
    if !stream {
        let (text, d) = g.collect().await?;
        return Ok(Json(finish(flavor, &model, &text, &d)).into_response());
    }
    // Wait for the first event so an error before any text is a proper status code.
    let first = match g.events.recv().await {
        Some(GenEvent::Done(Err(e))) => return Err(e.into()),
        Some(ev) => ev,
        None => {
            return Err(ApiError::from(crate::service::ServiceError::Internal(
                "generation ended without a result".into(),
            )))
        }
    };
    let body = futures_util::stream::unfold(
        (Some(first), g.events, false),
        move |(pending, mut rx, ended)| {
            let model = model.clone();
            async move {
                if ended {
                    return None;
                }
                let ev = match pending {
                    Some(ev) => ev,
                    None => rx.recv().await?,
                };
                let (bytes, ended) = match ev {
                    GenEvent::Piece(p) => (stream::line(&base(flavor, &model, &p, false)), false),
                    GenEvent::Done(Ok(d)) => (stream::line(&finish(flavor, &model, "", &d)), true),
                    GenEvent::Done(Err(e)) => {
                        (stream::line(&json!({"error": e.to_string()})), true)
                    }
                };
                Some((bytes, (None, rx, ended)))
            }
        },
    );
    Ok(stream::response(NDJSON, body))
}
