//! The worker protocol: JSON messages on the WebSocket between a worker
//! agent and the hub (`/worker/v1/connect`), shared by both sides so they
//! cannot drift apart. Files travel over plain HTTP beside it (see
//! `hub::files`).

use crate::queue::{JobError, Lease, Outcome};
use serde::{Deserialize, Serialize};

/// Path of the worker WebSocket on the hub.
pub const CONNECT_PATH: &str = "/worker/v1/connect";

/// A job a worker still holds when it (re)connects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub job: String,
    pub token: u64,
}

/// Worker → hub.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// First message: who the worker is and what it can run.
    Register {
        worker: String,
        /// Jobs it may hold at once (running + prefetched).
        capacity: u32,
        comfyui_url: String,
        object_info_digest: String,
        /// From ComfyUI's `/system_stats` (devices, versions), verbatim.
        #[serde(default)]
        system_stats: serde_json::Value,
        /// Jobs it still holds from before a reconnect.
        #[serde(default)]
        holding: Vec<Held>,
        /// What it can run (`catalogue::caps`): node types and model files.
        /// Absent (an older agent): it is taken to run anything.
        #[serde(default)]
        caps: Vec<String>,
        /// Which `(node type, input)` name model files (`catalogue::model_inputs`).
        #[serde(default)]
        model_inputs: Vec<(String, String)>,
        /// The pool it belongs to (absent: `pool::DEFAULT_POOL`).
        #[serde(default)]
        pool: Option<String>,
    },
    /// Its ComfyUI's catalogue changed (a model file added or removed, a
    /// custom node installed): the new one, whole.
    Catalogue {
        object_info_digest: String,
        data: serde_json::Value,
        caps: Vec<String>,
        model_inputs: Vec<(String, String)>,
    },
    /// The full `object_info` when the hub asked for it.
    ObjectInfo {
        digest: String,
        data: serde_json::Value,
    },
    /// ComfyUI began executing the job.
    Started { job: String, token: u64 },
    /// The job is still being worked on (keeps the lease).
    Heartbeat { job: String, token: u64 },
    /// A ComfyUI event for the participant, already in the participant's
    /// terms (prompt_id = job id, file names as stored on the hub).
    Event {
        job: String,
        token: u64,
        event: serde_json::Value,
    },
    /// A preview image (base64), with ComfyUI's metadata when it sent some.
    Preview {
        job: String,
        token: u64,
        mime: String,
        data_b64: String,
        #[serde(default)]
        metadata: Option<serde_json::Value>,
    },
    /// The job ended.
    Finished {
        job: String,
        token: u64,
        outcome: Outcome,
        outputs: serde_json::Value,
        error: Option<JobError>,
        gpu_seconds: Option<f64>,
    },
    /// The worker gives a job back without a result (retried elsewhere).
    Release {
        job: String,
        token: u64,
        reason: String,
    },
    /// The model files (tags, `catalogue::file_tag`) its ComfyUI holds
    /// loaded now: those named by the loader nodes of the last prompt it
    /// ran (executed or served from its cache), as of the job with fencing
    /// token `as_of` (0: none yet). Sent on (re)connect and whenever it
    /// changes.
    Loaded { files: Vec<String>, as_of: u64 },
    /// The worker's ComfyUI is down (no new jobs) or back (`healthy`).
    Health { healthy: bool, message: String },
    /// A warm-up the hub asked for ended (`error`: why it failed).
    WarmupDone {
        id: String,
        error: Option<String>,
        seconds: f64,
    },
}

/// Hub → worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubMsg {
    Registered {
        need_object_info: bool,
        /// The queue's lease duration: the worker heartbeats well within it.
        #[serde(default)]
        lease_ms: u64,
    },
    /// A job to run.
    Job {
        lease: Lease,
    },
    /// Stop this job (the participant or an admin cancelled it).
    /// `token` names the attempt; absent from older hubs (then: any attempt).
    Cancel {
        job: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<u64>,
    },
    /// The lease `token` passed to someone else: drop that attempt, report
    /// nothing more about it. A newer attempt of the same job (leased to
    /// this worker again) is not affected.
    Stale {
        job: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<u64>,
    },
    /// A `Finished` or `Release` under `token` was recorded.
    Ack {
        job: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<u64>,
    },
    Error {
        message: String,
    },
    /// Run this warm-up prompt (API format) on ComfyUI now, before any
    /// participant's job; answer with `WarmupDone`.
    Warmup {
        id: String,
        prompt: serde_json::Value,
    },
}

impl WorkerMsg {
    /// The job this message is about, if any.
    pub fn job(&self) -> Option<(&str, u64)> {
        match self {
            WorkerMsg::Started { job, token }
            | WorkerMsg::Heartbeat { job, token }
            | WorkerMsg::Event { job, token, .. }
            | WorkerMsg::Preview { job, token, .. }
            | WorkerMsg::Finished { job, token, .. }
            | WorkerMsg::Release { job, token, .. } => Some((job, *token)),
            _ => None,
        }
    }
}
