//! Errors as HTTP responses: always JSON, never a framework's plain-text rejection.
//! Ollama routes answer `{"error": "..."}`; OpenAI routes answer
//! `{"error": {"message": "...", "type": "..."}}` (what the OpenAI clients parse).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::service::ServiceError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Shape the body the OpenAI way.
    pub openai: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            openai: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn openai(mut self) -> Self {
        self.openai = true;
        self
    }
}

/// Status code for a service error (shared by every route).
pub fn status_of(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ServiceError::ModelNotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::QueueFull(_) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Unavailable(_) => StatusCode::NOT_FOUND,
        ServiceError::InsufficientMemory(_) => StatusCode::INSUFFICIENT_STORAGE,
        ServiceError::Engine(crate::engine::EngineError::ContextOverflow { .. }) => {
            StatusCode::BAD_REQUEST
        }
        ServiceError::Engine(crate::engine::EngineError::Unsupported(_)) => StatusCode::BAD_REQUEST,
        ServiceError::Engine(crate::engine::EngineError::InvalidRequest(_)) => {
            StatusCode::BAD_REQUEST
        }
        ServiceError::Engine(_) | ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError::new(status_of(&e), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), "{}", self.message);
        }
        let body = if self.openai {
            let kind = match self.status {
                StatusCode::NOT_FOUND => "not_found_error",
                StatusCode::UNAUTHORIZED => "authentication_error",
                StatusCode::SERVICE_UNAVAILABLE => "server_busy",
                s if s.is_client_error() => "invalid_request_error",
                _ => "api_error",
            };
            json!({"error": {"message": self.message, "type": kind, "param": null, "code": null}})
        } else {
            json!({"error": self.message})
        };
        (self.status, Json(body)).into_response()
    }
}
