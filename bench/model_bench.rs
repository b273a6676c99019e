//! model-bench: what model affinity saves, on real CPU ComfyUIs.
//!
//! Two CPU ComfyUIs (`scripts/comfyui/start.sh`), each holding the same
//! three generated SD 1.5-layout checkpoints (`make_models.py checkpoint
//! --seed 1|2|3`, hard-linked into both), so every job can run on either
//! worker and only the queue decides. The workshop is wired as `comfy-multi
//! up` wires it, in this process: a private redis-server (AOF, `appendfsync
//! always`), the hub with its worker gateway, every participant's frontend
//! routes (bearer-token login) and one worker agent per ComfyUI, connected
//! to the hub over its WebSocket. Jobs are submitted as the editor does,
//! `POST /userNN/api/prompt`, so the frontend derives their requirement
//! tags from the workers' catalogue.
//!
//! The job list: every participant (12 by default) submits `--jobs` (16:
//! with 8 the backlogged window lasts about a minute and Jain's index
//! mostly measures job granularity) copies of `tests/comfyui_nodes/workflows/checkpoint_txt2img.json`,
//! participant `i`'s job `j` on checkpoint `(i + j) mod 3` with KSampler
//! seed `1000·(i+1) + j` (so ComfyUI never answers a whole prompt from its
//! cache). Everything is submitted while dispatch is paused, then dispatch
//! resumes: everyone is backlogged from the start. The same list is run
//! twice in fair-share mode, affinity off then on (window `--window` and
//! bound `--max-passes`, the defaults 12 and 4), each time on a fresh Redis and freshly started ComfyUIs.
//!
//! Measured:
//! - model loads: from each ComfyUI's `/history`, a prompt whose
//!   `CheckpointLoaderSimple` node is not among the `execution_cached`
//!   message's nodes really loaded its checkpoint; per 100 jobs.
//! - makespan: first submit to last finish (job hashes' `finished`).
//! - Jain's index of GPU time per participant while everyone is backlogged:
//!   the window runs from dispatch resuming to the first moment some
//!   participant has no job left that has not started (the earliest of the
//!   participants' last `started`); each job adds the part of its
//!   `[started, finished]` inside the window to its participant.
//! - extra wait beyond policy order: the most `passes` any job got
//!   (lease.lua: how often another job overtook it; bounded by
//!   `--max-passes`);
//!   the longest time from a job's first pass (polled every 100 ms) to its
//!   lease, an upper bound on what affinity added to one job's wait; and,
//!   across runs, the same job's start (since dispatch resumed) with
//!   affinity on minus with it off, the latest, in seconds and in start
//!   positions (this also moves with the fair share's reaction to the
//!   different job times, so it is only a rough picture).
//!
//! `cargo run --release --bin model-bench [-- --participants 12 --jobs 16
//! --window 12 --max-passes 4 --capacity 2 --csv FILE]` (installs the CPU ComfyUI and
//! generates the checkpoints on first use; ~465 MB each, cached; `--csv`
//! writes one row per job and run). 8–15 minutes on the 2-core machine,
//! depending on what else runs. Not a test: prints a table and one summary line.

#[path = "common.rs"]
mod common;

use comfy_multi::auth::Credentials;
use comfy_multi::config::Config;
use comfy_multi::queue::{Mode, Queue, Status};
use comfy_multi::{frontend, hub, worker};
use common::{repo, Comfy};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const MODELS: usize = 3;
const WORKERS: usize = 2;
const PREFIX: &str = "modelbench";

struct Args {
    participants: usize,
    jobs: usize,
    window: u32,
    max_passes: u32,
    capacity: u32,
    /// Where to write one row per job and run.
    csv: Option<PathBuf>,
}

