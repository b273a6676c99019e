//! ComfyUI's jobs API (`/api/jobs…`), which frontend 1.58 uses for its queue
//! and history panels, plus `/interrupt` and `POST /queue`: this
//! participant's jobs only; others' ids answer 404 as if unknown.

use super::FrontendState;
use crate::error::AppError;
use crate::queue::{Actor, Job, QueueError, Refusal, Status};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Queued | Status::Leased => "pending",
        Status::Running => "in_progress",
        Status::Succeeded => "completed",
        Status::Failed => "failed",
        Status::Cancelled => "cancelled",
    }
}

/// Every `{filename, subfolder, type}` of an outputs value, with its node.
fn output_files(outputs: &Value) -> Vec<Value> {
    let mut out = vec![];
    if let Some(nodes) = outputs.as_object() {
        for (node, o) in nodes {
            for (kind, list) in o.as_object().into_iter().flatten() {
                for f in list.as_array().into_iter().flatten() {
                    if f.get("filename").is_some() {
                        let mut f = f.clone();
                        f["nodeId"] = json!(node);
                        f["mediaType"] = json!(kind);
                        out.push(f);
                    }
                }
            }
        }
    }
    out
}

/// A job in the shape of ComfyUI's jobs API (null fields left out).
fn job_json(j: &Job) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(j.id));
    m.insert("status".into(), json!(status_name(j.status)));
    m.insert("priority".into(), json!(j.number));
    m.insert("create_time".into(), json!(j.created_ms));
    if let Some(t) = j.started_ms {
        m.insert("execution_start_time".into(), json!(t));
    }
    if let Some(t) = j.finished_ms {
        m.insert("execution_end_time".into(), json!(t));
    }
    if let Some(e) = &j.error {
        let mut d = e.details.clone();
        if !d.is_object() {
            d = json!({});
        }
        d["exception_message"] = json!(e.message);
        d["exception_type"] = json!(e.kind);
        d["prompt_id"] = json!(j.id);
        m.insert("execution_error".into(), d);
    }
    if let Some(outputs) = &j.outputs {
        let files = output_files(outputs);
        m.insert("outputs_count".into(), json!(files.len()));
        let previewable: Vec<&Value> = files.iter().filter(|f| f["type"] == "output").collect();
        m.insert("previewable_outputs_count".into(), json!(previewable.len()));
        if let Some(first) = previewable.first() {
            m.insert("preview_output".into(), (*first).clone());
        }
    }
    if let Some(id) = j.extra.pointer("/extra_pnginfo/workflow/id") {
        m.insert("workflow_id".into(), id.clone());
    }
    Value::Object(m)
}

/// All of this participant's jobs: waiting, running and finished.
async fn all_jobs(s: &FrontendState) -> Result<Vec<Job>, AppError> {
    let q = s.queue.participant_queue(&s.participant, 1).await?;
    let mut jobs = q.running;
    for w in &q.waiting {
        if let Some(j) = s.queue.job_of(&s.participant, &w.job_id).await? {
            jobs.push(j);
        }
    }
    let limit = s.queue.settings().history_limit as usize;
    jobs.extend(s.queue.history(&s.participant, 0, limit).await?);
    Ok(jobs)
}

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    workflow_id: Option<String>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

fn bad(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

/// `GET /api/jobs?status=&workflow_id=&sort_by=&sort_order=&limit=&offset=`.
pub async fn list(
    State(s): State<FrontendState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, AppError> {
    let statuses: Option<Vec<String>> = q
        .status
        .map(|v| v.split(',').map(|x| x.trim().to_string()).collect());
    if let Some(st) = &statuses {
        if st.iter().any(|x| {
            !matches!(
                x.as_str(),
                "pending" | "in_progress" | "completed" | "failed" | "cancelled"
            )
        }) {
            return Ok(bad("invalid status"));
        }
    }
    let by_duration = match q.sort_by.as_deref() {
        None | Some("created_at") => false,
        Some("execution_duration") => true,
        Some(_) => return Ok(bad("invalid sort_by")),
    };
    let ascending = match q.sort_order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Ok(bad("invalid sort_order")),
    };
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => None,
        Some(Ok(n)) if n > 0 => Some(n),
        Some(_) => return Ok(bad("limit must be a positive integer")),
    };
    let offset = match q.offset.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(_) => return Ok(bad("offset must be a non-negative integer")),
    };
    let mut jobs: Vec<Value> = all_jobs(&s)
        .await?
        .iter()
        .map(job_json)
        .filter(|j| {
            statuses
                .as_ref()
                .is_none_or(|st| st.iter().any(|x| j["status"] == x.as_str()))
        })
        .filter(|j| {
            q.workflow_id
                .as_ref()
                .is_none_or(|w| j["workflow_id"] == w.as_str())
        })
        .collect();
    let key = |j: &Value| -> u64 {
        if by_duration {
            j["execution_end_time"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(j["execution_start_time"].as_u64().unwrap_or(0))
        } else {
            j["create_time"].as_u64().unwrap_or(0)
        }
    };
    jobs.sort_by_key(key);
    if !ascending {
        jobs.reverse();
    }
    let total = jobs.len();
    let page: Vec<Value> = jobs
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    let has_more = offset + page.len() < total;
    Ok(Json(json!({"jobs": page, "pagination": {"offset": offset, "limit": limit, "total": total, "has_more": has_more}})).into_response())
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "Job not found"})),
    )
        .into_response()
}

