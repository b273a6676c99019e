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
use std::collections::{HashMap, HashSet};
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

impl JobIo {
    /// Sends the participant one event of `lease`'s job, `data` with its
    /// `prompt_id` filled in (best effort: events are not results).
    pub fn emit(&self, lease: &Lease, kind: &str, mut data: Value) {
        data["prompt_id"] = json!(lease.job_id);
        let _ = self.out.try_send(WorkerMsg::Event {
            job: lease.job_id.clone(),
            token: lease.token,
            event: json!({"type": kind, "data": data}),
        });
    }
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

    /// Its catalogue now (`object_info`), for the periodic re-read: no
    /// more I/O than that.
    fn catalogue(&self) -> impl Future<Output = Result<Value, String>> + Send;

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

/// Hands the backend every input file `prompt` names (each fetched once
/// from the hub): `place` gets its bytes and base name and answers the
/// name the backend knows it by; the prompt then names those, under
/// `subfolder`.
pub async fn place_inputs<F, Fut>(
    io: &JobIo,
    lease: &Lease,
    prompt: &mut Value,
    subfolder: &str,
    mut place: F,
) -> Result<(), Abort>
where
    F: FnMut(Bytes, String) -> Fut,
    Fut: Future<Output = Result<String, Abort>>,
{
    let refs = super::prompt::input_files(prompt, &io.object_info);
    let mut renamed: HashMap<String, String> = HashMap::new();
    for r in &refs {
        if renamed.contains_key(&r.name) {
            continue;
        }
        let data = fetch_input(io, lease, r).await?;
        let base = r.name.rsplit('/').next().unwrap_or(&r.name).to_string();
        renamed.insert(r.name.clone(), place(data, base).await?);
    }
    super::prompt::rewrite_inputs(prompt, &refs, subfolder, &|n| {
        renamed.get(n).cloned().unwrap_or_else(|| n.to_string())
    });
    Ok(())
}

/// One of the participant's input files, from the hub under the lease: a
/// missing file fails the job (it names it), anything else gives it back.
async fn fetch_input(io: &JobIo, lease: &Lease, r: &InputRef) -> Result<Bytes, Abort> {
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
