//! The participant's `/ws`: ComfyUI's socket. `status` with a session id on
//! connect, `feature_flags` negotiation, then this participant's job events
//! in ComfyUI's shapes (relayed by the hub from the worker), previews as
//! binary frames (event 4 with metadata for clients that negotiated it,
//! event 1 otherwise), `executing` with node=null once a job is recorded as
//! ended (so `/history` has it), and
//! `status` with this participant's own queue size whenever it changes.
//! Only this participant's channel is ever subscribed. Each socket holds a
//! Redis subscription, so a participant may hold only so many at once.

use super::FrontendState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
pub struct WsQuery {
    #[serde(rename = "clientId")]
    client_id: Option<String>,
}

/// Opens an editor socket, if the participant holds fewer than the limit
/// (`frontend.max_sockets_per_participant`); past it a 429 with ComfyUI's
/// error shape, and nothing is subscribed. The slot is held until the
/// socket closes.
pub async fn connect(
    State(s): State<FrontendState>,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let Ok(slot) = s.sockets.clone().try_acquire_owned() else {
        tracing::info!(participant = %s.participant, limit = s.max_sockets, "editor socket refused: too many open");
        let message = format!(
            "{} already has {} editor connections open, the most allowed; close other tabs or windows of the editor and reload",
            s.participant, s.max_sockets
        );
        let body = json!({"error": {"type": "too_many_sockets", "message": message,
            "details": "", "extra_info": {"limit": s.max_sockets}}});
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "10")],
            Json(body),
        )
            .into_response();
    };
    ws.max_message_size(1 << 20)
        .on_upgrade(move |socket| async move {
            session(socket, s, q.client_id).await;
            drop(slot);
        })
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

async fn status(s: &FrontendState, sid: Option<&str>) -> Message {
    let mut data =
        json!({"status": {"exec_info": {"queue_remaining": super::prompt::remaining(s).await}}});
    if let Some(sid) = sid {
        data["sid"] = json!(sid);
    }
    text(json!({"type": "status", "data": data}))
}

/// A preview as a binary frame: type 4 (metadata JSON + image) when the
/// client supports it, else type 1 (image type + image).
fn preview_frame(v: &Value, with_metadata: bool) -> Option<Message> {
    let image = base64::engine::general_purpose::STANDARD
        .decode(v["data_b64"].as_str()?)
        .ok()?;
    let mime = v["mime"].as_str().unwrap_or("image/jpeg");
    let mut frame = vec![];
    if with_metadata {
        let mut meta = v["metadata"].clone();
        if !meta.is_object() {
            meta = json!({});
        }
        meta["prompt_id"] = v["job"].clone();
        meta["image_type"] = json!(mime);
        let meta = meta.to_string();
        frame.extend_from_slice(&4u32.to_be_bytes());
        frame.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        frame.extend_from_slice(meta.as_bytes());
    } else {
        let kind: u32 = if mime == "image/png" { 2 } else { 1 };
        frame.extend_from_slice(&1u32.to_be_bytes());
        frame.extend_from_slice(&kind.to_be_bytes());
    }
    frame.extend_from_slice(&image);
    Some(Message::Binary(frame.into()))
}

fn end_marker(job: &Value) -> Message {
    text(
        json!({"type": "executing", "data": {"node": null, "display_node": null, "prompt_id": job}}),
    )
}

async fn session(mut socket: WebSocket, s: FrontendState, client_id: Option<String>) {
    let sid = client_id
        .filter(|c| !c.is_empty() && c.len() <= 64)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let Ok(mut events) = s.queue.subscribe(Some(&s.participant)).await else {
        return;
    };
    if socket.send(status(&s, Some(&sid)).await).await.is_err() {
        return;
    }
    // Presence for the instructor's "online" column, refreshed while open.
    let presence = uuid::Uuid::new_v4().simple().to_string();
    let _ = s
        .queue
        .set_online(&s.participant, &presence, ONLINE_TTL)
        .await;
    let mut refresh = tokio::time::interval(ONLINE_TTL / 3);
    refresh.tick().await;
    serve(&mut socket, &s, &mut events, &mut refresh, &presence).await;
    let _ = s
        .queue
        .set_online(&s.participant, &presence, std::time::Duration::ZERO)
        .await;
}

