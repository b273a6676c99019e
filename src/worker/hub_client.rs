//! The worker's side of the hub: the authenticated WebSocket and the file
//! endpoints (download a job's inputs, upload its outputs).

use super::comfyui::FileRef;
use crate::protocol::CONNECT_PATH;
use bytes::Bytes;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type HubSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("hub unreachable: {0}")]
    Unreachable(String),
    #[error("hub refused: {status} {body}")]
    Refused { status: u16, body: String },
}

/// How to reach the hub.
#[derive(Clone)]
pub struct HubClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl HubClient {
    pub fn new(base: &str, token: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("HTTP client");
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        }
    }

    /// Opens the worker WebSocket.
    pub async fn connect(&self) -> Result<HubSocket, HubError> {
        let ws_base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base.clone()
        };
        let mut req = format!("{ws_base}{CONNECT_PATH}")
            .into_client_request()
            .map_err(|e| HubError::Unreachable(e.to_string()))?;
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().map_err(|_| {
                HubError::Unreachable("the worker token is not a valid header".into())
            })?,
        );
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(64 << 20));
        // Nagle off: small frames (events, results) must not wait for ACKs.
        match tokio_tungstenite::connect_async_with_config(req, Some(config), true).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(HubError::Refused {
                status: resp.status().as_u16(),
                body: String::new(),
            }),
            Err(e) => Err(HubError::Unreachable(e.to_string())),
        }
    }

    async fn check(
        resp: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, HubError> {
        let resp = resp.map_err(|e| HubError::Unreachable(e.to_string()))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            Err(HubError::Refused { status, body })
        }
    }

    /// One file of the job's participant (`folder`: input, output or temp).
    pub async fn input(
        &self,
        job: &str,
        token: u64,
        folder: &str,
        name: &str,
    ) -> Result<Bytes, HubError> {
        let resp = self
            .http
            .get(format!("{}/worker/v1/jobs/{job}/input", self.base))
            .query(&[
                ("token", token.to_string()),
                ("folder", folder.to_string()),
                ("name", name.to_string()),
            ])
            .bearer_auth(&self.token)
            .send()
            .await;
        Self::check(resp)
            .await?
            .bytes()
            .await
            .map_err(|e| HubError::Unreachable(e.to_string()))
    }

    /// Uploads one output file; answers the name it is stored under.
    pub async fn output(
        &self,
        job: &str,
        token: u64,
        file: &FileRef,
        data: Bytes,
    ) -> Result<FileRef, HubError> {
        let resp = self
            .http
            .post(format!("{}/worker/v1/jobs/{job}/output", self.base))
            .query(&[
                ("token", token.to_string()),
                ("type", file.kind.clone()),
                ("subfolder", file.subfolder.clone()),
                ("filename", file.filename.clone()),
            ])
            .bearer_auth(&self.token)
            .body(data)
            .send()
            .await;
        Self::check(resp)
            .await?
            .json()
            .await
            .map_err(|e| HubError::Unreachable(e.to_string()))
    }
}
