//! The admin API's handlers: thin reads of the queue's state for the
//! dashboard and the CLI, and one queue operation per action (each logged
//! to `audit`). Errors follow `crate::error`'s one policy (unknown job →
//! 404, refused → the queue's reason).

use super::{audit, session::who};
use crate::clock::now_ms;
use crate::error::AppError;
use crate::hub::HubState;
use crate::queue::{Actor, Direction, Job, Mode};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes).map_err(|e| AppError::BadRequest(format!("invalid JSON: {e}")))
}

/// A running or finished job without its prompt (which can be large).
fn job_summary(j: &Job) -> Value {
    json!({
        "id": j.id, "participant": j.participant, "number": j.number, "status": j.status,
        "name": j.name, "priority": j.priority, "attempts": j.attempts,
        "created_ms": j.created_ms, "started_ms": j.started_ms, "finished_ms": j.finished_ms,
        "worker": j.worker, "cancel_requested": j.cancel_requested,
    })
}

/// `GET /admin/api/status`: the one-line picture.
pub async fn status(State(s): State<HubState>) -> Result<Json<Value>, AppError> {
    let settings = s.queue.runtime_settings().await?;
    let counts = s.queue.counts().await?;
    let workers = s.queue.workers().await?;
    Ok(Json(json!({
        "settings": settings,
        "waiting": counts.waiting,
        "running": counts.leased_or_running,
        "succeeded": counts.succeeded,
        "failed": counts.failed,
        "cancelled": counts.cancelled,
        "workers": workers.len(),
        "participants": participant_names(&s).await?.len(),
        "broadcast": s.queue.last_broadcast().await?,
        "storage": s.queue.storage().await?,
    })))
}

/// `GET /admin/api/queue`: the global order (position 1 = next).
pub async fn queue(State(s): State<HubState>) -> Result<Json<Value>, AppError> {
    let workers = s.queue.workers().await?.len().max(1);
    let snap = s.queue.snapshot(workers).await?;
    let now = now_ms();
    let waiting: Vec<Value> = snap
        .waiting
        .iter()
        .map(|w| {
            json!({"id": w.job_id, "participant": w.participant, "name": w.name,
                   "number": w.number, "position": w.position + 1,
                   "eta_seconds": w.eta_seconds, "waiting_seconds": now.saturating_sub(w.created_ms) as f64 / 1000.0,
                   "attempts": w.attempts, "priority": w.priority})
        })
        .collect();
    let running: Vec<Value> = snap.running.iter().map(job_summary).collect();
    Ok(Json(
        json!({"settings": snap.settings, "waiting": waiting, "running": running}),
    ))
}

/// Every participant: the configured ones and any who ever queued.
async fn participant_names(s: &HubState) -> Result<BTreeSet<String>, AppError> {
    let mut names: BTreeSet<String> = s.participants.iter().cloned().collect();
    names.extend(s.queue.participants().await?.into_iter().map(|p| p.name));
    Ok(names)
}

/// `GET /admin/api/users`.
pub async fn users(State(s): State<HubState>) -> Result<Json<Value>, AppError> {
    let infos = s.queue.participants().await?;
    let online = s.queue.online().await?;
    let running = s.queue.snapshot(1).await?.running;
    // Read once: the dashboard re-reads this list on every queue change.
    let waiting = s.queue.counts().await?.waiting_by_participant;
    let mut out = vec![];
    for name in participant_names(&s).await? {
        let info = infos.iter().find(|p| p.name == name);
        let queued = waiting.get(&name).copied().unwrap_or(0);
        out.push(json!({
            "name": name,
            "online": online.get(&name).copied().unwrap_or(0) > 0,
            "editors": online.get(&name).copied().unwrap_or(0),
            "queued": queued,
            "running": running.iter().filter(|j| j.participant == name).count(),
            "done": info.map_or(0, |i| i.succeeded),
            "failed": info.map_or(0, |i| i.failed),
            "cancelled": info.map_or(0, |i| i.cancelled),
            "gpu_seconds": info.map_or(0.0, |i| i.gpu_seconds),
            "last_activity_ms": info.and_then(|i| i.last_activity_ms),
            "locked": info.is_some_and(|i| i.locked),
            "max_pending": info.and_then(|i| i.max_pending),
        }));
    }
    Ok(Json(Value::Array(out)))
}

