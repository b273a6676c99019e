//! Worker pools on a workshop of real processes: redis-server, the hub
//! (`serve`), frontends, and a `comfyui_url` pool whose URL is a real CPU
//! ComfyUI behind an auth proxy (tests/support/auth_proxy.rs) that wants a
//! bearer token and answers 503 while "cold", as a rented serverless
//! ComfyUI does while its container starts.

mod support;
mod support_comfyui;

use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::cluster::{sleep_prompt, Cluster, Spec};
use support_comfyui::ComfyUi;

const SECRET: &str = "Bearer pool-secret-7f3a9c";
const COLD: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_comfyui_url_pool_behind_an_auth_header_shows_starting_then_runs_jobs() {
    let comfy = ComfyUi::start();
    let started = Instant::now();
    let proxy = support::auth_proxy::start(&comfy.url, ("Authorization", SECRET), COLD).await;
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("modal-headers");
    std::fs::write(
        &headers,
        format!("# the pool's proxy auth\nAuthorization: {SECRET}\n"),
    )
    .unwrap();
    let spec = Spec {
        pools: vec![json!({
            "name": "modal", "kind": "comfyui_url", "urls": [proxy.url],
            "headers_file": headers, "price_per_gpu_hour": 3.6,
        })],
        ..Spec::default()
    };
    let c = Cluster::start(&spec).await;

    // While the URL answers 503, its worker is `starting` and not connected.
    let pools = c.admin_get("/pools").await;
    let modal = &pools.as_array().unwrap()[0];
    assert_eq!(modal["name"], "modal");
    assert_eq!(modal["workers"][0]["id"], "modal-1");
    assert_eq!(modal["workers"][0]["state"], "starting", "{pools}");
    // Said as it is: the URL is cold (or the key wrong, or unreachable).
    let why = modal["workers"][0]["error"].as_str().unwrap_or_default();
    assert!(why.is_empty() || why.contains("503"), "{why}");
    assert_eq!(modal["connected"], 0);

    // It joins once ComfyUI answers, and runs a participant's job.
    let deadline = Instant::now() + COLD + Duration::from_secs(90);
    loop {
        let pools = c.admin_get("/pools").await;
        if pools[0]["connected"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never joined: {pools}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(started.elapsed() >= COLD, "joined before the URL was warm");
    c.wait_catalogue("user01").await;
    let id = c.submit("user01", &sleep_prompt(0.2, 1)).await.unwrap();
    let jepsen = c
        .settle(&[("user01".into(), id.clone())], Duration::from_secs(120))
        .await;
    assert_eq!(jepsen.succeeded, 1, "{jepsen:?}\n{}", c.logs());
    let q = c.queue().await;
    assert_eq!(
        q.job(&id).await.unwrap().unwrap().worker.as_deref(),
        Some("modal-1")
    );
    let pools = c.admin_get("/pools").await;
    assert!(pools[0]["gpu_hours"].as_f64().unwrap() > 0.0, "{pools}");
    assert!(pools[0]["cost"].as_f64().unwrap() > 0.0, "{pools}");

    // Every request (HTTP and the event socket) carried the header; some
    // were turned away cold and retried; the secret is in no log.
    let s = &proxy.stats;
    assert_eq!(s.unauthorized.load(Ordering::Relaxed), 0, "{s:?}");
    assert!(s.cold.load(Ordering::Relaxed) > 0, "{s:?}");
    assert!(s.forwarded.load(Ordering::Relaxed) > 0, "{s:?}");
    assert!(
        !c.logs().contains("pool-secret"),
        "the header leaked into a log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pool_header_keeps_the_worker_out_and_says_why_without_the_secret() {
    let comfy = ComfyUi::start();
    let proxy =
        support::auth_proxy::start(&comfy.url, ("Authorization", SECRET), Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    std::fs::write(&headers, "Authorization: Bearer not-the-secret-1234\n").unwrap();
    let spec = Spec {
        pools: vec![
            json!({"name": "modal", "kind": "comfyui_url", "urls": [proxy.url],
                           "headers_file": headers}),
        ],
        ..Spec::default()
    };
    let c = Cluster::start(&spec).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.stats.unauthorized.load(Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline, "the worker never tried");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pools = c.admin_get("/pools").await;
    assert_eq!(pools[0]["connected"], 0, "{pools}");
    assert_eq!(pools[0]["workers"][0]["state"], "starting");
    let why = pools[0]["workers"][0]["error"].as_str().unwrap_or_default();
    assert!(why.contains("401"), "the pool says why: {pools}");
    assert!(!why.contains("not-the-secret"), "{why}");
    let logs = c.logs();
    assert!(logs.contains("401"), "the refusal is said: {logs}");
    assert!(!logs.contains("not-the-secret-1234"), "the header leaked");
}
