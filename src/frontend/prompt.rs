//! Queueing from the editor: `POST /prompt` (checked against the workers'
//! node catalogue, answered in ComfyUI's shapes so the editor highlights
//! bad nodes), `GET /prompt`, `GET /queue`, and the participant's history
//! (`/history`; `/view` is in `files.rs`). Everything is this participant's
//! only: another participant's job ids answer as if they did not exist.

use super::{validate, FrontendState};
use crate::error::AppError;
use crate::queue::{Job, NewJob, QueueError, Status};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// ComfyUI's 400 answer: `{error: {type, message, details, extra_info}, node_errors}`.
fn rejected(kind: &str, message: &str, details: &str, node_errors: Value) -> Response {
    let body = json!({
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": node_errors,
    });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// Checks the prompt: first against the instructor's node policy, then
/// that every model file it names is on some worker, then as ComfyUI
/// would — fully against the workers' merged node catalogue when one is
/// known, else only that every node names a type. Returns ComfyUI's
/// `node_errors` (empty) and the job's requirement tags.
async fn check(
    s: &FrontendState,
    prompt: &Map<String, Value>,
) -> Result<(Value, Vec<String>), Response> {
    let catalogue = super::boot::current_catalogue(s).await;
    let parsed = catalogue.as_ref().and_then(|c| c.parsed.clone());
    if let Err(body) = s.node_policy.check(prompt, parsed.as_deref()) {
        tracing::info!(participant = %s.participant, kind = "node_not_allowed", "prompt refused");
        return Err((StatusCode::BAD_REQUEST, Json(body)).into_response());
    }
    let (Some(catalogue), Some(parsed)) = (catalogue, parsed) else {
        return validate::class_types_present(prompt)
            .map(|()| (json!({}), Vec::new()))
            .map_err(|r| {
                tracing::info!(participant = %s.participant, kind = r.kind(), "prompt refused");
                (StatusCode::BAD_REQUEST, Json(r.body())).into_response()
            });
    };
    if let Some(refused) = missing_models(prompt, &parsed, &catalogue.model_inputs) {
        tracing::info!(participant = %s.participant, kind = "model_on_no_worker", "prompt refused");
        return Err(refused);
    }
    let own = super::files::own_input_files(s).await;
    let node_errors = validate::validate(prompt, &parsed, &own)
        .map(|v| Value::Object(v.node_errors))
        .map_err(|r| {
            tracing::info!(participant = %s.participant, kind = r.kind(), "prompt refused");
            (StatusCode::BAD_REQUEST, Json(r.body())).into_response()
        })?;
    Ok((
        node_errors,
        crate::catalogue::needs(prompt, &catalogue.model_inputs),
    ))
}

/// ComfyUI's validation answer for model files no worker has (each named,
/// on its node, so the editor marks it), or `None` when all are somewhere.
fn missing_models(
    prompt: &Map<String, Value>,
    catalogue: &Value,
    model_inputs: &std::collections::BTreeSet<(String, String)>,
) -> Option<Response> {
    let mut node_errors = Map::new();
    let mut names = Vec::new();
    for r in crate::catalogue::model_refs(prompt, model_inputs) {
        let spec = ["required", "optional"]
            .iter()
            .find_map(|g| catalogue.get(&r.class)?.get("input")?.get(g)?.get(&r.input));
        let offered = spec.and_then(crate::catalogue::combo_options);
        if offered.is_some_and(|o| o.contains(&r.file.as_str())) {
            continue;
        }
        names.push(r.file.clone());
        let entry = node_errors.entry(r.node.clone()).or_insert_with(
            || json!({"errors": [], "dependent_outputs": [], "class_type": r.class}),
        );
        if let Some(errors) = entry["errors"].as_array_mut() {
            errors.push(json!({
                "type": "value_not_in_list",
                "message": format!("{} is on no worker", r.file),
                "details": format!("{}: '{}' is on no worker of this workshop", r.input, r.file),
                "extra_info": {"input_name": r.input, "received_value": r.file},
            }));
        }
    }
    if names.is_empty() {
        return None;
    }
    let message = format!("{} is on no worker", names.join(", "));
    Some(rejected(
        "prompt_outputs_failed_validation",
        &message,
        "ask your instructor which models this workshop has",
        Value::Object(node_errors),
    ))
}

/// `POST /prompt`: `{prompt, client_id, prompt_id?, extra_data?}`; any
/// Content-Type (script clients send form-encoded JSON). Client-sent
/// identity and priority are ignored.
pub async fn post(State(s): State<FrontendState>, body: Result<Bytes, BytesRejection>) -> Response {
    let limit = super::max_prompt_body(s.queue.settings().max_prompt_bytes);
    let body = match super::limited_body(body, limit) {
        Ok(b) => b,
        Err(AppError::TooLarge(message)) => {
            let body = json!({"error": {"type": "prompt_too_large", "message": message, "details": "", "extra_info": {}}, "node_errors": {}});
            return (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response();
        }
        Err(e) => return rejected("invalid_prompt", &e.to_string(), "", json!({})),
    };
    let v = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => v,
        Err(e) => {
            return rejected(
                "invalid_prompt",
                "the request body is not JSON",
                &e.to_string(),
                json!({}),
            )
        }
    };
    let Some(prompt) = v.get("prompt").and_then(Value::as_object) else {
        return rejected(
            "no_prompt",
            "No prompt provided",
            "No prompt provided",
            json!({}),
        );
    };
    let (node_errors, requires) = match check(&s, prompt).await {
        Ok(checked) => checked,
        Err(refused) => return refused,
    };
    let id = v
        .get("prompt_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let extra = v
        .get("extra_data")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or(json!({}));
    let job = NewJob {
        id,
        participant: s.participant.clone(),
        prompt: Value::Object(prompt.clone()),
        extra,
        requires,
        ..Default::default()
    };
    match s.queue.enqueue(job).await {
        Ok(e) => Json(json!({"prompt_id": e.id, "number": e.number, "node_errors": node_errors}))
            .into_response(),
        Err(QueueError::Refused { refusal, message }) => {
            // ComfyUI's error shape, so the editor shows the reason.
            let code = match refusal {
                crate::queue::Refusal::TooManyPending => StatusCode::TOO_MANY_REQUESTS,
                crate::queue::Refusal::PromptTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                crate::queue::Refusal::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
                crate::queue::Refusal::Paused | crate::queue::Refusal::Locked => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::BAD_REQUEST,
            };
            let body = json!({"error": {"type": refusal.as_str(), "message": message, "details": "", "extra_info": {}}, "node_errors": {}});
            (code, Json(body)).into_response()
        }
        Err(e) => AppError::from(e).into_response(),
    }
}

/// Waiting + running jobs of this participant.
pub async fn remaining(s: &FrontendState) -> usize {
    // The socket sends this after every change of the participant's jobs:
    // a count, not the whole queue (which costs a read per waiting job).
    s.queue
        .pending_count(&s.participant)
        .await
        .map_or(0, |n| n as usize)
}

/// `GET /prompt`.
pub async fn get(State(s): State<FrontendState>) -> Json<Value> {
    Json(json!({"exec_info": {"queue_remaining": remaining(&s).await}}))
}

fn queue_item(j: &Job) -> Value {
    json!([j.number, j.id, j.prompt, j.extra, []])
}

/// `GET /queue`: `{queue_running, queue_pending}` of this participant.
pub async fn queue(State(s): State<FrontendState>) -> Result<Json<Value>, AppError> {
    let q = s.queue.participant_queue(&s.participant, 1).await?;
    let mut pending = vec![];
    for w in &q.waiting {
        if let Some(j) = s.queue.job_of(&s.participant, &w.job_id).await? {
            pending.push(queue_item(&j));
        }
    }
    let running: Vec<Value> = q.running.iter().map(queue_item).collect();
    Ok(Json(
        json!({"queue_running": running, "queue_pending": pending}),
    ))
}

/// One history entry in ComfyUI's shape.
fn history_entry(j: &Job) -> Value {
    let (status_str, completed) = match j.status {
        Status::Succeeded => ("success", true),
        _ => ("error", false),
    };
    let mut messages = vec![];
    if let Some(e) = &j.error {
        messages.push(json!(["execution_error", {"prompt_id": j.id, "exception_message": e.message, "exception_type": e.kind}]));
    }
    json!({
        "prompt": [j.number, j.id, j.prompt, j.extra, []],
        "outputs": j.outputs.clone().unwrap_or(json!({})),
        "status": {"status_str": status_str, "completed": completed, "messages": messages},
        "meta": {},
    })
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    max_items: Option<usize>,
    offset: Option<usize>,
}

/// `GET /history?max_items=&offset=`.
pub async fn history(
    State(s): State<FrontendState>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, AppError> {
    let jobs = s
        .queue
        .history(
            &s.participant,
            q.offset.unwrap_or(0),
            q.max_items.unwrap_or(200).min(1000),
        )
        .await?;
    let mut m = Map::new();
    for j in jobs.iter().rev() {
        m.insert(j.id.clone(), history_entry(j));
    }
    Ok(Json(Value::Object(m)))
}

/// `GET /history/{id}`: `{}` for unknown ids and other participants' jobs.
pub async fn history_one(
    State(s): State<FrontendState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    let mut m = Map::new();
    if let Some(j) = s.queue.job_of(&s.participant, &id).await? {
        if j.status.is_terminal() {
            m.insert(j.id.clone(), history_entry(&j));
        }
    }
    Ok(Json(Value::Object(m)))
}

/// `POST /history`: `{"clear": true}` or `{"delete": [ids]}`.
pub async fn post_history(
    State(s): State<FrontendState>,
    body: Bytes,
) -> Result<StatusCode, AppError> {
    let v: Value = super::json_body(&body)?;
    if v["clear"] == true {
        s.queue.delete_history(&s.participant, &[]).await?;
    }
    if let Some(ids) = v["delete"].as_array() {
        let ids: Vec<String> = ids
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect();
        if !ids.is_empty() {
            s.queue.delete_history(&s.participant, &ids).await?;
        }
    }
    Ok(StatusCode::OK)
}