/// `GET /admin/api/workers`: connected workers (and drained ones that left).
pub async fn workers(State(s): State<HubState>) -> Result<Json<Value>, AppError> {
    let connected = s.queue.workers().await?;
    let draining: BTreeSet<String> = s.queue.draining().await?.into_iter().collect();
    let running = s.queue.snapshot(1).await?.running;
    let mut ids: BTreeSet<String> = connected.keys().cloned().collect();
    ids.extend(draining.iter().cloned());
    let mut out = vec![];
    for id in ids {
        let info: Value = connected
            .get(&id)
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        let jobs: Vec<Value> = running
            .iter()
            .filter(|j| j.worker.as_deref() == Some(id.as_str()))
            .map(job_summary)
            .collect();
        let state = if info.is_null() {
            "disconnected"
        } else if info["healthy"] == false {
            "unhealthy"
        } else if !jobs.is_empty() {
            "busy"
        } else {
            "idle"
        };
        let stats = &info["system_stats"];
        let device = &stats["devices"][0];
        let now = now_ms();
        let window_ms = crate::hub::metrics::BUSY_WINDOW.as_millis() as u64;
        let running_s: f64 = running
            .iter()
            .filter(|j| j.worker.as_deref() == Some(id.as_str()))
            .filter_map(|j| j.started_ms)
            .map(|t| now.saturating_sub(t.max(now.saturating_sub(window_ms))) as f64 / 1000.0)
            .sum();
        let (jobs_done, busy) =
            s.metrics
                .worker_activity(&id, running_s, info["capacity"].as_u64().unwrap_or(1));
        out.push(json!({
            "id": id,
            "state": state,
            "draining": draining.contains(&id),
            "capacity": info["capacity"],
            "comfyui_url": info["comfyui_url"],
            "comfyui_version": stats["system"]["comfyui_version"],
            "gpu": device["name"],
            "vram_total": device["vram_total"],
            "vram_free": device["vram_free"],
            "jobs": jobs,
            "jobs_done": jobs_done,
            "busy_ratio_10m": busy,
            "warm_models": warm(&s, &id).await,
            "warmup": info["warmup"],
        }));
    }
    Ok(Json(Value::Array(out)))
}

/// The model files a worker holds warm, as people read them.
async fn warm(s: &HubState, worker: &str) -> Vec<String> {
    s.queue
        .warm_models(worker)
        .await
        .unwrap_or_default()
        .iter()
        .map(|t| crate::catalogue::describe(t))
        .collect()
}

fn done(action: &str) -> Json<Value> {
    Json(json!({"ok": true, "action": action}))
}

pub async fn cancel(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    s.queue.job(&id).await?.ok_or(AppError::NotFound)?;
    s.queue.cancel(&id, &Actor::Admin).await?;
    audit(&who(&headers), "cancel", &id);
    Ok(done("cancel"))
}

pub async fn prioritize(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    s.queue.job(&id).await?.ok_or(AppError::NotFound)?;
    s.queue.prioritize(&id).await?;
    audit(&who(&headers), "prioritize", &id);
    Ok(done("prioritize"))
}

#[derive(Deserialize)]
struct MoveBody {
    direction: String,
}

