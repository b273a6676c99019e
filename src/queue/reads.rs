//! Read-only views of the queue: one job, a participant's waiting and running
//! jobs with positions and ETAs, history pages, the whole queue for admins,
//! participants and counters for metrics. Plain pipelined reads (no scripts).

use super::job::{Job, Mode, Status};
use super::schedule::{eta_seconds, predicted_order, SchedState};
use super::{check_id, check_name, Queue, QueueError};
use serde::Serialize;
use std::collections::HashMap;

/// A waiting job with its predicted place.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Waiting {
    pub job_id: String,
    pub participant: String,
    pub name: String,
    pub number: u64,
    /// 0-based place in the global predicted lease order.
    pub position: usize,
    pub eta_seconds: f64,
    pub created_ms: u64,
    pub attempts: u32,
    pub priority: bool,
}

/// The instructor's message to every participant.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Broadcast {
    pub id: String,
    pub message: String,
    pub at_ms: u64,
}

/// The whole queue, for admins.
#[derive(Clone, Debug, Serialize)]
pub struct QueueSnapshot {
    pub settings: RuntimeSettings,
    pub waiting: Vec<Waiting>,
    pub running: Vec<Job>,
}

/// One participant's pending work.
#[derive(Clone, Debug, Serialize)]
pub struct ParticipantQueue {
    pub waiting: Vec<Waiting>,
    pub running: Vec<Job>,
}

/// Settings changed at runtime (by admins).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuntimeSettings {
    pub mode: Mode,
    pub paused_submit: bool,
    pub paused_dispatch: bool,
    pub max_pending_per_participant: u32,
    /// Model affinity (warm models first, within the pass bound).
    pub affinity: bool,
}

/// A participant as the instructor sees them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParticipantInfo {
    pub name: String,
    pub locked: bool,
    pub weight: f64,
    /// Waiting + running jobs.
    pub active: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub gpu_seconds: f64,
    pub last_activity_ms: Option<u64>,
    pub max_pending: Option<u32>,
}

/// Counters for metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    pub waiting: u64,
    pub waiting_by_participant: HashMap<String, u64>,
    pub leased_or_running: u64,
    pub enqueued: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub lease_expiries: u64,
    pub retries: u64,
}

type Hash = HashMap<String, String>;

/// settings, prio, queued, rr, fs (with tags), leased ids, recent run times.
type SnapshotReply = (
    Hash,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<(String, f64)>,
    Vec<String>,
    Vec<f64>,
);

fn num<T: std::str::FromStr>(h: &Hash, k: &str) -> Option<T> {
    h.get(k).and_then(|v| v.parse().ok())
}

impl Queue {
    /// One job by id (any participant's; for the hub and admins).
    pub async fn job(&self, job_id: &str) -> Result<Option<Job>, QueueError> {
        check_id(job_id)?;
        let h: Hash = redis::cmd("HGETALL")
            .arg(self.keys.job(job_id))
            .query_async(&mut self.conn())
            .await?;
        Job::from_hash(&h).map_err(QueueError::Corrupt)
    }

    /// One job, only if it belongs to `participant` (else `None`, as if it
    /// did not exist).
    pub async fn job_of(&self, participant: &str, job_id: &str) -> Result<Option<Job>, QueueError> {
        if !super::valid_job_id(job_id) {
            return Ok(None);
        }
        Ok(self
            .job(job_id)
            .await?
            .filter(|j| j.participant == participant))
    }

