//! The instructor's dashboard (`/admin/`) in headless Chromium, driven by
//! `tests/browser/admin_dashboard.mjs`, against a real Redis and a real hub
//! that also serves participant user01's editor on the same address (as
//! `comfy-multi up` does). No ComfyUI: this test plays the worker through
//! the queue API (lease, start, progress events), on the script's request.
//!
//! The script logs in at `/admin/login`, then asks this side, one line on
//! its stdout per request, to queue jobs, run one, or check what its
//! clicks did in Redis; each request gets one JSON line on its stdin. It
//! proves: jobs appear in the Queue panel within 1 s without a reload;
//! cancel (confirmed), move and priority change the queue; the mode switch
//! changes the queue's mode; a broadcast typed in the dashboard reaches
//! user01's open editor as a toast; a progress event moves the worker's
//! bar; a workflow file sent from the dashboard opens in user01's editor
//! in a new tab with a toast and is saved in their workflows; the worker's card names the model its agent reports loaded and its
//! warm-up progress; lock and pause take effect and show; an API error shows as a
//! message; the Gallery panel hides while `/admin/api/gallery` is 404 and
//! renders (and opens full size) once it answers. Screenshots, one of them
//! the dashboard at 1280×720, stay in `target/test-artifacts/admin-dashboard/`.

mod support;

use comfy_multi::auth::Credentials;
use comfy_multi::queue::{Mode, NewJob, Queue};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use support::hub::{TestHub, ADMIN_PASSWORD};
use support::RedisServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const BROADCAST: &str = "Lunch in 10 minutes: let your jobs finish.";

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/admin-dashboard");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn install_browser() {
    let install = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser/install.sh"
    ))
    .output()
    .unwrap();
    assert!(
        install.status.success(),
        "tests/browser/install.sh: {}",
        String::from_utf8_lossy(&install.stderr)
    );
}

