//! `comfy-multi up`, the try-out on one machine, as a user runs it: the real
//! binary with a private redis-server and a real CPU ComfyUI. It prints each
//! participant's URL and password, a participant logs in and runs a
//! workflow, Ctrl-C stops everything cleanly, and starting it again on the
//! same state dir keeps the job, its output and the logins.

mod support_comfyui;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support_comfyui::ComfyUi;

struct Up {
    child: Child,
    /// participant → password, as printed.
    printed: Vec<(String, String)>,
    base: String,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_up(comfy: &ComfyUi, state: &std::path::Path, port: u16) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_comfy-multi"))
        .args(["up", "--comfyui", &comfy.url, "--participants", "2"])
        .args(["--port", &port.to_string(), "--state-dir"])
        .arg(state)
        .env_remove("COMFY_MULTI_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut printed = vec![];
    let mut base = String::new();
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("comfy-multi is up on ") {
            base = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string();
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() == 4 && words[2] == "password:" {
            printed.push((words[0].to_string(), words[3].to_string()));
        }
        if line.contains("Ctrl-C stops") {
            break;
        }
    }
    assert!(!base.is_empty(), "no address printed");
    Up {
        child,
        printed,
        base,
    }
}

fn interrupt_and_wait(up: &mut Up) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = up.child.try_wait().unwrap() {
            assert!(status.success(), "up exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "up did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn token_of(state: &std::path::Path, who: &str) -> String {
    let text = std::fs::read_to_string(state.join("participants.toml")).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    v[who]["token"].as_str().unwrap().to_string()
}

async fn history_of(http: &reqwest::Client, base: &str, who: &str, token: &str, id: &str) -> Value {
    http.get(format!("{base}/{who}/api/history/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_workshop_and_keeps_everything_across_a_restart() {
    let comfy = ComfyUi::shared();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut up = start_up(comfy, state.path(), port);
    let names: Vec<&str> = up.printed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["user01", "user02", "admin"]);
    let toml_text = std::fs::read_to_string(state.path().join("participants.toml")).unwrap();
    assert!(toml_text.contains("[admin]"));
    assert!(
        toml_text.contains(&up.printed[0].1),
        "printed password is stored"
    );

    // user01 logs in with the printed password.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = up.base.clone();
    let r = http
        .post(format!("{base}/user01/login"))
        .form(&[("password", up.printed[0].1.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // The worker registers and its catalogue arrives.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http
            .get(format!("{base}/user01/api/object_info"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no worker catalogue: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The pre-loaded workflows are in user01's workflow browser.
    let listed: Value = http
        .get(format!(
            "{base}/user01/api/userdata?dir=workflows&recurse=true&split=false"
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "demo/01-solid-color-invert.json"),
        "{listed}"
    );
    let workflow: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/comfyui_nodes/workflows/invert.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let r: Value = http
        .post(format!("{base}/user01/api/prompt"))
        .header("cookie", &cookie)
        .json(&json!({"prompt": workflow, "client_id": "up-test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["prompt_id"].as_str().expect("queued").to_string();
    let token = token_of(state.path(), "user01");
    let deadline = Instant::now() + Duration::from_secs(90);
    let entry = loop {
        let h = history_of(&http, &base, "user01", &token, &id).await;
        if let Some(e) = h.get(&id) {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "the job did not finish");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(entry["status"]["status_str"], "success");
    let image = &entry["outputs"]["3"]["images"][0];
    let view = format!(
        "{base}/user01/api/view?filename={}&type=output&subfolder={}",
        image["filename"].as_str().unwrap(),
        image["subfolder"].as_str().unwrap()
    );
    let png = http
        .get(&view)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));

    interrupt_and_wait(&mut up);
    drop(up);

    // Again on the same state dir: same logins, the job and its output kept.
    let up = start_up(comfy, state.path(), port);
    let again: Vec<(String, String)> = up.printed.clone();
    assert_eq!(again[0].1, toml_text_password(&toml_text, "user01"));
    assert_eq!(token_of(state.path(), "user01"), token);
    let h = history_of(&http, &up.base, "user01", &token, &id).await;
    assert_eq!(h[&id]["status"]["status_str"], "success");
    let again_png = http
        .get(&view)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(again_png, png);
    // user02 sees none of it.
    let theirs = token_of(state.path(), "user02");
    assert_eq!(
        history_of(&http, &up.base, "user02", &theirs, &id).await,
        json!({})
    );
}

fn toml_text_password(text: &str, who: &str) -> String {
    let v: toml::Value = toml::from_str(text).unwrap();
    v[who]["password"].as_str().unwrap().to_string()
}

/// The pid of `up`'s own redis-server (a child process named redis-server).
fn redis_child(up: &Up) -> Option<i32> {
    let parent = up.child.id().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // pid (comm) state ppid …
        let (head, rest) = stat.split_once(") ")?;
        let comm = head.split_once(" (")?.1;
        let ppid = rest.split_whitespace().nth(1)?;
        (comm.starts_with("redis-server") && ppid == parent)
            .then(|| e.file_name().to_string_lossy().parse().ok())
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_killed_under_up_is_back_within_seconds_and_keeps_every_job() {
    // Its own ComfyUI: the other test's `up` runs beside this one, and two
    // agents named local0 on one ComfyUI would share its event socket.
    let comfy = &ComfyUi::start();
    let state = tempfile::tempdir().unwrap();
    let mut up = start_up(comfy, state.path(), free_port());
    let base = up.base.clone();
    let token = token_of(state.path(), "user01");
    let http = reqwest::Client::new();
    let workflow: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/comfyui_nodes/workflows/invert.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let submit = || async {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let r = http
                .post(format!("{base}/user01/api/prompt"))
                .bearer_auth(&token)
                .json(&json!({"prompt": workflow, "client_id": "up-redis-test"}))
                .send()
                .await
                .unwrap();
            // 503 until the worker's catalogue has arrived.
            if r.status() == 200 {
                let v: Value = r.json().await.unwrap();
                return v["prompt_id"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "submit: {}", r.status());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let done = |id: String| {
        let (http, base, token) = (&http, &base, &token);
        async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let h = history_of(http, base, "user01", token, &id).await;
                if h[&id]["status"]["completed"] == true {
                    return;
                }
                assert!(Instant::now() < deadline, "job {id} never finished: {h}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let before = submit().await;
    done(before.clone()).await;

    let pid = redis_child(&up).expect("up runs its own redis-server");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t0 = Instant::now();
    // Back without anyone restarting `up`: the same job is still there.
    loop {
        let r = http
            .get(format!("{base}/user01/api/history/{before}"))
            .bearer_auth(&token)
            .send()
            .await;
        if let Ok(r) = r {
            if r.status() == 200 {
                let h: Value = r.json().await.unwrap();
                if h[&before]["status"]["completed"] == true {
                    break;
                }
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "Redis did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("redis back after {:?}", t0.elapsed());
    assert!(up.child.try_wait().unwrap().is_none(), "up kept running");
    let again = redis_child(&up).expect("a new redis-server");
    assert_ne!(again, pid);
    // And it takes new work.
    let after = submit().await;
    done(after).await;
    interrupt_and_wait(&mut up);
}
