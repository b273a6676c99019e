//! The worker gateway: one WebSocket per connected worker agent. The hub
//! leases jobs to it through the queue (up to its capacity), pushes them
//! down the socket, turns its heartbeats/starts/results into queue calls
//! with the fencing token, and relays its job events to the participant.
//! A worker that disconnects keeps its leases until they expire; when it
//! reconnects it names the jobs it still holds and carries on.

use super::auth::WorkerAuth;
use super::HubState;
use crate::protocol::{HubMsg, WorkerMsg};
use crate::queue::{valid_name, Queue, Refusal};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Largest message a worker may send (object_info of a big install).
const MAX_MESSAGE: usize = 64 << 20;
/// How often an idle connection looks for work.
const POLL: Duration = Duration::from_millis(100);

/// `GET /worker/v1/connect` (WebSocket upgrade), worker token required.
pub async fn connect(_: WorkerAuth, State(s): State<HubState>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session(socket, s))
}

/// Jobs this connection holds: job → (token, participant).
type Held = Arc<Mutex<HashMap<String, (u64, String)>>>;
/// No new jobs for this worker before this instant (set when it gives a
/// job back: something on its side is wrong, so don't burn the job's
/// attempts on it while its health report is on the way).
type Cooldown = Arc<Mutex<Option<std::time::Instant>>>;
const COOLDOWN: Duration = Duration::from_secs(3);

