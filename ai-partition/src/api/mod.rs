//! The HTTP API: Ollama-compatible `/api/*`, OpenAI-compatible `/v1/*`, Prometheus
//! `/metrics`. Handlers are thin: they parse, call the service, and shape replies.

pub mod auth;
pub mod error;
pub mod format;
pub mod json;
pub mod ollama;
pub mod openai;
pub mod options;
pub mod stream;
pub mod tensor;
pub mod tools;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::service::Service;
use error::ApiError;

/// HTTP-level settings.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Bearer token every request must carry (`None`: no check).
    pub token: Option<String>,
    /// Largest request body in bytes (413 above).
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            token: None,
            max_body_bytes: 8 << 20,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub service: Service,
    pub config: Arc<ApiConfig>,
    ids: Arc<AtomicU64>,
}

impl AppState {
    pub fn new(service: Service, config: ApiConfig) -> Self {
        Self {
            service,
            config: Arc::new(config),
            ids: Arc::new(AtomicU64::new(1)),
        }
    }

    /// A process-unique id for OpenAI response ids.
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    let mut r = st.service.render_metrics().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// Count every request by route and status, and log it.
async fn record(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().clone();
    let resp = next.run(req).await;
    let secs = started.elapsed().as_secs_f64();
    st.service
        .metrics()
        .record_request(&route, resp.status().as_u16(), secs);
    tracing::debug!(%method, %route, status = resp.status().as_u16(), ms = secs * 1e3, "request");
    resp
}

async fn not_found(req: Request) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {} {}", req.method(), req.uri().path()),
    );
    e.openai = req.uri().path().starts_with("/v1/");
    e
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    )
}

/// Every route, with auth, body limit and request metrics.
pub fn router(state: AppState) -> Router {
    use ollama::{embed as e, generate as g, models as m};
    Router::new()
        .route("/", get(m::root).head(m::root))
        .route("/api/version", get(m::version).head(m::version))
        .route("/api/tags", get(m::tags).head(m::tags))
        .route("/api/ps", get(m::ps))
        .route("/api/show", post(m::show))
        .route("/api/delete", delete(m::delete))
        .route("/api/pull", post(m::pull))
        .route("/api/generate", post(g::generate))
        .route("/api/chat", post(g::chat))
        .route("/api/embed", post(e::embed))
        .route("/api/embeddings", post(e::embeddings))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{*model}", get(openai::model))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/api/tensor", get(tensor::list))
        .route("/api/tensor/create", post(tensor::create))
        .route("/api/tensor/compute", post(tensor::compute))
        .route("/api/tensor/{id}", get(tensor::info).delete(tensor::free))
        .route(
            "/api/tensor/{id}/data",
            get(tensor::read)
                .put(tensor::write)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/api/gpu/status", get(tensor::status))
        .route("/api/gpu/alloc", post(tensor::alloc))
        .route("/api/gpu/alloc/{handle}", delete(tensor::dealloc))
        .route("/api/gpu/sync", post(tensor::sync))
        .route("/api/gpu/priority", put(tensor::priority))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Serve on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
