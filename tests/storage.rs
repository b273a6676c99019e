//! A full disk is a warning, not an outage: the hub's storage watch on a
//! real filesystem and a real redis-server, seen through a participant's
//! frontend (ComfyUI-shaped refusal, nothing queued), the admin status and
//! `/metrics`; a write that finds no space says so (507), never "internal
//! error".

mod support;

use comfy_multi::config::StorageConfig;
use comfy_multi::error::AppError;
use comfy_multi::frontend::{run, FrontendState};
use comfy_multi::queue::Queue;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::RedisServer;
use tokio_util::sync::CancellationToken;

/// A participant's frontend on `queue`; its base URL.
async fn frontend(queue: &Queue, state: &std::path::Path) -> String {
    let static_dir = state.join("static");
    std::fs::create_dir_all(&static_dir).unwrap();
    std::fs::write(static_dir.join("index.html"), "<html></html>").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let fs = FrontendState::new(
        "user01",
        queue.clone(),
        static_dir,
        state.join("users/user01"),
        1 << 20,
    );
    tokio::spawn(run(listener, fs, CancellationToken::new()));
    format!("{addr}/user01")
}

/// Runs the storage watch with `t` until the published level is `want`;
/// the watch's stop switch.
async fn watch_until(
    q: &Queue,
    dir: &std::path::Path,
    t: StorageConfig,
    want: &str,
) -> CancellationToken {
    let stop = CancellationToken::new();
    tokio::spawn(comfy_multi::hub::storage::watch(
        q.clone(),
        dir.to_path_buf(),
        t,
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let level = q.storage().await.unwrap().map(|r| r["level"].clone());
        if level == Some(json!(want)) {
            return stop;
        }
        assert!(Instant::now() < deadline, "level {level:?}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn thresholds(refuse_pct: f64, warn_pct: f64) -> StorageConfig {
    StorageConfig {
        warn_free_percent: warn_pct,
        warn_free_bytes: 0,
        refuse_free_percent: refuse_pct,
        refuse_free_bytes: 0,
        check_interval_ms: 100,
    }
}

#[tokio::test]
async fn a_nearly_full_disk_refuses_new_jobs_with_a_clear_message_until_space_is_back() {
    let redis = RedisServer::start();
    let q = support::queue(&redis, support::test_settings()).await;
    support::store_catalogue(&q).await;
    let state = tempfile::tempdir().unwrap();
    let base = frontend(&q, state.path()).await;
    let http = reqwest::Client::new();
    let prompt = json!({"prompt": support::prompt(1), "client_id": "c"});
    // The real filesystem of the state dir, with thresholds it cannot meet:
    // every byte free still counts as "nearly full".
    let stop = watch_until(&q, state.path(), thresholds(100.0, 100.0), "refuse").await;
    let r = http
        .post(format!("{base}/prompt"))
        .json(&prompt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "storage_full");
    assert_eq!(
        body["error"]["message"],
        "the workshop's storage is nearly full; your instructor has been told"
    );
    assert_eq!(
        body["node_errors"],
        json!({}),
        "ComfyUI's shape, for the editor"
    );
    assert_eq!(
        q.pending_count("user01").await.unwrap(),
        0,
        "nothing queued"
    );
    // The report names the filesystem, for the instructor and /metrics.
    let report = q.storage().await.unwrap().unwrap();
    let fs = &report["filesystems"][0];
    assert!(fs["free_bytes"].as_u64().unwrap() > 0 && fs["total_bytes"].as_u64().unwrap() > 0);

    // Space is back (here: the thresholds): accepted again, by itself.
    stop.cancel();
    let stop = watch_until(&q, state.path(), thresholds(0.0, 0.0), "ok").await;
    let r = http
        .post(format!("{base}/prompt"))
        .json(&prompt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(q.pending_count("user01").await.unwrap(), 1);

    // A warning refuses nothing.
    stop.cancel();
    let _stop = watch_until(&q, state.path(), thresholds(0.0, 100.0), "warn").await;
    let r = http
        .post(format!("{base}/prompt"))
        .json(&prompt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_published_level_expires_when_no_hub_publishes_it() {
    let redis = RedisServer::start();
    let q = support::queue(&redis, support::test_settings()).await;
    q.set_storage(
        "refuse",
        r#"{"level":"refuse"}"#,
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    assert!(q.enqueue(support::job("user01", 1)).await.is_err());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(q.storage().await.unwrap().is_none());
    q.enqueue(support::job("user01", 1))
        .await
        .expect("a stale refusal does not outlive the hub");
}

#[tokio::test]
async fn a_write_that_finds_no_space_is_a_507_that_says_so() {
    use axum::response::IntoResponse;
    for errno in [nix::errno::Errno::ENOSPC, nix::errno::Errno::EDQUOT] {
        let e = AppError::internal(std::io::Error::from_raw_os_error(errno as i32));
        let r = e.into_response();
        assert_eq!(r.status(), 507);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["error"]["message"],
            "the workshop's storage is full; your instructor has been told"
        );
    }
    // Any other fault stays an internal error, with nothing of it shown.
    let r = AppError::internal(std::io::Error::from_raw_os_error(libc_eio())).into_response();
    assert_eq!(r.status(), 500);
}

fn libc_eio() -> i32 {
    nix::errno::Errno::EIO as i32
}

/// `comfy-multi check-config --config f`: its exit code and stderr.
fn check_config(f: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_comfy-multi"))
        .args(["check-config", "--config"])
        .arg(f)
        .env_remove("COMFY_MULTI_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn mis_set_thresholds_are_named_by_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(
        &f,
        "[storage]\nwarn_free_percent = 5.0\nrefuse_free_percent = 20.0\nwarn_free_bytes = 1\nrefuse_free_bytes = 2\n",
    )
    .unwrap();
    let (code, err) = check_config(&f);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("storage.refuse_free_percent must not be above"),
        "{err}"
    );
    assert!(
        err.contains("storage.refuse_free_bytes must not be above"),
        "{err}"
    );
    std::fs::write(
        &f,
        "[storage]\nwarn_free_percent = 150.0\nrefuse_free_percent = -1.0\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_comfy-multi"))
        .args(["check-config", "--config"])
        .arg(&f)
        .env_remove("COMFY_MULTI_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("storage.warn_free_percent must be between 0 and 100"),
        "{err}"
    );
    assert!(
        err.contains("storage.refuse_free_percent must be between 0 and 100"),
        "{err}"
    );
}
