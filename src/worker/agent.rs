//! The worker agent: the hub's side of one worker. Keeps one socket to the
//! hub (jobs in, events and results out), reconnecting with backoff; runs
//! up to `capacity` jobs at once on its backend (`backend.rs`: a ComfyUI,
//! where the next job already waits inside ComfyUI's queue when one ends,
//! or a serverless endpoint); heartbeats every held job; keeps results it
//! could not deliver until the hub acknowledges them.

use super::backend::{Backend, JobIo};
use super::comfy_backend::ComfyBackend;
use super::hub_client::{HubClient, HubSocket};
use super::prompt::object_info_digest;
use crate::protocol::{Held, HubMsg, WorkerMsg};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// How often the agent re-reads its ComfyUI's catalogue (a model file
/// added or removed, a custom node installed); the digest decides whether
/// the hub hears about it.
const CATALOGUE_EVERY: Duration = Duration::from_secs(5);

/// What this worker's ComfyUI can run, as the hub is told.
#[derive(Clone)]
struct Catalogue {
    digest: String,
    object_info: Arc<serde_json::Value>,
    caps: Vec<String>,
    model_inputs: Vec<(String, String)>,
}

impl Catalogue {
    /// Reads the backend's catalogue and model folders.
    async fn read<B: Backend>(backend: &B, object_info: serde_json::Value) -> Self {
        let files = backend.model_files().await;
        let inputs = crate::catalogue::model_inputs(&object_info, files.as_ref());
        Self {
            digest: object_info_digest(&object_info),
            caps: crate::catalogue::caps(&object_info, &inputs),
            model_inputs: inputs.into_iter().collect(),
            object_info: Arc::new(object_info),
        }
    }
}

/// How one agent is set up.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub id: String,
    pub comfyui_url: String,
    pub hub_url: String,
    pub token: String,
    pub capacity: u32,
    pub heartbeat: Duration,
    /// The pool it belongs to (`pool::DEFAULT_POOL` unless configured).
    pub pool: String,
    /// Request headers sent to ComfyUI (a remote one's auth); never logged.
    pub headers: Vec<(String, String)>,
    /// Where an in-hub worker says why it has not connected yet (its
    /// ComfyUI does not answer: cold, refused, unreachable), for the
    /// instructor's pool view; `None` for a standalone agent.
    pub starting: Option<Starting>,
}

/// In-hub workers' reasons for not being connected yet, by worker id.
pub type Starting = Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>;

/// The agent's memory of its jobs, kept across hub reconnects.
#[derive(Default)]
struct Jobs {
    /// Held jobs: id → (fencing token, cancel switch).
    held: HashMap<String, (u64, CancellationToken)>,
    /// Results not yet acknowledged by the hub.
    outbox: HashMap<String, WorkerMsg>,
    /// The task running each job's latest attempt. A job leased to this
    /// worker again (its earlier lease expired) starts only after the
    /// earlier attempt's task has ended, so one ComfyUI never runs two
    /// attempts of a job at once.
    tasks: HashMap<String, tokio::task::JoinHandle<()>>,
}

impl Jobs {
    /// Whether `token` is the attempt of `job` this worker holds now.
    /// `None` (a message from an older hub) matches any attempt.
    fn holds(&self, job: &str, token: Option<u64>) -> bool {
        self.held
            .get(job)
            .is_some_and(|(t, _)| token.is_none_or(|x| x == *t))
    }
}

/// Runs the agent for the ComfyUI at `cfg.comfyui_url` until `shutdown`.
pub async fn run(cfg: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let backend = ComfyBackend::new(
        &cfg.comfyui_url,
        &format!("comfy-multi-{}", cfg.id),
        &cfg.headers,
    )?;
    run_with(cfg, Arc::new(backend), shutdown).await
}

