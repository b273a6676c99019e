//! comfy-multi's own extension for the ComfyUI editor (`assets/comfy-multi.js`,
//! listed by `/extensions` like any ComfyUI extension): the participant's
//! name, their place in the shared queue with an ETA, and the instructor's
//! broadcasts as toasts. This file serves the script and the one status
//! call it makes.

use super::FrontendState;
use crate::error::AppError;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

/// Where the app loads the script from (relative to the participant's base).
pub const SCRIPT_PATH: &str = "/extensions/comfy-multi/comfy-multi.js";

const SCRIPT: &str = include_str!("assets/comfy-multi.js");

/// `GET /extensions`: the app imports each listed script.
pub async fn list() -> Json<Value> {
    Json(json!([SCRIPT_PATH]))
}

/// The script itself.
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
}

/// `GET /comfy-multi/status`: this participant's jobs in the shared queue
/// (1 = next to run; `waiting_for_worker`: only a worker that is not
/// connected now has its nodes or models), the queue's pause state and the
/// latest broadcast.
pub async fn status(State(s): State<FrontendState>) -> Result<Json<Value>, AppError> {
    let workers = s.queue.workers().await?.len().max(1);
    let q = s.queue.participant_queue(&s.participant, workers).await?;
    let settings = s.queue.runtime_settings().await?;
    let ids: Vec<String> = q.waiting.iter().map(|w| w.job_id.clone()).collect();
    let absent = s.queue.waiting_for_absent_worker(&ids).await?;
    let waiting: Vec<Value> = q
        .waiting
        .iter()
        .zip(absent.iter().chain(std::iter::repeat(&false)))
        .map(|(w, absent)| {
            json!({"prompt_id": w.job_id, "number": w.number, "position": w.position,
                   "eta_seconds": w.eta_seconds, "waiting_for_worker": absent})
        })
        .collect();
    let running: Vec<Value> = q
        .running
        .iter()
        .map(|j| json!({"prompt_id": j.id, "number": j.number}))
        .collect();
    Ok(Json(json!({
        "participant": s.participant,
        "waiting": waiting,
        "running": running,
        "paused": settings.paused_submit || settings.paused_dispatch,
        "broadcast": s.queue.last_broadcast().await?,
    })))
}