    async fn jobs(&self, ids: &[String]) -> Result<Vec<Job>, QueueError> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(self.keys.job(id));
        }
        let hashes: Vec<Hash> = pipe.query_async(&mut self.conn()).await?;
        let mut out = Vec::with_capacity(hashes.len());
        for h in hashes {
            if let Some(j) = Job::from_hash(&h).map_err(QueueError::Corrupt)? {
                out.push(j);
            }
        }
        Ok(out)
    }

    /// The jobs' small fields only (no prompt, extra workflow, outputs or
    /// error): what placing waiting jobs in line needs. A waiting job's
    /// prompt can be tens of KiB, and every editor's status poll places the
    /// whole line, so reading full jobs there would move megabytes per poll.
    async fn job_headers(&self, ids: &[String]) -> Result<Vec<Job>, QueueError> {
        const FIELDS: [&str; 8] = [
            "id",
            "participant",
            "number",
            "status",
            "name",
            "priority",
            "attempts",
            "created",
        ];
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET").arg(self.keys.job(id)).arg(&FIELDS[..]);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.conn()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let h: Hash = FIELDS
                .iter()
                .zip(row)
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect();
            if h.is_empty() {
                continue;
            }
            if let Some(j) = Job::from_hash(&h).map_err(QueueError::Corrupt)? {
                out.push(j);
            }
        }
        Ok(out)
    }

    /// Settings as changed at runtime, with config defaults filled in.
    pub async fn runtime_settings(&self) -> Result<RuntimeSettings, QueueError> {
        let h: Hash = redis::cmd("HGETALL")
            .arg(self.keys.settings())
            .query_async(&mut self.conn())
            .await?;
        Ok(self.settings_from(&h))
    }

    fn settings_from(&self, h: &Hash) -> RuntimeSettings {
        RuntimeSettings {
            mode: h
                .get("mode")
                .and_then(|m| m.parse().ok())
                .unwrap_or(self.settings.default_mode),
            paused_submit: h.get("paused_submit").map(String::as_str) == Some("1"),
            paused_dispatch: h.get("paused_dispatch").map(String::as_str) == Some("1"),
            max_pending_per_participant: num(h, "max_pending")
                .unwrap_or(self.settings.max_pending_per_participant),
            affinity: match h.get("affinity").map(String::as_str) {
                Some(v) => v == "1",
                None => self.settings.affinity,
            },
        }
    }

    /// The whole queue in predicted lease order, with ETAs for `workers` GPUs.
    pub async fn snapshot(&self, workers: usize) -> Result<QueueSnapshot, QueueError> {
        let k = &self.keys;
        let (settings, prio, queued, rr, fs, leased, rt): SnapshotReply = redis::pipe()
            .atomic()
            .hgetall(k.settings())
            .zrange(k.prio(), 0, -1)
            .zrange(k.queued(), 0, -1)
            .zrange(k.rr(), 0, -1)
            .zrange_withscores(k.fs(), 0, -1)
            .zrange(k.leases(), 0, -1)
            .lrange(k.run_times(), 0, -1)
            .query_async(&mut self.conn())
            .await?;
        let settings = self.settings_from(&settings);
        let default_ms = self.settings.default_job_ms as f64;
        let mean_ms = if rt.is_empty() {
            default_ms
        } else {
            rt.iter().sum::<f64>() / rt.len() as f64
        };

        let mut ids = prio.clone();
        ids.extend(queued.iter().cloned());
        let jobs = self.job_headers(&ids).await?;
        let by_id: HashMap<&str, &Job> = jobs.iter().map(|j| (j.id.as_str(), j)).collect();
        let pair = |id: &String| {
            by_id
                .get(id.as_str())
                .map(|j| (id.clone(), j.participant.clone()))
        };

        let mut charge = HashMap::new();
        if settings.mode == Mode::FairShare && !fs.is_empty() {
            let mut pipe = redis::pipe();
            for (u, _) in &fs {
                pipe.lrange(k.user_run_times(u), 0, -1)
                    .hget(k.user(u), "weight");
            }
            let per: Vec<redis::Value> = pipe.query_async(&mut self.conn()).await?;
            for (i, (u, _)) in fs.iter().enumerate() {
                let times: Vec<f64> =
                    redis::from_redis_value(per[2 * i].clone()).unwrap_or_default();
                let weight: Option<f64> = redis::from_redis_value(per[2 * i + 1].clone()).ok();
                let cost = if times.is_empty() {
                    default_ms
                } else {
                    times.iter().sum::<f64>() / times.len() as f64
                };
                charge.insert(u.clone(), cost / weight.filter(|w| *w > 0.0).unwrap_or(1.0));
            }
        }
        let state = SchedState {
            mode: settings.mode,
            prio: prio.iter().filter_map(pair).collect(),
            queued: queued.iter().filter_map(pair).collect(),
            rr,
            fs,
            charge,
            default_charge: default_ms,
        };
        let waiting = predicted_order(&state)
            .into_iter()
            .filter_map(|id| by_id.get(id.as_str()).copied())
            .enumerate()
            .map(|(position, j)| Waiting {
                job_id: j.id.clone(),
                participant: j.participant.clone(),
                name: j.name.clone(),
                number: j.number,
                position,
                eta_seconds: eta_seconds(position, workers, mean_ms / 1000.0),
                created_ms: j.created_ms,
                attempts: j.attempts,
                priority: j.priority,
            })
            .collect();
        let running = self.jobs(&leased).await?;
        Ok(QueueSnapshot {
            settings,
            waiting,
            running,
        })
    }

    /// A participant's waiting jobs (with global positions) and running jobs.
    pub async fn participant_queue(
        &self,
        participant: &str,
        workers: usize,
    ) -> Result<ParticipantQueue, QueueError> {
        check_name("participant", participant)?;
        let snap = self.snapshot(workers).await?;
        Ok(ParticipantQueue {
            waiting: snap
                .waiting
                .into_iter()
                .filter(|w| w.participant == participant)
                .collect(),
            running: snap
                .running
                .into_iter()
                .filter(|j| j.participant == participant)
                .collect(),
        })
    }

    /// How many of a participant's jobs are waiting or running: the
    /// `active` count the queue scripts keep (enqueue adds one, every end
    /// takes one off) — one field read, where [`Queue::participant_queue`]
    /// reads the whole queue to place each job.
    pub async fn pending_count(&self, participant: &str) -> Result<u64, QueueError> {
        check_name("participant", participant)?;
        let n: Option<i64> = redis::cmd("HGET")
            .arg(self.keys.user(participant))
            .arg("active")
            .query_async(&mut self.conn())
            .await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// A page of a participant's finished jobs, newest first.
    pub async fn history(
        &self,
        participant: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Job>, QueueError> {
        check_name("participant", participant)?;
        if limit == 0 {
            return Ok(vec![]);
        }
        let ids: Vec<String> = redis::cmd("LRANGE")
            .arg(self.keys.history(participant))
            .arg(offset)
            .arg(offset + limit - 1)
            .query_async(&mut self.conn())
            .await?;
        self.jobs(&ids).await
    }

    /// Every participant that has submitted or been configured at runtime.
    pub async fn participants(&self) -> Result<Vec<ParticipantInfo>, QueueError> {
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.users())
            .query_async(&mut self.conn())
            .await?;
        names.sort();
        if names.is_empty() {
            return Ok(vec![]);
        }
        let mut pipe = redis::pipe();
        for u in &names {
            pipe.hgetall(self.keys.user(u));
        }
        let hashes: Vec<Hash> = pipe.query_async(&mut self.conn()).await?;
        Ok(names
            .into_iter()
            .zip(hashes)
            .map(|(name, h)| ParticipantInfo {
                locked: h.get("locked").map(String::as_str) == Some("1"),
                weight: num(&h, "weight").unwrap_or(1.0),
                active: num(&h, "active").unwrap_or(0),
                succeeded: num(&h, Status::Succeeded.as_str()).unwrap_or(0),
                failed: num(&h, Status::Failed.as_str()).unwrap_or(0),
                cancelled: num(&h, Status::Cancelled.as_str()).unwrap_or(0),
                gpu_seconds: num::<f64>(&h, "gpu_ms").unwrap_or(0.0) / 1000.0,
                last_activity_ms: num(&h, "last_activity"),
                max_pending: num(&h, "max_pending"),
                name,
            })
            .collect())
    }

    /// Counters for `/metrics`.
    pub async fn counts(&self) -> Result<Counts, QueueError> {
        let k = &self.keys;
        let (queued, prio, leases, stats): (Vec<String>, Vec<String>, u64, Hash) = redis::pipe()
            .atomic()
            .zrange(k.queued(), 0, -1)
            .zrange(k.prio(), 0, -1)
            .zcard(k.leases())
            .hgetall(k.stats())
            .query_async(&mut self.conn())
            .await?;
        let mut ids = queued;
        ids.extend(prio);
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(k.job(id), "participant");
        }
        let owners: Vec<Option<String>> = if ids.is_empty() {
            vec![]
        } else {
            pipe.query_async(&mut self.conn()).await?
        };
        let mut by = HashMap::new();
        for u in owners.into_iter().flatten() {
            *by.entry(u).or_insert(0) += 1;
        }
        let stat = |f: &str| num(&stats, f).unwrap_or(0);
        Ok(Counts {
            waiting: by.values().sum(),
            waiting_by_participant: by,
            leased_or_running: leases,
            enqueued: stat("enqueued"),
            succeeded: stat("succeeded"),
            failed: stat("failed"),
            cancelled: stat("cancelled"),
            lease_expiries: stat("expired"),
            retries: stat("retried"),
        })
    }
}
