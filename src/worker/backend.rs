//! The one seam between the agent and what runs its jobs.
//!
//! The agent (`agent.rs`) is the hub's side of a worker: registration,
//! leases up to its capacity, heartbeats, results kept until acknowledged,
//! reconnects. A `Backend` is the other side — a ComfyUI at a URL
//! (`comfy_backend.rs`) or a RunPod serverless endpoint (`runpod/`) — and
//! the agent drives every kind through this trait alone, so fencing,
//! requeue and the reliability guarantees are the same for all of them.

use super::hub_client::{HubClient, HubError};
use super::loaded::Loaded;
use super::prompt::InputRef;
use crate::protocol::WorkerMsg;
use crate::queue::{JobError, Lease, Outcome};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a job needs from its agent, whatever runs it.
#[derive(Clone)]
pub struct JobIo {
    /// The hub's file endpoints (inputs in, outputs out) under the lease.
    pub hub: HubClient,
    /// Messages for the hub in order (events, started; the result is the
    /// return value of `Backend::run`).
    pub out: mpsc::Sender<WorkerMsg>,
    /// The backend's catalogue (which inputs name files).
    pub object_info: Arc<Value>,
    /// What the backend holds loaded (updated as jobs end).
    pub loaded: Arc<Loaded>,
}

/// Something that runs ComfyUI prompts for the agent.
pub trait Backend: Send + Sync + 'static {
    /// What the hub, the dashboard and the logs are told this worker
    /// drives (a URL or an endpoint id; never a secret).
    fn address(&self) -> String;

    /// One look: its catalogue (`object_info`) and system stats once it
    /// can take jobs; otherwise why not, in words for the instructor
    /// (cold, refused, wrong key).
    fn probe(&self) -> impl Future<Output = Result<(Value, Value), String>> + Send;

    /// The files of its model folders, where it can list them (`None`:
    /// the catalogue's COMBO lists are all there is).
    fn model_files(&self) -> impl Future<Output = Option<HashSet<String>>> + Send;

    /// Background work until `shutdown` (an event socket, a health poll).
    fn start(self: &Arc<Self>, shutdown: CancellationToken);

    /// Whether it can run jobs now, and what the instructor is shown
    /// (empty: nothing to say). The agent reports it when it changes.
    fn health(&self) -> (bool, String);

    /// Runs one leased job to its end: `Finished` or `Release`.
    fn run(
        self: Arc<Self>,
        io: JobIo,
        lease: Lease,
        cancel: CancellationToken,
    ) -> impl Future<Output = WorkerMsg> + Send;

    /// Runs one warm-up prompt: `WarmupDone`.
    fn warmup(self: Arc<Self>, id: String, prompt: Value)
        -> impl Future<Output = WorkerMsg> + Send;
}

/// How a job ended when it has a result: outcome, outputs, error, GPU
/// seconds.
pub type Ended = (Outcome, Value, Option<JobError>, Option<f64>);

/// Why a job ended without a result of its own.
pub enum Abort {
    /// Give it back: something on the worker's side broke (retried).
    Release(String),
    /// The participant's job itself is at fault.
    Fail(JobError),
}

pub fn fail(kind: &str, message: impl Into<String>, details: Value) -> Abort {
    Abort::Fail(JobError {
        kind: kind.into(),
        message: message.into(),
        details,
    })
}

/// The message for the hub once a job ended either way.
pub fn result_message(lease: &Lease, ended: Result<Ended, Abort>) -> WorkerMsg {
    let (job, token) = (lease.job_id.clone(), lease.token);
    match ended {
        Ok((outcome, outputs, error, gpu_seconds)) => WorkerMsg::Finished {
            job,
            token,
            outcome,
            outputs,
            error,
            gpu_seconds,
        },
        Err(Abort::Fail(e)) => WorkerMsg::Finished {
            job,
            token,
            outcome: Outcome::Failed,
            outputs: json!({}),
            error: Some(e),
            gpu_seconds: None,
        },
        Err(Abort::Release(reason)) => WorkerMsg::Release { job, token, reason },
    }
}

/// One of the participant's input files, from the hub under the lease: a
/// missing file fails the job (it names it), anything else gives it back.
pub async fn fetch_input(io: &JobIo, lease: &Lease, r: &InputRef) -> Result<Bytes, Abort> {
    let plain = r.name.as_str();
    io.hub
        .input(&lease.job_id, lease.token, &r.folder, plain)
        .await
        .map_err(|e| match e {
            HubError::Refused { status: 404, .. } => fail(
                "input_missing",
                format!("input file {plain:?} not found"),
                json!({"node_id": r.node}),
            ),
            other => Abort::Release(format!("cannot fetch input {plain:?}: {other}")),
        })
}