async fn session(socket: WebSocket, s: HubState) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<HubMsg>(64);
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let text = serde_json::to_string(&msg).expect("hub messages serialize");
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    });

    let first = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
    let reg = first
        .ok()
        .flatten()
        .and_then(|m| m.ok())
        .and_then(|m| parse(&m));
    let Some(WorkerMsg::Register {
        worker,
        capacity,
        comfyui_url,
        object_info_digest,
        system_stats,
        holding,
        caps,
        model_inputs,
        pool,
    }) = reg
    else {
        let _ = tx
            .send(HubMsg::Error {
                message: "expected a register message first".into(),
            })
            .await;
        return;
    };
    let pool = pool.unwrap_or_else(|| crate::pool::DEFAULT_POOL.to_string());
    if !valid_name(&worker) || capacity == 0 || !valid_name(&pool) {
        let _ = tx
            .send(HubMsg::Error {
                message: format!("invalid worker id {worker:?}, pool {pool:?} or capacity 0"),
            })
            .await;
        return;
    }
    let q = s.queue.clone();
    let need = !matches!(q.object_info(&object_info_digest).await, Ok(Some(_)));
    let _ = tx
        .send(HubMsg::Registered {
            need_object_info: need,
            lease_ms: q.settings().lease_ms,
        })
        .await;
    let info = json!({
        "id": worker, "capacity": capacity, "comfyui_url": comfyui_url,
        "object_info_digest": object_info_digest, "system_stats": system_stats,
        "healthy": true, "pool": pool,
    });
    // Its pool first: lease.lua asks it whether this worker may take jobs.
    if let Err(e) = q.set_worker_pool(&worker, &pool).await {
        tracing::warn!(%worker, "cannot record the worker's pool: {e}");
    }
    if let Err(e) = q.set_worker(&worker, Some(&info.to_string())).await {
        tracing::warn!(%worker, "cannot record worker: {e}");
    }
    record_catalogue(&q, &worker, &object_info_digest, &caps, &model_inputs).await;
    tracing::info!(%worker, capacity, caps = caps.len(), "worker connected");
    let info = Arc::new(Mutex::new(info));
    let (mut caps, mut model_inputs) = (caps, model_inputs);

    let held: Held = Arc::default();
    for h in holding {
        if let Ok(Some(j)) = q.job(&h.job).await {
            if j.lease_token == Some(h.token) {
                held.lock().unwrap().insert(h.job, (h.token, j.participant));
            } else {
                let _ = tx
                    .send(HubMsg::Stale {
                        job: h.job,
                        token: Some(h.token),
                    })
                    .await;
            }
        }
    }
    let healthy = Arc::new(AtomicBool::new(true));
    let cooldown: Cooldown = Arc::default();
    let wake = Arc::new(Notify::new());
    // The warm-up runs before any participant's job on this worker.
    let warming = Arc::new(AtomicBool::new(false));
    let mut again = s.warmups.attach(&worker);
    let mut warmup = Warming {
        s: &s,
        worker: &worker,
        tx: &tx,
        info: &info,
        flag: &warming,
        wake: &wake,
        run: None,
        seq: 0,
    };
    warmup.begin(&caps, &model_inputs).await;
    let feeder = tokio::spawn(feed(
        q.clone(),
        worker.clone(),
        capacity as usize,
        held.clone(),
        warming.clone(),
        healthy.clone(),
        cooldown.clone(),
        wake.clone(),
        s.work_available.clone(),
        tx.clone(),
        s.shutdown.clone(),
        s.metrics.clone(),
    ));

    loop {
        let deadline = warmup.deadline();
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = s.shutdown.cancelled() => break,
            Some(()) = again.recv() => {
                warmup.begin(&caps, &model_inputs).await;
                continue;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(std::time::Instant::now).into()), if deadline.is_some() => {
                warmup.time_out().await;
                continue;
            }
        };
        let Some(Ok(msg)) = msg else { break };
        if let Message::Close(_) = msg {
            break;
        }
        let Some(msg) = parse(&msg) else { continue };
        if let WorkerMsg::Release { job, token, .. } = &msg {
            // Only a give-back of a lease it still holds means something is
            // wrong on its side; a late one (its lease passed on while it
            // was frozen or cut off) is just refused.
            if lease_is_current(&q, job, *token).await {
                *cooldown.lock().unwrap() = Some(std::time::Instant::now() + COOLDOWN);
            }
        }
        if let WorkerMsg::Health {
            healthy: h,
            message,
        } = &msg
        {
            // The instructor sees it on the dashboard.
            let health: String = message.chars().take(300).collect();
            describe(&q, &worker, &info, |i| {
                i["healthy"] = json!(h);
                i["health"] = json!(health);
            })
            .await;
        }
        if let WorkerMsg::WarmupDone { id, error, seconds } = msg {
            warmup.report(&id, error, seconds).await;
            continue;
        }
        if let WorkerMsg::Catalogue {
            object_info_digest,
            caps: c,
            model_inputs: m,
            ..
        } = &msg
        {
            caps = c.clone();
            model_inputs = m.clone();
            describe(&q, &worker, &info, |i| {
                i["object_info_digest"] = json!(object_info_digest)
            })
            .await;
        }
        handle(
            &q,
            &worker,
            msg,
            &held,
            &healthy,
            &wake,
            &tx,
            &s.metrics,
            &s.state_dir,
        )
        .await;
    }
    feeder.abort();
    writer.abort();
    s.warmups.detach(&worker);
    let _ = q.set_worker(&worker, None).await;
    let _ = q.worker_seen(&worker).await;
    tracing::info!(%worker, held = held.lock().unwrap().len(), "worker disconnected; its leases run on until they expire");
}

/// Changes the connected worker's description (what the dashboard shows)
/// and stores it.
async fn describe(
    q: &Queue,
    worker: &str,
    info: &Mutex<serde_json::Value>,
    change: impl FnOnce(&mut serde_json::Value),
) {
    let text = {
        let mut info = info.lock().unwrap();
        change(&mut info);
        info.to_string()
    };
    let _ = q.set_worker(worker, Some(&text)).await;
}

/// Keeps what a worker can run (its tags for the lease, its catalogue's
/// digest and model inputs for the editors), beyond its connection.
async fn record_catalogue(
    q: &Queue,
    worker: &str,
    digest: &str,
    caps: &[String],
    model_inputs: &[(String, String)],
) {
    let caps = sane_tags(caps.iter().cloned(), 200_000);
    let description = json!({"object_info_digest": digest, "model_inputs": model_inputs});
    if let Err(e) = q.register_catalogue(worker, &description, &caps).await {
        tracing::warn!(%worker, "cannot record what the worker can run: {e}");
    }
}

