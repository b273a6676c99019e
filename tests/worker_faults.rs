//! Faults around real worker processes (`comfy-multi worker` binaries) on
//! real CPU ComfyUIs: a worker killed or frozen mid-job loses nothing — the
//! job completes on the other worker exactly once, and a frozen worker's
//! late report is refused.

mod support;
mod support_comfyui;

use comfy_multi::queue::{NewJob, QueueSettings, Status};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::hub::{TestHub, WORKER_TOKEN};
use support::RedisServer;
use support_comfyui::ComfyUi;

/// These tests time leases against real processes: one at a time, so that
/// several ComfyUIs starting at once on a small machine cannot stall a
/// heartbeat past a lease.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Worker {
    child: Child,
    _token_file: tempfile::NamedTempFile,
}

impl Worker {
    fn spawn(id: &str, comfy: &ComfyUi, hub: &TestHub) -> Worker {
        let token_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token_file.path(), WORKER_TOKEN).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_comfy-multi"))
            .args([
                "worker",
                "--id",
                id,
                "--capacity",
                "1",
                "--comfyui",
                &comfy.url,
                "--hub",
                &hub.url,
            ])
            .arg("--token-file")
            .arg(token_file.path())
            .env("COMFY_MULTI_CONFIG", "/dev/null")
            .env("COMFY_MULTI_WORKER__HEARTBEAT_MS", "300")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Worker {
            child,
            _token_file: token_file,
        }
    }

    fn signal(&self, s: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), s).unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sleep_job(participant: &str, seconds: f64, n: u64) -> NewJob {
    let path = format!(
        "{}/tests/comfyui_nodes/workflows/sleep_save.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut p: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for node in p.as_object_mut().unwrap().values_mut() {
        match node["class_type"].as_str() {
            Some("EmptyImage") => node["inputs"]["color"] = json!(n),
            Some("CMSleep") => node["inputs"]["seconds"] = json!(seconds),
            _ => {}
        }
    }
    NewJob {
        participant: participant.into(),
        prompt: p,
        ..Default::default()
    }
}

async fn wait_for(
    hub: &TestHub,
    id: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&comfy_multi::queue::Job) -> bool,
) -> comfy_multi::queue::Job {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let j = hub.queue.job(id).await.unwrap().expect("job exists");
        if ok(&j) {
            return j;
        }
        assert!(Instant::now() < deadline, "waited for {what}: {j:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn output_files(hub: &TestHub, participant: &str) -> Vec<String> {
    let mut out = vec![];
    let root = hub.dir(participant, "output");
    fn walk(d: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                out.push(e.path().display().to_string());
            }
        }
    }
    walk(&root, &mut out);
    out
}

