//! Load run of the reliability suite: many simulated participants at once
//! against a workshop of real processes (redis-server with AOF,
//! `comfy-multi serve`, one `comfy-multi frontend` per participant,
//! `comfy-multi worker` agents on real CPU ComfyUIs). Each participant is an
//! API client like the ComfyUI editor: it opens its own `/ws` with its
//! bearer token, then submits short jobs through its own frontend and keeps
//! every event its socket receives.
//!
//! Why this exists: a workshop puts a whole room on the system at once. The
//! run checks what must hold under that load — no job lost or duplicated
//! (Jepsen counts from the participants' side), every job succeeded, every
//! event a participant receives names only its own prompts, and every
//! participant is told the end of each of its jobs — and measures what the
//! report shows: submit latency, event delivery latency (the worker's
//! `timestamp` in `execution_start`/`execution_success`, relayed unchanged
//! through hub and frontend, against the participant's receipt; one machine,
//! one clock), run time and throughput, hub/frontend/worker memory, Redis
//! memory, and Jain's fairness index under `fair_share`. Measures are
//! reported, never asserted (two noisy cores).
//!
//! `load_200_participants` is the long run (`#[ignore]`d; `cargo test
//! --release --test reliability_load -- --ignored --nocapture`);
//! `load_20_participants` is the same code path small enough for every test
//! run. Each writes its record (`tests/support/report.rs`) before asserting.

mod support;
mod support_comfyui;

use comfy_multi::clock::now_ms;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::cluster::{participant, sleep_prompt, Cluster, Spec};
use support::report::{Record, Section};
use support_comfyui::ComfyUi;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Both runs start many processes on a small machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One load run.
struct Load {
    id: &'static str,
    title: &'static str,
    participants: usize,
    jobs_each: usize,
    comfyuis: usize,
    /// `CMSleep` seconds per job.
    seconds: f64,
    /// Give up waiting for the jobs after this long without a job ending.
    stall: Duration,
}

/// Everything one participant's socket received.
#[derive(Default)]
struct Inbox {
    /// (receipt ms since the epoch, message) per text frame.
    texts: Vec<(u64, Value)>,
    /// The prompt id each binary (preview) frame names, if any.
    binary: Vec<Option<String>>,
    /// End markers (`executing` with `node: null`) received.
    ends: usize,
    /// Why the socket ended before the run did.
    closed: Option<String>,
}

/// One participant's side of the run.
struct Participant {
    user: String,
    inbox: Arc<Mutex<Inbox>>,
    /// (prompt id, submit round trip, acknowledged at ms since the epoch).
    acked: Vec<(String, Duration, u64)>,
    refused: Vec<String>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `user`'s socket as the editor does (feature flags first) and waits
/// for the `status` greeting, sent once the frontend has subscribed to the
/// participant's events — so nothing submitted afterwards can be missed.
async fn open_socket(c: &Cluster, user: &str, client_id: &str) -> (Ws, Inbox) {
    let mut inbox = Inbox::default();
    let (mut ws, _) = tokio_tungstenite::connect_async(c.ws_request(user, client_id))
        .await
        .unwrap_or_else(|e| panic!("{user}'s socket: {e}"));
    let flags = json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}});
    ws.send(Message::Text(flags.to_string().into()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{user}'s socket sent no status"));
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                let greeted = v["type"] == "status";
                inbox.texts.push((now_ms(), v));
                if greeted {
                    return (ws, inbox);
                }
            }
            Some(Ok(_)) => {}
            other => panic!("{user}'s socket ended before its status: {other:?}"),
        }
    }
}

/// The prompt id a binary frame names: type 4 carries metadata JSON.
fn binary_prompt(frame: &[u8]) -> Option<String> {
    if frame.len() < 8 || frame[..4] != 4u32.to_be_bytes() {
        return None;
    }
    let len = u32::from_be_bytes(frame[4..8].try_into().ok()?) as usize;
    let meta: Value = serde_json::from_slice(frame.get(8..8 + len)?).ok()?;
    meta["prompt_id"].as_str().map(str::to_string)
}

