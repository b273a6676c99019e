//! A workshop session as a participant lives it, in the real ComfyUI editor
//! (frontend 1.58.1 in headless Chromium, driven by
//! `tests/browser/workshop_session.mjs`), against everything real: Redis,
//! the hub, a worker agent on a CPU ComfyUI, and two participants' editors
//! with logins on one address (as `comfy-multi up` serves them).
//!
//! The script logs in, opens a pre-loaded workflow from the Workflows
//! sidebar, presses Run, waits for the output image, waits for the
//! instructor's broadcast toast, reloads, and checks the queue panel; a
//! second browser logs in as the other participant and sees nothing of it.
//! Screenshots go to `target/test-artifacts/workshop-session/`.

mod support;
mod support_comfyui;

use comfy_multi::auth::Credentials;
use comfy_multi::frontend::FrontendState;
use comfy_multi::worker::{run_agent, AgentConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use support::hub::{TestHub, WORKER_TOKEN};
use support::RedisServer;
use support_comfyui::ComfyUi;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

const BROADCAST: &str = "Coffee break in 5 minutes: let your jobs finish.";

/// Everything a session needs, running in this process (plus Redis,
/// ComfyUI and, later, Chromium).
struct Workshop {
    _redis: RedisServer,
    hub: TestHub,
    stop: CancellationToken,
    base: String,
    logins: Vec<(String, Credentials)>,
}

impl Drop for Workshop {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn workshop(comfy: &ComfyUi) -> Workshop {
    let redis = RedisServer::start();
    let hub = TestHub::spawn(&redis, Default::default()).await;
    let stop = CancellationToken::new();
    let cfg = AgentConfig {
        id: "gpu0".into(),
        comfyui_url: comfy.url.clone(),
        hub_url: hub.url.clone(),
        token: WORKER_TOKEN.into(),
        capacity: 1,
        heartbeat: Duration::from_millis(500),
        pool: comfy_multi::pool::DEFAULT_POOL.into(),
        headers: vec![],
        starting: None,
    };
    tokio::spawn(run_agent(cfg, stop.clone()));

    let static_dir = comfy_multi::frontend::find_static_dir(None)
        .expect("the ComfyUI web app (run scripts/frontend/install.sh)");
    let workflows = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut app = axum::Router::new();
    let mut logins = vec![];
    for name in ["user01", "user02"] {
        let user_dir = hub.state.path().join("users").join(name);
        let seeded = comfy_multi::frontend::seed_workflows(&workflows, &user_dir)
            .await
            .unwrap();
        assert!(seeded > 0, "the pre-loaded workflows are seeded");
        let creds = Credentials::generate();
        let state = FrontendState::new(
            name,
            hub.queue.clone(),
            static_dir.clone(),
            user_dir,
            64 << 20,
        )
        .with_login(creds.clone(), b"a-session-secret-for-the-test", false);
        app = app.merge(comfy_multi::frontend::routes(state));
        logins.push((name.to_string(), creds));
    }
    let app = app.merge(comfy_multi::frontend::assets(&static_dir));
    let shutdown = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });

    // The editor needs the worker's node catalogue to know the nodes.
    let http = reqwest::Client::new();
    let token = &logins[0].1.token;
    let mut ready = false;
    for _ in 0..300 {
        let r = http
            .get(format!("{base}/user01/api/object_info"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the worker's node catalogue never reached the hub");
    Workshop {
        _redis: redis,
        hub,
        stop,
        base,
        logins,
    }
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/workshop-session");
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

/// Every screenshot the script saved, for failure messages.
fn screenshots(dir: &Path) -> String {
    let mut shots: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "png"))
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    shots.sort();
    shots.join("\n  ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_logs_in_runs_a_preloaded_workflow_hears_the_instructor_and_keeps_their_jobs_private(
) {
    install_browser();
    let comfy = ComfyUi::shared();
    let w = workshop(comfy).await;
    let out = artifacts();

    let mut child = tokio::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/workshop_session.mjs"
        ))
        .arg("--base")
        .arg(&w.base)
        .args(["--user-a", &w.logins[0].0, "--password-a"])
        .arg(&w.logins[0].1.password)
        .args(["--user-b", &w.logins[1].0, "--password-b"])
        .arg(&w.logins[1].1.password)
        .args(["--workflow", "demo/01-solid-color-invert.json"])
        .args(["--broadcast", BROADCAST])
        .args(["--timeout-ms", "120000"])
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node is installed");
    // The script says when its editor is up and waiting for the
    // instructor; only then is the broadcast sent (so that it is the live
    // socket event, not the status call on page load, that shows it).
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let session = tokio::time::timeout(Duration::from_secs(150), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            println!("script: {line}");
            if line.trim() == "waiting-for-broadcast" {
                w.hub.queue.broadcast(BROADCAST).await.unwrap();
            }
        }
        child.wait().await.unwrap()
    })
    .await;
    let shots = screenshots(&out);
    let status = session
        .unwrap_or_else(|_| panic!("the browser session took over 150 s; screenshots:\n  {shots}"));
    let report: Value = std::fs::read(out.join("report.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| {
            panic!("the script wrote no report ({status}); screenshots:\n  {shots}")
        });
    let context = format!(
        "report: {}\nscreenshots:\n  {shots}",
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
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();

    // 1. The login page first, then the editor, which knows the nodes.
    let s = step("a-logs-in");
    assert_eq!(text(&s["login_page"]), format!("{}/user01/login", w.base));
    assert_eq!(text(&s["editor"]), format!("{}/user01/", w.base));
    assert!(s["registered_node_types"].as_u64().unwrap() > 100, "{s}");
    // 2. Our extension names the participant.
    assert!(text(&step("a-sees-their-name")["pill"]).starts_with("user01 "));
    // 3. The pre-loaded workflow, opened from the sidebar, every node known,
    // queued by the Run button.
    let s = step("a-opens-the-workflow-and-runs-it");
    assert_eq!(
        s["active_workflow"],
        "workflows/demo/01-solid-color-invert.json"
    );
    let nodes = s["nodes"].as_array().unwrap();
    assert!(
        nodes.len() >= 4 && nodes.iter().all(|n| n["known"] == true),
        "{s}"
    );
    let prompt_id = text(&s["prompt_id"]);
    let job = w
        .hub
        .queue
        .job_of("user01", &prompt_id)
        .await
        .unwrap()
        .expect("the Run button queued a job for user01");
    assert_eq!(job.status.as_str(), "succeeded");
    assert!(w
        .hub
        .queue
        .job_of("user02", &prompt_id)
        .await
        .unwrap()
        .is_none());
    // 4. The saved image is the participant's, and the editor showed it.
    let saved = step("a-sees-the-output-image")["saved"].clone();
    let file = w
        .hub
        .dir("user01", "output")
        .join(text(&saved["subfolder"]))
        .join(text(&saved["filename"]));
    assert!(
        std::fs::read(&file).unwrap().starts_with(b"\x89PNG"),
        "{}",
        file.display()
    );
    // 5. The instructor's broadcast as a toast.
    assert!(text(&step("a-sees-the-instructors-broadcast")["toast"]).contains(BROADCAST));
    // 6. After a reload: still logged in, the job still listed.
    let s = step("a-reloads-and-still-has-the-job");
    assert!(!text(&s["url"]).contains("/login"), "{s}");
    assert_eq!(text(&s["listed_job"]), prompt_id);
    assert!(
        text(&s["thumbnail"]["src"]).contains("/user01/api/view?"),
        "{s}"
    );
    // 7. The other participant: no jobs, no way to A's image.
    let s = step("b-sees-none-of-their-jobs");
    assert_eq!(text(&s["login_page"]), format!("{}/user02/login", w.base));
    assert!(text(&s["pill"]).starts_with("user02 "));
    assert_eq!(s["listed_jobs"], 0, "{s}");
    assert_eq!(s["api_jobs"], 0, "{s}");
    assert_eq!(s["view_of_a"]["their_path"], 401);
    assert_eq!(s["view_of_a"]["own_path"], 404);
    assert_eq!(
        text(&s["view_of_a"]["opened"]["url"]),
        format!("{}/user01/login", w.base)
    );

    // Nothing broke in the pages, and our server refused nothing the editor
    // asked for, except ComfyUI's own 404 for user files that do not exist
    // and B's deliberate tries at A's image.
    assert_eq!(report["page_errors"], serde_json::json!([]), "{context}");
    let unexpected: Vec<&Value> = report["http_errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| text(&e["url"]).starts_with(&w.base))
        .filter(|e| {
            let url = text(&e["url"]);
            let missing_user_file = e["status"] == 404 && url.contains("/api/userdata");
            let b_probing = e["who"] == "B" && url.contains("/api/view?");
            !missing_user_file && !b_probing
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "the server answered the editor with errors: {unexpected:#?}\nscreenshots:\n  {shots}"
    );
}
