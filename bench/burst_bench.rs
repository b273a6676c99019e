//! burst-bench: what a rented serverless pool buys when the line gets long.
//!
//! One local GPU (a worker agent on a CPU ComfyUI, capacity 1) and a RunPod
//! serverless pool whose endpoint is the contract emulator
//! (`tests/support/runpod_emulator.rs`: RunPod's API, each emulated GPU
//! its own CPU ComfyUI, cold — workers initializing, jobs waiting — for
//! `--cold` seconds from when the burst starts). The hub runs in this
//! process as `serve` runs it (`cli::serve_on`: private redis-server with
//! AOF `always`, the pool's in-hub RunPod worker, the gateway). A class
//! sized burst — every participant submits `--jobs` jobs of `--seconds`
//! (EmptyImage → CMSleep → SaveImage, so a job holds its GPU like a real
//! one and costs the 2-core machine nothing) — is queued at once, twice:
//! with the pool parked, then with burst policy `line_over:N`.
//!
//! Measured from the job hashes: makespan (first submit to last finish),
//! p50/p95 wait (submit to start), jobs that ran on the pool, and the
//! GPU-seconds the pool was paid for (the emulator's billed execution
//! time). Ends with `burst-bench: p95 wait <on> s vs <off> s`.
//!
//! `cargo run --release --bin burst-bench [-- --participants 20 --jobs 2
//! --seconds 3 --gpus 4 --cold 10 --line-over 4]` (installs the CPU
//! ComfyUI on first use). About 4 minutes. Not a test: prints a table.

#[path = "common.rs"]
mod common;
#[path = "../tests/support/runpod_emulator.rs"]
mod runpod_emulator;

use comfy_multi::config::{Config, PoolConfig};
use comfy_multi::pool::{Burst, PoolKind, PoolState};
use comfy_multi::queue::{NewJob, Queue};
use common::Comfy;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "burstbench";
const KEY: &str = "rpa_burstbench";

struct Args {
    participants: usize,
    jobs: usize,
    seconds: f64,
    gpus: usize,
    cold: u64,
    line_over: u32,
}

fn args() -> Args {
    let mut a = Args {
        participants: 20,
        jobs: 2,
        seconds: 3.0,
        gpus: 4,
        cold: 10,
        line_over: 4,
    };
    let usage = "usage: burst-bench [--participants N] [--jobs PER_PARTICIPANT] [--seconds JOB_S] [--gpus POOL_GPUS] [--cold COLD_START_S] [--line-over N]";
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let v = it.next();
        let bad = || -> ! {
            eprintln!("burst-bench: bad value for {arg}\n{usage}");
            std::process::exit(2)
        };
        let num = |v: &Option<String>| {
            v.as_deref()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| bad())
        };
        match arg.as_str() {
            "--participants" => a.participants = num(&v) as usize,
            "--jobs" => a.jobs = num(&v) as usize,
            "--seconds" => a.seconds = num(&v),
            "--gpus" => a.gpus = (num(&v) as usize).max(1),
            "--cold" => a.cold = num(&v) as u64,
            "--line-over" => a.line_over = num(&v) as u32,
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            other => {
                eprintln!("burst-bench: unknown argument {other}\n{usage}");
                std::process::exit(2);
            }
        }
    }
    a
}

struct Outcome {
    makespan: f64,
    p50: f64,
    p95: f64,
    on_pool: usize,
    pool_gpu_s: f64,
}