fn args() -> Args {
    let d = comfy_multi::queue::QueueSettings::default();
    let mut a = Args {
        participants: 12,
        jobs: 16,
        window: d.affinity_window,
        max_passes: d.affinity_max_passes,
        capacity: comfy_multi::config::WorkerConfig::default().capacity,
        csv: None,
    };
    let usage = "usage: model-bench [--participants N] [--jobs PER_PARTICIPANT] [--window K] [--max-passes P] [--capacity N] [--csv FILE]";
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse::<u32>().ok());
        match arg.as_str() {
            "--participants" => a.participants = num().unwrap_or(12) as usize,
            "--jobs" => a.jobs = num().unwrap_or(16) as usize,
            "--window" => a.window = num().unwrap_or(d.affinity_window),
            "--max-passes" => a.max_passes = num().unwrap_or(d.affinity_max_passes),
            "--capacity" => a.capacity = num().unwrap_or(2).max(1),
            "--csv" => a.csv = it.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            other => {
                eprintln!("model-bench: unknown argument {other}\n{usage}");
                std::process::exit(2);
            }
        }
    }
    a
}

fn cache_dir() -> PathBuf {
    std::env::var_os("COMFY_MULTI_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/comfy-multi")
        })
}

/// Installs the CPU ComfyUI if needed, then generates (or finds cached)
/// checkpoint `seed`; returns its path.
fn checkpoint(seed: u64) -> PathBuf {
    common::ensure_comfyui();
    let python = std::env::var_os("COMFY_MULTI_COMFYUI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("comfyui-venv"))
        .join("bin/python");
    let out = Command::new(python)
        .arg(repo().join("scripts/comfyui/make_models.py"))
        .args(["checkpoint", "--seed", &seed.to_string(), "--cache-dir"])
        .arg(cache_dir().join("models"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run make_models.py");
    assert!(
        out.status.success(),
        "make_models.py checkpoint {seed} failed"
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "make_models.py printed {path:?}");
    path
}

/// One job of the list.
#[derive(Clone)]
struct Spec {
    participant: String,
    /// Its job number within the participant's list.
    index: usize,
    model: usize,
    prompt: Value,
}

fn model_name(m: usize) -> String {
    format!("bench-ckpt-{}.safetensors", m + 1)
}

/// The job list, in submit order (round by round, participants in order).
fn job_list(participants: usize, jobs: usize) -> Vec<Spec> {
    let path = repo().join("tests/comfyui_nodes/workflows/checkpoint_txt2img.json");
    let base: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = vec![];
    for j in 0..jobs {
        for i in 0..participants {
            let model = (i + j) % MODELS;
            let mut p = base.clone();
            for node in p.as_object_mut().unwrap().values_mut() {
                match node["class_type"].as_str() {
                    Some("CheckpointLoaderSimple") => {
                        node["inputs"]["ckpt_name"] = json!(model_name(model))
                    }
                    Some("KSampler") => node["inputs"]["seed"] = json!(1000 * (i + 1) + j),
                    _ => {}
                }
            }
            out.push(Spec {
                participant: format!("user{:02}", i + 1),
                index: j,
                model,
                prompt: p,
            });
        }
    }
    out
}

/// What one run measured, per job in list order.
struct JobResult {
    worker: String,
    started: u64,
    finished: u64,
    gpu_ms: f64,
    passes: u64,
    /// From when it was first seen passed over to its lease (0 if never
    /// passed): at most what affinity added to its wait.
    passed_wait_ms: u64,
    /// Its CheckpointLoaderSimple really ran (not served from ComfyUI's cache).
    loaded: bool,
}

struct Run {
    jobs: Vec<JobResult>,
    first_submit: u64,
    /// When dispatch resumed (every job was queued by then).
    resumed: u64,
}

fn now_ms() -> u64 {
    comfy_multi::clock::now_ms()
}

/// `(participant, job id)` of every job whose `CheckpointLoaderSimple`
/// executed, from a ComfyUI's `/history`: the job id is in the prompt (the
/// agent's per-job output prefix `cm-<job>/`).
async fn loads_in(http: &reqwest::Client, url: &str, ids: &[String]) -> HashMap<String, bool> {
    let h: Value = http
        .get(format!("{url}/history"))
        .send()
        .await
        .expect("GET /history")
        .json()
        .await
        .expect("history JSON");
    let mut out = HashMap::new();
    for entry in h.as_object().into_iter().flat_map(|m| m.values()) {
        let prompt = &entry["prompt"][2];
        let text = prompt.to_string();
        let Some(id) = ids.iter().find(|id| text.contains(&format!("cm-{id}"))) else {
            continue;
        };
        let cached: Vec<&str> = entry["status"]["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m[0] == "execution_cached")
            .flat_map(|m| m[1]["nodes"].as_array().into_iter().flatten())
            .filter_map(Value::as_str)
            .collect();
        let loader_ran = prompt.as_object().into_iter().flatten().any(|(node, n)| {
            n["class_type"] == "CheckpointLoaderSimple" && !cached.contains(&node.as_str())
        });
        out.insert(id.clone(), loader_ran);
    }
    out
}

/// Runs the whole list once on a fresh Redis and fresh ComfyUIs.
async fn run_once(a: &Args, list: &[Spec], models: &[(String, PathBuf)], affinity: bool) -> Run {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (redis_url, _redis) = common::start_redis("always");
    let mut comfys: Vec<Comfy> = (0..WORKERS).map(|_| Comfy::spawn(models)).collect();
    for c in &mut comfys {
        c.ready(&http).await;
    }

    let mut config = Config::default();
    config.queue.mode = Mode::FairShare;
    config.queue.affinity = affinity;
    config.queue.affinity_window = a.window;
    config.queue.affinity_max_passes = a.max_passes;
    config.queue.max_pending_per_participant = (a.jobs as u32).max(8);
    config.worker.capacity = a.capacity;
    let queue = Queue::connect(&redis_url, PREFIX, config.queue.settings())
        .await
        .expect("connect to Redis");
    queue.pause(None, Some(true)).await.unwrap();

    let state = tempfile::Builder::new()
        .prefix("model-bench-state.")
        .tempdir()
        .unwrap();
    let stop = CancellationToken::new();
    let names: Vec<String> = (1..=a.participants)
        .map(|i| format!("user{i:02}"))
        .collect();
    let logins: BTreeMap<String, Credentials> = names
        .iter()
        .map(|n| (n.clone(), Credentials::generate()))
        .collect();
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let worker_token = uuid::Uuid::new_v4().simple().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hub_state = hub::HubState {
        metrics: Default::default(),
        admin: None,
        participants: Arc::new(names.clone()),
        credentials_file: None,
        public_url: None,
        queue: queue.clone(),
        reap_interval: Duration::from_millis(config.hub.reap_interval_ms),
        state_dir: state.path().to_path_buf(),
        worker_tokens: Arc::new(vec![worker_token.clone()]),
        max_output_bytes: config.hub.max_output_bytes,
        shutdown: stop.clone(),
        work_available: Default::default(),
        samples: Default::default(),
        warmups: Arc::new(hub::warmup::Warmups::load(&[], Duration::from_secs(60)).unwrap()),
        pools: Default::default(),
        door: Default::default(),
        starting: Default::default(),
    };
    let background = hub::spawn_background(&hub_state, &stop);
    let static_dir = frontend::find_static_dir(None).unwrap_or_else(|_| {
        let dir = state.path().join("static");
        std::fs::create_dir_all(dir.join("assets")).unwrap();
        std::fs::write(dir.join("index.html"), "<html>editor</html>").unwrap();
        dir
    });
    let mut app = hub::router(hub_state);
    for name in &names {
        let fs = frontend::FrontendState::new(
            name,
            queue.clone(),
            static_dir.clone(),
            state.path().join("users").join(name),
            config.frontend.max_upload_bytes,
        )
        .configured(&config)
        .with_login(logins[name].clone(), secret.as_bytes(), false);
        app = app.merge(frontend::routes(fs));
    }
    app = app.merge(frontend::assets(&static_dir));
    let server = tokio::spawn(hub::serve_tcp(listener, app, stop.clone()));
    let mut agents = vec![];
    for (i, c) in comfys.iter().enumerate() {
        let cfg = worker::AgentConfig {
            id: format!("gpu{i}"),
            comfyui_url: c.url.clone(),
            hub_url: base.clone(),
            token: worker_token.clone(),
            capacity: a.capacity,
            heartbeat: Duration::from_millis(config.worker.heartbeat_ms),
            pool: comfy_multi::pool::DEFAULT_POOL.into(),
            headers: vec![],
            starting: None,
        };
        agents.push(tokio::spawn(worker::run_agent(cfg, stop.clone())));
    }

    // Both workers registered, and the editor offers every checkpoint.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let connected = queue
            .known_workers()
            .await
            .map(|ws| ws.iter().filter(|w| w.connected).count())
            .unwrap_or(0);
        let info: Value = match http
            .get(format!("{base}/user01/api/object_info"))
            .bearer_auth(&logins["user01"].token)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        let offered = comfy_multi::catalogue::combo_options(
            &info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"],
        )
        .unwrap_or_default()
        .len();
        if connected == WORKERS && offered >= MODELS {
            break;
        }
        assert!(Instant::now() < deadline, "the workers did not register");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let first_submit = now_ms();
    let mut ids = vec![];
    for s in list {
        let r = http
            .post(format!("{base}/{}/api/prompt", s.participant))
            .bearer_auth(&logins[&s.participant].token)
            .json(&json!({"prompt": s.prompt, "client_id": format!("{}-bench", s.participant)}))
            .send()
            .await
            .expect("submit");
        let status = r.status();
        let body: Value = r.json().await.unwrap_or_default();
        match body["prompt_id"].as_str() {
            Some(id) if status.is_success() => ids.push(id.to_string()),
            _ => panic!("submit refused: {status} {body}"),
        }
    }
    let resumed = now_ms();
    queue.pause(None, Some(false)).await.unwrap();

    // When each job was first seen passed over (lease.lua's `passes`).
    let redis = redis::Client::open(redis_url.as_str()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let mut first_passed: HashMap<String, u64> = HashMap::new();
    let t = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let open: Vec<&String> = ids
            .iter()
            .filter(|id| !first_passed.contains_key(*id))
            .collect();
        let mut pipe = redis::pipe();
        for id in &open {
            pipe.cmd("HGET").arg(queue.keys().job(id)).arg("passes");
        }
        let passes: Vec<Option<u64>> = pipe.query_async(&mut conn).await.unwrap();
        let seen = now_ms();
        for (id, p) in open.into_iter().zip(passes) {
            if p.unwrap_or(0) > 0 {
                first_passed.insert(id.clone(), seen);
            }
        }
        let c = queue.counts().await.unwrap();
        let done = c.succeeded + c.failed + c.cancelled;
        assert_eq!(c.failed + c.cancelled, 0, "a job failed or was cancelled");
        if done >= ids.len() as u64 {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "model-bench:   affinity {}: {done}/{} done after {:.0} s",
                if affinity { "on" } else { "off" },
                ids.len(),
                t.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        assert!(
            t.elapsed() < Duration::from_secs(1800),
            "the run did not finish in 30 min"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut loaded = HashMap::new();
    for c in &comfys {
        loaded.extend(loads_in(&http, &c.url, &ids).await);
    }
    let mut jobs = vec![];
    for id in &ids {
        let j = queue.job(id).await.unwrap().expect("job hash");
        assert_eq!(j.status, Status::Succeeded, "job {id}: {:?}", j.error);
        let (passes, leased): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(queue.keys().job(id))
            .arg("passes")
            .arg("leased_at")
            .query_async(&mut conn)
            .await
            .unwrap();
        let leased = leased.expect("leased_at");
        jobs.push(JobResult {
            passed_wait_ms: first_passed
                .get(id)
                .map_or(0, |&p| leased.saturating_sub(p)),
            worker: j.worker.unwrap_or_default(),
            started: j.started_ms.expect("started"),
            finished: j.finished_ms.expect("finished"),
            gpu_ms: j.gpu_seconds.unwrap_or(0.0) * 1000.0,
            passes: passes.unwrap_or(0),
            loaded: *loaded
                .get(id)
                .unwrap_or_else(|| panic!("job {id} is in no ComfyUI's history")),
        });
    }
    stop.cancel();
    for h in agents {
        let _ = h.await;
    }
    let _ = server.await;
    let _ = background.await;
    drop(comfys);
    Run {
        jobs,
        first_submit,
        resumed,
    }
}

/// Jain's fairness index of `x`: (Σx)² / (n·Σx²), 1 when all are equal.
fn jain(x: &[f64]) -> f64 {
    let s: f64 = x.iter().sum();
    let q: f64 = x.iter().map(|v| v * v).sum();
    if q == 0.0 {
        return 1.0;
    }
    s * s / (x.len() as f64 * q)
}

struct Summary {
    loads: usize,
    loads_per_100: f64,
    makespan_s: f64,
    jain: f64,
    window_s: f64,
    gpu_s: f64,
    mean_job_s: f64,
    per_worker: Vec<(String, usize, usize)>,
    max_passes: u64,
    /// The longest wait from a job's first pass to its lease, seconds.
    max_passed_wait_s: f64,
    /// Jobs passed over at least once, and how many of them loaded a model.
    passed: (usize, usize),
}

fn summarize(list: &[Spec], r: &Run) -> Summary {
    let n = r.jobs.len();
    let loads = r.jobs.iter().filter(|j| j.loaded).count();
    let last_finish = r.jobs.iter().map(|j| j.finished).max().unwrap_or(0);
    // Backlogged until the first participant's last job started.
    let mut last_start: BTreeMap<&str, u64> = BTreeMap::new();
    for (s, j) in list.iter().zip(&r.jobs) {
        let e = last_start.entry(&s.participant).or_default();
        *e = (*e).max(j.started);
    }
    let end = last_start.values().copied().min().unwrap_or(r.resumed);
    let mut gpu: BTreeMap<&str, f64> = last_start.keys().map(|p| (*p, 0.0)).collect();
    for (s, j) in list.iter().zip(&r.jobs) {
        let from = j.started.max(r.resumed);
        let to = j.finished.min(end);
        if to > from {
            *gpu.get_mut(s.participant.as_str()).unwrap() += (to - from) as f64;
        }
    }
    let x: Vec<f64> = gpu.values().copied().collect();
    let mut per_worker: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for j in &r.jobs {
        let e = per_worker.entry(&j.worker).or_default();
        e.0 += 1;
        e.1 += j.loaded as usize;
    }
    let gpu_total: f64 = r.jobs.iter().map(|j| j.gpu_ms).sum::<f64>() / 1000.0;
    Summary {
        loads,
        loads_per_100: loads as f64 * 100.0 / n as f64,
        makespan_s: (last_finish - r.first_submit) as f64 / 1000.0,
        jain: jain(&x),
        window_s: end.saturating_sub(r.resumed) as f64 / 1000.0,
        gpu_s: gpu_total,
        mean_job_s: gpu_total / n as f64,
        per_worker: per_worker
            .into_iter()
            .map(|(w, (j, l))| (w.to_string(), j, l))
            .collect(),
        max_passes: r.jobs.iter().map(|j| j.passes).max().unwrap_or(0),
        max_passed_wait_s: r.jobs.iter().map(|j| j.passed_wait_ms).max().unwrap_or(0) as f64
            / 1000.0,
        passed: (
            r.jobs.iter().filter(|j| j.passes > 0).count(),
            r.jobs.iter().filter(|j| j.passes > 0 && j.loaded).count(),
        ),
    }
}

/// One row per job and run: times in seconds since dispatch resumed.
fn write_csv(path: &Path, list: &[Spec], runs: &[Run]) {
    let mut out = String::from(
        "affinity,participant,job,model,worker,started_s,finished_s,gpu_s,loaded,passes,passed_wait_s\n",
    );
    for (r, name) in runs.iter().zip(["off", "on"]) {
        let t = |ms: u64| (ms as f64 - r.resumed as f64) / 1000.0;
        for (s, j) in list.iter().zip(&r.jobs) {
            out += &format!(
                "{name},{},{},{},{},{:.3},{:.3},{:.3},{},{},{:.3}\n",
                s.participant,
                s.index,
                model_name(s.model),
                j.worker,
                t(j.started),
                t(j.finished),
                j.gpu_ms / 1000.0,
                j.loaded as u8,
                j.passes,
                j.passed_wait_ms as f64 / 1000.0
            );
        }
    }
    std::fs::write(path, out).expect("write the CSV");
    eprintln!("model-bench: per-job rows in {}", path.display());
}

/// Each job's start position (0 = first to start) in a run.
fn ranks(r: &Run) -> Vec<usize> {
    let mut order: Vec<usize> = (0..r.jobs.len()).collect();
    order.sort_by_key(|&i| (r.jobs[i].started, i));
    let mut rank = vec![0; order.len()];
    for (pos, &i) in order.iter().enumerate() {
        rank[i] = pos;
    }
    rank
}

#[tokio::main]
async fn main() {
    let a = args();
    let files: Vec<PathBuf> = (1..=MODELS as u64).map(checkpoint).collect();
    let models: Vec<(String, PathBuf)> = files
        .iter()
        .enumerate()
        .map(|(m, f)| (model_name(m), f.clone()))
        .collect();
    let list = job_list(a.participants, a.jobs);
    eprintln!(
        "model-bench: {} participants × {} jobs = {} jobs, {MODELS} checkpoints, {WORKERS} CPU ComfyUIs, fair_share, capacity {}, affinity window {}, max passes {}",
        a.participants,
        a.jobs,
        list.len(),
        a.capacity,
        a.window,
        a.max_passes
    );
    let mut runs = vec![];
    for affinity in [false, true] {
        eprintln!(
            "model-bench: run with affinity {}",
            if affinity { "on" } else { "off" }
        );
        let t = Instant::now();
        let r = run_once(&a, &list, &models, affinity).await;
        eprintln!(
            "model-bench:   done in {:.0} s (with start-up)",
            t.elapsed().as_secs_f64()
        );
        runs.push(r);
    }
    let (off, on) = (&runs[0], &runs[1]);
    if let Some(path) = &a.csv {
        write_csv(path, &list, &runs);
    }
    let (s_off, s_on) = (summarize(&list, off), summarize(&list, on));

    // Extra wait beyond policy order: the same job, on vs off.
    let since = |r: &Run, j: &JobResult| j.started as f64 / 1000.0 - r.resumed as f64 / 1000.0;
    let (r_off, r_on) = (ranks(off), ranks(on));
    let mut extra_s = f64::MIN;
    let mut extra_pos = i64::MIN;
    for i in 0..list.len() {
        extra_s = extra_s.max(since(on, &on.jobs[i]) - since(off, &off.jobs[i]));
        extra_pos = extra_pos.max(r_on[i] as i64 - r_off[i] as i64);
    }

    let n = list.len();
    let row = |name: &str, off: String, on: String| println!("| {name} | {off} | {on} |");
    println!();
    println!(
        "model-bench: {} participants × {} jobs ({n}), checkpoints alternating, {WORKERS} CPU ComfyUIs, fair_share, capacity {}, window {}, max passes {}",
        a.participants, a.jobs, a.capacity, a.window, a.max_passes
    );
    println!();
    println!("| | affinity off | affinity on |");
    println!("|---|---|---|");
    row(
        "model loads (per 100 jobs)",
        format!("{} ({:.0})", s_off.loads, s_off.loads_per_100),
        format!("{} ({:.0})", s_on.loads, s_on.loads_per_100),
    );
    let workers = |s: &Summary| {
        s.per_worker
            .iter()
            .map(|(w, j, l)| format!("{w} {j}/{l}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    row("jobs / loads per worker", workers(&s_off), workers(&s_on));
    row(
        "makespan",
        format!("{:.1} s", s_off.makespan_s),
        format!("{:.1} s", s_on.makespan_s),
    );
    row(
        "GPU time, all jobs (mean per job)",
        format!("{:.1} s ({:.2} s)", s_off.gpu_s, s_off.mean_job_s),
        format!("{:.1} s ({:.2} s)", s_on.gpu_s, s_on.mean_job_s),
    );
    row(
        "Jain's index, GPU time while all backlogged (window)",
        format!("{:.3} ({:.1} s)", s_off.jain, s_off.window_s),
        format!("{:.3} ({:.1} s)", s_on.jain, s_on.window_s),
    );
    row(
        "most passes of one job",
        format!("{}", s_off.max_passes),
        format!("{} (bound {})", s_on.max_passes, a.max_passes),
    );
    row(
        "jobs passed over (of them loaded a model)",
        format!("{} ({})", s_off.passed.0, s_off.passed.1),
        format!("{} ({})", s_on.passed.0, s_on.passed.1),
    );
    row(
        "longest wait from first pass to lease (bounds the extra wait)",
        "—".into(),
        format!("{:.1} s", s_on.max_passed_wait_s),
    );
    row(
        "same job's start, on minus off: latest (s / start positions)",
        "—".into(),
        format!("{extra_s:+.1} s / {extra_pos:+}"),
    );
    println!();
    println!(
        "model-bench: loads {:.0} vs {:.0} per 100 jobs, jain {:.3}",
        s_on.loads_per_100, s_off.loads_per_100, s_on.jain
    );
}
