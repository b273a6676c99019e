//! queue-bench: throughput of the full job cycle (enqueue → lease → start →
//! complete) through the real Lua scripts, with 1, 8 and 64 concurrent
//! clients, and lease latency percentiles. Not a test: prints a table.
//!
//! `cargo run --release --bin queue-bench [-- --redis URL] [--seconds N] [--no-aof]`
//! Without `--redis` it starts its own redis-server in a temp dir, with the
//! production durability settings (AOF, `appendfsync always`) unless
//! `--no-aof` is given.

#[path = "common.rs"]
mod common;

use comfy_multi::queue::{NewJob, Outcome, Queue, QueueSettings};
use common::start_redis;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    redis: Option<String>,
    seconds: f64,
    /// Run with per-write fsync as well (`--no-aof` skips AOF fsync).
    aof: bool,
}

fn args() -> Args {
    let mut a = Args {
        redis: None,
        seconds: 5.0,
        aof: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--redis" => a.redis = it.next(),
            "--seconds" => a.seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or(5.0),
            "--no-aof" => a.aof = false,
            "-h" | "--help" => {
                println!("usage: queue-bench [--redis URL] [--seconds N] [--no-aof]");
                std::process::exit(0);
            }
            other => {
                eprintln!("queue-bench: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    a
}

struct Round {
    clients: usize,
    jobs_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
}

async fn round(url: &str, clients: usize, seconds: f64) -> Round {
    let settings = QueueSettings {
        max_pending_per_participant: 1_000_000,
        history_limit: 50,
        ..QueueSettings::default()
    };
    let prefix = format!("bench{}", uuid::Uuid::new_v4().simple());
    // Clients sharing one multiplexed connection.
    let per_conn: usize = std::env::var("QUEUE_BENCH_CLIENTS_PER_CONN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let mut queues = vec![];
    for _ in 0..clients.div_ceil(per_conn) {
        queues.push(
            Queue::connect(url, &prefix, settings.clone())
                .await
                .unwrap(),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    let started = Instant::now();
    for c in 0..clients {
        let q = queues[c / per_conn].clone();
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let participant = format!("user{c:02}");
            let worker = format!("gpu{c}");
            let mut lat = Vec::with_capacity(100_000);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                q.enqueue(NewJob {
                    participant: participant.clone(),
                    prompt: json!({"1": {"class_type": "EmptyImage", "inputs": {"color": n}}}),
                    ..Default::default()
                })
                .await
                .unwrap();
                let lease = loop {
                    let t = Instant::now();
                    let l = q.lease(&worker).await.unwrap();
                    lat.push(t.elapsed().as_micros() as u64);
                    if let Some(l) = l {
                        break l;
                    }
                };
                q.start(&lease.job_id, lease.token).await.unwrap();
                q.finish(
                    &lease.job_id,
                    lease.token,
                    Outcome::Succeeded,
                    &json!({}),
                    None,
                    Some(0.5),
                )
                .await
                .unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let jobs = done.load(Ordering::Relaxed);
    let mut lat = vec![];
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    Round {
        clients,
        jobs_per_sec: jobs as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

async fn table(url: &str, label: &str, seconds: f64) -> f64 {
    println!("\nRedis: {label}");
    // Warm up (script cache, connections).
    round(url, 8, 0.5).await;
    println!(
        "{:>8} {:>12} {:>14} {:>14}",
        "clients", "jobs/s", "lease p50 µs", "lease p99 µs"
    );
    let mut last = 0.0;
    for clients in [1, 8, 64] {
        let r = round(url, clients, seconds).await;
        println!(
            "{:>8} {:>12.0} {:>14} {:>14}",
            r.clients, r.jobs_per_sec, r.p50_us, r.p99_us
        );
        last = r.jobs_per_sec;
    }
    last
}

#[tokio::main]
async fn main() {
    let a = args();
    println!("queue-bench: full cycle enqueue → lease → start → complete");
    let last = match &a.redis {
        Some(url) => table(url, "as configured on the given server", a.seconds).await,
        None => {
            let mut last = 0.0;
            let modes: &[(&str, &str)] = if a.aof {
                &[
                    ("always", "AOF, appendfsync always (fsync before every reply; the deployment default)"),
                    ("everysec", "AOF, appendfsync everysec (survives a Redis crash; a power cut may lose the last second)"),
                ]
            } else {
                &[("no", "AOF, appendfsync no")]
            };
            for (fsync, label) in modes {
                let (url, _redis) = start_redis(fsync);
                let n = table(&url, label, a.seconds).await;
                println!(
                    "queue-bench: {n:.0} jobs/s full cycle at 64 clients (appendfsync {fsync})"
                );
                last = n;
            }
            last
        }
    };
    println!("queue-bench: {last:.0} jobs/s full cycle at 64 clients");
}
