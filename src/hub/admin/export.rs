//! `GET /admin/api/export.zip`: everything the workshop made, as one zip
//! streamed while it is written (see `crate::archive`): a folder per
//! participant with their `output/` and `input/` files and their saved
//! workflows (`user/workflows/` as `workflows/`). Logged to `audit`.

use super::{audit, session::who};
use crate::archive;
use crate::error::AppError;
use crate::hub::HubState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

/// `GET /admin/api/export.zip`.
pub async fn export(State(s): State<HubState>, headers: HeaderMap) -> Result<Response, AppError> {
    audit(&who(&headers), "export", "all participants");
    let state = s.clone();
    let entries = tokio::task::spawn_blocking(move || {
        let mut entries = vec![];
        for p in super::gallery::participant_dirs(&state) {
            let dir = state.user_dir(&p);
            for (from, to) in [
                ("output", "output"),
                ("input", "input"),
                ("user/workflows", "workflows"),
            ] {
                entries.extend(archive::under(&dir.join(from), &format!("{p}/{to}/")));
            }
        }
        entries
    })
    .await
    .map_err(AppError::internal)?;
    let name = format!(
        "workshop-{}.zip",
        archive::date(std::time::SystemTime::now())
    );
    Ok(archive::zip_response(entries, &name))
}
