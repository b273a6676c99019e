//! dispatch-bench: what the hub + worker agent cost on top of ComfyUI.
//! 200 trivial jobs (EmptyImage → SaveImage, a different colour each so
//! ComfyUI's cache never answers) go (a) straight into ComfyUI's own queue
//! and (b) through the queue, the hub and an agent to the same ComfyUI.
//! Prints both throughputs and their ratio, the added latency per job
//! (p50/p99, one job at a time) and the GPU's idle gap between consecutive
//! jobs with prefetch. Not a test: prints a table.
//!
//! `cargo run --release --bin dispatch-bench -- --comfyui URL [--jobs N] [--capacity N]`
//! (a CPU ComfyUI: `scripts/comfyui/start.sh --port 8188`)

#[path = "common.rs"]
mod common;

use comfy_multi::hub::{self, HubState};
use comfy_multi::queue::{NewJob, Queue, QueueSettings};
use comfy_multi::worker::comfyui::{ComfyClient, ComfyEvent};
use comfy_multi::worker::{run_agent, AgentConfig};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn prompt(n: u64) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": n % 0xFFFFFF}},
        // A folder per job on both paths (the agent namespaces per job too):
        // SaveImage lists its folder to number files, which slows down as a
        // shared folder fills up.
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": format!("dispatch-bench/{n}/img")}}
    })
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Submits `prompts` straight to ComfyUI; waits until all ended. Returns
/// the elapsed time.
async fn direct(comfy: &ComfyClient, prompts: Vec<Value>) -> Duration {
    let mut events = comfy.events().await.expect("ComfyUI socket");
    let t = Instant::now();
    let mut ours = HashSet::new();
    for p in &prompts {
        let id = uuid::Uuid::new_v4().to_string();
        let Ok(s) = comfy.submit(p, &id, &json!({})).await else {
            panic!("ComfyUI refused a benchmark prompt");
        };
        ours.insert(s.prompt_id);
    }
    let mut done = HashSet::new();
    while done.len() < ours.len() {
        match events.next().await.expect("socket open").ok() {
            Some(ComfyEvent::ExecutionSuccess { prompt_id })
            | Some(ComfyEvent::Executing {
                prompt_id: Some(prompt_id),
                node: None,
            }) if ours.contains(&prompt_id) => {
                done.insert(prompt_id);
            }
            Some(ComfyEvent::ExecutionError { prompt_id, data }) if ours.contains(&prompt_id) => {
                panic!("job failed: {data}")
            }
            _ => {}
        }
    }
    t.elapsed()
}

struct Hub {
    queue: Queue,
    stop: CancellationToken,
    _state: tempfile::TempDir,
}

async fn start_hub(redis: &str, comfyui: &str, capacity: u32) -> Hub {
    let settings = QueueSettings {
        max_pending_per_participant: 100_000,
        ..QueueSettings::default()
    };
    let prefix = format!("dispatch{}", uuid::Uuid::new_v4().simple());
    let queue = Queue::connect(redis, &prefix, settings).await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let token = uuid::Uuid::new_v4().to_string();
    let s = HubState {
        metrics: Default::default(),
        admin: None,
        participants: Default::default(),
        credentials_file: None,
        public_url: None,
        queue: queue.clone(),
        reap_interval: Duration::from_secs(1),
        state_dir: state.path().to_path_buf(),
        worker_tokens: Arc::new(vec![token.clone()]),
        max_output_bytes: 1 << 30,
        shutdown: stop.clone(),
        work_available: Default::default(),
        samples: Default::default(),
        warmups: Default::default(),
        pools: Default::default(),
        door: Default::default(),
        starting: Default::default(),
    };
    tokio::spawn(hub::run(listener, s, stop.clone()));
    let cfg = AgentConfig {
        id: "bench".into(),
        comfyui_url: comfyui.into(),
        hub_url: url,
        token,
        capacity,
        heartbeat: Duration::from_secs(5),
        pool: comfy_multi::pool::DEFAULT_POOL.into(),
        headers: vec![],
        starting: None,
    };
    tokio::spawn(run_agent(cfg, stop.clone()));
    Hub {
        queue,
        stop,
        _state: state,
    }
}