/// A worker's tags as the queue may keep them: matched exactly, so anything
/// absurd (a tag bigger than any node or file name, a newline that would
/// split a job's list) is dropped rather than stored; at most `most`.
fn sane_tags(tags: impl Iterator<Item = String>, most: usize) -> Vec<String> {
    tags.filter(|t| t.len() <= 4096 && !t.contains('\n'))
        .take(most)
        .collect()
}

fn parse(msg: &Message) -> Option<WorkerMsg> {
    let text = match msg {
        Message::Text(t) => t.as_str(),
        _ => return None,
    };
    match serde_json::from_str(text) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("unreadable worker message: {e}");
            None
        }
    }
}

/// A worker session's warm-up: started on connect and on request, holding
/// the worker's leases (`flag`) until it is reported or timed out.
struct Warming<'a> {
    s: &'a HubState,
    worker: &'a str,
    tx: &'a mpsc::Sender<HubMsg>,
    info: &'a Arc<Mutex<serde_json::Value>>,
    flag: &'a AtomicBool,
    wake: &'a Notify,
    run: Option<super::warmup::Run>,
    seq: u64,
}

impl Warming<'_> {
    /// Starts (again) on a worker that can run `caps`.
    async fn begin(&mut self, caps: &[String], model_inputs: &[(String, String)]) {
        if self.s.warmups.workflows.is_empty() {
            return;
        }
        self.seq += 1;
        let (run, msgs) = super::warmup::Run::start(&self.s.warmups, caps, model_inputs, self.seq);
        self.flag.store(run.holding(), Ordering::Relaxed);
        tracing::info!(worker = %self.worker, workflows = msgs.len(), "warm-up started");
        self.run = Some(run);
        for m in msgs {
            let _ = self.tx.send(m).await;
        }
        self.publish().await;
    }

    fn deadline(&self) -> Option<std::time::Instant> {
        self.run
            .as_ref()
            .filter(|r| r.holding())
            .map(|r| r.deadline)
    }

    async fn report(&mut self, id: &str, error: Option<String>, seconds: f64) {
        let Some(run) = self.run.as_mut() else { return };
        if let Some(e) = &error {
            tracing::warn!(worker = %self.worker, warmup = %id, "warm-up failed: {e}");
        } else {
            tracing::info!(worker = %self.worker, warmup = %id, seconds, "warm-up step done");
        }
        run.report(id, error);
        self.publish().await;
    }

    async fn time_out(&mut self) {
        if let Some(run) = self.run.as_mut() {
            tracing::warn!(worker = %self.worker, "warm-up timed out; the worker takes jobs anyway");
            run.time_out();
        }
        self.publish().await;
    }

    /// Shows the progress (dashboard, CLI) and lets jobs through when done.
    async fn publish(&self) {
        let Some(run) = &self.run else { return };
        let holding = run.holding();
        self.flag.store(holding, Ordering::Relaxed);
        if !holding {
            self.wake.notify_one();
        }
        describe(&self.s.queue, self.worker, self.info, |i| {
            i["warmup"] = run.status();
            i["warmup"]["run"] = json!(run.seq());
        })
        .await;
    }
}

