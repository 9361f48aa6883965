//! Streaming bodies: NDJSON (Ollama) and server-sent events (OpenAI). A body stream is
//! dropped when the client goes away, which drops the generation's receiver and so
//! cancels the generation.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;

pub const NDJSON: &str = "application/x-ndjson";

/// One NDJSON line.
pub fn line(v: &serde_json::Value) -> Bytes {
    let mut s = serde_json::to_vec(v).unwrap_or_default();
    s.push(b'\n');
    Bytes::from(s)
}

/// One SSE event.
pub fn sse(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

pub fn response(
    content_type: &'static str,
    body: impl Stream<Item = Bytes> + Send + 'static,
) -> Response {
    use futures_util::StreamExt;
    let body = Body::from_stream(body.map(Ok::<_, Infallible>));
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type == "text/event-stream" {
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    r
}

/// RFC 3339 with nanoseconds, as Ollama writes `created_at`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

pub fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
