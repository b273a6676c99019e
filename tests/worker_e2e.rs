//! The hub's worker gateway and the worker agent, end to end against a real
//! ComfyUI on CPU (installed by `scripts/comfyui/install.sh`), a real
//! redis-server and a real hub: jobs run, outputs land in the participant's
//! folder under stored names, events reach the participant, failures keep
//! ComfyUI's errors, cancel stops only its job, and faults lose nothing.

mod support;
mod support_comfyui;

use comfy_multi::queue::{Actor, Mode, NewJob, QueueSettings, Status};
use comfy_multi::worker::{run_agent, AgentConfig};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::hub::{TestHub, WORKER_TOKEN};
use support::RedisServer;
use support_comfyui::ComfyUi;
use tokio_util::sync::CancellationToken;

fn workflow(name: &str) -> Value {
    let path = format!(
        "{}/tests/comfyui_nodes/workflows/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Sets every EmptyImage's color so ComfyUI's cache never answers for it.
fn vary(mut p: Value, n: u64) -> Value {
    for node in p.as_object_mut().unwrap().values_mut() {
        if node["class_type"] == "EmptyImage" {
            node["inputs"]["color"] = json!(n % 0xFFFFFF);
        }
    }
    p
}

fn sleep_job(participant: &str, seconds: f64, n: u64) -> NewJob {
    let mut p = vary(workflow("sleep_save"), n);
    for node in p.as_object_mut().unwrap().values_mut() {
        if node["class_type"] == "CMSleep" {
            node["inputs"]["seconds"] = json!(seconds);
        }
    }
    NewJob {
        participant: participant.into(),
        prompt: p,
        ..Default::default()
    }
}

fn settings() -> QueueSettings {
    QueueSettings {
        lease_ms: 3000,
        max_attempts: 4,
        default_job_ms: 1000,
        ..QueueSettings::default()
    }
}

fn agent(id: &str, comfy: &ComfyUi, hub: &TestHub, capacity: u32) -> CancellationToken {
    let stop = CancellationToken::new();
    let cfg = AgentConfig {
        id: id.into(),
        comfyui_url: comfy.url.clone(),
        hub_url: hub.url.clone(),
        token: WORKER_TOKEN.into(),
        capacity,
        heartbeat: Duration::from_millis(500),
        pool: comfy_multi::pool::DEFAULT_POOL.into(),
        headers: vec![],
        starting: None,
    };
    tokio::spawn(run_agent(cfg, stop.clone()));
    stop
}

async fn wait_status(
    hub: &TestHub,
    id: &str,
    want: &[Status],
    secs: u64,
) -> comfy_multi::queue::Job {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let j = hub.queue.job(id).await.unwrap().expect("job exists");
        if want.contains(&j.status) {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still {:?} (wanted {want:?}): {j:?}",
            j.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every `{filename, subfolder, type}` in an outputs value.
fn files(outputs: &Value) -> Vec<(String, String, String)> {
    let mut out = vec![];
    fn walk(v: &Value, out: &mut Vec<(String, String, String)>) {
        match v {
            Value::Object(m) => {
                if let (Some(f), Some(t)) = (m.get("filename"), m.get("type")) {
                    out.push((
                        f.as_str().unwrap().into(),
                        m.get("subfolder")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                        t.as_str().unwrap().into(),
                    ));
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(outputs, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_on_real_comfyui_and_its_outputs_land_in_the_participants_folder() {
    let redis = RedisServer::start();
    let comfy = ComfyUi::start();
    let hub = TestHub::spawn(&redis, settings()).await;
    let mut events = hub.queue.subscribe(Some("user01")).await.unwrap();
    let mut other = hub.queue.subscribe(Some("user02")).await.unwrap();
    let _a = agent("gpu0", &comfy, &hub, 2);
    let id = hub
        .queue
        .enqueue(NewJob {
            participant: "user01".into(),
            prompt: vary(workflow("invert"), 4242),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let job = wait_status(&hub, &id, &[Status::Succeeded, Status::Failed], 60).await;
    assert_eq!(job.status, Status::Succeeded, "{job:?}");
    assert!(job.gpu_seconds.unwrap() > 0.0);
    let outs = files(job.outputs.as_ref().unwrap());
    assert!(!outs.is_empty(), "outputs name files: {:?}", job.outputs);
    for (name, sub, kind) in &outs {
        assert_eq!(kind, "output");
        assert!(
            !sub.contains("cm-") && !name.contains("cm-"),
            "worker paths leak: {sub}/{name}"
        );
        let path = hub.dir("user01", "output").join(sub).join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(bytes.starts_with(b"\x89PNG"));
    }
    // The participant's channel saw the run in ComfyUI's terms.
    let mut kinds = vec![];
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
        let v: Value = serde_json::from_str(&m).unwrap();
        if v["type"] == "job_event" {
            assert_eq!(v["event"]["data"]["prompt_id"], id.as_str());
            if v["event"]["type"] == "executed" {
                assert_eq!(
                    files(&v["event"]["data"]["output"]),
                    outs,
                    "events name the stored files"
                );
            }
            kinds.push(v["event"]["type"].as_str().unwrap().to_string());
        }
    }
    for k in [
        "execution_start",
        "executing",
        "executed",
        "execution_success",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing from {kinds:?}");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), other.recv())
            .await
            .is_err()
    );
}

/// Runs the LoadImage → ImageScale → SaveImage workflow on `name` for
/// user01 and waits for its end.
async fn load_image(hub: &TestHub, name: &str) -> comfy_multi::queue::Job {
    let mut p = workflow("upload_scale");
    for node in p.as_object_mut().unwrap().values_mut() {
        if node["class_type"] == "LoadImage" {
            node["inputs"]["image"] = json!(name);
        }
    }
    let job = NewJob {
        participant: "user01".into(),
        prompt: p,
        ..Default::default()
    };
    let id = hub.queue.enqueue(job).await.unwrap().id;
    wait_status(hub, &id, &[Status::Succeeded, Status::Failed], 60).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participants_input_file_is_uploaded_and_used_by_the_workflow() {
    let redis = RedisServer::start();
    let comfy = ComfyUi::start();
    let hub = TestHub::spawn(&redis, settings()).await;
    let input = hub.dir("user01", "input");
    std::fs::create_dir_all(&input).unwrap();
    // A 1×1 PNG.
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
    )
    .unwrap();
    std::fs::write(input.join("photo.png"), png).unwrap();
    let _a = agent("gpu0", &comfy, &hub, 1);
    let job = load_image(&hub, "photo.png").await;
    assert_eq!(job.status, Status::Succeeded, "{job:?}");
    assert!(!files(job.outputs.as_ref().unwrap()).is_empty());

    // A missing input file fails the job with a clear reason.
    let job = load_image(&hub, "nope.png").await;
    assert_eq!(job.status, Status::Failed);
    assert!(job.error.unwrap().message.contains("nope.png"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_keep_comfyuis_error_for_the_participant() {
    let redis = RedisServer::start();
    let comfy = ComfyUi::start();
    let hub = TestHub::spawn(&redis, settings()).await;
    let _a = agent("gpu0", &comfy, &hub, 1);
    // Fails at run time.
    let id = hub
        .queue
        .enqueue(NewJob {
            participant: "user01".into(),
            prompt: vary(workflow("fail"), 7),
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let job = wait_status(&hub, &id, &[Status::Succeeded, Status::Failed], 60).await;
    assert_eq!(job.status, Status::Failed);
    let e = job.error.unwrap();
    assert_eq!(e.kind, "execution_error");
    assert!(!e.message.is_empty());
    assert!(e.details.get("node_type").is_some(), "{:?}", e.details);
    // Refused by ComfyUI at submit: not retried, ComfyUI's words kept.
    let bad = json!({"1": {"class_type": "NoSuchNode", "inputs": {}}});
    let id = hub
        .queue
        .enqueue(NewJob {
            participant: "user01".into(),
            prompt: bad,
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let job = wait_status(&hub, &id, &[Status::Succeeded, Status::Failed], 60).await;
    assert_eq!(job.status, Status::Failed);
    assert_eq!(job.attempts, 0, "a refused prompt is not retried");
    assert!(job.error.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_only_that_job() {
    let redis = RedisServer::start();
    let comfy = ComfyUi::start();
    let hub = TestHub::spawn(&redis, settings()).await;
    let _a = agent("gpu0", &comfy, &hub, 2);
    let first = hub
        .queue
        .enqueue(sleep_job("user01", 20.0, 1))
        .await
        .unwrap()
        .id;
    let second = hub
        .queue
        .enqueue(sleep_job("user02", 1.0, 2))
        .await
        .unwrap()
        .id;
    wait_status(&hub, &first, &[Status::Running], 60).await;
    let t = Instant::now();
    hub.queue
        .cancel(&first, &Actor::Participant("user01".into()))
        .await
        .unwrap();
    let j = wait_status(
        &hub,
        &first,
        &[Status::Cancelled, Status::Succeeded, Status::Failed],
        30,
    )
    .await;
    assert_eq!(j.status, Status::Cancelled);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "the 20 s job was interrupted"
    );
    let j = wait_status(
        &hub,
        &second,
        &[Status::Succeeded, Status::Failed, Status::Cancelled],
        60,
    )
    .await;
    assert_eq!(
        j.status,
        Status::Succeeded,
        "the other participant's job ran on"
    );
    // A job cancelled while it waits inside ComfyUI's queue never runs.
    let a = hub
        .queue
        .enqueue(sleep_job("user01", 3.0, 3))
        .await
        .unwrap()
        .id;
    // Only once `a` runs does `b` arrive, so it waits behind it in ComfyUI.
    wait_status(&hub, &a, &[Status::Running], 60).await;
    let b = hub
        .queue
        .enqueue(sleep_job("user02", 3.0, 4))
        .await
        .unwrap()
        .id;
    wait_status(&hub, &b, &[Status::Leased], 10).await;
    hub.queue.cancel(&b, &Actor::Admin).await.unwrap();
    let jb = wait_status(
        &hub,
        &b,
        &[Status::Cancelled, Status::Succeeded, Status::Failed],
        30,
    )
    .await;
    assert_eq!(jb.status, Status::Cancelled);
    let ja = wait_status(
        &hub,
        &a,
        &[Status::Succeeded, Status::Failed, Status::Cancelled],
        60,
    )
    .await;
    assert_eq!(ja.status, Status::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_three_participants_jobs_by_the_policy() {
    let redis = RedisServer::start();
    let (c1, c2) = (ComfyUi::start(), ComfyUi::start());
    let hub = TestHub::spawn(&redis, settings()).await;
    hub.queue.set_mode(Mode::RoundRobin).await.unwrap();
    // user01 queues first and most; round-robin still interleaves the others.
    let mut ids = vec![];
    for (n, u) in ["user01", "user01", "user01", "user01", "user02", "user03"]
        .iter()
        .enumerate()
    {
        ids.push(
            hub.queue
                .enqueue(sleep_job(u, 0.5, 100 + n as u64))
                .await
                .unwrap()
                .id,
        );
    }
    let _a = agent("gpu0", &c1, &hub, 1);
    let _b = agent("gpu1", &c2, &hub, 1);
    let mut workers = std::collections::HashSet::new();
    let mut order = vec![];
    for id in &ids {
        let j = wait_status(&hub, id, &[Status::Succeeded, Status::Failed], 120).await;
        assert_eq!(j.status, Status::Succeeded, "{j:?}");
        workers.insert(j.worker.clone().unwrap());
        // Fencing tokens number the leases in the order they were handed out.
        order.push((j.lease_token.unwrap(), j.participant.clone()));
    }
    assert_eq!(workers.len(), 2, "both workers ran jobs: {workers:?}");
    order.sort();
    let first_three: std::collections::HashSet<_> =
        order.iter().take(3).map(|(_, u)| u.clone()).collect();
    assert_eq!(
        first_three.len(),
        3,
        "round-robin leases one job of each participant first: {order:?}"
    );
}