/// Keeps every frame of `ws` in `inbox` until `stop`.
async fn read_socket(mut ws: Ws, inbox: Arc<Mutex<Inbox>>, stop: CancellationToken) {
    loop {
        let m = tokio::select! {
            m = ws.next() => m,
            _ = stop.cancelled() => break,
        };
        let now = now_ms();
        let mut inbox = inbox.lock().unwrap();
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: Value =
                    serde_json::from_str(&t).unwrap_or_else(|_| json!({"unparsed": t.as_str()}));
                if v["type"] == "executing" && v["data"]["node"].is_null() {
                    inbox.ends += 1;
                }
                inbox.texts.push((now, v));
            }
            Some(Ok(Message::Binary(b))) => inbox.binary.push(binary_prompt(&b)),
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                inbox.closed = Some(e.to_string());
                return;
            }
            None => {
                inbox.closed = Some("closed by the frontend".into());
                return;
            }
        }
    }
    let _ = ws.close(None).await;
}

/// Nearest-rank percentile of `v` (sorted here), in milliseconds.
fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank - 1])
}

fn ms(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.1} ms"))
}

/// Jain's fairness index of `x`: (Σx)² / (n·Σx²); 1 when all are equal.
fn jain(x: &[f64]) -> Option<f64> {
    let sq: f64 = x.iter().map(|v| v * v).sum();
    if x.is_empty() || sq == 0.0 {
        return None;
    }
    let sum: f64 = x.iter().sum();
    Some(sum * sum / (x.len() as f64 * sq))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Lifts the soft open-files limit to the hard one: the test holds a socket
/// and an HTTP connection per participant.
fn raise_fd_limit() {
    use nix::libc::{getrlimit, rlimit, setrlimit, RLIMIT_NOFILE};
    let mut r = rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            setrlimit(RLIMIT_NOFILE, &r);
        }
    }
}

/// The hub's and workers' last lines, and the frontends' only when few.
fn short_logs(c: &Cluster) -> String {
    if c.frontends.len() <= 20 {
        return c.logs();
    }
    let mut s = format!("--- hub\n{}\n", c.hub.log_tail(40));
    for w in &c.workers {
        s += &format!("--- {}\n{}\n", w.name, w.log_tail(40));
    }
    s
}