/// `GET /api/jobs/{id}`: the job with its outputs and workflow.
pub async fn one(
    State(s): State<FrontendState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let Some(j) = s.queue.job_of(&s.participant, &id).await? else {
        return Ok(not_found());
    };
    let mut v = job_json(&j);
    v["outputs"] = j.outputs.clone().unwrap_or(json!({}));
    if j.status.is_terminal() {
        v["execution_status"] = json!({
            "status_str": if j.status == Status::Succeeded { "success" } else { "error" },
            "completed": j.status == Status::Succeeded,
            "messages": [],
        });
    }
    v["workflow"] = json!({"prompt": j.prompt, "extra_data": j.extra});
    Ok(Json(v).into_response())
}

/// Cancels one of this participant's jobs; `Ok(false)` when it already ended.
async fn cancel_one(s: &FrontendState, id: &str) -> Result<bool, QueueError> {
    match s
        .queue
        .cancel(id, &Actor::Participant(s.participant.clone()))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.refusal() == Some(Refusal::AlreadyFinished) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `POST /api/jobs/{id}/cancel`.
pub async fn cancel(
    State(s): State<FrontendState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    match cancel_one(&s, &id).await {
        Ok(c) => Ok(Json(json!({"cancelled": c})).into_response()),
        Err(e) if e.refusal() == Some(Refusal::NotFound) => Ok(not_found()),
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/jobs/cancel` with `{"job_ids": [...]}`.
pub async fn cancel_many(
    State(s): State<FrontendState>,
    body: Bytes,
) -> Result<Response, AppError> {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(ids) = v["job_ids"].as_array() else {
        return Ok(bad("job_ids must be a list"));
    };
    let ids: Vec<&str> = ids.iter().filter_map(Value::as_str).collect();
    if ids.len() != v["job_ids"].as_array().map_or(0, Vec::len)
        || ids.iter().any(|i| !crate::queue::valid_job_id(i))
    {
        return Ok((
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_ids"})),
        )
            .into_response());
    }
    let mut any = false;
    for id in ids {
        match cancel_one(&s, id).await {
            Ok(c) => any |= c,
            Err(e) if e.refusal() == Some(Refusal::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(json!({"cancelled": any})).into_response())
}

/// `POST /interrupt` (optionally `{"prompt_id"}`): stops this participant's
/// running job(s) — never anyone else's. No body stops them all, as in
/// ComfyUI; a body that is not JSON is a 400 rather than a guess.
pub async fn interrupt(
    State(s): State<FrontendState>,
    body: Bytes,
) -> Result<StatusCode, AppError> {
    let v: Value = if body.trim_ascii().is_empty() {
        Value::Null
    } else {
        super::json_body(&body)?
    };
    let q = s.queue.participant_queue(&s.participant, 1).await?;
    for j in q.running {
        if v["prompt_id"].as_str().is_none_or(|p| p == j.id) {
            cancel_one(&s, &j.id).await?;
        }
    }
    Ok(StatusCode::OK)
}

/// `POST /queue`: `{"clear": true}` or `{"delete": [ids]}` of waiting jobs.
pub async fn post_queue(
    State(s): State<FrontendState>,
    body: Bytes,
) -> Result<StatusCode, AppError> {
    let v: Value = super::json_body(&body)?;
    if v["clear"] == true {
        s.queue.clear_queue(&s.participant).await?;
    }
    for id in v["delete"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if let Some(j) = s.queue.job_of(&s.participant, id).await? {
            if j.status == Status::Queued {
                cancel_one(&s, id).await?;
            }
        }
    }
    Ok(StatusCode::OK)
}
