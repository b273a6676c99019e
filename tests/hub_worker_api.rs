//! The hub's worker-facing HTTP: worker tokens are required, files move only
//! under the job's current lease, names stay inside the participant's
//! folder — and `[[workers]]` in the hub's config run jobs on a remote
//! ComfyUI with nothing installed beside it.

mod support;
mod support_comfyui;

use comfy_multi::queue::{NewJob, QueueSettings, Status};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::hub::{TestHub, WORKER_TOKEN};
use support::RedisServer;

async fn leased(hub: &TestHub) -> (String, u64) {
    hub.queue.enqueue(support::job("user01", 1)).await.unwrap();
    let l = hub.queue.lease("w1").await.unwrap().unwrap();
    (l.job_id, l.token)
}

#[tokio::test]
async fn worker_routes_refuse_requests_without_a_valid_worker_token() {
    let redis = RedisServer::start();
    let hub = TestHub::spawn(&redis, QueueSettings::default()).await;
    let (job, token) = leased(&hub).await;
    let http = reqwest::Client::new();
    let url = format!(
        "{}/worker/v1/jobs/{job}/input?token={token}&name=a.png",
        hub.url
    );
    for auth in [None, Some("Bearer wrong"), Some("Basic eA==")] {
        let mut r = http.get(&url);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        assert_eq!(r.send().await.unwrap().status(), 401, "{auth:?}");
    }
    let ws = http
        .get(format!("{}/worker/v1/connect", hub.url))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(ws.status(), 401);
}

