//! The one error policy of every HTTP route: what status and body each kind
//! of failure gets. Refusals keep their message (written for people);
//! internal faults are logged and answered with a generic text, so nothing
//! internal (paths, Redis URLs, secrets) leaks into responses.

use crate::queue::{QueueError, Refusal};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The disk is full (or the quota spent): said as such, never as an
    /// internal error.
    #[error("the workshop's storage is full")]
    StorageFull,
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whether an I/O error means "no space left" (ENOSPC, or a quota: EDQUOT).
pub fn is_storage_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32)
        || e.raw_os_error() == Some(nix::errno::Errno::EDQUOT as i32)
}

impl AppError {
    /// A fault on our side — except a full disk, which is said as such
    /// wherever an I/O error comes from.
    pub fn internal(e: impl std::fmt::Display + 'static) -> Self {
        if let Some(io) = (&e as &dyn std::any::Any).downcast_ref::<std::io::Error>() {
            if is_storage_full(io) {
                return AppError::StorageFull;
            }
        }
        AppError::Internal(e.to_string())
    }

    fn status_and_message(&self) -> (StatusCode, String) {
        match self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized".into()),
            AppError::NotFound => (StatusCode::NOT_FOUND, "not found".into()),
            AppError::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
            AppError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m.clone()),
            AppError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m.clone()),
            AppError::Queue(QueueError::Refused { refusal, message }) => {
                let status = match refusal {
                    Refusal::NotFound => StatusCode::NOT_FOUND,
                    Refusal::Invalid | Refusal::NotOnAnyWorker => StatusCode::BAD_REQUEST,
                    Refusal::PromptTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                    Refusal::TooManyPending => StatusCode::TOO_MANY_REQUESTS,
                    Refusal::Paused => StatusCode::SERVICE_UNAVAILABLE,
                    Refusal::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
                    Refusal::Locked => StatusCode::FORBIDDEN,
                    Refusal::StaleToken
                    | Refusal::AlreadyFinished
                    | Refusal::DuplicateId
                    | Refusal::NotQueued => StatusCode::CONFLICT,
                };
                (status, message.clone())
            }
            AppError::Queue(e) => {
                tracing::error!("queue: {e}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the queue is unavailable; try again in a moment".into(),
                )
            }
            AppError::StorageFull => {
                tracing::error!("the disk is full: a file could not be written");
                (
                    StatusCode::INSUFFICIENT_STORAGE,
                    "the workshop's storage is full; your instructor has been told".into(),
                )
            }
            AppError::Internal(e) => {
                tracing::error!("internal: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = self.status_and_message();
        let code = match &self {
            AppError::Queue(QueueError::Refused { refusal, .. }) => refusal.as_str(),
            _ => status.canonical_reason().unwrap_or("error"),
        };
        (
            status,
            Json(json!({"error": {"type": code, "message": message}})),
        )
            .into_response()
    }
}
