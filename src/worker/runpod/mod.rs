//! A RunPod serverless endpoint as a backend (`kind = "runpod_serverless"`
//! pools): the hub runs one agent for it, holding up to the pool's
//! `max_concurrency` jobs. Each job is sent as worker-comfyui's `/run`
//! request (`payload.rs`), followed by polling `/status/{id}`, and ends
//! with its outputs stored in the participant's folder under the names a
//! local worker would give them (same events, history, `/view`).
//!
//! Failure handling, all through the agent's usual release/fencing path:
//! a job RunPod does not start within `queue_timeout_s` (a cold endpoint),
//! does not complete within `timeout_s`, forgets (404), times out or
//! answers with a malformed output is cancelled there (best effort) and
//! given back to the queue; a too large output or the handler's own error
//! fails the job with a reason; the participant's cancel becomes
//! `/cancel/{id}`. `/health` is polled for the dashboard; a refused API
//! key makes the worker unhealthy, so jobs stay queued for other pools.

pub mod api;
pub mod payload;

use super::backend::{fail, place_inputs, result_message, Abort, Backend, Ended, JobIo};
use super::comfyui::FileRef;
use crate::clock::now_ms;
use crate::protocol::WorkerMsg;
use crate::queue::{Lease, Outcome};
use api::{Api, ApiError, JobState};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How a RunPod pool is set up (from its `[[pools]]` entry).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `https://api.runpod.ai/v2` unless configured (a proxy, the test
    /// emulator).
    pub api_base: String,
    pub endpoint_id: String,
    /// The API key (from `api_key_file`); never logged.
    pub api_key: String,
    /// What the endpoint's ComfyUI can run (`object_info` JSON).
    pub object_info_file: PathBuf,
    /// Longest a job may run there (sent as RunPod's `executionTimeout`).
    pub timeout: Duration,
    /// Longest a job may wait in RunPod's own queue before it is taken
    /// back (the hub's line is fairer than theirs).
    pub queue_timeout: Duration,
    /// How often a job's status is read.
    pub poll: Duration,
    /// Largest output file taken (the hub's `max_output_bytes`).
    pub max_output_bytes: u64,
}

/// How long the endpoint's status may be unreadable before a job is given
/// back.
const STATUS_GRACE: Duration = Duration::from_secs(60);
/// How long a cancel waits for RunPod to confirm.
const CANCEL_GRACE: Duration = Duration::from_secs(15);
/// How often `/health` is read for the dashboard.
const HEALTH_EVERY: Duration = Duration::from_secs(5);
/// Failed `/health` reads in a row before the endpoint counts as down.
const HEALTH_FAILURES: u32 = 3;

pub struct RunPodBackend {
    api: Api,
    settings: Settings,
    health: Mutex<(bool, String)>,
}

impl RunPodBackend {
    pub fn new(settings: Settings) -> anyhow::Result<Self> {
        let limit = (settings.max_output_bytes as usize).saturating_mul(3) / 2;
        let api = Api::new(
            &settings.api_base,
            &settings.endpoint_id,
            &settings.api_key,
            limit.clamp(16 << 20, 2 << 30),
        )?;
        Ok(Self {
            api,
            settings,
            health: Mutex::new((true, "RunPod endpoint not read yet".into())),
        })
    }