pub async fn move_job(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, AppError> {
    let b: MoveBody = body(&bytes)?;
    let dir = match b.direction.as_str() {
        "up" => Direction::Up,
        "down" => Direction::Down,
        other => {
            return Err(AppError::BadRequest(format!(
                "direction must be \"up\" or \"down\", not {other:?}"
            )))
        }
    };
    s.queue.job(&id).await?.ok_or(AppError::NotFound)?;
    let moved = s.queue.move_job(&id, dir).await?;
    audit(&who(&headers), &format!("move {}", b.direction), &id);
    Ok(Json(json!({"ok": true, "action": "move", "moved": moved})))
}

#[derive(Deserialize)]
struct ModeBody {
    mode: String,
}

pub async fn set_mode(
    State(s): State<HubState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, AppError> {
    let b: ModeBody = body(&bytes)?;
    let mode: Mode = b.mode.parse().map_err(AppError::BadRequest)?;
    s.queue.set_mode(mode).await?;
    audit(&who(&headers), "mode", &b.mode);
    Ok(done("mode"))
}

#[derive(Deserialize, Default)]
struct WarmupBody {
    worker: Option<String>,
}

/// `POST /admin/api/warmup {"worker"?}`: the warm-up workflows run again
/// on that worker (or every connected one) before its next job.
pub async fn warmup(
    State(s): State<HubState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, AppError> {
    let b: WarmupBody = if bytes.is_empty() {
        WarmupBody::default()
    } else {
        body(&bytes)?
    };
    if s.warmups.workflows.is_empty() {
        return Err(AppError::Conflict(
            "no warm-up workflows are configured ([[warmup]] workflow = \"…\" in the config)"
                .into(),
        ));
    }
    let asked = s.warmups.request(b.worker.as_deref()).ok_or_else(|| {
        AppError::Conflict(format!(
            "worker {} is not connected",
            b.worker.as_deref().unwrap_or("?")
        ))
    })?;
    audit(
        &who(&headers),
        "warmup",
        b.worker.as_deref().unwrap_or("all"),
    );
    Ok(Json(
        json!({"ok": true, "action": "warmup", "workers": asked}),
    ))
}

#[derive(Deserialize)]
struct AffinityBody {
    on: bool,
}

/// `POST /admin/api/affinity {"on": bool}`: warm models first, or not.
pub async fn set_affinity(
    State(s): State<HubState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, AppError> {
    let b: AffinityBody = body(&bytes)?;
    s.queue.set_affinity(b.on).await?;
    audit(&who(&headers), "affinity", if b.on { "on" } else { "off" });
    Ok(done("affinity"))
}

#[derive(Deserialize, Default)]
struct PauseBody {
    submit: Option<bool>,
    dispatch: Option<bool>,
}

/// `POST /admin/api/pause`: both (default), or `{"submit": true}` /
/// `{"dispatch": true}` for one side.
pub async fn pause(
    State(s): State<HubState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, AppError> {
    let b: PauseBody = if bytes.is_empty() {
        PauseBody::default()
    } else {
        body(&bytes)?
    };
    let (submit, dispatch) = match (b.submit, b.dispatch) {
        (None, None) => (Some(true), Some(true)),
        other => other,
    };
    let (ps, pd) = s.queue.pause(submit, dispatch).await?;
    audit(&who(&headers), "pause", "");
    Ok(Json(
        json!({"ok": true, "action": "pause", "paused_submit": ps, "paused_dispatch": pd}),
    ))
}

pub async fn resume(
    State(s): State<HubState>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    let (ps, pd) = s.queue.pause(Some(false), Some(false)).await?;
    audit(&who(&headers), "resume", "");
    Ok(Json(
        json!({"ok": true, "action": "resume", "paused_submit": ps, "paused_dispatch": pd}),
    ))
}

#[derive(Deserialize)]
struct BroadcastBody {
    message: String,
}

pub async fn broadcast(
    State(s): State<HubState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, AppError> {
    let b: BroadcastBody = body(&bytes)?;
    let sent = s.queue.broadcast(&b.message).await?;
    audit(&who(&headers), "broadcast", &sent.id);
    Ok(Json(
        json!({"ok": true, "action": "broadcast", "broadcast": sent}),
    ))
}

#[derive(Deserialize)]
struct MaxPendingBody {
    /// `null` removes a participant's override.
    value: Option<u32>,
}

/// `POST /admin/api/max_pending {"value": N}`: everyone's default.
pub async fn max_pending(
    State(s): State<HubState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, AppError> {
    let b: MaxPendingBody = body(&bytes)?;
    let v = b
        .value
        .ok_or_else(|| AppError::BadRequest("value: a number of jobs".into()))?;
    s.queue.set_max_pending(None, Some(v)).await?;
    audit(&who(&headers), "max_pending", &v.to_string());
    Ok(done("max_pending"))
}

async fn known(s: &HubState, name: &str) -> Result<(), AppError> {
    if participant_names(s).await?.contains(name) {
        Ok(())
    } else {
        Err(AppError::NotFound)
    }
}

pub async fn user_max_pending(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, AppError> {
    known(&s, &name).await?;
    let b: MaxPendingBody = body(&bytes)?;
    s.queue.set_max_pending(Some(&name), b.value).await?;
    audit(&who(&headers), "max_pending", &name);
    Ok(done("max_pending"))
}

pub async fn lock(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    known(&s, &name).await?;
    s.queue.set_locked(&name, true).await?;
    audit(&who(&headers), "lock", &name);
    Ok(done("lock"))
}

pub async fn unlock(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    known(&s, &name).await?;
    s.queue.set_locked(&name, false).await?;
    audit(&who(&headers), "unlock", &name);
    Ok(done("unlock"))
}

pub async fn clear(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    known(&s, &name).await?;
    let n = s.queue.clear_queue(&name).await?;
    audit(&who(&headers), "clear queue", &name);
    Ok(Json(json!({"ok": true, "action": "clear", "removed": n})))
}

/// `POST /admin/api/users/{name}/reset`: a new password and token for a
/// participant who lost theirs (or whose card went astray); their open
/// sessions end. The answer is the only place the new password is shown.
pub async fn reset(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, AppError> {
    known(&s, &name).await?;
    let c = crate::auth::Credentials::generate();
    s.queue.set_login(&name, &c.password, &c.token).await?;
    audit(&who(&headers), "reset login", &name);
    Ok(Json(
        json!({"ok": true, "action": "reset", "participant": name,
                   "password": c.password, "token": c.token}),
    ))
}

async fn set_drain(
    s: &HubState,
    headers: &HeaderMap,
    id: &str,
    draining: bool,
) -> Result<Json<Value>, AppError> {
    let connected = s.queue.workers().await?;
    let drained = s.queue.draining().await?;
    if !connected.contains_key(id) && !drained.iter().any(|d| d == id) {
        return Err(AppError::NotFound);
    }
    s.queue.set_draining(id, draining).await?;
    let action = if draining { "drain" } else { "undrain" };
    audit(&who(headers), action, id);
    Ok(done(action))
}

pub async fn drain(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    set_drain(&s, &headers, &id, true).await
}

pub async fn undrain(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    set_drain(&s, &headers, &id, false).await
}

/// `GET /admin/api/events`: every queue change and job event as
/// server-sent events (previews left out), so the dashboard stays live.
pub async fn events(
    State(s): State<HubState>,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, AppError> {
    let mut rx = s.queue.subscribe(None).await?;
    let shutdown = s.shutdown.clone();
    let stream = async_stream::stream! {
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) if m.contains("\"type\":\"job_preview\"") => continue,
                    Some(m) => yield Ok(Event::default().data(m)),
                    None => break,
                },
                _ = shutdown.cancelled() => break,
            }
        }
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