/// How long an editor socket counts as online without a refresh.
const ONLINE_TTL: std::time::Duration = std::time::Duration::from_secs(90);

async fn serve(
    socket: &mut WebSocket,
    s: &FrontendState,
    events: &mut tokio::sync::mpsc::Receiver<String>,
    refresh: &mut tokio::time::Interval,
    presence: &str,
) {
    let mut metadata = false;
    // Jobs whose end this socket has already told (to synthesize one for jobs
    // that ended without a worker's events: refused, cancelled while waiting).
    let mut ended = std::collections::HashSet::new();
    // A browser answers pings by itself; a socket that stays silent is a
    // vanished laptop, not a participant (TCP may take many minutes to say).
    let mut ping = tokio::time::interval(s.socket_ping);
    ping.tick().await;
    let mut heard = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                let _ = s.queue.set_online(&s.participant, presence, ONLINE_TTL).await;
            }
            _ = ping.tick() => {
                if heard.elapsed() > s.socket_ping * 3 {
                    tracing::info!(participant = %s.participant, "closing an editor socket that stopped answering");
                    return;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            m = socket.recv() => {
                let Some(Ok(m)) = m else { return };
                heard = std::time::Instant::now();
                let Message::Text(t) = m else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
                if v["type"] == "feature_flags" {
                    metadata = v["data"]["supports_preview_metadata"] == true;
                    let flags = json!({"type": "feature_flags", "data": {
                        "supports_preview_metadata": true, "max_upload_size": s.max_upload_bytes}});
                    if socket.send(text(flags)).await.is_err() {
                        return;
                    }
                }
            }
            e = events.recv() => {
                let Some(e) = e else { return };
                let Ok(v) = serde_json::from_str::<Value>(&e) else { continue };
                let mut out = vec![];
                match v["type"].as_str() {
                    Some("job_event") => {
                        let ev = v["event"].clone();
                        if matches!(ev["type"].as_str(),
                            Some("execution_success" | "execution_error" | "execution_interrupted")) {
                            if let Some(job) = v["job"].as_str() {
                                ended.insert(job.to_string());
                            }
                        }
                        out.push(text(ev));
                    }
                    Some("job_preview") => out.extend(preview_frame(&v, metadata)),
                    // The instructor's message; the extension script shows it.
                    _ if v.get("broadcast").is_some() => out.push(text(
                        json!({"type": "comfy_multi.broadcast", "data": v["broadcast"]}),
                    )),
                    // A workflow the instructor sent: the extension opens it.
                    _ if v.get("workflow_pushed").is_some() => out.push(text(
                        json!({"type": "comfy_multi.workflow", "data": v["workflow_pushed"]}),
                    )),
                    // A state change of one of this participant's jobs. The
                    // end marker waits for it, so that a client reading
                    // /history right after it finds the job there.
                    _ if v.get("status").is_some() => {
                        let job = v["job"].as_str().unwrap_or_default().to_string();
                        let state = v["status"].as_str().unwrap_or_default();
                        if matches!(state, "succeeded" | "failed" | "cancelled") {
                            let told = ended.remove(&job);
                            let kind = match state {
                                "failed" => Some("execution_error"),
                                "cancelled" => Some("execution_interrupted"),
                                _ => None,
                            };
                            if let Some(kind) = kind.filter(|_| !told) {
                                let message = match s.queue.job_of(&s.participant, &job).await {
                                    Ok(Some(j)) => j.error.map(|e| e.message).unwrap_or_default(),
                                    _ => String::new(),
                                };
                                out.push(text(json!({"type": kind, "data": {"prompt_id": job,
                                    "exception_message": message, "node_id": null, "node_type": null,
                                    "executed": [], "timestamp": 0}})));
                            }
                            out.push(end_marker(&v["job"]));
                        }
                        out.push(status(s, None).await);
                    }
                    _ => {}
                }
                for m in out {
                    if socket.send(m).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