/// Leases jobs for this worker while it has room.
#[allow(clippy::too_many_arguments)]
async fn feed(
    q: Queue,
    worker: String,
    capacity: usize,
    held: Held,
    warming: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
    cooldown: Cooldown,
    wake: Arc<Notify>,
    work: Arc<Notify>,
    tx: mpsc::Sender<HubMsg>,
    shutdown: tokio_util::sync::CancellationToken,
    metrics: Arc<super::metrics::Metrics>,
) {
    // Since when this worker has held nothing (for the idle-gap metric).
    let mut idle_since: Option<std::time::Instant> = None;
    loop {
        if idle_since.is_none() && held.lock().unwrap().is_empty() {
            idle_since = Some(std::time::Instant::now());
        }
        let cooling = cooldown
            .lock()
            .unwrap()
            .is_some_and(|t| t > std::time::Instant::now());
        let room = !cooling
            && !warming.load(Ordering::Relaxed)
            && healthy.load(Ordering::Relaxed)
            && held.lock().unwrap().len() < capacity;
        if room {
            match q.lease(&worker).await {
                Ok(Some(lease)) => {
                    if let Some(t) = idle_since.take() {
                        metrics.idle_gap(&worker, t.elapsed().as_secs_f64());
                    }
                    held.lock().unwrap().insert(
                        lease.job_id.clone(),
                        (lease.token, lease.participant.clone()),
                    );
                    tracing::info!(%worker, job = %lease.job_id, "job leased");
                    if tx.send(HubMsg::Job { lease }).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(%worker, "lease: {e}"),
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = work.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    q: &Queue,
    worker: &str,
    msg: WorkerMsg,
    held: &Held,
    healthy: &AtomicBool,
    wake: &Notify,
    tx: &mpsc::Sender<HubMsg>,
    metrics: &super::metrics::Metrics,
    state_dir: &std::path::Path,
) {
    let participant = msg.job().and_then(|(job, token)| {
        held.lock()
            .unwrap()
            .get(job)
            .filter(|(t, _)| *t == token)
            .map(|(_, u)| u.clone())
    });
    // Only the attempt this message is about: the same job may have been
    // leased to this worker again under a newer token.
    let drop_job = |job: &str, token: u64| {
        let mut h = held.lock().unwrap();
        if h.get(job).is_some_and(|(t, _)| *t == token) {
            h.remove(job);
        }
        drop(h);
        wake.notify_one();
    };
    match msg {
        WorkerMsg::Register { .. } | WorkerMsg::WarmupDone { .. } => {}
        WorkerMsg::ObjectInfo { digest, data } => {
            if let Err(e) = q.put_object_info(&digest, &data.to_string()).await {
                tracing::warn!(%worker, "storing object_info: {e}");
            }
        }
        WorkerMsg::Catalogue {
            object_info_digest,
            data,
            caps,
            model_inputs,
        } => {
            // The catalogue first, then what it enables: an editor never
            // sees a digest whose catalogue is not stored.
            if let Err(e) = q
                .put_object_info(&object_info_digest, &data.to_string())
                .await
            {
                tracing::warn!(%worker, "storing object_info: {e}");
            }
            record_catalogue(q, worker, &object_info_digest, &caps, &model_inputs).await;
            tracing::info!(%worker, caps = caps.len(), "worker catalogue changed");
            wake.notify_one();
        }
        WorkerMsg::Loaded { files, as_of } => {
            // Model-file tags only, and no more than a ComfyUI could hold;
            // anything else is a confused agent, not a loaded model.
            let files = sane_tags(files.into_iter().filter(|t| t.starts_with("file:")), 256);
            if let Err(e) = q.report_warm(worker, as_of, &files).await {
                tracing::warn!(%worker, "recording the worker's loaded models: {e}");
            }
        }
        WorkerMsg::Health {
            healthy: h,
            message,
        } => {
            // A provider's health line changes often; only a flip is news.
            if healthy.swap(h, Ordering::Relaxed) != h {
                let message = if message.is_empty() {
                    "healthy again"
                } else {
                    &message
                };
                tracing::warn!(%worker, healthy = h, "{message}");
            }
            if !h {
                // A ComfyUI that went down comes back with nothing loaded.
                let _ = q.clear_warm(worker).await;
            }
            if h {
                wake.notify_one();
            }
        }
        WorkerMsg::Started { job, token } => {
            let r = q.start(&job, token).await;
            lease_answer(tx, &job, token, r, || drop_job(&job, token)).await;
        }
        WorkerMsg::Heartbeat { job, token } => {
            let r = q.heartbeat(&job, token).await;
            lease_answer(tx, &job, token, r, || drop_job(&job, token)).await;
        }
        WorkerMsg::Event { job, token, event } => {
            let Some(u) = participant else { return };
            if event.get("type").and_then(|t| t.as_str()) == Some("executed")
                && !lease_is_current(q, &job, token).await
            {
                return;
            }
            let payload = json!({"type": "job_event", "job": job, "event": event});
            let _ = q.publish_event(&u, &payload.to_string()).await;
        }
        WorkerMsg::Preview {
            job,
            mime,
            data_b64,
            metadata,
            ..
        } => {
            let Some(u) = participant else { return };
            let payload = json!({"type": "job_preview", "job": job, "mime": mime,
                "data_b64": data_b64, "metadata": metadata});
            let _ = q.publish_event(&u, &payload.to_string()).await;
        }
        WorkerMsg::Finished {
            job,
            token,
            outcome,
            outputs,
            error,
            gpu_seconds,
        } => {
            let r = q
                .finish(&job, token, outcome, &outputs, error.as_ref(), gpu_seconds)
                .await;
            // One read of the job as it now stands: its timings for the
            // metrics, and — before the worker hears the answer — its
            // replaced attempts' files removed, so only the recorded
            // result's files are left.
            if let Ok(Some(j)) = q.job(&job).await {
                if r.is_ok() {
                    let secs = |a: Option<u64>, b: Option<u64>| match (a, b) {
                        (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / 1000.0),
                        _ => None,
                    };
                    metrics.job_finished(
                        worker,
                        secs(Some(j.created_ms), j.started_ms),
                        secs(j.started_ms, j.finished_ms),
                    );
                }
                super::files::discard_unrecorded_outputs(state_dir, &j).await;
            }
            if report(tx, &job, token, r.map(|_| ())).await {
                drop_job(&job, token);
            }
        }
        WorkerMsg::Release { job, token, reason } => {
            let r = q.release(&job, token, &reason).await;
            tracing::warn!(%worker, %job, "job released: {reason}");
            if report(tx, &job, token, r.map(|_| ())).await {
                drop_job(&job, token);
            }
        }
    }
}

/// Answers a start/heartbeat: a pending cancel is passed on; a lease that
/// passed to someone else makes the worker drop the job.
async fn lease_answer(
    tx: &mpsc::Sender<HubMsg>,
    job: &str,
    token: u64,
    r: Result<bool, crate::queue::QueueError>,
    drop_job: impl FnOnce(),
) {
    match r {
        Ok(true) => {
            let _ = tx
                .send(HubMsg::Cancel {
                    job: job.into(),
                    token: Some(token),
                })
                .await;
        }
        Ok(false) => {}
        Err(e) if e.refusal().is_some() => {
            drop_job();
            let _ = tx
                .send(HubMsg::Stale {
                    job: job.into(),
                    token: Some(token),
                })
                .await;
        }
        Err(e) => tracing::warn!(%job, "queue unavailable: {e}"),
    }
}

/// Answers a finish/release: recorded (Ack), refused for good (Stale), or
/// not recorded because the queue is unreachable (the worker sends it again
/// with its next heartbeat). Returns whether the job is done with.
async fn report(
    tx: &mpsc::Sender<HubMsg>,
    job: &str,
    token: u64,
    r: Result<(), crate::queue::QueueError>,
) -> bool {
    let (job, token) = (job.to_string(), Some(token));
    let (msg, done) = match r {
        Ok(()) => (HubMsg::Ack { job, token }, true),
        Err(e) => match e.refusal() {
            Some(Refusal::StaleToken | Refusal::NotFound) => (HubMsg::Stale { job, token }, true),
            Some(Refusal::AlreadyFinished) => (HubMsg::Ack { job, token }, true),
            _ => (
                HubMsg::Error {
                    message: format!("job {job} not recorded: {e}"),
                },
                false,
            ),
        },
    };
    let _ = tx.send(msg).await;
    done
}

/// True while `token` is still the job's current lease.
async fn lease_is_current(q: &Queue, job: &str, token: u64) -> bool {
    matches!(q.job(job).await, Ok(Some(j)) if j.lease_token == Some(token) && !j.status.is_terminal())
}