#[tokio::test]
async fn files_move_only_under_the_current_lease_and_inside_the_participants_folder() {
    let redis = RedisServer::start();
    let hub = TestHub::spawn(&redis, QueueSettings::default()).await;
    let (job, token) = leased(&hub).await;
    std::fs::create_dir_all(hub.dir("user01", "input")).unwrap();
    std::fs::write(hub.dir("user01", "input").join("a.png"), b"pixels").unwrap();
    std::fs::create_dir_all(hub.dir("user02", "input")).unwrap();
    std::fs::write(hub.dir("user02", "input").join("secret.png"), b"theirs").unwrap();
    let http = reqwest::Client::new();
    let get = |q: String| {
        http.get(format!("{}/worker/v1/jobs/{job}/input?{q}", hub.url))
            .bearer_auth(WORKER_TOKEN)
            .send()
    };
    let ok = get(format!("token={token}&name=a.png")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.unwrap().as_ref(), b"pixels");
    for name in [
        "../user02/input/secret.png",
        "/etc/passwd",
        "..%2F..%2Fetc%2Fpasswd",
        "missing.png",
    ] {
        let r = get(format!("token={token}&name={name}")).await.unwrap();
        assert_eq!(r.status(), 404, "{name}");
    }
    assert_eq!(
        get(format!("token={}&name=a.png", token + 1))
            .await
            .unwrap()
            .status(),
        409
    );

    let put = |q: String, body: &'static [u8]| {
        http.post(format!("{}/worker/v1/jobs/{job}/output?{q}", hub.url))
            .bearer_auth(WORKER_TOKEN)
            .body(body)
            .send()
    };
    let r = put(
        format!("token={token}&type=output&subfolder=&filename=out.png"),
        b"one",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let stored: serde_json::Value = r.json().await.unwrap();
    assert_eq!(stored["filename"], "out.png");
    let r = put(
        format!("token={token}&type=output&subfolder=&filename=out.png"),
        b"two",
    )
    .await
    .unwrap();
    let stored: serde_json::Value = r.json().await.unwrap();
    assert_eq!(stored["filename"], "out (1).png", "never overwritten");
    assert_eq!(
        std::fs::read(hub.dir("user01", "output").join("out.png")).unwrap(),
        b"one"
    );
    for q in [
        format!("token={token}&type=output&subfolder=..&filename=x.png"),
        format!("token={token}&type=output&subfolder=&filename=..%2Fx.png"),
        format!("token={token}&type=input&subfolder=&filename=x.png"),
    ] {
        assert_eq!(put(q.clone(), b"x").await.unwrap().status(), 400, "{q}");
    }
    assert_eq!(
        put(
            format!("token={}&type=output&subfolder=&filename=y.png", token + 1),
            b"x"
        )
        .await
        .unwrap()
        .status(),
        409
    );
    assert!(!hub.dir("user01", "output").join("y.png").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_with_a_workers_entry_runs_jobs_on_that_remote_comfyui() {
    let redis = RedisServer::start();
    let comfy = support_comfyui::ComfyUi::start();
    let state = tempfile::tempdir().unwrap();
    let prefix = support::unique_prefix();
    let config = state.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[redis]\nurl = {:?}\nkey_prefix = {prefix:?}\n[hub]\nlisten = \"127.0.0.1:0\"\n\n[[workers]]\nid = \"remote-1\"\ncomfyui_url = {:?}\n",
            state.path(),
            redis.url(),
            comfy.url
        ),
    )
    .unwrap();
    let mut hub = Command::new(env!("CARGO_BIN_EXE_comfy-multi"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = hub.stderr.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
    let q = comfy_multi::queue::Queue::connect(&redis.url(), &prefix, QueueSettings::default())
        .await
        .unwrap();
    let path = format!(
        "{}/tests/comfyui_nodes/workflows/invert.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut prompt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for node in prompt.as_object_mut().unwrap().values_mut() {
        if node["class_type"] == "EmptyImage" {
            node["inputs"]["color"] = serde_json::json!(31337);
        }
    }
    let id = q
        .enqueue(NewJob {
            participant: "user01".into(),
            prompt,
            ..Default::default()
        })
        .await
        .unwrap()
        .id;
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let j = q.job(&id).await.unwrap().unwrap();
        if j.status.is_terminal() {
            break j;
        }
        assert!(Instant::now() < deadline, "job did not finish: {j:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = hub.kill();
    let _ = hub.wait();
    assert_eq!(job.status, Status::Succeeded, "{job:?}");
    assert_eq!(job.worker.as_deref(), Some("remote-1"));
    assert!(state
        .path()
        .join("users/user01/output")
        .read_dir()
        .unwrap()
        .next()
        .is_some());
}

/// The worker routes of `hub::router`, as its source writes them:
/// `(method, path)` with the job's placeholders.
fn worker_routes() -> Vec<(&'static str, String)> {
    let src = include_str!("../src/hub/mod.rs");
    let start = src.find("pub fn router(").expect("hub::router");
    let body = &src[start..start + src[start..].find("\n}\n").unwrap()];
    let mut out = vec![];
    for (at, _) in body.match_indices(".route(") {
        let rest = &body[at + ".route(".len()..];
        let (path, handler) = rest.split_once(',').unwrap();
        let path = match path.trim() {
            "crate::protocol::CONNECT_PATH" => comfy_multi::protocol::CONNECT_PATH.to_string(),
            lit => lit.trim_matches('"').to_string(),
        };
        let method = if handler.trim_start().starts_with("post(") {
            "POST"
        } else {
            "GET"
        };
        if path.starts_with("/worker/") {
            out.push((method, path));
        }
    }
    out
}

/// Participants' and the instructor's credentials — tokens and cookies
/// from real logins on the hub's own address, as `comfy-multi up` serves
/// them — open no worker route, the socket included.
#[tokio::test]
async fn participant_and_admin_credentials_open_no_worker_route() {
    use support::hub::{participant_login, ADMIN_PASSWORD, ADMIN_TOKEN};
    use support::report::{Record, Section};
    let routes = worker_routes();
    assert_eq!(routes.len(), 3, "the parse found {routes:?}");
    let redis = RedisServer::start();
    let hub = TestHub::spawn_with(&redis, QueueSettings::default(), |queue, state| {
        let fs = comfy_multi::frontend::FrontendState::new(
            "user01",
            queue.clone(),
            state.join("static"),
            state.join("users/user01"),
            1 << 20,
        )
        .with_login(participant_login("user01"), b"session-secret", false);
        Some(comfy_multi::frontend::routes(fs))
    })
    .await;
    let (job, token) = leased(&hub).await;
    std::fs::create_dir_all(hub.dir("user01", "input")).unwrap();
    std::fs::write(hub.dir("user01", "input").join("a.png"), b"pixels").unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie_of = |r: reqwest::Response| {
        assert_eq!(r.status(), 303, "login");
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        set.split(';').next().unwrap().to_string()
    };
    let admin_cookie = cookie_of(
        http.post(format!("{}/admin/login", hub.url))
            .form(&[("password", ADMIN_PASSWORD)])
            .send()
            .await
            .unwrap(),
    );
    let user01 = participant_login("user01");
    let participant_cookie = cookie_of(
        http.post(format!("{}/user01/login", hub.url))
            .form(&[("password", user01.password.as_str())])
            .send()
            .await
            .unwrap(),
    );
    let credentials = [
        ("nothing", "x-none", "1".to_string()),
        (
            "admin token",
            "authorization",
            format!("Bearer {ADMIN_TOKEN}"),
        ),
        ("admin cookie", "cookie", admin_cookie),
        (
            "participant token",
            "authorization",
            format!("Bearer {}", user01.token),
        ),
        ("participant cookie", "cookie", participant_cookie),
        (
            "participant password as a token",
            "authorization",
            format!("Bearer {}", user01.password),
        ),
    ];
    let mut calls = 0;
    let mut failures = vec![];
    for (method, path) in &routes {
        let path = path.replace("{job}", &job);
        let url = format!("{}{path}", hub.url);
        for (what, header, value) in &credentials {
            let req = match (*method, path.ends_with("/connect")) {
                (_, true) => http
                    .get(&url)
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .header("sec-websocket-version", "13")
                    .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("POST", _) => http
                    .post(format!(
                        "{url}?token={token}&type=output&subfolder=&filename=x.png"
                    ))
                    .body("x"),
                _ => http.get(format!("{url}?token={token}&name=a.png")),
            };
            let status = req.header(*header, value).send().await.unwrap().status();
            calls += 1;
            if status != 401 {
                failures.push(format!("{method} {path} with {what}: {status}"));
            }
        }
    }
    // The control: the worker token opens the input route.
    let control = http
        .get(format!(
            "{}/worker/v1/jobs/{job}/input?token={token}&name=a.png",
            hub.url
        ))
        .bearer_auth(WORKER_TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    let wrote = hub.dir("user01", "output").join("x.png").exists();
    let mut r = Record::new(
        Section::Input,
        "input-auth-worker-routes",
        "Every worker route × participants' and the instructor's credentials",
    )
    .setup(format!(
        "{} worker routes parsed from src/hub/mod.rs (the socket too) on a hub that also serves user01's editor; {} credentials from real logins",
        routes.len(),
        credentials.len()
    ))
    .measure("calls", calls)
    .measure("answered other than 401", failures.len())
    .measure("worker token (control)", control.as_u16());
    r.passed = failures.is_empty() && control == 200 && !wrote;
    r.write();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(control, 200);
    assert!(!wrote, "an output was stored without a worker token");
}

/// Uploads `bytes` as an output of `job` under `token`; the status and the
/// stored name.
async fn put_output(hub: &TestHub, job: &str, token: u64, name: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!(
            "{}/worker/v1/jobs/{job}/output?token={token}&type=output&filename={name}",
            hub.url
        ))
        .bearer_auth(WORKER_TOKEN)
        .body(format!("pixels of {token}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (status, body["filename"].as_str().unwrap_or("").to_string())
}

/// The next message of type `want` on a worker socket (10 s at most).
async fn next_msg(
    ws: &mut support::hub::WorkerWs,
    want: &'static str,
) -> Option<serde_json::Value> {
    support::hub::next_hub_msg(ws, Duration::from_secs(10), |v| v["type"] == want).await
}

fn output_names(hub: &TestHub) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(hub.dir("user01", "output"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_attempts_output_is_removed_so_the_participant_sees_one_result() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let redis = RedisServer::start();
    let hub = TestHub::spawn(
        &redis,
        QueueSettings {
            max_attempts: 3,
            ..QueueSettings::default()
        },
    )
    .await;
    // Attempt 1 uploads its output, then loses its lease before finishing.
    let (job, t1) = leased(&hub).await;
    let (status, first) = put_output(&hub, &job, t1, "x_00001_.png").await;
    assert_eq!(status, 200);
    hub.queue
        .requeue_expired_after(24 * 3_600_000)
        .await
        .unwrap();
    // Too late now: refused, and nothing is left of it.
    let (late, _) = put_output(&hub, &job, t1, "late.png").await;
    assert_eq!(late, 409);
    assert_eq!(output_names(&hub), vec![first.clone()]);

    // Attempt 2 runs on a worker connected to the hub and reports its result.
    let mut ws = support::hub::worker_socket(&hub).await;
    let register = serde_json::json!({"type": "register", "worker": "w2", "capacity": 1,
        "comfyui_url": "http://127.0.0.1:1", "object_info_digest": "d1"});
    ws.send(Message::Text(register.to_string().into()))
        .await
        .unwrap();
    let lease = next_msg(&mut ws, "job").await.expect("a lease");
    let t2 = lease["lease"]["token"].as_u64().unwrap();
    assert_eq!(lease["lease"]["job_id"], job.as_str());
    let (status, second) = put_output(&hub, &job, t2, "x_00001_.png").await;
    assert_eq!(status, 200);
    assert_ne!(second, first, "a second file beside the first");
    let finished = serde_json::json!({"type": "finished", "job": job, "token": t2,
        "outcome": "succeeded", "outputs": {"9": {"images": [
            {"filename": second, "subfolder": "", "type": "output"}]}}});
    ws.send(Message::Text(finished.to_string().into()))
        .await
        .unwrap();
    let ack = next_msg(&mut ws, "ack").await.expect("an ack");
    assert_eq!(ack["token"], t2, "the ack names the attempt");
    let done = hub.queue.job(&job).await.unwrap().unwrap();
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(
        output_names(&hub),
        vec![second],
        "only the recorded result is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_reaper_fails_for_good_leaves_no_output_behind() {
    let redis = RedisServer::start();
    let hub = TestHub::spawn(
        &redis,
        QueueSettings {
            max_attempts: 1,
            lease_ms: 300,
            ..QueueSettings::default()
        },
    )
    .await;
    let (job, token) = leased(&hub).await;
    let (status, _) = put_output(&hub, &job, token, "x_00001_.png").await;
    assert_eq!(status, 200);
    assert_eq!(output_names(&hub).len(), 1);
    // No heartbeat: the hub's reaper fails the job once the lease is over.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let j = hub.queue.job(&job).await.unwrap().unwrap();
        if j.status == Status::Failed && output_names(&hub).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{j:?} with files {:?}",
            output_names(&hub)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_absurd_catalogue_from_a_worker_keeps_what_is_sane_and_loses_no_job() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let redis = RedisServer::start();
    let hub = TestHub::spawn(&redis, QueueSettings::default()).await;
    let sd =
        comfy_multi::catalogue::file_tag("CheckpointLoaderSimple", "ckpt_name", "sd.safetensors");
    let mut ws = support::hub::worker_socket(&hub).await;
    let mut caps = vec![
        "node:EmptyImage".to_string(),
        "node:SaveImage".into(),
        sd.clone(),
        "file:X\ty\ta\nnode:Injected".into(),
        "x".repeat(1 << 20),
    ];
    caps.extend((0..50_000).map(|i| format!("node:Junk{i}")));
    let register = serde_json::json!({"type": "register", "worker": "odd", "capacity": 1,
        "comfyui_url": "http://127.0.0.1:1", "object_info_digest": "d1",
        "caps": caps, "model_inputs": [["CheckpointLoaderSimple", "ckpt_name"], [1, 2, 3]]});
    ws.send(Message::Text(register.to_string().into()))
        .await
        .unwrap();
    // A registration with a malformed field is not read: the hub says so
    // and keeps nothing of it; the worker is not counted as able to run
    // anything it never validly reported.
    let answer = next_msg(&mut ws, "error").await;
    assert!(
        answer.is_some(),
        "the worker is told its registration was unreadable"
    );

    // A sane one: the newline-split tag and the megabyte tag are dropped,
    // the rest kept; a job needing the checkpoint reaches this worker.
    let mut ws = support::hub::worker_socket(&hub).await;
    let register = serde_json::json!({"type": "register", "worker": "odd", "capacity": 1,
        "comfyui_url": "http://127.0.0.1:1", "object_info_digest": "d1",
        "caps": caps, "model_inputs": [["CheckpointLoaderSimple", "ckpt_name"]]});
    ws.send(Message::Text(register.to_string().into()))
        .await
        .unwrap();
    let mut job = support::job("user01", 1);
    job.requires = vec!["node:EmptyImage".into(), sd.clone()];
    let id = hub.queue.enqueue(job).await.unwrap().id;
    let lease = next_msg(&mut ws, "job").await.expect("a lease");
    assert_eq!(lease["lease"]["job_id"], id.as_str());
    let mut injected = support::job("user01", 2);
    injected.requires = vec!["node:Injected".into()];
    let refused = hub
        .queue
        .enqueue(injected)
        .await
        .expect_err("no worker has it");
    assert_eq!(
        refused.refusal(),
        Some(comfy_multi::queue::Refusal::NotOnAnyWorker),
        "a tag smuggled in with a newline is not a capability"
    );
    assert_eq!(
        hub.queue.job(&id).await.unwrap().unwrap().status,
        Status::Leased,
        "nothing lost"
    );
}
