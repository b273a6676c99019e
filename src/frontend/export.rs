//! `GET /comfy-multi/outputs.zip`: all of this participant's outputs
//! (`output/`, subfolders kept) as one zip, streamed while it is written
//! (see `crate::archive`). Behind the participant's login like every API
//! route; the editor extension's pill links to it.

use super::FrontendState;
use crate::archive;
use crate::error::AppError;
use axum::extract::State;
use axum::response::Response;

/// `GET /comfy-multi/outputs.zip`.
pub async fn outputs(State(s): State<FrontendState>) -> Result<Response, AppError> {
    let root = s.user_dir.join("output");
    let entries = tokio::task::spawn_blocking(move || archive::under(&root, ""))
        .await
        .map_err(AppError::internal)?;
    Ok(archive::zip_response(
        entries,
        &format!("{}-outputs.zip", s.participant),
    ))
}
