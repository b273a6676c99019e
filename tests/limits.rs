//! One participant pushing a limit — thousands of editor sockets, hundreds
//! of concurrent submits — gets a clear 429 for the excess, and another
//! participant is unaffected: their editor connects, their job gets its
//! fair place in line, runs and shows its events.
//!
//! Why this exists: every editor socket holds a Redis subscription, and
//! every submit a place in the shared queue; one participant's runaway
//! script (or a reload loop) must not exhaust the server or push everyone
//! else to the back of the line. The worker's side is played through the
//! queue (lease, start, events, finish) as the hub does for a real worker.

mod support;

use comfy_multi::frontend::{run, FrontendState};
use comfy_multi::queue::{Mode, Outcome, Queue, QueueSettings};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::report::{Record, Section};
use support::RedisServer;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Generous: only to wait, never to judge.
const PATIENCE: Duration = Duration::from_secs(60);

/// `participant`'s server (at most `max_sockets` editor sockets); returns
/// its base URL `http://127.0.0.1:PORT/<participant>`.
async fn frontend(
    queue: &Queue,
    state: &std::path::Path,
    participant: &str,
    max_sockets: usize,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/{participant}", listener.local_addr().unwrap());
    let fs = FrontendState::new(
        participant,
        queue.clone(),
        state.join("static"),
        state.join("users").join(participant),
        1 << 20,
    )
    .with_max_sockets(max_sockets);
    tokio::spawn(run(listener, fs, CancellationToken::new()));
    base
}

fn ws_url(base: &str, client: &str) -> String {
    format!(
        "{}/ws?clientId={client}",
        base.replacen("http://", "ws://", 1)
    )
}

/// The next JSON text message, skipping binary frames.
async fn next_json(ws: &mut Socket) -> Option<Value> {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Reads until a message satisfies `want`; `false` if the socket ends or
/// nothing matching comes within [`PATIENCE`].
async fn wait_for(ws: &mut Socket, want: impl Fn(&Value) -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        match next_json(ws).await {
            Some(v) if want(&v) => return true,
            Some(_) => continue,
            None => return false,
        }
    }
    false
}

/// What a connect attempt got.
#[derive(Debug)]
enum Attempt {
    Open(Box<Socket>),
    /// 429 with the `too_many_sockets` JSON error.
    Refused,
    Other(String),
}

async fn connect(url: String) -> Attempt {
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Attempt::Open(Box::new(ws)),
        Err(tungstenite::Error::Http(r)) => {
            let body: Value = r
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            let message = body["error"]["message"].as_str().unwrap_or_default();
            if r.status() == 429
                && body["error"]["type"] == "too_many_sockets"
                && message.contains("editor connections open")
            {
                Attempt::Refused
            } else {
                Attempt::Other(format!("{} {body}", r.status()))
            }
        }
        Err(e) => Attempt::Other(e.to_string()),
    }
}

