//! The hub owns participants' files (`<state>/users/<u>/{input,output,temp}`).
//! Workers fetch a job's input files and upload its outputs here, over
//! authenticated HTTP, streamed and size-limited; both only while they hold
//! the job's current lease (its fencing token).

use super::auth::WorkerAuth;
use super::HubState;
use crate::error::AppError;
use crate::paths::{safe_join, store_unique};
use crate::queue::Status;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

#[derive(Deserialize)]
pub struct InputQuery {
    token: u64,
    /// input (default), output or temp: loaders may read earlier outputs.
    #[serde(default = "input_folder")]
    folder: String,
    name: String,
}

fn input_folder() -> String {
    "input".into()
}

/// The participant of a job whose current lease has `token`.
async fn leased_to(s: &HubState, job: &str, token: u64) -> Result<String, AppError> {
    let j = s.queue.job(job).await?.ok_or(AppError::NotFound)?;
    if j.lease_token != Some(token) || !matches!(j.status, Status::Leased | Status::Running) {
        return Err(AppError::Conflict(
            "the lease of this job has passed on".into(),
        ));
    }
    Ok(j.participant)
}

/// `GET /worker/v1/jobs/{job}/input?token=&folder=&name=`: one file of the
/// job's participant that the prompt loads.
pub async fn get_input(
    _: WorkerAuth,
    State(s): State<HubState>,
    Path(job): Path<String>,
    Query(q): Query<InputQuery>,
) -> Result<Response, AppError> {
    if !matches!(q.folder.as_str(), "input" | "output" | "temp") {
        return Err(AppError::BadRequest(
            "folder must be input, output or temp".into(),
        ));
    }
    let u = leased_to(&s, &job, q.token).await?;
    let path = safe_join(&s.user_dir(&u).join(&q.folder), &q.name).ok_or(AppError::NotFound)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| AppError::NotFound)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok(Response::new(body))
}

#[derive(Deserialize)]
pub struct OutputQuery {
    token: u64,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    subfolder: String,
    filename: String,
}

/// `POST /worker/v1/jobs/{job}/output?token=&type=output|temp&subfolder=&filename=`
/// with the file as body: stored under a collision-free name; answers the
/// `{filename, subfolder, type}` the participant will see.
pub async fn put_output(
    _: WorkerAuth,
    State(s): State<HubState>,
    Path(job): Path<String>,
    Query(q): Query<OutputQuery>,
    body: Body,
) -> Result<Json<Value>, AppError> {
    if q.kind != "output" && q.kind != "temp" {
        return Err(AppError::BadRequest("type must be output or temp".into()));
    }
    let u = leased_to(&s, &job, q.token).await?;
    let root = s.user_dir(&u).join(&q.kind);
    let dir = if q.subfolder.is_empty() {
        root.clone()
    } else {
        safe_join(&root, &q.subfolder)
            .ok_or_else(|| AppError::BadRequest("bad subfolder".into()))?
    };
    if safe_join(&dir, &q.filename).is_none() || q.filename.contains('/') {
        return Err(AppError::BadRequest("bad filename".into()));
    }
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(AppError::internal)?;
    let tmp = dir.join(format!(".upload-{}", uuid::Uuid::new_v4()));
    let written = write_limited(&tmp, body, s.max_output_bytes).await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    let (tmp2, dir2, name) = (tmp.clone(), dir.clone(), q.filename.clone());
    let stored = tokio::task::spawn_blocking(move || store_unique(&tmp2, &dir2, &name))
        .await
        .map_err(AppError::internal)?
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            AppError::internal(e)
        })?;
    // Remembered on the job under this lease; if the lease passed on while
    // the file arrived, the file is not this job's result: remove it.
    let rel = output_path(&q.kind, &q.subfolder, &stored);
    if let Err(e) = s.queue.note_output(&job, q.token, &rel).await {
        let _ = tokio::fs::remove_file(dir.join(&stored)).await;
        return Err(match e.refusal() {
            Some(_) => AppError::Conflict("the lease of this job has passed on".into()),
            None => e.into(),
        });
    }
    Ok(Json(
        json!({"filename": stored, "subfolder": q.subfolder, "type": q.kind}),
    ))
}

/// `type/subfolder/name` (or `type/name`), relative to the participant's folder.
fn output_path(kind: &str, subfolder: &str, name: &str) -> String {
    if subfolder.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}/{subfolder}/{name}")
    }
}

/// Once `job` has ended: removes the output files its attempts stored that
/// its recorded result does not name — an attempt whose lease expired after
/// it had uploaded, replaced by a re-run. So a participant sees each result
/// once. Best effort: a failure is logged, never fatal.
pub async fn discard_unrecorded_outputs(state_dir: &std::path::Path, j: &crate::queue::Job) {
    if !j.status.is_terminal() || j.noted_outputs.is_empty() {
        return;
    }
    let mut recorded = std::collections::HashSet::new();
    for node in j
        .outputs
        .iter()
        .filter_map(|o| o.as_object())
        .flat_map(|m| m.values())
    {
        for list in node.as_object().into_iter().flat_map(|m| m.values()) {
            for f in list.as_array().into_iter().flatten() {
                if let (Some(name), Some(kind)) = (f["filename"].as_str(), f["type"].as_str()) {
                    recorded.insert(output_path(
                        kind,
                        f["subfolder"].as_str().unwrap_or(""),
                        name,
                    ));
                }
            }
        }
    }
    let (job, user_dir) = (&j.id, state_dir.join("users").join(&j.participant));
    for path in j.noted_outputs.iter().filter(|p| !recorded.contains(*p)) {
        if let Some(full) = safe_join(&user_dir, path) {
            match tokio::fs::remove_file(&full).await {
                Ok(()) => {
                    tracing::info!(%job, file = %path, "removed an output of a replaced attempt")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(%job, file = %path, "cannot remove an output of a replaced attempt: {e}")
                }
            }
        }
    }
}

async fn write_limited(path: &std::path::Path, body: Body, limit: u64) -> Result<(), AppError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(AppError::internal)?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| AppError::BadRequest(format!("upload broke off: {e}")))?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(AppError::TooLarge(format!(
                "the file is larger than {limit} bytes"
            )));
        }
        file.write_all(&chunk).await.map_err(AppError::internal)?;
    }
    file.sync_all().await.map_err(AppError::internal)?;
    Ok(())
}
