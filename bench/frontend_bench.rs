//! frontend-bench: what one participant's server costs. Starts a private
//! redis-server (AOF, `appendfsync always`, as deployed), stores the
//! recorded ComfyUI 0.3.64 node catalogue as a connected worker's, spawns
//! the release `comfy-multi frontend --user user01` process with a login,
//! opens one WebSocket (bearer token) as the editor would, and measures the
//! process's resident memory idle with that socket, then the latency of
//! `GET /api/object_info` and `POST /api/prompt` (one request at a time).
//! After each prompt the job is leased and finished here (untimed), so the
//! queue stays short as in a workshop and the socket gets its events. Not
//! a test: prints a table.
//!
//! `cargo build --release && cargo run --release --bin frontend-bench [-- --n 500]`
//! (the bench runs the `comfy-multi` binary next to its own executable).

#[path = "common.rs"]
mod common;

use comfy_multi::auth::CredentialsFile;
use comfy_multi::queue::{Outcome, Queue, QueueSettings};
use futures_util::StreamExt;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const USER: &str = "user01";

struct Args {
    n: usize,
    /// Redis's `appendfsync` (`always` as deployed).
    fsync: String,
}

fn args() -> Args {
    let mut a = Args {
        n: 500,
        fsync: "always".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--n" => a.n = it.next().and_then(|s| s.parse().ok()).unwrap_or(500),
            "--fsync" => a.fsync = it.next().unwrap_or_else(|| "always".into()),
            "-h" | "--help" => {
                println!("usage: frontend-bench [--n REQUESTS] [--fsync always|everysec|no]");
                std::process::exit(0);
            }
            other => {
                eprintln!("frontend-bench: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    a
}

/// The spawned frontend; killed when dropped.
struct Frontend(Child);

impl Drop for Frontend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `(VmRSS, VmHWM)` of `pid` in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The web app's files: the installed ComfyUI frontend when there is one,
/// else a stand-in `index.html` (the API does not read them).
fn static_dir(tmp: &Path) -> PathBuf {
    comfy_multi::frontend::find_static_dir(None).unwrap_or_else(|_| {
        let dir = tmp.join("static");
        std::fs::create_dir_all(dir.join("assets")).unwrap();
        std::fs::write(dir.join("index.html"), "<html>editor</html>").unwrap();
        dir
    })
}

fn prompt(n: usize) -> serde_json::Value {
    json!({"prompt": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": n}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}}
    }, "client_id": "bench"})
}

#[tokio::main]
async fn main() {
    let a = args();
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("comfy-multi");
    if !bin.is_file() {
        eprintln!(
            "frontend-bench: {} is missing: run `cargo build --release` first",
            bin.display()
        );
        std::process::exit(2);
    }
    let (url, _redis) = common::start_redis(&a.fsync);
    let prefix = format!("bench{}", uuid::Uuid::new_v4().simple());
    let queue = Queue::connect(&url, &prefix, QueueSettings::default())
        .await
        .unwrap();
    let info = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/comfyui-0.3.64/object_info.json"
    ))
    .unwrap();
    queue.put_object_info("d1", &info).await.unwrap();
    let worker = json!({"id": "gpu0", "object_info_digest": "d1",
        "system_stats": {"system": {"os": "posix"}, "devices": [{"name": "cpu"}]}});
    queue
        .set_worker("gpu0", Some(&worker.to_string()))
        .await
        .unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let creds_path = tmp.path().join("participants.toml");
    let creds = CredentialsFile::ensure(&creds_path, &[USER.to_string()]).unwrap();
    let token = creds.get(USER).unwrap().token.clone();
    let statics = static_dir(tmp.path());
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[redis]\nurl = {url:?}\nkey_prefix = {prefix:?}\n\
             [participants]\nnames = [{USER:?}]\ncredentials_file = {:?}\n\
             [frontend]\nstatic_dir = {:?}\n",
            tmp.path().join("state"),
            creds_path,
            statics,
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(&bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("COMFY_MULTI_") && k != "COMFY_MULTI_CACHE" {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .arg("--config")
        .arg(&config)
        .args(["frontend", "--user", USER, "--listen", &addr])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _frontend = Frontend(child);
    let base = format!("http://{addr}/{USER}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/login")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the frontend did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One socket, as an open editor tab has; drained in the background.
    let mut req = format!("ws://{addr}/{USER}/ws?clientId=bench")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.next().await.unwrap().unwrap();
    let events = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(Ok(_)) = ws.next().await {
            n += 1;
        }
        n
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_idle, _) = rss_mib(pid);

    let get_info = || async {
        let r = http
            .get(format!("{base}/api/object_info"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap().len()
    };
    for _ in 0..20 {
        get_info().await;
    }
    let mut info_ms = vec![];
    let mut info_bytes = 0;
    for _ in 0..a.n {
        let t = Instant::now();
        info_bytes = get_info().await;
        info_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    let mut prompt_ms = vec![];
    for i in 0..a.n + 20 {
        let t = Instant::now();
        let r = http
            .post(format!("{base}/api/prompt"))
            .bearer_auth(&token)
            .json(&prompt(i))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 200, "{body}");
        if i >= 20 {
            prompt_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        // Run the job (untimed), so the queue never fills up.
        let l = queue.lease("gpu0").await.unwrap().unwrap();
        queue.start(&l.job_id, l.token).await.unwrap();
        queue
            .finish(
                &l.job_id,
                l.token,
                Outcome::Succeeded,
                &json!({}),
                None,
                Some(0.1),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_after, hwm) = rss_mib(pid);
    drop(_frontend);
    let socket_messages = events.await.unwrap_or(0);

    // What parsing the catalogue once costs (the frontend checks each
    // prompt's node types against it).
    let mut parse_ms = vec![];
    for _ in 0..20 {
        let t = Instant::now();
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        parse_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        drop(v);
    }

    let (n, fsync) = (a.n, &a.fsync);
    println!("frontend-bench: one `comfy-multi frontend` (release), Redis AOF appendfsync {fsync}, {n} sequential requests each");
    println!("| | p50 | p99 | max |");
    println!("|---|---|---|---|");
    for (name, v) in [
        (
            format!("GET /api/object_info ({} KiB)", info_bytes / 1024),
            &mut info_ms,
        ),
        ("POST /api/prompt".to_string(), &mut prompt_ms),
    ] {
        let (p50, p99, max) = (pct(v, 0.5), pct(v, 0.99), pct(v, 1.0));
        println!("| {name} | {p50:.2} ms | {p99:.2} ms | {max:.2} ms |");
    }
    println!(
        "parsing the catalogue JSON once (for comparison): {:.2} ms",
        pct(&mut parse_ms, 0.5)
    );
    println!("RSS idle with one socket: {rss_idle:.1} MiB; after the runs: {rss_after:.1} MiB (peak {hwm:.1} MiB); socket messages: {socket_messages}");
    let p99 = pct(&mut prompt_ms, 0.99);
    let rss_mb = rss_idle * 1024.0 * 1024.0 / 1e6;
    println!("frontend-bench: rss {rss_mb:.1} MB, prompt p99 {p99:.2} ms");
}
