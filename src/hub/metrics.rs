//! `/metrics` in Prometheus text format. The queue's own numbers (waiting
//! jobs per participant, outcomes, lease expiries, retries) are read from
//! Redis at scrape time, so they survive hub restarts; timings the hub
//! sees pass through it (wait and run time when a job finishes, a worker's
//! idle gap between jobs, busy seconds) are kept in-process. Labels carry
//! participant and worker names only: no secrets, no prompt contents.

use crate::queue::{Counts, Queue};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Labels = Vec<(&'static str, String)>;

/// The hub's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    scraped: Arc<Mutex<Scraped>>,
    wait: Histogram,
    run: Histogram,
    idle_gap: Family<Labels, Histogram>,
    busy_seconds: Family<Labels, Counter<f64>>,
    /// Per worker: jobs finished since the hub started, and the finished
    /// jobs' run intervals of the last ten minutes (for the dashboard).
    activity: Mutex<HashMap<String, Activity>>,
}

#[derive(Debug, Default)]
struct Activity {
    done: u64,
    recent: std::collections::VecDeque<(std::time::Instant, std::time::Instant)>,
}

/// The dashboard's window for a worker's busy share.
pub const BUSY_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// What the last scrape read from Redis.
#[derive(Debug, Default)]
struct Scraped {
    counts: Counts,
    workers: Vec<(String, u64, u64)>,
    online: usize,
    /// The storage watch's filesystems: (path, free bytes, total bytes).
    storage: Vec<(String, u64, u64)>,
    /// Worker pools: (name, GPU seconds used, cost so far, enabled).
    pools: Vec<(String, f64, f64, bool)>,
}

#[derive(Debug)]
struct QueueCollector(Arc<Mutex<Scraped>>);

fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let Some(kind) = rows.first().map(|(_, m)| m.metric_type()) else {
        return Ok(());
    };
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in &rows {
        metric.encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for QueueCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let c = &s.counts;
        let mut waiting: Vec<(Labels, ConstGauge<i64>)> = c
            .waiting_by_participant
            .iter()
            .map(|(p, n)| (vec![("participant", p.clone())], ConstGauge::new(*n as i64)))
            .collect();
        waiting.sort_by(|a, b| a.0.cmp(&b.0));
        family(
            &mut enc,
            "waiting_jobs",
            "Jobs waiting, by participant",
            waiting,
        )?;
        let by_path = |pick: fn(&(String, u64, u64)) -> u64| -> Vec<(Labels, ConstGauge<i64>)> {
            s.storage
                .iter()
                .map(|f| (vec![("path", f.0.clone())], ConstGauge::new(pick(f) as i64)))
                .collect()
        };
        family(
            &mut enc,
            "storage_free_bytes",
            "Free bytes on each filesystem the workshop writes to (state dir, Redis data)",
            by_path(|f| f.1),
        )?;
        family(
            &mut enc,
            "storage_total_bytes",
            "Size of each filesystem the workshop writes to",
            by_path(|f| f.2),
        )?;
        let by_pool =
            |pick: fn(&(String, f64, f64, bool)) -> f64| -> Vec<(Labels, ConstGauge<f64>)> {
                s.pools
                    .iter()
                    .map(|p| (vec![("pool", p.0.clone())], ConstGauge::new(pick(p))))
                    .collect()
            };
        family(
            &mut enc,
            "pool_gpu_seconds",
            "GPU seconds the jobs run on each worker pool measured",
            by_pool(|p| p.1),
        )?;
        family(
            &mut enc,
            "pool_cost",
            "Cost so far of each worker pool (GPU hours × its price_per_gpu_hour)",
            by_pool(|p| p.2),
        )?;
        family(
            &mut enc,
            "pool_enabled",
            "1 while a worker pool takes jobs (enabled), 0 while parked or draining",
            by_pool(|p| if p.3 { 1.0 } else { 0.0 }),
        )?;
        let one = |v: u64| vec![(Labels::new(), ConstGauge::new(v as i64))];
        family(
            &mut enc,
            "waiting_jobs_all",
            "Jobs waiting in all",
            one(c.waiting),
        )?;
        family(
            &mut enc,
            "running_jobs",
            "Jobs leased or running",
            one(c.leased_or_running),
        )?;
        let outcomes = [
            ("succeeded", c.succeeded),
            ("failed", c.failed),
            ("cancelled", c.cancelled),
        ]
        .into_iter()
        .map(|(o, n)| (vec![("outcome", o.to_string())], ConstCounter::new(n)))
        .collect();
        family(
            &mut enc,
            "jobs_finished",
            "Finished jobs by outcome",
            outcomes,
        )?;
        let counter = |v: u64| vec![(Labels::new(), ConstCounter::new(v))];
        family(
            &mut enc,
            "jobs_enqueued",
            "Jobs accepted into the queue",
            counter(c.enqueued),
        )?;
        family(
            &mut enc,
            "lease_expiries",
            "Leases that expired (worker lost)",
            counter(c.lease_expiries),
        )?;
        family(
            &mut enc,
            "retries",
            "Jobs handed out again after a failed attempt",
            counter(c.retries),
        )?;
        let workers: Vec<(Labels, ConstGauge<f64>)> = s
            .workers
            .iter()
            .map(|(w, running, cap)| {
                let ratio = if *cap == 0 {
                    0.0
                } else {
                    *running as f64 / *cap as f64
                };
                (vec![("worker", w.clone())], ConstGauge::new(ratio))
            })
            .collect();
        family(
            &mut enc,
            "worker_busy_ratio",
            "Running jobs / capacity, per connected worker",
            workers,
        )?;
        family(
            &mut enc,
            "workers_connected",
            "Connected worker agents",
            one(s.workers.len() as u64),
        )?;
        family(
            &mut enc,
            "participants_online",
            "Participants with an open editor",
            one(s.online as u64),
        )?;
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("comfy_multi");
        let scraped = Arc::<Mutex<Scraped>>::default();
        registry.register_collector(Box::new(QueueCollector(scraped.clone())));
        // 0.1 s … ~1.8 h: from trivial jobs to a long queue.
        let wait = Histogram::new(exponential_buckets(0.1, 2.0, 17));
        let run = Histogram::new(exponential_buckets(0.1, 2.0, 15));
        let idle_gap = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 20))
        });
        let busy_seconds = Family::<Labels, Counter<f64>>::default();
        registry.register(
            "job_wait_seconds",
            "Time from submit to start, per finished job",
            wait.clone(),
        );
        registry.register(
            "job_run_seconds",
            "Time from start to finish, per finished job",
            run.clone(),
        );
        registry.register(
            "worker_idle_gap_seconds",
            "Time a worker waited between finishing a job and being handed the next",
            idle_gap.clone(),
        );
        registry.register(
            "worker_busy_seconds",
            "Seconds of finished jobs, per worker (rate() gives the busy ratio)",
            busy_seconds.clone(),
        );
        Self {
            registry,
            scraped,
            wait,
            run,
            idle_gap,
            busy_seconds,
            activity: Mutex::default(),
        }
    }
}

impl Metrics {
    /// A job finished on `worker`: its wait and run time.
    pub fn job_finished(&self, worker: &str, wait_s: Option<f64>, run_s: Option<f64>) {
        if let Some(w) = wait_s.filter(|w| w.is_finite() && *w >= 0.0) {
            self.wait.observe(w);
        }
        let now = std::time::Instant::now();
        let mut all = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        let a = all.entry(worker.to_string()).or_default();
        a.done += 1;
        if let Some(r) = run_s.filter(|r| r.is_finite() && *r >= 0.0) {
            let start = now
                .checked_sub(std::time::Duration::from_secs_f64(r.min(86_400.0)))
                .unwrap_or(now);
            a.recent.push_back((start, now));
        }
        while a
            .recent
            .front()
            .is_some_and(|(_, end)| now.duration_since(*end) > BUSY_WINDOW)
        {
            a.recent.pop_front();
        }
        drop(all);
        if let Some(r) = run_s.filter(|r| r.is_finite() && *r >= 0.0) {
            self.run.observe(r);
            self.busy_seconds
                .get_or_create(&vec![("worker", worker.to_string())])
                .inc_by(r);
        }
    }

