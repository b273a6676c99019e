//! The durable fair queue: the only module that talks to Redis.
//!
//! Every state change is one Lua script (`lua/*.lua`, one per operation, run
//! atomically by Redis); reads are plain pipelined commands. Key names live in
//! [`keys`]; the lease-order prediction shown to people lives in [`schedule`].

mod error;
mod job;
pub mod keys;
mod reads;
pub mod schedule;
mod scripts;

pub use error::{QueueError, Refusal};
pub use job::{Enqueued, Expiry, Job, JobError, Lease, Mode, NewJob, Outcome, Status};
pub use reads::{
    Broadcast, Counts, ParticipantInfo, ParticipantQueue, QueueSnapshot, RuntimeSettings, Waiting,
};

use crate::clock::now_ms;
use crate::pool::{Burst, PoolState};
use futures_util::StreamExt;
use keys::Keys;
use redis::aio::ConnectionManager;
use redis::{Script, ToRedisArgs};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Script arguments: each value as Redis argument bytes.
macro_rules! argv {
    ($($a:expr),* $(,)?) => { vec![$(ToRedisArgs::to_redis_args(&$a)),*] };
}

/// A pool as the queue keeps it (see [`Queue::pools`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PoolStatus {
    pub name: String,
    pub state: PoolState,
    pub burst: Burst,
    /// GPU time its workers' finished jobs measured.
    pub gpu_ms: u64,
    /// Workers that joined it (connected now or before).
    pub workers: Vec<String>,
}

impl PoolStatus {
    pub fn gpu_hours(&self) -> f64 {
        self.gpu_ms as f64 / 3_600_000.0
    }
}

/// A worker that counts for what the workshop can run (see
/// [`Queue::known_workers`]).
#[derive(Clone, Debug)]
pub struct KnownWorker {
    pub id: String,
    /// What its agent registered: `{"object_info_digest", "model_inputs"}`.
    pub description: serde_json::Value,
    pub connected: bool,
    /// When it was last seen (registered or disconnected), ms.
    pub seen_ms: u64,
}

/// Tunables of the queue (from the `[queue]` config section).
#[derive(Clone, Debug)]
pub struct QueueSettings {
    pub lease_ms: u64,
    pub max_attempts: u32,
    pub max_pending_per_participant: u32,
    pub max_prompt_bytes: usize,
    pub history_limit: u32,
    pub default_job_ms: u64,
    pub default_mode: Mode,
    /// How many candidates a lease looks at per structure to find one the
    /// worker is eligible for.
    pub scan_limit: u32,
    /// How long a disconnected worker still counts as one that can run
    /// jobs: its catalogue stays in the editors' list and jobs only it can
    /// run are accepted (they wait for it).
    pub known_worker_ms: u64,
    /// Model affinity at start (switchable at runtime): a worker gets a job
    /// whose model files it holds warm before one the policy would hand
    /// out first, within `affinity_window` and `affinity_max_passes`.
    pub affinity: bool,
    /// How many jobs (in policy order) a lease looks at for a warm one.
    pub affinity_window: u32,
    /// How often one job may be passed over for another (at most): the
    /// bound on what affinity costs anyone.
    pub affinity_max_passes: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            lease_ms: 60_000,
            max_attempts: 3,
            max_pending_per_participant: 8,
            max_prompt_bytes: 2 * 1024 * 1024,
            history_limit: 500,
            default_job_ms: 20_000,
            default_mode: Mode::FairShare,
            scan_limit: 64,
            known_worker_ms: 24 * 3600 * 1000,
            affinity: true,
            affinity_window: 12,
            affinity_max_passes: 4,
        }
    }
}

/// Who asks for a cancel: the owner, or an admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    Admin,
    Participant(String),
}

impl Actor {
    fn as_arg(&self) -> &str {
        match self {
            Actor::Admin => "@admin",
            Actor::Participant(u) => u,
        }
    }
}

/// What a cancel did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// The job was waiting and is gone from the queue.
    Removed,
    /// The job is running; its worker will interrupt it.
    Flagged,
}

/// A direction for [`Queue::move_job`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// The queue handle; cheap to clone (one shared multiplexed connection that
/// reconnects by itself).
#[derive(Clone)]
pub struct Queue {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    /// `KEYS` of every script, built once.
    common_keys: Arc<[String; 8]>,
    settings: Arc<QueueSettings>,
    /// 0 unknown, 1 WAITAOF usable, 2 not usable.
    waitaof: Arc<AtomicU8>,
}

/// A valid participant or worker name: 1–64 of `[a-z0-9_-]`, starting with a
/// letter or digit (used in key names and event JSON unescaped).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// A canonical (lowercase, hyphenated) UUID.
pub fn valid_job_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.hyphenated().to_string() == id)
}

fn invalid(message: impl Into<String>) -> QueueError {
    QueueError::refused(Refusal::Invalid, message)
}