fn settings() -> QueueSettings {
    QueueSettings {
        lease_ms: 2000,
        max_attempts: 5,
        ..QueueSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_completes_on_the_other_worker_exactly_once() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let (c1, c2) = (ComfyUi::start(), ComfyUi::start());
    let hub = TestHub::spawn(&redis, settings()).await;
    let workers = [
        Worker::spawn("gpu0", &c1, &hub),
        Worker::spawn("gpu1", &c2, &hub),
    ];
    let id = hub
        .queue
        .enqueue(sleep_job("user01", 3.0, 11))
        .await
        .unwrap()
        .id;
    let running = wait_for(&hub, &id, 60, "running", |j| j.status == Status::Running).await;
    let victim = running.worker.clone().unwrap();
    let t = Instant::now();
    workers[if victim == "gpu0" { 0 } else { 1 }].signal(Signal::SIGKILL);
    let done = wait_for(&hub, &id, 60, "success", |j| j.status.is_terminal()).await;
    println!("job recovered on {:?} after {:?}", done.worker, t.elapsed());
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    assert_ne!(done.worker.as_deref(), Some(victim.as_str()));
    assert_eq!(done.attempts, 1);
    assert_eq!(hub.queue.history("user01", 0, 10).await.unwrap().len(), 1);
    assert_eq!(output_files(&hub, "user01").len(), 1, "one result visible");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_workers_late_result_is_refused_and_the_rerun_stands() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let (c1, c2) = (ComfyUi::start(), ComfyUi::start());
    let hub = TestHub::spawn(&redis, settings()).await;
    let workers = [
        Worker::spawn("gpu0", &c1, &hub),
        Worker::spawn("gpu1", &c2, &hub),
    ];
    let id = hub
        .queue
        .enqueue(sleep_job("user01", 2.0, 12))
        .await
        .unwrap()
        .id;
    let running = wait_for(&hub, &id, 60, "running", |j| j.status == Status::Running).await;
    let victim = running.worker.clone().unwrap();
    let frozen = &workers[if victim == "gpu0" { 0 } else { 1 }];
    frozen.signal(Signal::SIGSTOP);
    let done = wait_for(&hub, &id, 60, "rerun", |j| j.status.is_terminal()).await;
    assert_eq!(done.status, Status::Succeeded);
    assert_ne!(done.worker.as_deref(), Some(victim.as_str()));
    // Its ComfyUI finished the first run meanwhile; now it wakes up and reports.
    frozen.signal(Signal::SIGCONT);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = hub.queue.job(&id).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Succeeded);
    assert_eq!(after.worker, done.worker, "the rerun's result stands");
    assert_eq!(after.outputs, done.outputs);
    assert_eq!(
        output_files(&hub, "user01").len(),
        1,
        "the late result was not stored"
    );
    // The woken worker keeps serving.
    let next = hub
        .queue
        .enqueue(sleep_job("user02", 0.2, 13))
        .await
        .unwrap()
        .id;
    let j = wait_for(&hub, &next, 60, "next job", |j| j.status.is_terminal()).await;
    assert_eq!(j.status, Status::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_comfyui_dies_mid_job_the_job_is_retried_and_finishes_after_it_returns() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let comfy = ComfyUi::start();
    let hub = TestHub::spawn(&redis, settings()).await;
    let _w = Worker::spawn("gpu0", &comfy, &hub);
    let id = hub
        .queue
        .enqueue(sleep_job("user01", 4.0, 21))
        .await
        .unwrap()
        .id;
    wait_for(&hub, &id, 60, "running", |j| j.status == Status::Running).await;
    comfy.crash();
    // Handed back at once (not after the lease), and not burnt on a dead ComfyUI.
    let back = wait_for(&hub, &id, 10, "requeued", |j| j.status == Status::Queued).await;
    assert_eq!(back.attempts, 1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let waiting = hub.queue.job(&id).await.unwrap().unwrap();
    assert_eq!(
        waiting.status,
        Status::Queued,
        "not given to a worker without ComfyUI: {waiting:?}"
    );
    assert!(waiting.attempts <= 2, "{waiting:?}");
    let _comfy = comfy.restart();
    let done = wait_for(&hub, &id, 90, "finished", |j| j.status.is_terminal()).await;
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    assert_eq!(output_files(&hub, "user01").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_hub_restarts_mid_job_the_worker_reconnects_and_delivers_its_result() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let comfy = ComfyUi::start();
    let mut hub = TestHub::spawn(
        &redis,
        QueueSettings {
            lease_ms: 8000,
            ..settings()
        },
    )
    .await;
    let _w = Worker::spawn("gpu0", &comfy, &hub);
    // Longer than a lease: heartbeats must keep it alive.
    let long = hub
        .queue
        .enqueue(sleep_job("user01", 10.0, 31))
        .await
        .unwrap()
        .id;
    let queued = hub
        .queue
        .enqueue(sleep_job("user02", 0.5, 32))
        .await
        .unwrap()
        .id;
    wait_for(&hub, &long, 60, "running", |j| j.status == Status::Running).await;
    hub.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    hub.start_again().await;
    let done = wait_for(&hub, &long, 60, "finished", |j| j.status.is_terminal()).await;
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    assert_eq!(
        done.attempts, 0,
        "the lease survived the hub restart and the 10 s run"
    );
    let next = wait_for(&hub, &queued, 60, "queued job", |j| j.status.is_terminal()).await;
    assert_eq!(next.status, Status::Succeeded);
    assert_eq!(output_files(&hub, "user01").len(), 1);
}
