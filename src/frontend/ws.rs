//! The participant's `/ws`: ComfyUI's socket. For now: `status` with a
//! session id on connect and `feature_flags` negotiation; the participant's
//! job events follow with the prompt endpoints.

use super::FrontendState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub struct WsQuery {
    #[serde(rename = "clientId")]
    client_id: Option<String>,
}

pub async fn connect(
    State(s): State<FrontendState>,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.max_message_size(1 << 20)
        .on_upgrade(move |socket| session(socket, s, q.client_id))
}

async fn session(mut socket: WebSocket, s: FrontendState, client_id: Option<String>) {
    let sid = client_id
        .filter(|c| !c.is_empty() && c.len() <= 64)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let status = json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": sid}});
    if socket
        .send(Message::Text(status.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(msg)) = socket.recv().await {
        let Message::Text(text) = msg else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if v["type"] == "feature_flags" {
            let flags = json!({"type": "feature_flags", "data": {
                "supports_preview_metadata": true, "max_upload_size": s.max_upload_bytes}});
            if socket
                .send(Message::Text(flags.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