/// Runs the agent for `backend` until `shutdown`.
pub async fn run_with<B: Backend>(
    cfg: AgentConfig,
    backend: Arc<B>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let hub = HubClient::new(&cfg.hub_url, &cfg.token);
    backend.start(shutdown.clone());
    let note = |reason: Option<String>| {
        if let Some(s) = &cfg.starting {
            let mut m = s.lock().unwrap_or_else(|e| e.into_inner());
            match reason {
                Some(r) => m.insert(cfg.id.clone(), r),
                None => m.remove(&cfg.id),
            };
        }
    };
    let Some((object_info, stats)) = wait_ready(&*backend, &shutdown, &note).await else {
        return Ok(());
    };
    note(None);
    let first = Catalogue::read(&*backend, object_info).await;
    let loaded = Arc::new(super::loaded::Loaded::new(
        first.model_inputs.iter().cloned(),
    ));
    let object_info = first.object_info.clone();
    let catalogue = Arc::new(std::sync::Mutex::new(first));
    // One ordered channel from the job tasks: a job's events always reach
    // the hub before its result.
    let (out_tx, mut out_rx) = mpsc::channel::<WorkerMsg>(1024);
    let io = JobIo {
        hub: hub.clone(),
        out: out_tx,
        object_info,
        loaded,
    };
    let mut jobs = Jobs::default();
    let mut backoff = Duration::from_millis(200);
    tracing::info!(worker = %cfg.id, runs_on = %backend.address(), hub = %cfg.hub_url, "worker agent started");

    while !shutdown.is_cancelled() {
        let ws = match hub.connect().await {
            Ok(ws) => ws,
            Err(e) => {
                tracing::warn!("hub: {e}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        let session = Session {
            cfg: &cfg,
            backend: &backend,
            io: &io,
            catalogue: &catalogue,
            stats: &stats,
        };
        if let Err(e) = session.serve(ws, &mut jobs, &mut out_rx, &shutdown).await {
            tracing::warn!("hub connection lost: {e}");
        }
    }
    Ok(())
}

/// Waits until the backend can take jobs; returns its object_info and
/// system_stats.
async fn wait_ready<B: Backend>(
    backend: &B,
    shutdown: &CancellationToken,
    note: &(dyn Fn(Option<String>) + Sync),
) -> Option<(serde_json::Value, serde_json::Value)> {
    let mut warned = false;
    loop {
        match backend.probe().await {
            Ok(ready) => return Some(ready),
            Err(e) => {
                if !warned {
                    tracing::warn!(runs_on = %backend.address(), "waiting for the backend: {e}");
                    warned = true;
                }
                note(Some(e));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return None,
        }
    }
}

struct Session<'a, B> {
    cfg: &'a AgentConfig,
    backend: &'a Arc<B>,
    io: &'a JobIo,
    catalogue: &'a Arc<std::sync::Mutex<Catalogue>>,
    stats: &'a serde_json::Value,
}

async fn send(ws: &mut HubSocket, msg: &WorkerMsg) -> anyhow::Result<()> {
    ws.send(Message::Text(serde_json::to_string(msg)?.into()))
        .await?;
    Ok(())
}

impl<B: Backend> Session<'_, B> {
    /// One hub connection: register, then pass messages until it drops.
    async fn serve(
        &self,
        mut ws: HubSocket,
        jobs: &mut Jobs,
        out_rx: &mut mpsc::Receiver<WorkerMsg>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let holding = jobs
            .held
            .iter()
            .map(|(job, (token, _))| Held {
                job: job.clone(),
                token: *token,
            })
            .collect();
        let cat = self.catalogue.lock().unwrap().clone();
        send(
            &mut ws,
            &WorkerMsg::Register {
                worker: self.cfg.id.clone(),
                capacity: self.cfg.capacity,
                comfyui_url: self.backend.address(),
                object_info_digest: cat.digest,
                system_stats: self.stats.clone(),
                holding,
                caps: cat.caps,
                model_inputs: cat.model_inputs,
                pool: Some(self.cfg.pool.clone()),
            },
        )
        .await?;
        for msg in jobs.outbox.values() {
            send(&mut ws, msg).await?;
        }
        // What ComfyUI holds loaded: now, and whenever it changes.
        let mut loaded = self.io.loaded.subscribe();
        loaded.mark_changed();
        let mut beat = tokio::time::interval(self.cfg.heartbeat);
        // After a pause (the process was stopped, the machine slept) one beat,
        // not a burst of every missed one.
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut health = tokio::time::interval(Duration::from_secs(1));
        let mut healthy = (true, String::new());
        let mut refresh = tokio::time::interval(CATALOGUE_EVERY);
        refresh.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.give_back(&mut ws, jobs).await;
                    return Ok(());
                }
                m = ws.next() => {
                    let Some(m) = m else { anyhow::bail!("closed by the hub") };
                    let m = m?;
                    let Message::Text(text) = m else { continue };
                    let Ok(msg) = serde_json::from_str::<HubMsg>(&text) else {
                        tracing::warn!("unreadable hub message");
                        continue;
                    };
                    self.on_hub(msg, &mut ws, jobs, &mut beat).await?;
                }
                Some(msg) = out_rx.recv() => {
                    let Some((job, token)) = msg.job() else {
                        // Not about a job (a warm-up's report): as it is.
                        send(&mut ws, &msg).await?;
                        continue;
                    };
                    let job = job.to_string();
                    // Events and results of an attempt that was dropped or
                    // replaced by a newer lease go nowhere.
                    if !jobs.holds(&job, Some(token)) {
                        continue;
                    }
                    if matches!(msg, WorkerMsg::Finished { .. } | WorkerMsg::Release { .. }) {
                        jobs.outbox.insert(job, msg.clone());
                    }
                    send(&mut ws, &msg).await?;
                }
                _ = beat.tick() => {
                    for (job, (token, _)) in &jobs.held {
                        // A result the hub has not acknowledged yet (it could
                        // not reach Redis) is sent again instead.
                        let msg = match jobs.outbox.get(job) {
                            Some(result) => result.clone(),
                            None => WorkerMsg::Heartbeat { job: job.clone(), token: *token },
                        };
                        send(&mut ws, &msg).await?;
                    }
                }
                Ok(()) = loaded.changed() => {
                    let r = loaded.borrow_and_update().clone();
                    send(&mut ws, &WorkerMsg::Loaded { files: r.files, as_of: r.as_of }).await?;
                }
                _ = refresh.tick() => {
                    if let Some(msg) = self.refresh_catalogue().await {
                        send(&mut ws, &msg).await?;
                    }
                }
                _ = health.tick() => {
                    let now = self.backend.health();
                    if now != healthy {
                        if !now.0 && healthy.0 {
                            self.io.loaded.cleared();
                        }
                        healthy = now.clone();
                        send(&mut ws, &WorkerMsg::Health { healthy: now.0, message: now.1 }).await?;
                    }
                }
            }
        }
    }

    async fn on_hub(
        &self,
        msg: HubMsg,
        ws: &mut HubSocket,
        jobs: &mut Jobs,
        beat: &mut tokio::time::Interval,
    ) -> anyhow::Result<()> {
        match msg {
            HubMsg::Registered {
                need_object_info,
                lease_ms,
            } => {
                if lease_ms > 0 {
                    let every = self
                        .cfg
                        .heartbeat
                        .min(Duration::from_millis(lease_ms / 3).max(Duration::from_millis(50)));
                    if every != beat.period() {
                        *beat = tokio::time::interval(every);
                        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
                if need_object_info {
                    let cat = self.catalogue.lock().unwrap().clone();
                    send(
                        ws,
                        &WorkerMsg::ObjectInfo {
                            digest: cat.digest,
                            data: (*cat.object_info).clone(),
                        },
                    )
                    .await?;
                }
            }
            HubMsg::Job { lease } => {
                let job = lease.job_id.clone();
                // A newer lease of a job this worker still holds: the earlier
                // attempt is void (stop it; its result would be refused).
                if let Some((_, earlier)) = jobs.held.remove(&job) {
                    earlier.cancel();
                }
                jobs.outbox.remove(&job);
                jobs.tasks.retain(|_, t| !t.is_finished());
                let (up, why) = self.backend.health();
                if !up {
                    // Its backend is down: hand it straight back.
                    let msg = WorkerMsg::Release {
                        job: job.clone(),
                        token: lease.token,
                        reason: why,
                    };
                    jobs.held
                        .insert(job.clone(), (lease.token, CancellationToken::new()));
                    jobs.outbox.insert(job, msg.clone());
                    return send(ws, &msg).await;
                }
                let cancel = CancellationToken::new();
                tracing::info!(%job, attempts = lease.attempts, "job received");
                jobs.held.insert(job.clone(), (lease.token, cancel.clone()));
                let (backend, io) = (self.backend.clone(), self.io.clone());
                let earlier = jobs.tasks.remove(&job);
                let task = tokio::spawn(async move {
                    if let Some(earlier) = earlier {
                        let _ = earlier.await;
                    }
                    let out = io.out.clone();
                    let result = backend.run(io, lease, cancel).await;
                    let _ = out.send(result).await;
                });
                jobs.tasks.insert(job, task);
            }
            HubMsg::Cancel { job, token } => {
                if jobs.holds(&job, token) {
                    tracing::info!(%job, "cancel requested");
                    jobs.held[&job].1.cancel();
                }
            }
            HubMsg::Stale { job, token } => {
                if jobs.holds(&job, token) {
                    tracing::warn!(%job, "lease passed on; dropping the job");
                    if let Some((_, c)) = jobs.held.remove(&job) {
                        c.cancel();
                    }
                    jobs.outbox.remove(&job);
                }
            }
            HubMsg::Ack { job, token } => {
                if jobs.holds(&job, token) {
                    jobs.outbox.remove(&job);
                    jobs.held.remove(&job);
                }
            }
            HubMsg::Error { message } => tracing::warn!("hub: {message}"),
            HubMsg::Warmup { id, prompt } => {
                tracing::info!(warmup = %id, "warm-up requested");
                let (backend, io) = (self.backend.clone(), self.io.clone());
                tokio::spawn(async move {
                    let report = backend.warmup(id, prompt.clone()).await;
                    if let WorkerMsg::WarmupDone { error, .. } = &report {
                        io.loaded.warmed(&prompt, error.is_none());
                    }
                    let _ = io.out.send(report).await;
                });
            }
        }
        Ok(())
    }

    /// Re-reads the backend's catalogue; the message for the hub when it
    /// changed (`None` when it did not, or the backend does not answer now).
    async fn refresh_catalogue(&self) -> Option<WorkerMsg> {
        let info = self.backend.catalogue().await.ok()?;
        if object_info_digest(&info) == self.catalogue.lock().unwrap().digest {
            return None;
        }
        let cat = Catalogue::read(&**self.backend, info).await;
        tracing::info!(caps = cat.caps.len(), "the backend's catalogue changed");
        self.io.loaded.set_inputs(cat.model_inputs.iter().cloned());
        *self.catalogue.lock().unwrap() = cat.clone();
        Some(WorkerMsg::Catalogue {
            object_info_digest: cat.digest,
            data: (*cat.object_info).clone(),
            caps: cat.caps,
            model_inputs: cat.model_inputs,
        })
    }

    /// On shutdown: unfinished jobs go back to the queue at once.
    async fn give_back(&self, ws: &mut HubSocket, jobs: &mut Jobs) {
        for (job, (token, cancel)) in &jobs.held {
            cancel.cancel();
            let msg = jobs.outbox.get(job).cloned().unwrap_or(WorkerMsg::Release {
                job: job.clone(),
                token: *token,
                reason: "the worker shut down".into(),
            });
            let _ = send(ws, &msg).await;
        }
        let _ = ws.close(None).await;
    }
}