async fn run(load: Load) {
    let _serial = SERIAL.lock().await;
    raise_fd_limit();
    let t_boot = Instant::now();
    let comfys: Vec<ComfyUi> = (0..load.comfyuis).map(|_| ComfyUi::start()).collect();
    let spec = Spec {
        participants: load.participants,
        comfyuis: comfys.iter().map(|c| c.url.clone()).collect(),
        mode: "fair_share".into(),
        // Short jobs; a lease long enough that a busy machine never
        // requeues a healthy one.
        lease_ms: 30_000,
        ..Spec::default()
    };
    let t_cluster = Instant::now();
    let c = Arc::new(Cluster::start(&spec).await);
    let cluster_up = t_cluster.elapsed();
    println!(
        "{}: ComfyUIs up in {:.1} s, cluster ({} frontends) up in {:.1} s",
        load.id,
        (t_cluster - t_boot).as_secs_f64(),
        load.participants,
        cluster_up.as_secs_f64()
    );

    // Every participant's socket open and greeted before anyone submits.
    let users: Vec<String> = (0..load.participants).map(participant).collect();
    let sockets = futures_util::future::join_all(users.iter().map(|u| {
        let c = c.clone();
        let u = u.clone();
        async move {
            let client_id = format!("{u}-{}", uuid::Uuid::new_v4().simple());
            let (ws, inbox) = open_socket(&c, &u, &client_id).await;
            (u, client_id, ws, inbox)
        }
    }))
    .await;
    let stop = CancellationToken::new();
    let mut readers = vec![];
    let mut submitters = vec![];
    let t0 = Instant::now();
    let t0_ms = now_ms();
    for (i, (user, client_id, ws, inbox)) in sockets.into_iter().enumerate() {
        let inbox = Arc::new(Mutex::new(inbox));
        readers.push(tokio::spawn(read_socket(ws, inbox.clone(), stop.clone())));
        let c = c.clone();
        let jobs = load.jobs_each;
        let seconds = load.seconds;
        submitters.push(tokio::spawn(async move {
            let mut p = Participant {
                user: user.clone(),
                inbox,
                acked: vec![],
                refused: vec![],
            };
            for k in 0..jobs {
                let prompt = sleep_prompt(seconds, (i * jobs + k) as u64 + 1);
                let t = Instant::now();
                match c.submit_from(&user, &prompt, &client_id).await {
                    Ok(id) => p.acked.push((id, t.elapsed(), now_ms())),
                    Err(e) => p.refused.push(e),
                }
            }
            p
        }));
    }
    let mut parts = vec![];
    for s in submitters {
        parts.push(s.await.unwrap());
    }
    let submitted_in = t0.elapsed();

    // Wait until every participant was told the end of each of its jobs,
    // or nothing has ended for `load.stall`.
    let expected: usize = parts.iter().map(|p| p.acked.len()).sum();
    let mut last_progress = (0, Instant::now());
    let (mut ends, mut last_end_ms) = (0, t0_ms);
    while ends < expected && last_progress.1.elapsed() < load.stall {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ends = parts.iter().map(|p| p.inbox.lock().unwrap().ends).sum();
        if ends > last_progress.0 {
            last_progress = (ends, Instant::now());
            last_end_ms = now_ms();
        }
    }
    let run_time = Duration::from_millis(last_end_ms.saturating_sub(t0_ms));

    // Memory at the end of the run, sockets still open.
    let hub_rss = c.hub.rss_kib();
    let mut fe_rss: Vec<u64> = c
        .frontends
        .values()
        .filter_map(|f| f.proc.rss_kib())
        .collect();
    fe_rss.sort();
    let worker_rss = c.workers.iter().filter_map(|w| w.rss_kib()).max();
    let redis_mem = c.redis_memory("used_memory");

    let acked: Vec<(String, String)> = parts
        .iter()
        .flat_map(|p| p.acked.iter().map(|(id, ..)| (p.user.clone(), id.clone())))
        .collect();
    let jepsen = c.settle(&acked, Duration::from_secs(120)).await;
    stop.cancel();
    for r in readers {
        r.await.unwrap();
    }

    // The queue's own record of each job: when it finished, where it ran.
    let q = c.queue().await;
    // (finished ms, participant, GPU seconds) per acknowledged job.
    let mut finished: Vec<(u64, String, f64)> = vec![];
    let mut per_worker: BTreeMap<String, u64> = BTreeMap::new();
    for (u, id) in &acked {
        if let Some(j) = q.job(id).await.unwrap() {
            if let Some(f) = j.finished_ms {
                finished.push((f, u.clone(), j.gpu_seconds.unwrap_or(0.0)));
            }
            *per_worker.entry(j.worker.unwrap_or_default()).or_default() += 1;
        }
    }
    finished.sort_by_key(|a| a.0);

    // Whose each prompt named on a socket is, by the queue: acknowledged
    // submits, and any other id looked up (a submit whose answer was an
    // error may still have been queued; an id the queue does not know at
    // all is nobody's, so foreign to whoever got it).
    let mut owner: HashMap<String, String> = acked
        .iter()
        .map(|(u, id)| (id.clone(), u.clone()))
        .collect();
    let named: HashSet<String> = parts
        .iter()
        .flat_map(|p| {
            let inbox = p.inbox.lock().unwrap();
            let mut ids: Vec<String> = inbox
                .texts
                .iter()
                .filter_map(|(_, v)| v["data"]["prompt_id"].as_str().map(str::to_string))
                .collect();
            ids.extend(inbox.binary.iter().flatten().cloned());
            ids
        })
        .collect();
    for pid in named {
        if let std::collections::hash_map::Entry::Vacant(e) = owner.entry(pid) {
            if let Some(j) = q.job(e.key()).await.ok().flatten() {
                e.insert(j.participant);
            }
        }
    }

    // The participants' side: latencies, foreign events, missing ends.
    let mut submit_ms: Vec<f64> = vec![];
    let mut delivery_ms: Vec<f64> = vec![];
    let (mut events, mut foreign, mut unacked, mut missing_end, mut closed) = (0, 0, 0, 0, 0);
    let mut refused = vec![];
    for p in &parts {
        submit_ms.extend(p.acked.iter().map(|(_, d, _)| d.as_secs_f64() * 1000.0));
        refused.extend(p.refused.iter().map(|e| format!("{}: {e}", p.user)));
        let own: HashSet<&str> = p.acked.iter().map(|(id, ..)| id.as_str()).collect();
        let inbox = p.inbox.lock().unwrap();
        closed += inbox.closed.is_some() as usize;
        let (mut success, mut marker) = (HashSet::new(), HashSet::new());
        let named = inbox
            .texts
            .iter()
            .map(|(at, v)| (Some(*at), v["data"]["prompt_id"].as_str(), Some(v)))
            .chain(inbox.binary.iter().map(|b| (None, b.as_deref(), None)));
        for (at, pid, v) in named {
            events += 1;
            let Some(pid) = pid else { continue };
            if !own.contains(pid) {
                if owner.get(pid) == Some(&p.user) {
                    unacked += 1;
                } else {
                    foreign += 1;
                }
                continue;
            }
            let (Some(at), Some(v)) = (at, v) else {
                continue;
            };
            match v["type"].as_str() {
                Some("execution_success") => {
                    success.insert(pid);
                }
                Some("executing") if v["data"]["node"].is_null() => {
                    marker.insert(pid);
                }
                _ => {}
            }
            if matches!(
                v["type"].as_str(),
                Some("execution_start" | "execution_success")
            ) {
                if let Some(ts) = v["data"]["timestamp"].as_u64().filter(|t| *t > 0) {
                    delivery_ms.push(at as f64 - ts as f64);
                }
            }
        }
        missing_end += own
            .iter()
            .filter(|id| !success.contains(*id) || !marker.contains(*id))
            .count();
    }

    // Fairness: jobs completed per participant while every participant
    // still had work waiting — from the last acknowledged submit to the
    // first participant's last job ending — and over the first half of all
    // completions.
    let all_in = parts
        .iter()
        .flat_map(|p| p.acked.iter().map(|(_, _, at)| *at))
        .max()
        .unwrap_or(0);
    let mut last_of: HashMap<&str, u64> = HashMap::new();
    for (f, u, _) in &finished {
        let e = last_of.entry(u.as_str()).or_default();
        *e = (*e).max(*f);
    }
    let first_done = last_of.values().copied().min().unwrap_or(0);
    // Jain's index over participants of jobs (`gpu` false) or GPU seconds.
    let fairness = |jobs: &[&(u64, String, f64)], gpu: bool| {
        let mut n: HashMap<&str, f64> = users.iter().map(|u| (u.as_str(), 0.0)).collect();
        for (_, u, g) in jobs {
            *n.get_mut(u.as_str()).unwrap() += if gpu { *g } else { 1.0 };
        }
        let index = jain(&n.values().copied().collect::<Vec<_>>());
        match index {
            Some(j) => format!("{j:.4} ({} jobs)", jobs.len()),
            None => format!("n/a ({} jobs)", jobs.len()),
        }
    };
    let window: Vec<_> = finished
        .iter()
        .filter(|(f, ..)| *f > all_in && *f <= first_done)
        .collect();
    let half: Vec<_> = finished.iter().take(finished.len() / 2).collect();

    let total = load.participants * load.jobs_each;
    let fe_median = fe_rss.get(fe_rss.len() / 2).copied();
    let checks = [
        ("no job lost", jepsen.lost == 0),
        ("no job duplicated", jepsen.duplicated == 0),
        (
            "every job was acknowledged and succeeded",
            jepsen.succeeded == total as u64 && refused.is_empty(),
        ),
        ("no participant received a foreign event", foreign == 0),
        (
            "every participant was told the end of each of its jobs",
            missing_end == 0,
        ),
        ("every participant's socket stayed open", closed == 0),
    ];
    let passed = checks.iter().all(|(_, ok)| *ok);
    let measures: Vec<(&str, String)> = vec![
        (
            "participants × jobs",
            format!("{} × {}", load.participants, load.jobs_each),
        ),
        ("succeeded", jepsen.succeeded.to_string()),
        ("lost", jepsen.lost.to_string()),
        ("duplicated", jepsen.duplicated.to_string()),
        ("foreign events", foreign.to_string()),
        ("events of unacknowledged submits", unacked.to_string()),
        ("missing end events", missing_end.to_string()),
        ("submit p50", ms(percentile(&mut submit_ms.clone(), 50.0))),
        ("submit p99", ms(percentile(&mut submit_ms, 99.0))),
        (
            "event delivery p50",
            ms(percentile(&mut delivery_ms.clone(), 50.0)),
        ),
        (
            "event delivery p99",
            ms(percentile(&mut delivery_ms.clone(), 99.0)),
        ),
        (
            "all submits acknowledged after",
            format!("{:.1} s", submitted_in.as_secs_f64()),
        ),
        ("run time", format!("{:.1} s", run_time.as_secs_f64())),
        (
            "throughput",
            format!(
                "{:.2} jobs/s",
                jepsen.succeeded as f64 / run_time.as_secs_f64().max(0.001)
            ),
        ),
        (
            "jobs per worker",
            per_worker
                .iter()
                .map(|(w, n)| format!("{w} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("hub RSS", hub_rss.map_or("n/a".into(), mib)),
        (
            "frontend RSS max",
            fe_rss.last().copied().map_or("n/a".into(), mib),
        ),
        ("frontend RSS median", fe_median.map_or("n/a".into(), mib)),
        ("worker RSS max", worker_rss.map_or("n/a".into(), mib)),
        (
            "redis used memory",
            redis_mem.map_or("n/a".into(), |b| mib(b / 1024)),
        ),
        (
            "fairness, jobs (backlogged window)",
            fairness(&window, false),
        ),
        (
            "fairness, GPU time (backlogged window)",
            fairness(&window, true),
        ),
        (
            "fairness, jobs (first half of completions)",
            fairness(&half, false),
        ),
        (
            "fairness, GPU time (first half of completions)",
            fairness(&half, true),
        ),
        ("events received", events.to_string()),
        (
            "cluster start",
            format!("{:.1} s", cluster_up.as_secs_f64()),
        ),
    ];

    let setup = format!(
        "{p} participants, each an API client with its own WebSocket (bearer token, clientId) to its own \
         `comfy-multi frontend` process, opened before any submit; each submits {j} jobs \
         (EmptyImage → CMSleep {s} s → SaveImage) one after another, all participants at once; \
         {w} `comfy-multi worker` agent(s) on {w} real CPU ComfyUI(s), capacity 1; hub `serve`; \
         redis-server with AOF (appendfsync always); mode fair_share. Submit latency: HTTP round trip \
         of POST /api/prompt. Event delivery: participant's receipt time − the worker agent's \
         `timestamp` in execution_start/execution_success (relayed unchanged via hub and frontend; \
         same machine clock; {d} events). Foreign event: one naming a prompt the queue does not \
         list as the receiving participant's. RSS sampled at the end of the run, sockets open. \
         Fairness: Jain's index over participants of jobs completed and of their GPU time (queue \
         finish times; fair_share charges measured run time, so GPU time is what it equalises) \
         from the last acknowledged submit until the first participant's last job ended (every \
         participant backlogged), and over the first half of all completions; over the whole \
         run every participant completes the same number, so that index is 1 by construction. All on one \
         2-core machine; measures are not pass/fail.",
        p = load.participants,
        j = load.jobs_each,
        s = load.seconds,
        w = load.comfyuis,
        d = delivery_ms.len(),
    );
    let mut record = Record::new(Section::Load, load.id, load.title).setup(setup);
    for (k, v) in &measures {
        record = record.measure(k, v);
    }
    record.passed = passed;
    record.write();

    let width = measures
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    println!("\n{} — {}", load.id, load.title);
    for (k, v) in &measures {
        println!("  {k:<width$}  {v}");
    }
    for (what, ok) in &checks {
        println!("  [{}] {what}", if *ok { "ok" } else { "FAILED" });
    }
    println!("  jepsen: {jepsen:?}\n");

    assert!(refused.is_empty(), "refused submits: {refused:?}");
    for (what, ok) in &checks {
        assert!(*ok, "{what}: {jepsen:?}, foreign {foreign}, of unacknowledged submits {unacked}, missing ends {missing_end}, closed sockets {closed}\n{}", short_logs(&c));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_20_participants() {
    run(Load {
        id: "load-20-participants",
        title: "20 participants × 3 jobs, one CPU ComfyUI (the load run's code path, small)",
        participants: 20,
        jobs_each: 3,
        comfyuis: 1,
        seconds: 0.05,
        stall: Duration::from_secs(60),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the long load run (minutes): cargo test --release --test reliability_load -- --ignored --nocapture"]
async fn load_200_participants() {
    run(Load {
        id: "load-200-participants",
        title: "200 participants × 10 jobs, two CPU ComfyUI workers",
        participants: 200,
        jobs_each: 10,
        comfyuis: 2,
        seconds: 0.05,
        stall: Duration::from_secs(120),
    })
    .await;
}
