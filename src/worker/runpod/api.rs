//! RunPod's serverless HTTP API, as its public documentation describes it:
//! `POST /run`, `GET /status/{id}`, `POST /cancel/{id}`, `GET /health`
//! under `<api_base>/<endpoint id>`, the API key as a bearer token. Every
//! answer is read with a size limit and checked for shape here, so the
//! job flow above only ever sees a typed answer or an error in words.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::Value;
use std::time::Duration;

/// Any answer but a status (run, cancel, health).
const MAX_SMALL_BYTES: usize = 1024 * 1024;

/// What went wrong talking to RunPod.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 401/403: the API key is wrong or lacks access.
    #[error("RunPod refused the API key ({0})")]
    Unauthorized(u16),
    /// 404 on a job: RunPod no longer knows it.
    #[error("RunPod does not know this job (404)")]
    NotFound,
    /// 429/5xx, a timeout, a refused connection: worth retrying.
    #[error("RunPod is unavailable: {0}")]
    Unavailable(String),
    /// A body or file over its size limit.
    #[error("RunPod sent more than the limit allows")]
    TooLarge,
    /// Anything else: a 4xx for our request, a body that is not the JSON
    /// the documentation promises, or one over the size limit.
    #[error("RunPod answered something unusable: {0}")]
    Garbage(String),
}

/// A job's state (RunPod's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    InQueue,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl JobState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "IN_QUEUE" => Self::InQueue,
            "IN_PROGRESS" => Self::InProgress,
            "COMPLETED" => Self::Completed,
            "FAILED" => Self::Failed,
            "CANCELLED" => Self::Cancelled,
            "TIMED_OUT" => Self::TimedOut,
            _ => return None,
        })
    }
}

/// `GET /status/{id}`.
#[derive(Debug, Clone)]
pub struct Status {
    pub state: JobState,
    /// The handler's output (COMPLETED; worker-comfyui also puts
    /// `{"error": …}` here).
    pub output: Option<Value>,
    /// RunPod's error text (FAILED).
    pub error: Option<String>,
    /// Milliseconds the handler ran, as RunPod bills it.
    pub execution_ms: Option<u64>,
}

/// `GET /health`, summed up for the instructor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub idle: u64,
    pub running: u64,
    pub initializing: u64,
    pub throttled: u64,
    pub unhealthy: u64,
    pub in_queue: u64,
    pub in_progress: u64,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RunPod workers: {} idle, {} running, {} initializing",
            self.idle, self.running, self.initializing
        )?;
        if self.throttled > 0 {
            write!(f, ", {} throttled", self.throttled)?;
        }
        if self.unhealthy > 0 {
            write!(f, ", {} unhealthy", self.unhealthy)?;
        }
        write!(
            f,
            "; jobs: {} in its queue, {} in progress",
            self.in_queue, self.in_progress
        )
    }
}

/// One endpoint's API.
pub struct Api {
    http: reqwest::Client,
    /// `<api_base>/<endpoint id>`, no trailing slash.
    base: String,
    key: String,
    /// Status answers larger than this are refused (they carry the
    /// outputs as base64; each file is checked against its own limit).
    max_status_bytes: usize,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Api {
    pub fn new(
        api_base: &str,
        endpoint: &str,
        key: &str,
        max_status_bytes: usize,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Self {
            http,
            base: format!("{}/{endpoint}", api_base.trim_end_matches('/')),
            key: key.to_string(),
            max_status_bytes,
        })
    }

    /// Where this endpoint lives (no secret in it).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /run`: answers RunPod's job id.
    pub async fn run(&self, body: &Value) -> Result<String, ApiError> {
        let v = self
            .call(
                self.http.post(format!("{}/run", self.base)).json(body),
                MAX_SMALL_BYTES,
            )
            .await?;
        v.get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && id.len() <= 200)
            .map(str::to_string)
            .ok_or_else(|| ApiError::Garbage("no job id in the answer to /run".into()))
    }

    /// `GET /status/{id}`.
    pub async fn status(&self, id: &str) -> Result<Status, ApiError> {
        let v = self
            .call(
                self.http.get(self.job_url("status", id)),
                self.max_status_bytes,
            )
            .await?;
        let state = v
            .get("status")
            .and_then(Value::as_str)
            .and_then(JobState::parse)
            .ok_or_else(|| ApiError::Garbage("no known status in the answer to /status".into()))?;
        let error = match v.get("error") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        Ok(Status {
            state,
            output: v.get("output").filter(|o| !o.is_null()).cloned(),
            error,
            execution_ms: v.get("executionTime").and_then(Value::as_u64),
        })
    }

    /// `POST /cancel/{id}`.
    pub async fn cancel(&self, id: &str) -> Result<(), ApiError> {
        self.call(self.http.post(self.job_url("cancel", id)), MAX_SMALL_BYTES)
            .await
            .map(|_| ())
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Health, ApiError> {
        let v = self
            .call(
                self.http.get(format!("{}/health", self.base)),
                MAX_SMALL_BYTES,
            )
            .await?;
        let (w, j) = (&v["workers"], &v["jobs"]);
        if !w.is_object() || !j.is_object() {
            return Err(ApiError::Garbage(
                "no workers/jobs in the answer to /health".into(),
            ));
        }
        let n = |o: &Value, k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
        Ok(Health {
            idle: n(w, "idle"),
            running: n(w, "running"),
            initializing: n(w, "initializing"),
            throttled: n(w, "throttled"),
            unhealthy: n(w, "unhealthy"),
            in_queue: n(j, "inQueue"),
            in_progress: n(j, "inProgress"),
        })
    }

    /// Downloads an output RunPod's handler left at a URL (an S3 bucket):
    /// no API key goes with it; at most `limit` bytes.
    pub async fn download(&self, url: &str, limit: usize) -> Result<Bytes, ApiError> {
        let ok = url.starts_with("https://") || url.starts_with("http://");
        if !ok {
            return Err(ApiError::Garbage(
                "an output URL that is not http(s)".into(),
            ));
        }
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| ApiError::Unavailable(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(ApiError::Unavailable(format!(
                "output download answered {}",
                resp.status().as_u16()
            )));
        }
        read_limited(resp, limit).await
    }

    fn job_url(&self, what: &str, id: &str) -> String {
        let mut url = format!("{}/{what}/", self.base);
        url.push_str(&crate::paths::url_component(id));
        url
    }

    async fn call(&self, req: reqwest::RequestBuilder, limit: usize) -> Result<Value, ApiError> {
        let resp = req
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| ApiError::Unavailable(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {}
            401 | 403 => return Err(ApiError::Unauthorized(status)),
            404 => return Err(ApiError::NotFound),
            408 | 429 | 500..=599 => {
                return Err(ApiError::Unavailable(format!("it answered {status}")))
            }
            _ => return Err(ApiError::Garbage(format!("it answered {status}"))),
        }
        let body = read_limited(resp, limit).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Garbage(format!("not JSON ({e})")))
    }
}

/// A response body, refused once it grows past `limit`.
async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Bytes, ApiError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge);
    }
    let mut out = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::Unavailable(e.without_url().to_string()))?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}
