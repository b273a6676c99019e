//! A participant's frontend serves the real ComfyUI editor under
//! `/<participant>/` with the API the app calls at boot; proven with plain
//! HTTP and in headless Chromium (the pinned frontend 1.58.1 wheel).

mod support;

use comfy_multi::frontend::{run, FrontendState};
use comfy_multi::queue::{Queue, QueueSettings};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use support::RedisServer;
use tokio_util::sync::CancellationToken;

/// The pinned frontend's static dir (installed by scripts/frontend/install.sh).
fn static_dir() -> PathBuf {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/frontend/install.sh"
    ))
    .output()
    .expect("run scripts/frontend/install.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("frontend-static: "))
        .expect("install.sh prints the static dir");
    PathBuf::from(line.trim())
}

struct Frontend {
    url: String,
    state: tempfile::TempDir,
    stop: CancellationToken,
    _redis: RedisServer,
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A frontend for user07, with one worker's object_info (the recorded
/// ComfyUI 0.3.64 catalogue) in the hub's store.
async fn spawn_frontend() -> Frontend {
    let redis = RedisServer::start();
    let queue = Queue::connect(
        &redis.url(),
        &support::unique_prefix(),
        QueueSettings::default(),
    )
    .await
    .unwrap();
    support::store_catalogue(&queue).await;
    let state = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let fs = FrontendState::new(
        "user07",
        queue,
        static_dir(),
        state.path().join("users/user07"),
        1 << 20,
    );
    tokio::spawn(run(listener, fs, stop.clone()));
    Frontend {
        url,
        state,
        stop,
        _redis: redis,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_bare_participant_path_redirects_to_the_slash_and_serves_the_app() {
    let f = spawn_frontend().await;
    let r = client()
        .get(format!("{}/user07?x=1", f.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "/user07/?x=1");
    let r = client()
        .get(format!("{}/user07/", f.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("<div id=\"vue-app\""));
    // Another participant's path is not served here.
    assert_eq!(
        client()
            .get(format!("{}/user08/", f.url))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn boot_endpoints_answer_with_and_without_the_api_prefix() {
    let f = spawn_frontend().await;
    for base in ["/user07", "/user07/api"] {
        let get = |p: &str| {
            let url = format!("{}{base}{p}", f.url);
            async move {
                let r = client().get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200, "{url}");
                r.json::<Value>().await.unwrap()
            }
        };
        let stats = get("/system_stats").await;
        assert!(stats["system"]["argv"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--disable-api-nodes"));
        assert_eq!(stats["devices"][0]["name"], "cpu");
        let users = get("/users").await;
        assert!(users.get("users").is_none(), "single-user shape: {users}");
        assert_eq!(get("/settings").await["Comfy.TutorialCompleted"], true);
        assert_eq!(
            get("/extensions").await,
            json!(["/extensions/comfy-multi/comfy-multi.js"])
        );
        assert!(get("/features").await["supports_preview_metadata"]
            .as_bool()
            .unwrap());
        let info = get("/object_info").await;
        assert!(info.get("KSampler").is_some() && info.get("SaveImage").is_some());
    }
}

#[tokio::test]
async fn settings_and_user_files_persist_in_the_participants_folder_only() {
    let f = spawn_frontend().await;
    let c = client();
    let api = format!("{}/user07/api", f.url);
    let r = c
        .post(format!("{api}/settings/Comfy.Theme"))
        .body("\"dark\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(format!("{api}/settings/Comfy.Theme"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
        "dark"
    );
    let saved: Value = serde_json::from_slice(
        &std::fs::read(f.state.path().join("users/user07/user/comfy.settings.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["Comfy.Theme"], "dark");

    let list = format!("{api}/userdata?dir=workflows&recurse=true&split=false&full_info=true");
    assert_eq!(
        c.get(&list).send().await.unwrap().status(),
        404,
        "no workflows yet"
    );
    let r = c
        .post(format!(
            "{api}/userdata/workflows%2Fmy%20flow.json?overwrite=true&full_info=true"
        ))
        .body("{\"nodes\":[]}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let items: Value = c.get(&list).send().await.unwrap().json().await.unwrap();
    assert_eq!(items[0]["path"], "my flow.json");
    let body = c
        .get(format!("{api}/userdata/workflows%2Fmy%20flow.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(body.text().await.unwrap(), "{\"nodes\":[]}");
    let r = c
        .post(format!(
            "{api}/userdata/workflows%2Fmy%20flow.json?overwrite=false"
        ))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    for bad in [
        "..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "workflows%2F..%2F..%2Fx",
        ".hidden",
    ] {
        assert_eq!(
            c.get(format!("{api}/userdata/{bad}"))
                .send()
                .await
                .unwrap()
                .status(),
            404,
            "{bad}"
        );
        let r = c
            .post(format!("{api}/userdata/{bad}"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 400 || r.status() == 404,
            "{bad}: {}",
            r.status()
        );
    }
    assert!(!f.state.path().join("users/x").exists() && !f.state.path().join("x").exists());
    // The editor's rename: POST /userdata/{file}/move/{dest}.
    let rename = |from: &str, to: &str, overwrite: bool| {
        c.post(format!(
            "{api}/userdata/{from}/move/{to}?overwrite={overwrite}"
        ))
        .send()
    };
    let r = rename(
        "workflows%2Fmy%20flow.json",
        "workflows%2Frenamed.json",
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), "workflows/renamed.json");
    let items: Value = c.get(&list).send().await.unwrap().json().await.unwrap();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(items[0]["path"], "renamed.json");
    let r = rename("workflows%2Fmy%20flow.json", "workflows%2Fx.json", true)
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the source is gone");
    c.post(format!("{api}/userdata/workflows%2Fother.json"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let r = rename("workflows%2Fother.json", "workflows%2Frenamed.json", false)
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "a taken name without overwrite");
    let r = rename("workflows%2Fother.json", "..%2F..%2Fx.json", true)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .delete(format!("{api}/userdata/workflows%2Frenamed.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_comfyui_editor_boots_in_chromium_with_every_node_known() {
    let f = spawn_frontend().await;
    let browser = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
    let install = Command::new(format!("{browser}/install.sh"))
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("editor-boot");
    std::fs::create_dir_all(&out_dir).unwrap();
    let url = format!("{}/user07/", f.url);
    let out_dir2 = out_dir.clone();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(format!("{browser}/editor_smoke.mjs"))
            .args(["--url", &url, "--expect-nodes", "--out"])
            .arg(&out_dir2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap_or_default())
            .unwrap_or(Value::Null);
    assert!(
        run.status.success(),
        "editor did not boot (screenshot and report in {}): {}\n{}",
        out_dir.display(),
        String::from_utf8_lossy(&run.stderr),
        report["error"]
    );
    assert_eq!(report["booted"], true);
    assert!(report["node_count"].as_u64().unwrap() > 0);
    assert_eq!(report["missing_node_types"], json!([]));
}

#[test]
fn the_frontend_binary_listens_on_a_unix_socket_as_systemd_runs_it_and_requires_a_login() {
    use std::io::{Read, Write};
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("user07.sock");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[redis]\nurl = {:?}\n[frontend]\nstatic_dir = {:?}\n\
             [participants]\ncredentials_file = {:?}\n",
            dir.path(),
            redis.url(),
            static_dir(),
            dir.path().join("participants.toml"),
        ),
    )
    .unwrap();
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(
        dir.path().join("participants.toml"),
        format!("[user07]\npassword = \"pw-user07\"\ntoken = \"{token}\"\n"),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_comfy-multi"))
        .args(["frontend", "--user", "user07", "--config"])
        .arg(&config)
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let get = |auth: &str| {
        let mut s = loop {
            match std::os::unix::net::UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(e) => panic!("no socket: {e}"),
            }
        };
        write!(
            s,
            "GET /user07/api/users HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let out = get(&format!("Authorization: Bearer {token}\r\n"));
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"storage\":\"server\""), "{out}");
    let out = get("");
    assert!(out.starts_with("HTTP/1.1 401"), "no login: {out}");
}

#[tokio::test]
async fn a_worker_whose_catalogue_arrives_after_it_registered_joins_the_editors_list() {
    let redis = RedisServer::start();
    let prefix = support::unique_prefix();
    let redis_url = redis.url();
    let connect = || Queue::connect(&redis_url, &prefix, QueueSettings::default());
    let queue = connect().await.unwrap();
    let node = |name: &str, files: &[&str]| json!({name: {"input": {"required": {"ckpt_name": [files, {}]}}, "output": []}});
    let a = node("LoaderA", &["a.safetensors"]);
    queue.put_object_info("da", &a.to_string()).await.unwrap();
    queue
        .register_catalogue("gpu0", &json!({"object_info_digest": "da"}), &[])
        .await
        .unwrap();
    // gpu1 registered; its object_info is still on the way.
    queue
        .register_catalogue("gpu1", &json!({"object_info_digest": "db"}), &[])
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/user07", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let fs = FrontendState::new(
        "user07",
        connect().await.unwrap(),
        static_dir(),
        state.path().join("users/user07"),
        1 << 20,
    );
    tokio::spawn(run(listener, fs, stop.clone()));
    let info = || async {
        client()
            .get(format!("{url}/api/object_info"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let first = info().await;
    assert!(
        first.get("LoaderA").is_some() && first.get("LoaderB").is_none(),
        "{first}"
    );
    let b = node("LoaderB", &["b.safetensors"]);
    queue.put_object_info("db", &b.to_string()).await.unwrap();
    let second = info().await;
    assert!(
        second.get("LoaderA").is_some() && second.get("LoaderB").is_some(),
        "the late catalogue is merged in, not hidden behind a cached partial one: {second}"
    );
    stop.cancel();
}