    fn set_health(&self, up: bool, message: String) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = (up, message);
    }

    /// Takes a job back from RunPod (best effort) and gives it back to the
    /// queue with `why`.
    async fn give_back(&self, id: &str, why: String) -> Result<Ended, Abort> {
        let _ = self.api.cancel(id).await;
        Err(Abort::Release(why))
    }

    /// Sends `/run`, retrying a short outage.
    async fn submit(&self, body: &Value, cancel: &CancellationToken) -> Result<String, Abort> {
        let mut wait = Duration::from_millis(500);
        for attempt in 1.. {
            match self.api.run(body).await {
                Ok(id) => return Ok(id),
                Err(ApiError::Unavailable(e)) if attempt < 4 => {
                    tracing::warn!(endpoint = %self.api.base(), "RunPod /run: {e}; retrying");
                }
                Err(e @ ApiError::Unauthorized(_)) => {
                    self.set_health(false, e.to_string());
                    return Err(Abort::Release(e.to_string()));
                }
                Err(e) => return Err(Abort::Release(format!("sending the job to RunPod: {e}"))),
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return Err(Abort::Release("cancelled before RunPod took it".into())),
            }
            wait *= 2;
        }
        unreachable!("the loop returns")
    }

    async fn execute(
        &self,
        io: &JobIo,
        lease: &Lease,
        cancel: &CancellationToken,
    ) -> Result<Ended, Abort> {
        let job = lease.job_id.as_str();

        // 1. Inputs travel inside the request, under names of this job.
        let mut p = lease.prompt.clone();
        let mut images = vec![];
        let short: String = job
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(12)
            .collect();
        place_inputs(io, lease, &mut p, "", |bytes, base| {
            let name = format!("cm{short}_{}_{base}", images.len());
            images.push(payload::Image {
                name: name.clone(),
                base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
            });
            std::future::ready(Ok(name))
        })
        .await?;
        let req = payload::build(&p, images, self.settings.timeout.as_millis() as u64);

        // 2. Submit, then follow its status.
        let id = self.submit(&req.body, cancel).await?;
        tracing::info!(%job, runpod_job = %id, "sent to RunPod");
        let sent = Instant::now();
        let mut last_read = Instant::now();
        let mut started: Option<Instant> = None;
        let mut cancel_deadline: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.poll) => {}
                _ = cancel.cancelled(), if cancel_deadline.is_none() => {
                    tracing::info!(%job, runpod_job = %id, "cancelling at RunPod");
                    let _ = self.api.cancel(&id).await;
                    cancel_deadline = Some(Instant::now() + CANCEL_GRACE);
                }
            }
            let interrupted = |started: Option<Instant>| {
                io.emit(
                    lease,
                    "execution_interrupted",
                    json!({"node_id": null, "node_type": null, "executed": []}),
                );
                Ok((
                    Outcome::Cancelled,
                    json!({}),
                    None,
                    started.map(|t| t.elapsed().as_secs_f64()),
                ))
            };
            if cancel_deadline.is_some_and(|d| Instant::now() > d) {
                // RunPod did not confirm; the participant asked, so it ends.
                return interrupted(started);
            }
            let status = match self.api.status(&id).await {
                Ok(s) => s,
                Err(ApiError::NotFound) if cancel_deadline.is_some() => {
                    return interrupted(started)
                }
                Err(ApiError::NotFound) => {
                    return Err(Abort::Release(
                        "RunPod lost the job (its status answers 404)".into(),
                    ))
                }
                Err(e) => {
                    if last_read.elapsed() > STATUS_GRACE {
                        return self
                            .give_back(
                                &id,
                                format!(
                                    "RunPod's status unreadable for {} s: {e}",
                                    STATUS_GRACE.as_secs()
                                ),
                            )
                            .await;
                    }
                    continue;
                }
            };
            last_read = Instant::now();
            if status.state != JobState::InQueue && started.is_none() {
                started = Some(Instant::now());
                let _ = io
                    .out
                    .send(WorkerMsg::Started {
                        job: job.into(),
                        token: lease.token,
                    })
                    .await;
                io.emit(lease, "execution_start", json!({"timestamp": now_ms()}));
            }
            let gpu = status
                .execution_ms
                .map(|ms| ms as f64 / 1000.0)
                .or_else(|| started.map(|t| t.elapsed().as_secs_f64()));
            match status.state {
                JobState::InQueue => {
                    if cancel_deadline.is_none() && sent.elapsed() > self.settings.queue_timeout {
                        return self
                            .give_back(
                                &id,
                                format!(
                                    "RunPod did not start it within {} s (cold workers?)",
                                    self.settings.queue_timeout.as_secs()
                                ),
                            )
                            .await;
                    }
                }
                JobState::InProgress => {
                    // RunPod ends a job at its executionTimeout; this is
                    // for an endpoint that does not.
                    let limit = self.settings.timeout
                        + (self.settings.timeout / 10).max(Duration::from_secs(10));
                    if started.is_some_and(|t| t.elapsed() > limit) {
                        return self
                            .give_back(
                                &id,
                                format!("RunPod did not complete it within {} s", limit.as_secs()),
                            )
                            .await;
                    }
                }
                JobState::Completed => {
                    return self
                        .complete(io, lease, status.output.as_ref(), &req.slots, gpu)
                        .await;
                }
                JobState::Failed => {
                    let message = status
                        .error
                        .or_else(|| {
                            status
                                .output
                                .as_ref()
                                .and_then(|o| o.get("error"))
                                .map(|e| {
                                    e.as_str()
                                        .map(str::to_string)
                                        .unwrap_or_else(|| e.to_string())
                                })
                        })
                        .unwrap_or_else(|| "the workflow failed on RunPod".into());
                    return Err(self.failed(io, lease, message));
                }
                JobState::Cancelled if cancel_deadline.is_some() => return interrupted(started),
                JobState::Cancelled => return Err(Abort::Release("RunPod cancelled it".into())),
                JobState::TimedOut => {
                    return Err(Abort::Release(format!(
                        "RunPod timed it out (limit {} s)",
                        self.settings.timeout.as_secs()
                    )))
                }
            }
        }
    }

    /// The workflow failed there: the participant is told, the job fails.
    fn failed(&self, io: &JobIo, lease: &Lease, message: String) -> Abort {
        let message: String = message.chars().take(4000).collect();
        io.emit(
            lease,
            "execution_error",
            json!({
                "node_id": null, "node_type": null, "executed": [],
                "exception_message": message, "exception_type": "RunPodError", "traceback": []
            }),
        );
        fail("execution_error", message, json!({"provider": "runpod"}))
    }

    /// A COMPLETED job: its files stored, `executed` per node, the result.
    async fn complete(
        &self,
        io: &JobIo,
        lease: &Lease,
        output: Option<&Value>,
        slots: &[payload::Slot],
        gpu: Option<f64>,
    ) -> Result<Ended, Abort> {
        let files = match payload::parse(output, slots) {
            Ok(payload::Outcome::Files(f)) => f,
            Ok(payload::Outcome::Failed(m)) => return Err(self.failed(io, lease, m)),
            Err(why) => {
                return Err(Abort::Release(format!(
                    "RunPod's output is malformed: {why}"
                )))
            }
        };
        let limit = self.settings.max_output_bytes as usize;
        let too_large = |name: &str| {
            fail(
                "output_too_large",
                format!(
                    "output {name} is larger than the workshop's limit of {} MB",
                    limit >> 20
                ),
                json!({}),
            )
        };
        // node → key → stored files, in the nodes' order.
        let mut by_node: Vec<(String, Map<String, Value>)> = vec![];
        for f in files {
            let bytes = match &f.data {
                payload::Data::Base64(b) => match payload::decode(b, limit) {
                    Ok(b) => bytes::Bytes::from(b),
                    Err(payload::DecodeError::TooLarge) => return Err(too_large(&f.filename)),
                    Err(payload::DecodeError::Malformed) => {
                        return Err(Abort::Release(format!(
                            "RunPod's output {} is not valid base64",
                            f.filename
                        )))
                    }
                },
                payload::Data::Url(u) => match self.api.download(u, limit).await {
                    Ok(b) => b,
                    Err(ApiError::TooLarge) => return Err(too_large(&f.filename)),
                    Err(e) => {
                        return Err(Abort::Release(format!(
                            "cannot download output {}: {e}",
                            f.filename
                        )))
                    }
                },
            };
            let slot = &slots[f.slot];
            let target = FileRef {
                filename: f.filename.clone(),
                subfolder: slot.subfolder.clone(),
                kind: slot.kind.to_string(),
            };
            let stored = io
                .hub
                .output(&lease.job_id, lease.token, &target, bytes)
                .await
                .map_err(|e| Abort::Release(format!("cannot store output {}: {e}", f.filename)))?;
            let at = match by_node.iter().position(|(n, _)| *n == slot.node) {
                Some(i) => i,
                None => {
                    by_node.push((slot.node.clone(), Map::new()));
                    by_node.len() - 1
                }
            };
            let list = by_node[at]
                .1
                .entry(f.key.clone())
                .or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut() {
                a.push(serde_json::to_value(&stored).unwrap_or_default());
            }
        }
        let mut outputs = Map::new();
        for (node, output) in by_node {
            io.emit(
                lease,
                "executing",
                json!({"node": node, "display_node": node}),
            );
            io.emit(
                lease,
                "executed",
                json!({"node": node, "display_node": node, "output": output}),
            );
            outputs.insert(node, Value::Object(output));
        }
        io.emit(lease, "execution_success", json!({"timestamp": now_ms()}));
        Ok((Outcome::Succeeded, Value::Object(outputs), None, gpu))
    }
}