fn prompt(seconds: f64, n: usize) -> Value {
    let path = common::repo().join("tests/comfyui_nodes/workflows/sleep_save.json");
    let mut p: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for node in p.as_object_mut().unwrap().values_mut() {
        match node["class_type"].as_str() {
            Some("EmptyImage") => node["inputs"]["color"] = json!(n % 0xFF_FFFF),
            Some("CMSleep") => node["inputs"]["seconds"] = json!(seconds),
            _ => {}
        }
    }
    p
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run_once(
    a: &Args,
    local: &Comfy,
    pool_gpus: &[String],
    info: &Path,
    burst: Option<Burst>,
) -> Outcome {
    let (redis_url, _redis) = common::start_redis("always");
    let dir = tempfile::Builder::new()
        .prefix("burst-bench.")
        .tempdir()
        .unwrap();
    let tokens = dir.path().join("worker-tokens");
    std::fs::write(&tokens, "burst-bench-worker-token").unwrap();
    let key_file = dir.path().join("runpod-key");
    std::fs::write(&key_file, KEY).unwrap();
    // The endpoint is cold from now: its workers start with the burst.
    let emu =
        runpod_emulator::start(pool_gpus, KEY, "burst-bench", Duration::from_secs(a.cold)).await;

    let mut config = Config {
        state_dir: dir.path().join("state"),
        ..Config::default()
    };
    config.redis.url = redis_url.clone();
    config.redis.key_prefix = PREFIX.into();
    config.queue.mode = comfy_multi::queue::Mode::FairShare;
    config.queue.max_pending_per_participant = a.jobs as u32 + 1;
    config.hub.worker_tokens_file = Some(tokens.clone());
    config.pools = vec![PoolConfig {
        name: "runpod".into(),
        kind: PoolKind::RunpodServerless,
        state: if burst.is_some() {
            PoolState::Enabled
        } else {
            PoolState::Parked
        },
        burst: burst.unwrap_or_default(),
        price_per_gpu_hour: 1.0,
        max_concurrency: pool_gpus.len() as u32,
        urls: vec![],
        headers_file: None,
        capacity: 1,
        endpoint_id: Some("burst-bench".into()),
        api_key_file: Some(key_file),
        api_base: Some(emu.api_base.clone()),
        object_info_file: Some(info.to_path_buf()),
        timeout_s: 600,
        queue_timeout_s: 600,
        poll_ms: 250,
    }];
    std::fs::create_dir_all(&config.state_dir).unwrap();
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub_url = format!("http://{}", listener.local_addr().unwrap());
    let hub = tokio::spawn(comfy_multi::cli::serve_on(
        config.clone(),
        listener,
        stop.clone(),
    ));
    let agent = comfy_multi::worker::AgentConfig {
        id: "gpu0".into(),
        comfyui_url: local.url.clone(),
        hub_url,
        token: "burst-bench-worker-token".into(),
        capacity: 1,
        heartbeat: Duration::from_secs(2),
        pool: comfy_multi::pool::DEFAULT_POOL.into(),
        headers: vec![],
        starting: None,
    };
    tokio::spawn(comfy_multi::worker::run_agent(agent, stop.clone()));

    let queue = Queue::connect(&redis_url, PREFIX, config.queue.settings())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let w = queue.workers().await.unwrap();
        if w.contains_key("gpu0") && w.contains_key("runpod-1") {
            break;
        }
        assert!(Instant::now() < deadline, "workers never connected: {w:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut ids = vec![];
    for j in 0..a.jobs {
        for i in 0..a.participants {
            let e = queue
                .enqueue(NewJob {
                    id: None,
                    participant: format!("user{:02}", i + 1),
                    prompt: prompt(a.seconds, 1000 * j + i),
                    extra: json!({}),
                    requires: vec![],
                    name: "burst".into(),
                    priority: false,
                })
                .await
                .expect("enqueue");
            ids.push(e.id);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3600);
    let jobs = loop {
        let mut all = vec![];
        for id in &ids {
            all.push(queue.job(id).await.unwrap().expect("job"));
        }
        if all.iter().all(|j| j.status.is_terminal()) {
            break all;
        }
        assert!(Instant::now() < deadline, "jobs never ended");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let failed = jobs
        .iter()
        .filter(|j| j.status.as_str() != "succeeded")
        .count();
    assert_eq!(failed, 0, "burst-bench: {failed} jobs did not succeed");
    let first = jobs.iter().map(|j| j.created_ms).min().unwrap_or(0);
    let last = jobs.iter().filter_map(|j| j.finished_ms).max().unwrap_or(0);
    let mut waits: Vec<f64> = jobs
        .iter()
        .map(|j| {
            j.started_ms
                .unwrap_or(j.created_ms)
                .saturating_sub(j.created_ms) as f64
                / 1000.0
        })
        .collect();
    waits.sort_by(f64::total_cmp);
    let on_pool = jobs
        .iter()
        .filter(|j| j.worker.as_deref() == Some("runpod-1"))
        .count();
    stop.cancel();
    let _ = hub.await;
    Outcome {
        makespan: last.saturating_sub(first) as f64 / 1000.0,
        p50: percentile(&waits, 0.5),
        p95: percentile(&waits, 0.95),
        on_pool,
        pool_gpu_s: emu.stats.execution_ms.load(Ordering::Relaxed) as f64 / 1000.0,
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    common::ensure_comfyui();
    let http = reqwest::Client::new();
    let mut comfys: Vec<Comfy> = (0..=a.gpus).map(|_| Comfy::spawn(&[])).collect();
    for c in &mut comfys {
        c.ready(&http).await;
    }
    let info: Value = http
        .get(format!("{}/object_info", comfys[0].url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let info_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(info_file.path(), info.to_string()).unwrap();
    let pool_gpus: Vec<String> = comfys[1..].iter().map(|c| c.url.clone()).collect();
    let burst = Burst::LineOver(a.line_over);
    println!(
        "burst-bench: {} jobs ({} participants × {}, {:.1} s each) at once; local: 1 GPU; RunPod pool: {} GPUs, cold start {} s",
        a.participants * a.jobs,
        a.participants,
        a.jobs,
        a.seconds,
        a.gpus,
        a.cold
    );
    let off = run_once(&a, &comfys[0], &pool_gpus, info_file.path(), None).await;
    let on = run_once(&a, &comfys[0], &pool_gpus, info_file.path(), Some(burst)).await;
    println!(
        "{:<22} {:>11} {:>11} {:>11} {:>13} {:>15}",
        "pool", "makespan s", "p50 wait s", "p95 wait s", "jobs on pool", "pool GPU-s paid"
    );
    for (name, o) in [
        ("parked".to_string(), &off),
        (format!("burst {burst}"), &on),
    ] {
        println!(
            "{:<22} {:>11.1} {:>11.1} {:>11.1} {:>13} {:>15.1}",
            name, o.makespan, o.p50, o.p95, o.on_pool, o.pool_gpu_s
        );
    }
    println!("burst-bench: p95 wait {:.1} s vs {:.1} s", on.p95, off.p95);
}