async fn submit(http: &reqwest::Client, base: &str, n: u64) -> (u16, Value) {
    let r = http
        .post(format!("{base}/prompt"))
        .json(&json!({"prompt": support::prompt(n), "client_id": "limits"}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Open Redis subscriber connections (one per open editor socket).
fn pubsub_clients(redis: &RedisServer) -> usize {
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut c)
        .unwrap();
    list.lines().filter(|l| !l.trim().is_empty()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_sockets_from_one_participant_get_429_past_the_limit_and_others_are_unaffected(
) {
    const LIMIT: usize = 32;
    const ATTEMPTS: usize = 2_000;
    let redis = RedisServer::start();
    let queue = support::queue(&redis, support::test_settings()).await;
    support::store_catalogue(&queue).await;
    let state = tempfile::tempdir().unwrap();
    let user01 = frontend(&queue, state.path(), "user01", LIMIT).await;
    let user02 = frontend(&queue, state.path(), "user02", LIMIT).await;
    let http = reqwest::Client::new();

    // user01 fills its sockets, then keeps trying: 2,000 attempts in all,
    // 64 at a time.
    let mut open = vec![];
    let mut other = vec![];
    for i in 0..LIMIT {
        match connect(ws_url(&user01, &format!("tab{i}"))).await {
            Attempt::Open(ws) => open.push(*ws),
            a => other.push(format!("socket {i} within the limit: {a:?}")),
        }
    }
    for ws in &mut open {
        // Each open socket got ComfyUI's greeting.
        if !wait_for(ws, |v| v["type"] == "status").await {
            other.push("an open socket got no status".into());
        }
    }
    let extras: Vec<Attempt> = futures_util::stream::iter(LIMIT..ATTEMPTS)
        .map(|i| connect(ws_url(&user01, &format!("extra{i}"))))
        .buffer_unordered(64)
        .collect()
        .await;
    let mut refused = 0;
    for a in extras {
        match a {
            Attempt::Refused => refused += 1,
            Attempt::Open(_) => other.push("an extra socket was opened".into()),
            Attempt::Other(e) => other.push(format!("extra socket: {e}")),
        }
    }
    let subscribers_at_limit = pubsub_clients(&redis);

    // user02, on its own frontend: connects, submits, sees its job run.
    let mut theirs = match connect(ws_url(&user02, "user02-tab")).await {
        Attempt::Open(ws) => Some(*ws),
        a => {
            other.push(format!("user02's socket: {a:?}"));
            None
        }
    };
    let (status, body) = submit(&http, &user02, 1).await;
    let job02 = body["prompt_id"].as_str().unwrap_or_default().to_string();
    let user02_accepted = status == 200 && !job02.is_empty();
    let lease = queue.lease("gpu0").await.unwrap();
    let mut user02_saw_its_job = false;
    if let (Some(lease), Some(ws)) = (lease, theirs.as_mut()) {
        assert_eq!(lease.job_id, job02, "the only waiting job is user02's");
        queue.start(&lease.job_id, lease.token).await.unwrap();
        let event = json!({"type": "job_event", "job": job02,
            "event": {"type": "executing", "data": {"node": "2", "prompt_id": job02}}});
        queue
            .publish_event("user02", &event.to_string())
            .await
            .unwrap();
        queue
            .finish(
                &lease.job_id,
                lease.token,
                Outcome::Succeeded,
                &json!({}),
                None,
                Some(0.1),
            )
            .await
            .unwrap();
        let node = |v: &Value, node: Value| {
            v["type"] == "executing" && v["data"]["prompt_id"] == job02 && v["data"]["node"] == node
        };
        user02_saw_its_job = wait_for(ws, |v| node(v, json!("2"))).await
            && wait_for(ws, |v| node(v, Value::Null)).await;
    }

    // user01's open sockets are still live: a submit of theirs reaches all.
    let (status, _) = submit(&http, &user01, 2).await;
    let user01_accepted = status == 200;
    let mut live = 0;
    for ws in &mut open {
        let told = wait_for(ws, |v| {
            v["type"] == "status" && v["data"]["status"]["exec_info"]["queue_remaining"] == 1
        })
        .await;
        live += usize::from(told);
    }

    // Closing sockets frees their slots and their Redis subscriptions.
    let closed = 8;
    for mut ws in open.drain(..closed) {
        let _ = ws.close(None).await;
    }
    let mut reopened = 0;
    let deadline = Instant::now() + PATIENCE;
    while reopened < closed && Instant::now() < deadline {
        match connect(ws_url(&user01, &format!("again{reopened}"))).await {
            Attempt::Open(ws) => {
                open.push(*ws);
                reopened += 1;
            }
            Attempt::Refused => tokio::time::sleep(Duration::from_millis(50)).await,
            Attempt::Other(e) => {
                other.push(format!("reopening: {e}"));
                break;
            }
        }
    }
    let after_reopen = connect(ws_url(&user01, "one-too-many")).await;
    let full_again = matches!(after_reopen, Attempt::Refused);
    for mut ws in open.drain(..) {
        let _ = ws.close(None).await;
    }
    drop(theirs);
    let mut subscribers_after = pubsub_clients(&redis);
    while subscribers_after > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        subscribers_after = pubsub_clients(&redis);
    }

    let passed = other.is_empty()
        && refused == ATTEMPTS - LIMIT
        && subscribers_at_limit == LIMIT
        && user02_accepted
        && user02_saw_its_job
        && user01_accepted
        && live == LIMIT
        && reopened == closed
        && full_again
        && subscribers_after == 0;
    let mut record = Record::new(
        Section::Input,
        "input-limit-sockets",
        "Thousands of editor sockets from one participant",
    )
    .setup(format!(
        "user01 opens {ATTEMPTS} /ws connections to its frontend (frontend.max_sockets_per_participant \
         = {LIMIT}; 64 attempts at a time past the limit); user02 on its own frontend connects, \
         submits and its job runs (worker played through the queue); then user01 closes {closed} \
         sockets and opens them again"
    ))
    .measure("socket attempts", ATTEMPTS)
    .measure("opened", LIMIT)
    .measure("refused 429 too_many_sockets", refused)
    .measure("Redis subscriptions at the limit", subscribers_at_limit)
    .measure("user01 sockets still getting events", live)
    .measure("user02 connected, ran and saw its job", user02_saw_its_job)
    .measure("slots freed by closing and taken again", reopened)
    .measure("Redis subscriptions after all closed", subscribers_after)
    .measure("other answers", other.len());
    record.passed = passed;
    record.write();
    assert!(other.is_empty(), "unexpected:\n{}", other.join("\n"));
    assert_eq!(refused, ATTEMPTS - LIMIT);
    assert_eq!(
        subscribers_at_limit, LIMIT,
        "one subscription per open socket"
    );
    assert!(user02_accepted && user02_saw_its_job, "user02 was affected");
    assert!(user01_accepted);
    assert_eq!(live, LIMIT, "user01's open sockets stopped getting events");
    assert_eq!(reopened, closed, "closed sockets did not free their slots");
    assert!(full_again, "past the limit again: {after_reopen:?}");
    assert_eq!(subscribers_after, 0, "closed sockets left subscriptions");
}

/// One run of the flood under `mode`: what came back and where user02 is.
#[derive(Debug, Default)]
struct Flood {
    accepted: usize,
    too_many_pending: usize,
    other: Vec<String>,
    waiting01: usize,
    user02_accepted: bool,
    /// user01's submits answered before user02's was sent.
    answered_before_user02: usize,
    /// user02's place in line (1 = next), as its editor shows it.
    user02_position: Option<u64>,
    /// Among the next two jobs a worker leases.
    user02_leased_early: bool,
}

async fn flood(redis: &RedisServer, mode: Mode, max_pending: u32, submits: usize) -> Flood {
    let settings = QueueSettings {
        max_pending_per_participant: max_pending,
        default_mode: mode,
        ..support::test_settings()
    };
    let queue = support::queue(redis, settings).await;
    queue.set_mode(mode).await.unwrap();
    support::store_catalogue(&queue).await;
    let state = tempfile::tempdir().unwrap();
    let user01 = frontend(&queue, state.path(), "user01", 32).await;
    let user02 = frontend(&queue, state.path(), "user02", 32).await;
    let http = reqwest::Client::new();

    let answered = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (http, user01, answered) = (http.clone(), user01.clone(), answered.clone());
        tokio::spawn(async move {
            futures_util::stream::iter(0..submits as u64)
                .map(|n| {
                    let (http, user01, answered) = (&http, &user01, &answered);
                    async move {
                        let r = submit(http, user01, n).await;
                        answered.fetch_add(1, Ordering::SeqCst);
                        r
                    }
                })
                .buffer_unordered(50)
                .collect::<Vec<_>>()
                .await
        })
    };
    // user02 submits once user01's flood is under way.
    let deadline = Instant::now() + PATIENCE;
    while answered.load(Ordering::SeqCst) < submits / 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut f = Flood {
        answered_before_user02: answered.load(Ordering::SeqCst),
        ..Flood::default()
    };
    let (status, body) = submit(&http, &user02, 10_000).await;
    f.user02_accepted = status == 200;
    let job02 = body["prompt_id"].as_str().unwrap_or_default().to_string();
    for (status, body) in flood.await.unwrap() {
        match (status, body["error"]["type"].as_str()) {
            (200, _) if body["prompt_id"].is_string() => f.accepted += 1,
            (429, Some("too_many_pending")) => f.too_many_pending += 1,
            _ => f.other.push(format!("{status} {body}")),
        }
    }
    f.waiting01 = queue
        .participant_queue("user01", 1)
        .await
        .unwrap()
        .waiting
        .len();
    let status: Value = http
        .get(format!("{user02}/api/comfy-multi/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    f.user02_position = status["waiting"]
        .as_array()
        .and_then(|w| w.iter().find(|j| j["prompt_id"] == job02.as_str()))
        .and_then(|j| j["position"].as_u64());
    for _ in 0..2 {
        if let Some(l) = queue.lease("gpu0").await.unwrap() {
            f.user02_leased_early |= l.job_id == job02;
        }
    }
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_submits_gets_429_past_the_pending_limit_and_another_participant_keeps_their_place(
) {
    const MAX_PENDING: u32 = 20;
    const SUBMITS: usize = 500;
    let redis = RedisServer::start();
    let mut runs = vec![];
    for mode in [Mode::RoundRobin, Mode::FairShare] {
        runs.push((mode, flood(&redis, mode, MAX_PENDING, SUBMITS).await));
    }
    let ok = |f: &Flood| {
        f.other.is_empty()
            && f.accepted == MAX_PENDING as usize
            && f.too_many_pending == SUBMITS - MAX_PENDING as usize
            && f.waiting01 == MAX_PENDING as usize
            && f.user02_accepted
            && f.user02_position.is_some_and(|p| p <= 2)
            && f.user02_leased_early
    };
    let passed = runs.iter().all(|(_, f)| ok(f));
    let mut record = Record::new(
        Section::Input,
        "input-limit-prompt-flood",
        "One participant floods POST /prompt",
    )
    .setup(format!(
        "user01 sends {SUBMITS} submits to its frontend, 50 at a time, with \
         queue.max_pending_per_participant = {MAX_PENDING} and no worker; user02 submits on its \
         own frontend once a tenth are answered; once under round_robin, once under fair_share"
    ));
    for (mode, f) in &runs {
        let m = mode.as_str();
        record = record
            .measure(&format!("{m}: submits"), SUBMITS)
            .measure(&format!("{m}: accepted"), f.accepted)
            .measure(
                &format!("{m}: refused 429 too_many_pending"),
                f.too_many_pending,
            )
            .measure(&format!("{m}: user01 jobs queued"), f.waiting01)
            .measure(
                &format!("{m}: user01 answers before user02 submitted"),
                f.answered_before_user02,
            )
            .measure(
                &format!("{m}: user02 accepted, place in line"),
                f.user02_position.map_or("none".into(), |p| p.to_string()),
            )
            .measure(
                &format!("{m}: user02 among the next two leased"),
                f.user02_leased_early,
            )
            .measure(&format!("{m}: other answers"), f.other.len());
    }
    record.passed = passed;
    record.write();
    for (mode, f) in &runs {
        assert!(ok(f), "{}: {f:#?}", mode.as_str());
    }
}
