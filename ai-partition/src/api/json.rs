//! A JSON body extractor whose rejections are JSON errors: malformed JSON and wrong
//! types are 400, a body over the limit is 413 (axum's own `Json` answers plain text
//! and 415/422, which Ollama clients do not expect).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiJson<T>(pub T);

/// Same, with OpenAI-shaped errors.
pub struct OpenAiJson<T>(pub T);

async fn parse<T: DeserializeOwned, S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<T, ApiError> {
    let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
        let status = rej.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is too large".to_string()
        } else {
            format!("cannot read request body: {}", rej.body_text())
        };
        ApiError::new(status, msg)
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("missing request body"));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        let what = if e.is_data() {
            "invalid request"
        } else {
            "malformed JSON"
        };
        ApiError::bad_request(format!("{what}: {e}"))
    })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse(req, state).await.map(ApiJson)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OpenAiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse(req, state)
            .await
            .map(OpenAiJson)
            .map_err(ApiError::openai)
    }
}