/// One request of the script: does it and answers `{"ok": …}`.
async fn handle(queue: &Queue, state_dir: &Path, line: &str) -> Value {
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let fail = |e: String| json!({"ok": false, "error": e});
    match (cmd, args.as_slice()) {
        // Queue a job as a participant would (the frontend's submit path
        // ends in this same call).
        ("enqueue", [participant, name @ ..]) => {
            let job = NewJob {
                name: name.join(" "),
                ..support::job(participant, rand::random::<u32>() as u64)
            };
            match queue.enqueue(job).await {
                Ok(e) => json!({"ok": true, "id": e.id}),
                Err(e) => fail(format!("enqueue: {e}")),
            }
        }
        // Worker gpu0 takes the next job and starts it, then reports
        // ComfyUI progress for it, as the gateway relays it.
        ("run", [id]) => {
            let lease = match queue.lease("gpu0").await {
                Ok(Some(l)) => l,
                other => return fail(format!("lease: {other:?}")),
            };
            if lease.job_id != *id {
                return fail(format!("gpu0 leased {} not {id}", lease.job_id));
            }
            if let Err(e) = queue.start(id, lease.token).await {
                return fail(format!("start: {e}"));
            }
            json!({"ok": true})
        }
        ("progress", [id, participant, value, max]) => {
            let event = json!({"type": "job_event", "job": id, "event": {"type": "progress",
                "data": {"value": value.parse::<u32>().unwrap_or(0), "max": max.parse::<u32>().unwrap_or(0),
                         "prompt_id": id, "node": "3"}}});
            match queue.publish_event(participant, &event.to_string()).await {
                Ok(()) => json!({"ok": true}),
                Err(e) => fail(format!("publish: {e}")),
            }
        }
        // gpu0's agent reports a checkpoint loaded, and its warm-up is at
        // 1 of 2 workflows (as the gateway records it).
        ("warm", [file]) => {
            let tag = comfy_multi::catalogue::file_tag("CheckpointLoaderSimple", "ckpt_name", file);
            if let Err(e) = queue.report_warm("gpu0", u64::MAX, &[tag]).await {
                return fail(format!("report_warm: {e}"));
            }
            let mut info: Value = match queue.workers().await {
                Ok(w) => serde_json::from_str(w.get("gpu0").map(String::as_str).unwrap_or("{}"))
                    .unwrap_or_default(),
                Err(e) => return fail(format!("workers: {e}")),
            };
            info["warmup"] = json!({"state": "running", "done": 1, "total": 2});
            match queue.set_worker("gpu0", Some(&info.to_string())).await {
                Ok(()) => json!({"ok": true}),
                Err(e) => fail(format!("set_worker: {e}")),
            }
        }
        ("check-workflow", file) => {
            let path = state_dir
                .join("users/user01/user/workflows")
                .join(file.join(" "));
            match std::fs::read_to_string(&path) {
                Ok(t) if t.contains("Sent by the instructor") => json!({"ok": true}),
                other => fail(format!("{}: {other:?}", path.display())),
            }
        }
        ("check-status", [id, want]) => match queue.job(id).await {
            Ok(Some(j)) if j.status.as_str() == *want => json!({"ok": true}),
            other => fail(format!(
                "job {id} is {:?}, not {want}",
                other.map(|j| j.map(|j| j.status.as_str()))
            )),
        },
        ("check-mode", [want]) => match queue.runtime_settings().await {
            Ok(s) if s.mode.as_str() == *want => json!({"ok": true}),
            other => fail(format!("mode: {other:?}, not {want}")),
        },
        // The waiting jobs in this order, the first in the priority lane.
        ("check-order", ids) => match queue.snapshot(1).await {
            Ok(snap) => {
                let got: Vec<&str> = snap.waiting.iter().map(|w| w.job_id.as_str()).collect();
                if got != ids || !snap.waiting.first().is_some_and(|w| w.priority) {
                    fail(format!("waiting {got:?} (first priority: {:?}), not {ids:?} with the first prioritized",
                        snap.waiting.first().map(|w| w.priority)))
                } else {
                    json!({"ok": true})
                }
            }
            Err(e) => fail(format!("snapshot: {e}")),
        },
        ("check-broadcast", []) => match queue.last_broadcast().await {
            Ok(Some(b)) if b.message == BROADCAST => json!({"ok": true}),
            other => fail(format!("last broadcast: {other:?}")),
        },
        ("check-locked", [name]) => match queue.participants().await {
            Ok(ps) if ps.iter().any(|p| p.name == *name && p.locked) => json!({"ok": true}),
            other => fail(format!("{name} not locked: {other:?}")),
        },
        // The pool's state and burst policy as the queue enforces them.
        ("check-pool", [name, state, burst]) => match queue.pools(&[name.to_string()]).await {
            Ok(p)
                if p.iter().any(|p| {
                    p.name == *name && p.state.as_str() == *state && p.burst.to_string() == *burst
                }) =>
            {
                json!({"ok": true})
            }
            other => fail(format!("pool {name}: {other:?}, not {state} {burst}")),
        },
        ("check-paused", []) => match queue.runtime_settings().await {
            Ok(s) if s.paused_submit && s.paused_dispatch => json!({"ok": true}),
            other => fail(format!("not paused: {other:?}")),
        },
        _ => fail(format!("unknown request {line:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instructor_runs_the_workshop_from_the_live_dashboard() {
    install_browser();
    let redis = RedisServer::start();
    let user01 = Credentials::generate();
    // A rented pool the instructor switches from the Pools panel.
    let rented: comfy_multi::config::PoolConfig = serde_json::from_value(json!({
        "name": "rented", "kind": "agent", "price_per_gpu_hour": 2.5, "burst": "always",
    }))
    .unwrap();
    let hub =
        TestHub::spawn_with_editor_and_pools(&redis, "user01", user01.clone(), vec![rented]).await;
    // Worker gpu0 with its node catalogue (the editor needs it to boot).
    support::store_catalogue(&hub.queue).await;
    let out = artifacts();

    let mut child = tokio::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/admin_dashboard.mjs"
        ))
        .args(["--base", &hub.url])
        .args(["--admin-password", ADMIN_PASSWORD])
        .args(["--user", "user01", "--user-password", &user01.password])
        .args(["--broadcast", BROADCAST])
        .args(["--timeout-ms", "120000"])
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node is installed");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut requests = vec![];
    let session = tokio::time::timeout(Duration::from_secs(150), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let line = line.trim().to_string();
            let Some(request) = line.strip_prefix("request: ") else {
                println!("script: {line}");
                continue;
            };
            let answer = handle(&hub.queue, hub.state.path(), request).await;
            println!("script asked {request:?}: {answer}");
            requests.push((request.to_string(), answer.clone()));
            let mut reply = answer.to_string();
            reply.push('\n');
            if stdin.write_all(reply.as_bytes()).await.is_err() {
                break;
            }
        }
        child.wait().await.unwrap()
    })
    .await;
    let shots = std::fs::read_dir(&out)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().display().to_string())
                .collect::<Vec<_>>()
                .join("\n  ")
        })
        .unwrap_or_default();
    let status =
        session.unwrap_or_else(|_| panic!("the session took over 150 s; files:\n  {shots}"));
    let report: Value = std::fs::read(out.join("report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("the script wrote no report ({status}); files:\n  {shots}"));
    let context = format!(
        "report: {}\nfiles:\n  {shots}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    assert!(
        report["failed_step"].is_null(),
        "step {} failed: {}; {context}",
        report["failed_step"],
        report["error"]
    );
    assert!(status.success(), "the script failed ({status}); {context}");
    let step = |name: &str| report["steps"][name].clone();

    // Every check the script asked for held in Redis.
    for (request, answer) in &requests {
        assert_eq!(answer["ok"], true, "{request}: {answer}");
    }
    let asked = |prefix: &str| requests.iter().any(|(r, _)| r.starts_with(prefix));
    for needed in [
        "check-mode fifo",
        "check-status",
        "check-order",
        "check-broadcast",
        "check-locked user03",
        "check-paused",
    ] {
        assert!(
            asked(needed),
            "the script never asked {needed:?}; {context}"
        );
    }

    // Logged in through the login page; the page lists the participants.
    let s = step("admin-logs-in");
    assert!(
        s["login_page"].as_str().unwrap().ends_with("/admin/login"),
        "{s}"
    );
    assert_eq!(s["participants"], json!(["user01", "user02", "user03"]));
    assert_eq!(
        s["gallery_hidden"], false,
        "the hub offers a gallery: its panel shows"
    );
    // A new job shows within a second, without a reload.
    let s = step("a-queued-job-appears-live");
    assert!(s["ms"].as_u64().unwrap() < 1000, "{s}");
    assert_eq!(s["reloaded"], false);
    // The mode switched in the queue itself (checked above), and shows.
    assert_eq!(step("the-mode-switches")["shown"], "fifo");
    // The worker's card follows the job and its progress events.
    let s = step("the-worker-shows-the-running-job");
    assert_eq!(s["state"], "busy");
    assert_eq!(s["progress"], "50");
    // The broadcast reached the participant's editor.
    let toast = step("a-broadcast-reaches-the-editor")["toast"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(toast.contains(BROADCAST), "{toast}");
    assert_eq!(
        hub.queue.runtime_settings().await.unwrap().mode,
        Mode::Fifo,
        "nothing switched it back"
    );
    // Errors are shown, not swallowed.
    assert!(step("an-api-error-is-shown")["message"]
        .as_str()
        .unwrap()
        .contains("the hub said no"));
    let s = step("pause-shows-as-paused");
    assert_eq!(s["pill"], "❚❚ PAUSED");
    assert!(s["chart_samples"].as_u64().unwrap() >= 1, "{s}");
    let shot = out.join("dashboard-1280x720.png");
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(png.starts_with(b"\x89PNG"), "{}", shot.display());
    assert_eq!(step("the-gallery-renders-when-offered")["tiles"], 2);
    assert_eq!(report["page_errors"], json!([]), "{context}");
}
