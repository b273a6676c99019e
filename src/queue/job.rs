//! The queue's data types: jobs, their status, leases and scheduling modes,
//! and how a job is read back from its Redis hash.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Leased,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Leased => "leased",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// True once the job has ended and sits in history.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "queued" => Status::Queued,
            "leased" => Status::Leased,
            "running" => Status::Running,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            other => return Err(format!("unknown job status {other:?}")),
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scheduling policy applied after the priority lane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Fifo,
    RoundRobin,
    #[default]
    FairShare,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fifo => "fifo",
            Mode::RoundRobin => "round_robin",
            Mode::FairShare => "fair_share",
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "fifo" => Mode::Fifo,
            "round_robin" => Mode::RoundRobin,
            "fair_share" => Mode::FairShare,
            other => {
                return Err(format!(
                    "unknown scheduling mode {other:?}; use fifo, round_robin or fair_share"
                ))
            }
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a worker reports the end of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Why a job failed, in ComfyUI's terms where it came from ComfyUI.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub details: serde_json::Value,
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub participant: String,
    pub number: u64,
    pub status: Status,
    pub prompt: serde_json::Value,
    pub extra: serde_json::Value,
    /// Display name (the workflow's name), may be empty.
    pub name: String,
    pub priority: bool,
    pub attempts: u32,
    /// Milliseconds since the Unix epoch (Redis server time).
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub worker: Option<String>,
    /// The current lease's fencing token (never shown to participants).
    #[serde(skip_serializing, default)]
    pub lease_token: Option<u64>,
    pub cancel_requested: bool,
    pub outputs: Option<serde_json::Value>,
    pub error: Option<JobError>,
    pub gpu_seconds: Option<f64>,
    /// Output files any attempt stored (`type/subfolder/name`, relative to
    /// the participant's folder; see `note_output.lua`). Hub-internal.
    #[serde(skip_serializing, default)]
    pub noted_outputs: Vec<String>,
}

impl Job {
    /// Builds a job from its Redis hash; `None` when the hash is empty (gone).
    pub fn from_hash(h: &HashMap<String, String>) -> Result<Option<Job>, String> {
        if h.is_empty() {
            return Ok(None);
        }
        let get = |k: &str| h.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let req = |k: &str| get(k).ok_or_else(|| format!("job hash lacks {k}"));
        let num = |k: &str| get(k).and_then(|v| v.parse::<f64>().ok()).map(|v| v as u64);
        let json = |k: &str| get(k).and_then(|v| serde_json::from_str(v).ok());
        Ok(Some(Job {
            id: req("id")?.to_string(),
            participant: req("participant")?.to_string(),
            number: num("number").unwrap_or(0),
            status: req("status")?.parse()?,
            prompt: json("prompt").unwrap_or(serde_json::Value::Null),
            extra: json("extra").unwrap_or(serde_json::Value::Null),
            name: get("name").unwrap_or("").to_string(),
            priority: get("priority") == Some("1"),
            attempts: num("attempts").unwrap_or(0) as u32,
            created_ms: num("created").unwrap_or(0),
            started_ms: num("started"),
            finished_ms: num("finished"),
            worker: get("worker").map(str::to_string),
            lease_token: num("token"),
            cancel_requested: get("cancel") == Some("1"),
            outputs: json("outputs"),
            error: get("error").and_then(|v| serde_json::from_str(v).ok()),
            gpu_seconds: get("gpu_ms")
                .and_then(|v| v.parse::<f64>().ok())
                .map(|ms| ms / 1000.0),
            noted_outputs: get("files")
                .map(|v| {
                    v.lines()
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }
}

/// What a submitter hands to [`crate::queue::Queue::enqueue`].
#[derive(Clone, Debug, Default)]
pub struct NewJob {
    /// A client-given canonical UUID, or `None` for a fresh one.
    pub id: Option<String>,
    pub participant: String,
    pub prompt: serde_json::Value,
    pub extra: serde_json::Value,
    /// Capability tags a worker must have (node types, model files).
    pub requires: Vec<String>,
    pub name: String,
    /// The instructor's jobs go to the priority lane.
    pub priority: bool,
}

/// An accepted submission.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub id: String,
    pub number: u64,
    /// A retried submit (same id, participant and prompt): this is the
    /// job the first one queued; nothing new was queued.
    pub again: bool,
}

/// A job handed to a worker, with the fencing token it must quote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub job_id: String,
    pub token: u64,
    pub participant: String,
    pub prompt: serde_json::Value,
    pub extra: serde_json::Value,
    pub attempts: u32,
    pub number: u64,
}

/// What the reaper did with one expired lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Requeued,
    Failed,
    Cancelled,
}