fn check_name(what: &str, name: &str) -> Result<(), QueueError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} name {name:?} is not valid: use 1-64 of a-z, 0-9, _ and -"
        )))
    }
}

fn check_id(id: &str) -> Result<(), QueueError> {
    if valid_job_id(id) {
        Ok(())
    } else {
        Err(QueueError::refused(Refusal::NotFound, "no such job"))
    }
}

/// The most GPU time one job is charged, whatever its worker reports (a
/// garbled report must not push its participant's fair-share tag out of
/// reach); also in `lua/finish.lua`.
pub const MAX_GPU_SECONDS: f64 = 86_400.0;

impl Queue {
    /// Connects to Redis at `url` and uses keys under `prefix`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        settings: QueueSettings,
    ) -> Result<Self, QueueError> {
        let client = redis::Client::open(url)?;
        // redis-rs gives up on a reply after 500 ms by default: far too
        // short when the AOF is fsynced on a busy disk.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(6)
            .set_max_delay(std::time::Duration::from_secs(2))
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
            .set_response_timeout(Some(std::time::Duration::from_secs(15)));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self {
            client,
            conn,
            keys: Keys::new(prefix),
            common_keys: Arc::new(Keys::new(prefix).common()),
            settings: Arc::new(settings),
            waitaof: Arc::new(AtomicU8::new(0)),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Runs one script with the common KEYS and the prefix as ARGV[1];
    /// turns `{"err", code, message}` replies into [`QueueError::Refused`].
    async fn run(
        &self,
        script: &Script,
        args: Vec<Vec<Vec<u8>>>,
    ) -> Result<Vec<String>, QueueError> {
        let mut inv = script.prepare_invoke();
        for key in self.common_keys.iter() {
            inv.key(key);
        }
        inv.arg(self.keys.prefix());
        for a in args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<String> = inv.invoke_async(&mut conn).await?;
        if reply.first().map(String::as_str) == Some("err") {
            let code = reply.get(1).map(String::as_str).unwrap_or("");
            let message = reply.get(2).map(String::as_str).unwrap_or("");
            return Err(QueueError::from_reply(code, message));
        }
        Ok(reply)
    }

    /// Accepts a job. Acknowledged only once Redis has it (and, where the
    /// server supports `WAITAOF`, once it is fsynced to the AOF).
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, QueueError> {
        check_name("participant", &job.participant)?;
        let id = match job.id {
            Some(id) if valid_job_id(&id) => id,
            Some(id) => return Err(invalid(format!("prompt_id {id:?} is not a canonical UUID"))),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let prompt = serde_json::to_string(&job.prompt).map_err(|e| invalid(e.to_string()))?;
        let extra = serde_json::to_string(&job.extra).map_err(|e| invalid(e.to_string()))?;
        let s = &self.settings;
        let priority = if job.priority { "1" } else { "0" };
        let requires = job.requires.join("\n");
        let reply = self
            .run(
                &scripts::scripts().enqueue,
                argv![
                    &id,
                    &job.participant,
                    &prompt,
                    &extra,
                    &priority,
                    &s.max_pending_per_participant,
                    &s.max_prompt_bytes,
                    &requires,
                    &job.name,
                    &s.known_worker_ms,
                ],
            )
            .await
            .map_err(|e| match e {
                // The script names the first tag no worker has ("" when
                // each is somewhere, but no one worker has them all).
                QueueError::Refused {
                    refusal: Refusal::NotOnAnyWorker,
                    message,
                } => QueueError::refused(
                    Refusal::NotOnAnyWorker,
                    if message.is_empty() {
                        "no single worker has every node and model file this workflow needs".into()
                    } else {
                        format!("{} is on no worker", crate::catalogue::describe(&message))
                    },
                ),
                e => e,
            })?;
        let number = parse(reply.get(1), "job number")?;
        self.wait_aof().await;
        let again = reply.get(2).is_some();
        Ok(Enqueued { id, number, again })
    }

    /// On Redis ≥ 7.2 with AOF on, waits until the write is fsynced.
    async fn wait_aof(&self) {
        if self.waitaof.load(Ordering::Relaxed) == 2 {
            return;
        }
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<redis::Value> = redis::cmd("WAITAOF")
            .arg(1)
            .arg(0)
            .arg(1000)
            .query_async(&mut conn)
            .await;
        match r {
            Ok(_) => self.waitaof.store(1, Ordering::Relaxed),
            Err(e) => {
                if self.waitaof.swap(2, Ordering::Relaxed) != 2 {
                    tracing::info!(
                        "WAITAOF not usable ({e}); durability relies on the server's appendfsync setting"
                    );
                }
            }
        }
    }

    /// Leases the next job this worker may run, or `None` when there is none.
    pub async fn lease(&self, worker: &str) -> Result<Option<Lease>, QueueError> {
        check_name("worker", worker)?;
        let s = &self.settings;
        let r = self
            .run(
                &scripts::scripts().lease,
                argv![
                    &worker,
                    &s.lease_ms,
                    &s.default_job_ms,
                    &s.scan_limit,
                    &s.default_mode.as_str(),
                    &s.affinity_window,
                    if s.affinity { "1" } else { "0" },
                    &s.affinity_max_passes,
                ],
            )
            .await?;
        if r.first().map(String::as_str) != Some("ok") {
            return Ok(None);
        }
        let json = |i: usize| -> Result<serde_json::Value, QueueError> {
            serde_json::from_str(r.get(i).map(String::as_str).unwrap_or("null"))
                .map_err(|e| QueueError::Corrupt(format!("stored JSON: {e}")))
        };
        Ok(Some(Lease {
            job_id: r[1].clone(),
            token: parse(r.get(2), "token")?,
            participant: r[3].clone(),
            prompt: json(4)?,
            extra: json(5)?,
            attempts: parse(r.get(6), "attempts")?,
            number: parse(r.get(7), "number")?,
        }))
    }

    /// Marks a leased job as running. Returns whether a cancel is pending.
    pub async fn start(&self, job_id: &str, token: u64) -> Result<bool, QueueError> {
        check_id(job_id)?;
        let r = self
            .run(&scripts::scripts().start, argv![&job_id, &token])
            .await?;
        Ok(r.get(1).map(String::as_str) == Some("1"))
    }

    /// Extends a lease. Returns whether a cancel is pending.
    pub async fn heartbeat(&self, job_id: &str, token: u64) -> Result<bool, QueueError> {
        check_id(job_id)?;
        let r = self
            .run(
                &scripts::scripts().heartbeat,
                argv![&job_id, &token, &self.settings.lease_ms],
            )
            .await?;
        Ok(r.get(1).map(String::as_str) == Some("1"))
    }

    /// Remembers an output file stored for `job` under the lease `token`
    /// (`path` relative to the participant's folder: `output/sub/name.png`).
    /// Refused (stale token, finished) when that lease is no longer current.
    pub async fn note_output(
        &self,
        job_id: &str,
        token: u64,
        path: &str,
    ) -> Result<(), QueueError> {
        check_id(job_id)?;
        self.run(&scripts::scripts().note_output, argv![job_id, token, path])
            .await?;
        Ok(())
    }

    /// Reports the end of a job under the lease `token`. `gpu_seconds` is
    /// the worker's measure: not finite counts as unknown, below zero as
    /// zero, more than [`MAX_GPU_SECONDS`] as that (so does `finish.lua`).
    pub async fn finish(
        &self,
        job_id: &str,
        token: u64,
        outcome: Outcome,
        outputs: &serde_json::Value,
        error: Option<&JobError>,
        gpu_seconds: Option<f64>,
    ) -> Result<(), QueueError> {
        check_id(job_id)?;
        let outputs = serde_json::to_string(outputs).map_err(|e| invalid(e.to_string()))?;
        let error = match error {
            Some(e) => serde_json::to_string(e).map_err(|e| invalid(e.to_string()))?,
            None => String::new(),
        };
        // `+ 0.0` turns -0 into 0: Redis reads "-0" as no integer.
        let gpu_ms = gpu_seconds
            .filter(|s| s.is_finite())
            .map(|s| s.clamp(0.0, MAX_GPU_SECONDS) * 1000.0 + 0.0)
            .unwrap_or(-1.0);
        self.run(
            &scripts::scripts().finish,
            argv![
                &job_id,
                &token,
                &outcome.as_str(),
                &outputs,
                &error,
                &gpu_ms,
                &self.settings.history_limit,
            ],
        )
        .await?;
        Ok(())
    }

    /// The reaper: requeues (or fails, or cancels) jobs whose lease passed.
    pub async fn requeue_expired(&self) -> Result<Vec<(String, Expiry)>, QueueError> {
        self.requeue_expired_after(0).await
    }

    /// As [`Queue::requeue_expired`], as if the clock were `offset_ms` later
    /// (tests use this to expire leases without waiting).
    pub async fn requeue_expired_after(
        &self,
        offset_ms: u64,
    ) -> Result<Vec<(String, Expiry)>, QueueError> {
        let s = &self.settings;
        let r = self
            .run(
                &scripts::scripts().requeue_expired,
                argv![&offset_ms, &s.max_attempts, &1000u32, &s.history_limit],
            )
            .await?;
        r.chunks(2)
            .map(|c| {
                let what = match c.get(1).map(String::as_str) {
                    Some("requeued") => Expiry::Requeued,
                    Some("failed") => Expiry::Failed,
                    Some("cancelled") => Expiry::Cancelled,
                    other => return Err(QueueError::Corrupt(format!("reaper said {other:?}"))),
                };
                Ok((c[0].clone(), what))
            })
            .collect()
    }

    /// Cancels a job for its owner or an admin; another participant's job
    /// answers [`Refusal::NotFound`].
    pub async fn cancel(&self, job_id: &str, actor: &Actor) -> Result<Cancelled, QueueError> {
        check_id(job_id)?;
        let r = self
            .run(
                &scripts::scripts().cancel,
                argv![&job_id, &actor.as_arg(), &self.settings.history_limit],
            )
            .await?;
        Ok(match r.get(1).map(String::as_str) {
            Some("flagged") => Cancelled::Flagged,
            _ => Cancelled::Removed,
        })
    }

    /// Moves a waiting job into the priority lane.
    pub async fn prioritize(&self, job_id: &str) -> Result<(), QueueError> {
        check_id(job_id)?;
        self.run(&scripts::scripts().prioritize, argv![&job_id])
            .await?;
        Ok(())
    }

    /// Swaps a waiting job with its neighbour; `false` when already at that end.
    pub async fn move_job(&self, job_id: &str, dir: Direction) -> Result<bool, QueueError> {
        check_id(job_id)?;
        let d = match dir {
            Direction::Up => "up",
            Direction::Down => "down",
        };
        let r = self
            .run(&scripts::scripts().move_job, argv![&job_id, &d])
            .await?;
        Ok(r.get(1).map(String::as_str) == Some("1"))
    }

    /// Switches the scheduling policy; effective on the next lease.
    /// Switches model affinity on or off (kept in Redis; effective on the
    /// next lease).
    pub async fn set_affinity(&self, on: bool) -> Result<(), QueueError> {
        self.run(
            &scripts::scripts().set_affinity,
            argv![if on { "1" } else { "0" }],
        )
        .await?;
        Ok(())
    }

    /// Records what a worker's agent says its ComfyUI holds loaded (model
    /// file tags) as of the last job it ran to its end (`as_of`, that job's
    /// fencing token; 0: none). Ignored (`false`) when a later lease
    /// already predicts what the worker will hold.
    pub async fn report_warm(
        &self,
        worker: &str,
        as_of: u64,
        files: &[String],
    ) -> Result<bool, QueueError> {
        check_name("worker", worker)?;
        let mut args = argv![worker, as_of];
        args.extend(files.iter().map(|t| t.to_redis_args()));
        let r = self.run(&scripts::scripts().report_warm, args).await?;
        Ok(r.first().map(String::as_str) == Some("ok"))
    }

    /// The model files a worker holds warm (tags, see `catalogue`): what
    /// its agent last reported, or the files of a job leased to it since.
    pub async fn warm_models(&self, worker: &str) -> Result<Vec<String>, QueueError> {
        check_name("worker", worker)?;
        let mut v: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.warm(worker))
            .query_async(&mut self.conn())
            .await?;
        v.sort();
        Ok(v)
    }

    /// For each job: whether no connected worker can run it now (it waits
    /// for one that has its nodes or models to come back).
    pub async fn waiting_for_absent_worker(
        &self,
        jobs: &[String],
    ) -> Result<Vec<bool>, QueueError> {
        if jobs.is_empty() {
            return Ok(vec![]);
        }
        let mut p = redis::pipe();
        for j in jobs {
            p.cmd("HGET").arg(self.keys.job(j)).arg("requires");
        }
        let all: Vec<Option<String>> = p.query_async(&mut self.conn()).await?;
        let workers: Vec<String> = redis::cmd("HKEYS")
            .arg(self.keys.workers())
            .query_async(&mut self.conn())
            .await?;
        let tags: Vec<Vec<&str>> = all
            .iter()
            .map(|r| {
                r.as_deref()
                    .unwrap_or("")
                    .lines()
                    .filter(|t| !t.is_empty())
                    .collect()
            })
            .collect();
        if workers.is_empty() {
            return Ok(tags.iter().map(|t| !t.is_empty()).collect());
        }
        // Two round trips whatever the numbers: which workers reported a
        // catalogue, and every (job, worker) match.
        let mut p = redis::pipe();
        for w in &workers {
            p.cmd("EXISTS").arg(self.keys.caps(w));
        }
        let reported: Vec<bool> = p.query_async(&mut self.conn()).await?;
        let mut p = redis::pipe();
        let mut asked = 0;
        for t in tags.iter().filter(|t| !t.is_empty()) {
            for w in &workers {
                p.cmd("SMISMEMBER").arg(self.keys.caps(w)).arg(t);
                asked += 1;
            }
        }
        let has: Vec<Vec<bool>> = if asked > 0 {
            p.query_async(&mut self.conn()).await?
        } else {
            vec![]
        };
        let mut rows = has.chunks(workers.len());
        let out = tags
            .iter()
            .map(|t| {
                if t.is_empty() {
                    return false;
                }
                let row = rows.next().unwrap_or_default();
                // A worker that reported no catalogue runs anything.
                let runnable = reported
                    .iter()
                    .zip(row)
                    .any(|(rep, has)| !rep || has.iter().all(|h| *h));
                !runnable
            })
            .collect();
        Ok(out)
    }

    /// Publishes the storage watch's level and report for `ttl` (they expire
    /// when the hub stops publishing).
    pub async fn set_storage(
        &self,
        level: &str,
        report: &str,
        ttl: std::time::Duration,
    ) -> Result<(), QueueError> {
        let ms = ttl.as_millis() as u64;
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(self.keys.storage_level())
            .arg(level)
            .arg("PX")
            .arg(ms)
            .ignore()
            .cmd("SET")
            .arg(self.keys.storage())
            .arg(report)
            .arg("PX")
            .arg(ms)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The storage watch's last report, if a hub published one recently.
    pub async fn storage(&self) -> Result<Option<serde_json::Value>, QueueError> {
        let v: Option<String> = redis::cmd("GET")
            .arg(self.keys.storage())
            .query_async(&mut self.conn())
            .await?;
        Ok(v.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Redis's data directory (`CONFIG GET dir`), where it can tell.
    pub async fn redis_data_dir(&self) -> Result<Option<String>, QueueError> {
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("dir")
            .query_async(&mut self.conn())
            .await
            .unwrap_or_default();
        Ok(v.get(1).cloned())
    }

    /// Forgets what a worker holds warm (its ComfyUI restarted).
    pub async fn clear_warm(&self, worker: &str) -> Result<(), QueueError> {
        check_name("worker", worker)?;
        let _: i64 = redis::cmd("DEL")
            .arg(self.keys.warm(worker))
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    pub async fn set_mode(&self, mode: Mode) -> Result<(), QueueError> {
        self.run(&scripts::scripts().set_mode, argv![&mode.as_str()])
            .await?;
        Ok(())
    }

    /// Pauses/resumes submits and/or dispatch (`None` leaves one as it is).
    /// Returns the resulting (submit paused, dispatch paused).
    pub async fn pause(
        &self,
        submit: Option<bool>,
        dispatch: Option<bool>,
    ) -> Result<(bool, bool), QueueError> {
        let flag = |v: Option<bool>| match v {
            Some(true) => "1",
            Some(false) => "0",
            None => "",
        };
        let r = self
            .run(
                &scripts::scripts().pause,
                argv![&flag(submit), &flag(dispatch)],
            )
            .await?;
        Ok((
            r.get(1).map(String::as_str) == Some("1"),
            r.get(2).map(String::as_str) == Some("1"),
        ))
    }

    async fn set_participant(
        &self,
        who: &str,
        field: &str,
        value: String,
    ) -> Result<(), QueueError> {
        self.run(
            &scripts::scripts().set_participant,
            argv![&who, &field, &value],
        )
        .await?;
        Ok(())
    }

    /// Locks a participant (new submits refused) or unlocks them.
    pub async fn set_locked(&self, participant: &str, locked: bool) -> Result<(), QueueError> {
        check_name("participant", participant)?;
        let v = if locked { "1" } else { "0" };
        self.set_participant(participant, "locked", v.into()).await
    }

    /// Sets a participant's fair-share weight (default 1).
    pub async fn set_weight(&self, participant: &str, weight: f64) -> Result<(), QueueError> {
        check_name("participant", participant)?;
        if !(weight.is_finite() && weight > 0.0) {
            return Err(invalid("weight must be a positive number"));
        }
        self.set_participant(participant, "weight", weight.to_string())
            .await
    }

    /// Sets the max pending jobs of one participant, or (with `None`) the
    /// runtime default for everyone; a `None` limit removes the override.
    pub async fn set_max_pending(
        &self,
        participant: Option<&str>,
        limit: Option<u32>,
    ) -> Result<(), QueueError> {
        if let Some(p) = participant {
            check_name("participant", p)?;
        }
        let v = limit.map(|l| l.to_string()).unwrap_or_default();
        self.set_participant(participant.unwrap_or("@all"), "max_pending", v)
            .await
    }

    /// Cancels every waiting job of a participant; returns how many.
    pub async fn clear_queue(&self, participant: &str) -> Result<u64, QueueError> {
        check_name("participant", participant)?;
        let r = self
            .run(
                &scripts::scripts().clear_queue,
                argv![&participant, &self.settings.history_limit],
            )
            .await?;
        parse(r.get(1), "count")
    }

    /// Deletes finished jobs from a participant's history (all when `ids`
    /// is empty); returns how many were deleted.
    pub async fn delete_history(
        &self,
        participant: &str,
        ids: &[String],
    ) -> Result<u64, QueueError> {
        check_name("participant", participant)?;
        let mut args = argv![participant];
        args.extend(ids.iter().map(|id| id.to_redis_args()));
        let r = self.run(&scripts::scripts().delete_history, args).await?;
        parse(r.get(1), "count")
    }

    /// Hands a job back without a result (the worker's ComfyUI is down, the
    /// worker is stopping): retried at once, or failed after the attempt
    /// limit with `reason`.
    pub async fn release(
        &self,
        job_id: &str,
        token: u64,
        reason: &str,
    ) -> Result<Expiry, QueueError> {
        check_id(job_id)?;
        let s = &self.settings;
        let r = self
            .run(
                &scripts::scripts().release,
                argv![job_id, token, s.max_attempts, s.history_limit, reason],
            )
            .await?;
        match r.get(1).map(String::as_str) {
            Some("requeued") => Ok(Expiry::Requeued),
            Some("failed") => Ok(Expiry::Failed),
            Some("cancelled") => Ok(Expiry::Cancelled),
            other => Err(QueueError::Corrupt(format!("release said {other:?}"))),
        }
    }

    /// Relays a job event (progress, outputs, previews…) to the participant's
    /// channel; `payload` is a JSON text. Not stored: live subscribers only.
    pub async fn publish_event(&self, participant: &str, payload: &str) -> Result<(), QueueError> {
        check_name("participant", participant)?;
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.keys.participant_channel(participant))
            .arg(payload)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Sends the instructor's message to every participant (their editors
    /// show it as a toast) and keeps it as the latest broadcast.
    pub async fn broadcast(&self, message: &str) -> Result<Broadcast, QueueError> {
        let message = message.trim();
        if message.is_empty() || message.chars().count() > 500 {
            return Err(invalid("a broadcast is 1 to 500 characters"));
        }
        let b = Broadcast {
            id: uuid::Uuid::new_v4().simple().to_string(),
            message: message.to_string(),
            at_ms: now_ms(),
        };
        let json = serde_json::to_string(&b).map_err(|e| invalid(e.to_string()))?;
        self.run(&scripts::scripts().broadcast, argv![&json])
            .await?;
        Ok(b)
    }

    /// Marks one editor socket of `participant` open for `ttl` (refreshed
    /// while it stays open), or closed with `ttl` = 0. Presence only, for
    /// the instructor's "online" column; no queue state.
    pub async fn set_online(
        &self,
        participant: &str,
        session: &str,
        ttl: std::time::Duration,
    ) -> Result<(), QueueError> {
        check_name("participant", participant)?;
        let member = format!("{participant}\n{session}");
        let mut pipe = redis::pipe();
        if ttl.is_zero() {
            pipe.zrem(self.keys.online(), member);
        } else {
            pipe.zadd(
                self.keys.online(),
                member,
                now_ms() + ttl.as_millis() as u64,
            );
        }
        // Forget sockets whose process died without saying goodbye.
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.online())
            .arg("-inf")
            .arg(now_ms());
        let _: () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Open editor sockets per participant.
    pub async fn online(&self) -> Result<std::collections::HashMap<String, usize>, QueueError> {
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.online())
            .arg(now_ms())
            .arg("+inf")
            .query_async(&mut self.conn())
            .await?;
        let mut out = std::collections::HashMap::new();
        for m in members {
            if let Some((p, _)) = m.split_once('\n') {
                *out.entry(p.to_string()).or_insert(0) += 1;
            }
        }
        Ok(out)
    }

    /// Replaces a participant's login (password, token) after a reset.
    pub async fn set_login(
        &self,
        participant: &str,
        password: &str,
        token: &str,
    ) -> Result<(), QueueError> {
        check_name("participant", participant)?;
        if password.is_empty() || token.len() < 16 {
            return Err(invalid(
                "a login needs a password and a token of 16+ characters",
            ));
        }
        self.run(
            &scripts::scripts().set_login,
            argv![participant, password, token],
        )
        .await?;
        Ok(())
    }

    /// A participant's reset login (password, token), if any.
    pub async fn login(&self, participant: &str) -> Result<Option<(String, String)>, QueueError> {
        check_name("participant", participant)?;
        let v: (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.keys.login(participant))
            .arg("password")
            .arg("token")
            .query_async(&mut self.conn())
            .await?;
        Ok(match v {
            (Some(p), Some(t)) => Some((p, t)),
            _ => None,
        })
    }

    /// Drains a worker (it keeps its jobs, gets no new ones) or undrains it.
    pub async fn set_draining(&self, worker: &str, draining: bool) -> Result<(), QueueError> {
        check_name("worker", worker)?;
        let v = if draining { "1" } else { "0" };
        self.run(&scripts::scripts().set_draining, argv![worker, v])
            .await?;
        Ok(())
    }

    /// Workers being drained.
    pub async fn draining(&self) -> Result<Vec<String>, QueueError> {
        let mut v: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.draining())
            .query_async(&mut self.conn())
            .await?;
        v.sort();
        Ok(v)
    }

    /// The latest broadcast, if any.
    pub async fn last_broadcast(&self) -> Result<Option<Broadcast>, QueueError> {
        let v: Option<String> = redis::cmd("HGET")
            .arg(self.keys.settings())
            .arg("broadcast")
            .query_async(&mut self.conn())
            .await?;
        Ok(v.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Stores a ComfyUI `object_info` under its digest (once).
    pub async fn put_object_info(&self, digest: &str, json: &str) -> Result<(), QueueError> {
        // SET NX answers OK or nil; either is fine.
        let _: redis::Value = redis::cmd("SET")
            .arg(self.keys.object_info(digest))
            .arg(json)
            .arg("NX")
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The `object_info` stored under `digest`, if any.
    pub async fn object_info(&self, digest: &str) -> Result<Option<String>, QueueError> {
        Ok(redis::cmd("GET")
            .arg(self.keys.object_info(digest))
            .query_async(&mut self.conn())
            .await?)
    }

    /// Puts `worker` in `pool` (lease.lua checks the pool's state and burst
    /// policy for each lease; finish.lua adds its jobs' GPU time there).
    pub async fn set_worker_pool(&self, worker: &str, pool: &str) -> Result<(), QueueError> {
        check_name("worker", worker)?;
        check_name("pool", pool)?;
        let _: i64 = redis::cmd("HSET")
            .arg(self.keys.worker_pools())
            .arg(worker)
            .arg(pool)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// A pool's state and burst policy from the config, where the
    /// instructor has not set them at runtime (their switches persist).
    /// `max_concurrency` (0: no limit) is the config's alone: always written.
    pub async fn init_pool(
        &self,
        name: &str,
        state: PoolState,
        burst: Burst,
        max_concurrency: u32,
    ) -> Result<(), QueueError> {
        check_name("pool", name)?;
        self.run(
            &scripts::scripts().set_pool,
            argv![
                name,
                "init",
                state.as_str(),
                burst.to_string(),
                max_concurrency
            ],
        )
        .await?;
        Ok(())
    }

    /// The instructor switches a pool (`None` leaves that part as it is);
    /// answers the pool's state and burst policy now.
    pub async fn set_pool(
        &self,
        name: &str,
        state: Option<PoolState>,
        burst: Option<Burst>,
    ) -> Result<(PoolState, Burst), QueueError> {
        check_name("pool", name)?;
        let r = self
            .run(
                &scripts::scripts().set_pool,
                argv![
                    name,
                    "set",
                    state.map(PoolState::as_str).unwrap_or(""),
                    burst.map(|b| b.to_string()).unwrap_or_default(),
                    ""
                ],
            )
            .await?;
        let get = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
        Ok((
            get(1).parse().unwrap_or_default(),
            get(2).parse().unwrap_or_default(),
        ))
    }

    /// Every pool named by the config or by a worker that joined one: its
    /// state, burst policy, GPU time used and the workers in it.
    pub async fn pools(&self, configured: &[String]) -> Result<Vec<PoolStatus>, QueueError> {
        let members: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.worker_pools())
            .query_async(&mut self.conn())
            .await?;
        let mut names: std::collections::BTreeSet<String> = configured.iter().cloned().collect();
        names.extend(members.values().cloned());
        let names: Vec<String> = names.into_iter().collect();
        if names.is_empty() {
            return Ok(vec![]);
        }
        let mut p = redis::pipe();
        for n in &names {
            p.cmd("HMGET")
                .arg(self.keys.pool(n))
                .arg("state")
                .arg("burst")
                .arg("gpu_ms");
        }
        let rows: Vec<(Option<String>, Option<String>, Option<u64>)> =
            p.query_async(&mut self.conn()).await?;
        Ok(names
            .into_iter()
            .zip(rows)
            .map(|(name, (state, burst, gpu_ms))| {
                let mut workers: Vec<String> = members
                    .iter()
                    .filter(|(_, p)| **p == name)
                    .map(|(w, _)| w.clone())
                    .collect();
                workers.sort();
                PoolStatus {
                    state: state.and_then(|s| s.parse().ok()).unwrap_or_default(),
                    burst: burst.and_then(|b| b.parse().ok()).unwrap_or_default(),
                    gpu_ms: gpu_ms.unwrap_or(0),
                    workers,
                    name,
                }
            })
            .collect())
    }

    /// Records (or, with `None`, removes) a connected worker's description.
    pub async fn set_worker(&self, worker: &str, info: Option<&str>) -> Result<(), QueueError> {
        check_name("worker", worker)?;
        let cmd = match info {
            Some(i) => {
                let mut c = redis::cmd("HSET");
                c.arg(self.keys.workers()).arg(worker).arg(i);
                c
            }
            None => {
                let mut c = redis::cmd("HDEL");
                c.arg(self.keys.workers()).arg(worker);
                c
            }
        };
        let _: i64 = cmd.query_async(&mut self.conn()).await?;
        Ok(())
    }

    /// Connected workers: id → JSON description.
    pub async fn workers(&self) -> Result<std::collections::HashMap<String, String>, QueueError> {
        Ok(redis::cmd("HGETALL")
            .arg(self.keys.workers())
            .query_async(&mut self.conn())
            .await?)
    }

    /// Records a worker's capability tags (replacing earlier ones).
    pub async fn register_caps(&self, worker: &str, tags: &[String]) -> Result<(), QueueError> {
        self.register_catalogue(worker, &serde_json::json!({}), tags)
            .await
    }

    /// Records what a worker can run: its capability tags and a description
    /// of its catalogue (digest, model inputs) that outlives its connection
    /// by `known_worker_ms`.
    pub async fn register_catalogue(
        &self,
        worker: &str,
        description: &serde_json::Value,
        tags: &[String],
    ) -> Result<(), QueueError> {
        check_name("worker", worker)?;
        let mut args = argv![worker, description.to_string()];
        args.extend(tags.iter().map(|t| t.to_redis_args()));
        self.run(&scripts::scripts().register_caps, args).await?;
        Ok(())
    }

    /// Notes that a worker was just seen (it disconnected): it keeps
    /// counting for `known_worker_ms` from now.
    pub async fn worker_seen(&self, worker: &str) -> Result<(), QueueError> {
        check_name("worker", worker)?;
        let _: i64 = redis::cmd("ZADD")
            .arg(self.keys.seen())
            .arg(now_ms())
            .arg(worker)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The workers that count for what the workshop can run: connected, or
    /// seen within `known_worker_ms`; each with its catalogue description
    /// (sorted by id).
    pub async fn known_workers(&self) -> Result<Vec<KnownWorker>, QueueError> {
        let cutoff = now_ms().saturating_sub(self.settings.known_worker_ms);
        type Reply = (
            std::collections::HashMap<String, String>,
            Vec<(String, u64)>,
            Vec<String>,
        );
        let (described, seen, connected): Reply = redis::pipe()
            .cmd("HGETALL")
            .arg(self.keys.known())
            .cmd("ZRANGE")
            .arg(self.keys.seen())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .cmd("HKEYS")
            .arg(self.keys.workers())
            .query_async(&mut self.conn())
            .await?;
        let seen: std::collections::HashMap<String, u64> = seen.into_iter().collect();
        // A connected worker that registered no catalogue description (an
        // older agent) is described by its connection record.
        let mut described = described;
        if connected.iter().any(|w| !described.contains_key(w)) {
            let records = self.workers().await?;
            for w in &connected {
                if let (false, Some(r)) = (described.contains_key(w), records.get(w)) {
                    described.insert(w.clone(), r.clone());
                }
            }
        }
        let mut out: Vec<KnownWorker> = described
            .into_iter()
            .filter_map(|(id, d)| {
                let is_connected = connected.contains(&id);
                let seen_ms = seen.get(&id).copied().unwrap_or(0);
                (is_connected || seen_ms >= cutoff).then(|| KnownWorker {
                    description: serde_json::from_str(&d).unwrap_or_default(),
                    connected: is_connected,
                    seen_ms,
                    id,
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Subscribes to the change notices of one participant (`Some`) or of
    /// everything (`None`, for the admin page). Each notice is a small JSON
    /// text. The receiver ends when the subscription is lost; callers
    /// re-read state and subscribe again.
    pub async fn subscribe(
        &self,
        participant: Option<&str>,
    ) -> Result<mpsc::Receiver<String>, QueueError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        match participant {
            Some(u) => {
                check_name("participant", u)?;
                pubsub.subscribe(self.keys.participant_channel(u)).await?;
                pubsub
                    .subscribe(self.keys.all_participants_channel())
                    .await?;
            }
            None => pubsub.psubscribe(self.keys.all_channels_pattern()).await?,
        }
        let (tx, rx) = mpsc::channel(256);
        // Ends (and closes the Redis connection) as soon as the receiver is
        // dropped, not at the next message: a closed editor socket must not
        // keep its subscription open.
        tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            loop {
                let msg = tokio::select! {
                    m = stream.next() => m,
                    () = tx.closed() => break,
                };
                let Some(msg) = msg else { break };
                let Ok(text) = msg.get_payload::<String>() else {
                    continue;
                };
                if tx.send(text).await.is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

fn parse<T: std::str::FromStr>(v: Option<&String>, what: &str) -> Result<T, QueueError> {
    v.and_then(|s| s.parse().ok())
        .ok_or_else(|| QueueError::Corrupt(format!("bad {what} in script reply: {v:?}")))
}

impl Queue {
    /// True when Redis answers.
    pub async fn ping(&self) -> bool {
        let r: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut self.conn()).await;
        r.is_ok()
    }
}