impl Backend for RunPodBackend {
    fn address(&self) -> String {
        format!("runpod:{}", self.settings.endpoint_id)
    }

    async fn probe(&self) -> Result<(Value, Value), String> {
        let h = self.api.health().await.map_err(|e| e.to_string())?;
        self.set_health(true, h.to_string());
        let info = self.catalogue().await?;
        let stats = json!({
            "system": {"comfyui_version": "RunPod serverless", "os": "runpod"},
            "devices": [{"name": format!("RunPod endpoint {}", self.settings.endpoint_id), "type": "cuda"}]
        });
        Ok((info, stats))
    }

    async fn catalogue(&self) -> Result<Value, String> {
        let f = &self.settings.object_info_file;
        let text = tokio::fs::read(f)
            .await
            .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        let v: Value = serde_json::from_slice(&text)
            .map_err(|e| format!("{} is not JSON: {e}", f.display()))?;
        if v.as_object().is_none_or(|o| o.is_empty()) {
            return Err(format!(
                "{} is not an object_info (no node classes)",
                f.display()
            ));
        }
        Ok(v)
    }

    async fn model_files(&self) -> Option<HashSet<String>> {
        // The catalogue's COMBO lists are what the endpoint offers.
        None
    }

    fn start(self: &Arc<Self>, shutdown: CancellationToken) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut failures = 0;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(HEALTH_EVERY) => {}
                    _ = shutdown.cancelled() => return,
                }
                let Some(me) = me.upgrade() else { return };
                match me.api.health().await {
                    Ok(h) => {
                        failures = 0;
                        me.set_health(true, h.to_string());
                    }
                    Err(e @ ApiError::Unauthorized(_)) => me.set_health(false, e.to_string()),
                    Err(e) => {
                        failures += 1;
                        if failures >= HEALTH_FAILURES {
                            me.set_health(false, e.to_string());
                        }
                    }
                }
            }
        });
    }

    fn health(&self) -> (bool, String) {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn run(self: Arc<Self>, io: JobIo, lease: Lease, cancel: CancellationToken) -> WorkerMsg {
        let ended = self.execute(&io, &lease, &cancel).await;
        if let Err(Abort::Release(why)) = &ended {
            tracing::warn!(job = %lease.job_id, "giving the job back: {why}");
        }
        result_message(&lease, ended)
    }

    async fn warmup(self: Arc<Self>, id: String, _prompt: Value) -> WorkerMsg {
        WorkerMsg::WarmupDone {
            id,
            error: Some(
                "not done on a RunPod serverless pool: its GPUs come and go with the jobs".into(),
            ),
            seconds: 0.0,
        }
    }
}