    /// A worker's jobs finished since the hub started, and the share of the
    /// last ten minutes it spent on finished jobs plus `running_s` seconds
    /// of jobs still running (per slot of `capacity`, at most 1).
    pub fn worker_activity(&self, worker: &str, running_s: f64, capacity: u64) -> (u64, f64) {
        let now = std::time::Instant::now();
        let window_start = now.checked_sub(BUSY_WINDOW).unwrap_or(now);
        let all = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        let Some(a) = all.get(worker) else {
            let busy = running_s.min(BUSY_WINDOW.as_secs_f64());
            return (0, busy / BUSY_WINDOW.as_secs_f64() / capacity.max(1) as f64);
        };
        let finished: f64 = a
            .recent
            .iter()
            .map(|(s, e)| e.duration_since((*s).max(window_start)).as_secs_f64())
            .sum();
        let busy = (finished + running_s.min(BUSY_WINDOW.as_secs_f64()))
            / BUSY_WINDOW.as_secs_f64()
            / capacity.max(1) as f64;
        (a.done, busy.min(1.0))
    }

    /// `worker` was handed a job `gap_s` after it last ran out of work.
    pub fn idle_gap(&self, worker: &str, gap_s: f64) {
        self.idle_gap
            .get_or_create(&vec![("worker", worker.to_string())])
            .observe(gap_s);
    }

    /// Reads the queue's numbers and renders everything.
    pub async fn render(
        &self,
        queue: &Queue,
        pool_configs: &[crate::config::PoolConfig],
    ) -> Result<String, crate::error::AppError> {
        let names: Vec<String> = pool_configs.iter().map(|p| p.name.clone()).collect();
        let pools = queue
            .pools(&names)
            .await?
            .into_iter()
            .map(|p| {
                let cost = p.gpu_hours() * crate::config::pool_price(pool_configs, &p.name);
                (
                    p.name,
                    p.gpu_ms as f64 / 1000.0,
                    cost,
                    p.state == crate::pool::PoolState::Enabled,
                )
            })
            .collect();
        let counts = queue.counts().await?;
        let online = queue.online().await?.len();
        let connected = queue.workers().await?;
        let running = queue.snapshot(1).await?.running;
        let mut per_worker: HashMap<&str, u64> = HashMap::new();
        for j in &running {
            if let Some(w) = j.worker.as_deref() {
                *per_worker.entry(w).or_default() += 1;
            }
        }
        let mut workers: Vec<(String, u64, u64)> = connected
            .iter()
            .map(|(id, info)| {
                let cap = serde_json::from_str::<serde_json::Value>(info)
                    .ok()
                    .and_then(|v| v["capacity"].as_u64())
                    .unwrap_or(1);
                (
                    id.clone(),
                    per_worker.get(id.as_str()).copied().unwrap_or(0),
                    cap,
                )
            })
            .collect();
        workers.sort();
        let storage: Vec<(String, u64, u64)> = queue
            .storage()
            .await?
            .and_then(|r| r["filesystems"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap_or_default().to_string(),
                    f["free_bytes"].as_u64().unwrap_or(0),
                    f["total_bytes"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        {
            let mut s = self.scraped.lock().unwrap_or_else(|e| e.into_inner());
            *s = Scraped {
                counts,
                workers,
                online,
                storage,
                pools,
            };
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(crate::error::AppError::internal)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workers_activity_counts_its_jobs_and_busy_share() {
        let m = Metrics::default();
        assert_eq!(m.worker_activity("gpu0", 0.0, 1), (0, 0.0));
        m.job_finished("gpu0", Some(1.0), Some(60.0));
        m.job_finished("gpu0", Some(1.0), Some(60.0));
        let (done, busy) = m.worker_activity("gpu0", 60.0, 1);
        assert_eq!(done, 2);
        assert!((busy - 0.3).abs() < 0.01, "{busy}");
        let (_, per_slot) = m.worker_activity("gpu0", 60.0, 2);
        assert!((per_slot - 0.15).abs() < 0.01, "{per_slot}");
        assert_eq!(m.worker_activity("gpu1", 0.0, 1).0, 0);
    }
}
