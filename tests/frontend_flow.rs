//! ComfyUI's own scripted-client flow through a participant's frontend,
//! against the real hub, a real worker agent and a real CPU ComfyUI:
//! connect `/ws?clientId=X`, `POST /prompt` with `client_id` X and a
//! client `prompt_id`, wait for `executing` with node=null for that prompt,
//! `GET /history/{id}`, `GET /view` of each output. Another participant's
//! socket and endpoints see none of it.

mod support;
mod support_comfyui;

use comfy_multi::frontend::{run, FrontendState};
use comfy_multi::worker::{run_agent, AgentConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use support::hub::{TestHub, WORKER_TOKEN};
use support::RedisServer;
use support_comfyui::ComfyUi;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

async fn frontend(hub: &TestHub, participant: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/{participant}", listener.local_addr().unwrap());
    let state = FrontendState::new(
        participant,
        hub.queue.clone(),
        hub.state.path().join("no-static"),
        hub.state.path().join("users").join(participant),
        1 << 20,
    );
    tokio::spawn(run(listener, state, CancellationToken::new()));
    url
}

/// A worker agent for `comfy` on `hub`; stops when the token is cancelled.
fn start_agent(comfy: &ComfyUi, hub: &TestHub) -> CancellationToken {
    let stop = CancellationToken::new();
    let cfg = AgentConfig {
        id: "gpu0".into(),
        comfyui_url: comfy.url.clone(),
        hub_url: hub.url.clone(),
        token: WORKER_TOKEN.into(),
        capacity: 2,
        heartbeat: Duration::from_millis(500),
        pool: comfy_multi::pool::DEFAULT_POOL.into(),
        headers: vec![],
        starting: None,
    };
    tokio::spawn(run_agent(cfg, stop.clone()));
    stop
}

fn invert(color: u64) -> Value {
    let path = format!(
        "{}/tests/comfyui_nodes/workflows/invert.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut p: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for node in p.as_object_mut().unwrap().values_mut() {
        if node["class_type"] == "EmptyImage" {
            node["inputs"]["color"] = json!(color);
        }
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_client_queues_waits_reads_history_and_views_outputs() {
    let redis = RedisServer::start();
    let comfy = ComfyUi::start();
    let hub = TestHub::spawn(&redis, Default::default()).await;
    let stop = start_agent(&comfy, &hub);
    let mine = frontend(&hub, "user07").await;
    let theirs = frontend(&hub, "user08").await;
    // The worker's catalogue must be stored before prompts can be checked.
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http
            .get(format!("{mine}/object_info"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ws_url =
        |base: &str, id: &str| format!("{}/ws?clientId={id}", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&mine, "client-x"))
        .await
        .unwrap();
    let (mut other_ws, _) = tokio_tungstenite::connect_async(ws_url(&theirs, "client-y"))
        .await
        .unwrap();
    let first: Value = match ws.next().await.unwrap().unwrap() {
        Message::Text(t) => serde_json::from_str(&t).unwrap(),
        m => panic!("{m:?}"),
    };
    assert_eq!(first["type"], "status");
    assert_eq!(first["data"]["sid"], "client-x");

    let prompt_id = uuid::Uuid::new_v4().to_string();
    // Script clients send JSON with a form Content-Type: accepted.
    let r = http
        .post(format!("{mine}/prompt"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            json!({"prompt": invert(777), "client_id": "client-x", "prompt_id": prompt_id})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ok: Value = r.json().await.unwrap();
    assert_eq!(ok["prompt_id"], prompt_id.as_str());

    let mut kinds = vec![];
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                kinds.push(v["type"].as_str().unwrap_or("").to_string());
                if v["type"] == "executing"
                    && v["data"]["node"].is_null()
                    && v["data"]["prompt_id"] == prompt_id.as_str()
                {
                    return;
                }
            }
        }
    })
    .await;
    assert!(done.is_ok(), "no end marker; saw {kinds:?}");
    for k in ["execution_start", "executed", "execution_success", "status"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing in {kinds:?}");
    }

    let history: Value = http
        .get(format!("{mine}/history/{prompt_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = &history[&prompt_id];
    assert_eq!(entry["status"]["status_str"], "success");
    let images: Vec<Value> = entry["outputs"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|o| o["images"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(!images.is_empty(), "{entry}");
    for img in &images {
        let r = http
            .get(format!("{mine}/view"))
            .query(&[
                ("filename", img["filename"].as_str().unwrap()),
                ("subfolder", img["subfolder"].as_str().unwrap()),
                ("type", "output"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap().starts_with(b"\x89PNG"));
        // Not from another participant's frontend.
        let r = http
            .get(format!("{theirs}/view"))
            .query(&[
                ("filename", img["filename"].as_str().unwrap()),
                ("subfolder", img["subfolder"].as_str().unwrap()),
                ("type", "output"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let q: Value = http
        .get(format!("{mine}/queue"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(q, json!({"queue_running": [], "queue_pending": []}));
    // The other participant saw nothing of it.
    let theirs_history: Value = http
        .get(format!("{theirs}/history/{prompt_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs_history, json!({}));
    let _ = other_ws.send(Message::Ping(vec![].into())).await;
    let leaked = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(Ok(m)) = other_ws.next().await {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "status" || v["data"]["status"]["exec_info"]["queue_remaining"] != 0
                {
                    return Some(v);
                }
            }
        }
        None
    })
    .await;
    assert!(
        !matches!(leaked, Ok(Some(_))),
        "leaked to user08: {leaked:?}"
    );

    // A prompt naming a node no worker has: ComfyUI's 400 shape, nothing queued.
    let r = http
        .post(format!("{mine}/api/prompt"))
        .json(&json!({"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "missing_node_type");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("NoSuchNode"));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_queues_in_the_real_editor_and_sees_the_output_image() {
    let redis = RedisServer::start();
    let comfy = ComfyUi::start();
    let hub = TestHub::spawn(&redis, Default::default()).await;
    let stop = start_agent(&comfy, &hub);
    // The pinned web app, served by this participant's frontend.
    let install = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/frontend/install.sh"
    ))
    .output()
    .unwrap();
    assert!(install.status.success());
    let stdout = String::from_utf8_lossy(&install.stdout).to_string();
    let static_dir = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("frontend-static: "))
        .unwrap()
        .trim()
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/user07/", listener.local_addr().unwrap());
    let state = FrontendState::new(
        "user07",
        hub.queue.clone(),
        static_dir.into(),
        hub.state.path().join("users/user07"),
        1 << 20,
    );
    tokio::spawn(run(listener, state, stop.clone()));
    let browser = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    let install = std::process::Command::new(format!("{browser}/install.sh"))
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    // Wait for the worker's catalogue (the editor needs it to know the nodes).
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http
            .get(format!("{url}api/object_info"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("editor-run");
    let wf = out.join("workflow.json");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(&wf, invert(4321).to_string()).unwrap();
    let (out2, wf2) = (out.clone(), wf.clone());
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(format!("{browser}/run_workflow.mjs"))
            .args(["--url", &url, "--workflow"])
            .arg(&wf2)
            .arg("--out")
            .arg(&out2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        run.status.success(),
        "the output did not appear (screenshot in {}): {}",
        out.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    assert!(report["image"]["width"].as_u64().unwrap() > 0);
    let stored = hub.state.path().join("users/user07/output");
    assert!(
        stored.read_dir().unwrap().next().is_some(),
        "the output is in the participant's folder"
    );
    stop.cancel();
}
