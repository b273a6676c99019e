//! Worker authentication: `Authorization: Bearer <token>` against the tokens
//! of `hub.worker_tokens_file` (one per line). Compared in constant time.

use super::HubState;
use crate::auth::{bearer, constant_time_eq};
use crate::error::AppError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// Proof that the request carries a valid worker token.
pub struct WorkerAuth;

impl FromRequestParts<HubState> for WorkerAuth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &HubState) -> Result<Self, AppError> {
        let token = bearer(&parts.headers).ok_or(AppError::Unauthorized)?;
        let ok = state
            .worker_tokens
            .iter()
            .any(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
        if ok {
            Ok(WorkerAuth)
        } else {
            Err(AppError::Unauthorized)
        }
    }
}
