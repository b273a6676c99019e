//! Worker authentication: `Authorization: Bearer <token>` against the tokens
//! of `hub.worker_tokens_file` (one per line). Compared in constant time.

use super::HubState;
use crate::error::AppError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// Proof that the request carries a valid worker token.
pub struct WorkerAuth;

/// Compares two byte strings without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl FromRequestParts<HubState> for WorkerAuth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &HubState) -> Result<Self, AppError> {
        let token = bearer(parts).ok_or(AppError::Unauthorized)?;
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