/// Enqueues `prompts` and waits until all succeeded; returns the elapsed
/// time and the job ids.
async fn through_hub(h: &Hub, prompts: Vec<Value>) -> (Duration, Vec<String>) {
    let before = h.queue.counts().await.unwrap().succeeded;
    let t = Instant::now();
    let mut ids = vec![];
    for (i, p) in prompts.into_iter().enumerate() {
        let job = NewJob {
            participant: format!("user{:02}", i % 10),
            prompt: p,
            ..Default::default()
        };
        ids.push(h.queue.enqueue(job).await.unwrap().id);
    }
    let want = before + ids.len() as u64;
    loop {
        let c = h.queue.counts().await.unwrap();
        assert_eq!(c.failed, 0, "a job failed");
        if c.succeeded >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (t.elapsed(), ids)
}

#[tokio::main]
async fn main() {
    let mut comfyui = None;
    let mut jobs = 200u64;
    let mut capacity = 2u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--comfyui" => comfyui = args.next(),
            "--jobs" => jobs = args.next().and_then(|v| v.parse().ok()).unwrap_or(200),
            "--capacity" => capacity = args.next().and_then(|v| v.parse().ok()).unwrap_or(2),
            _ => {
                eprintln!("usage: dispatch-bench --comfyui URL [--jobs N] [--capacity N]");
                std::process::exit(2);
            }
        }
    }
    let Some(comfyui) = comfyui else {
        eprintln!("usage: dispatch-bench --comfyui URL [--jobs N] [--capacity N]");
        std::process::exit(2);
    };
    let comfy = ComfyClient::new(&comfyui, "dispatch-bench-direct").unwrap();
    let (redis, _redis) = common::start_redis("always");
    let hub = start_hub(&redis, &comfyui, capacity).await;
    let mut n = (std::process::id() as u64) << 20;
    let mut next = || {
        n += 1;
        prompt(n)
    };
    // Warm up both paths (first runs load code, the agent connects).
    direct(&comfy, (0..5).map(|_| next()).collect()).await;
    through_hub(&hub, (0..5).map(|_| next()).collect()).await;

    let d = direct(&comfy, (0..jobs).map(|_| next()).collect()).await;
    let (h, ids) = through_hub(&hub, (0..jobs).map(|_| next()).collect()).await;
    let direct_rate = jobs as f64 / d.as_secs_f64();
    let hub_rate = jobs as f64 / h.as_secs_f64();

    // Idle gap: from one job's end to the next one's start, as the hub saw them.
    let mut spans = vec![];
    for id in &ids {
        let j = hub.queue.job(id).await.unwrap().unwrap();
        spans.push((j.started_ms.unwrap_or(0), j.finished_ms.unwrap_or(0)));
    }
    spans.sort();
    let mut gaps: Vec<f64> = spans
        .windows(2)
        .map(|w| (w[1].0 as f64 - w[0].1 as f64).max(0.0))
        .collect();

    // Added latency, one job at a time.
    let (mut lat_direct, mut lat_hub) = (vec![], vec![]);
    for _ in 0..20 {
        lat_direct.push(direct(&comfy, vec![next()]).await.as_secs_f64() * 1000.0);
        lat_hub.push(through_hub(&hub, vec![next()]).await.0.as_secs_f64() * 1000.0);
    }
    if std::env::var_os("DISPATCH_BENCH_DEBUG").is_some() {
        let (_, ids) = through_hub(&hub, vec![next()]).await;
        let k = format!("{}:job:{}", hub.queue.keys().prefix(), ids[0]);
        let c = redis::Client::open(redis.as_str()).unwrap();
        let mut conn = c.get_connection().unwrap();
        let h: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(&k).query(&mut conn).unwrap();
        let t = |f: &str| h.get(f).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        println!(
            "created→leased {} ms, leased→started {} ms, started→finished {} ms",
            t("leased_at") - t("created"),
            t("started") - t("leased_at"),
            t("finished") - t("started")
        );
    }
    let mut added: Vec<f64> = lat_hub
        .iter()
        .zip(&lat_direct)
        .map(|(h, d)| h - d)
        .collect();
    let added50 = pct(&mut added, 0.5);
    let added99 = pct(&mut added, 0.99);

    println!("dispatch-bench: {jobs} trivial jobs on {comfyui}");
    println!("{:<34} {:>10} {:>10}", "path", "jobs/s", "total s");
    println!(
        "{:<34} {:>10.1} {:>10.2}",
        "direct to ComfyUI's queue",
        direct_rate,
        d.as_secs_f64()
    );
    println!(
        "{:<34} {:>10.1} {:>10.2}",
        "queue → hub → agent → ComfyUI",
        hub_rate,
        h.as_secs_f64()
    );
    println!("added latency per job (one at a time): p50 {added50:.1} ms, p99 {added99:.1} ms");
    println!(
        "worker idle gap between jobs (agent capacity {capacity}): p50 {:.1} ms, p99 {:.1} ms",
        pct(&mut gaps, 0.5),
        pct(&mut gaps, 0.99)
    );
    println!(
        "dispatch-bench: ratio {:.2} (through hub / direct)",
        hub_rate / direct_rate
    );
    hub.stop.cancel();
}
