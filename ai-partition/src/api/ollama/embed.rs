//! `POST /api/embed` (and the older `POST /api/embeddings`).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::json::ApiJson;
use crate::api::options;
use crate::api::AppState;

/// A string or a list of strings.
pub fn inputs(v: &Value) -> Result<Vec<String>, ApiError> {
    let list = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "input must be a string or a list of strings, found {i}"
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
        Value::Null => vec![],
        other => {
            return Err(ApiError::bad_request(format!(
                "input must be a string or a list of strings, not {other}"
            )))
        }
    };
    Ok(list)
}

#[derive(Deserialize)]
pub struct EmbedRequest {
    model: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    dimensions: Option<usize>,
}

pub async fn embed(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<EmbedRequest>,
) -> Result<Json<Value>, ApiError> {
    if req.model.trim().is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    let keep_alive = options::keep_alive(req.keep_alive.as_ref())?;
    let _ = req.truncate;
    let inputs = inputs(&req.input)?;
    if inputs.is_empty() {
        // Ollama: an empty input only loads the model.
        let r = st.service.load(&req.model, keep_alive).await?;
        return Ok(Json(
            json!({"model": r.name, "embeddings": [], "load_duration": r.load_duration.as_nanos() as u64}),
        ));
    }
    let mut e = st.service.embed(&req.model, inputs, keep_alive).await?;
    if let Some(d) = req.dimensions {
        truncate_dims(&mut e.vectors, d)?;
    }
    Ok(Json(json!({
        "model": e.model,
        "embeddings": e.vectors,
        "total_duration": e.total_duration.as_nanos() as u64,
        "load_duration": e.load_duration.as_nanos() as u64,
        "prompt_eval_count": e.prompt_tokens,
    })))
}

/// Keep the first `d` dimensions and re-normalise (Matryoshka-style truncation).
pub fn truncate_dims(vectors: &mut [Vec<f32>], d: usize) -> Result<(), ApiError> {
    for v in vectors {
        if d == 0 || d > v.len() {
            return Err(ApiError::bad_request(format!(
                "dimensions must be between 1 and {}",
                v.len()
            )));
        }
        v.truncate(d);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct LegacyEmbeddingRequest {
    model: String,
    prompt: String,
    #[serde(default)]
    keep_alive: Option<Value>,
}

pub async fn embeddings(
    State(st): State<AppState>,
    ApiJson(req): ApiJson<LegacyEmbeddingRequest>,
) -> Result<Json<Value>, ApiError> {
    let keep_alive = options::keep_alive(req.keep_alive.as_ref())?;
    let e = st
        .service
        .embed(&req.model, vec![req.prompt], keep_alive)
        .await?;
    Ok(Json(
        json!({"embedding": e.vectors.into_iter().next().unwrap_or_default()}),
    ))
}
