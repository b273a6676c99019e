//! `/metrics` as Prometheus scrapes it: the text parses with a Prometheus
//! text-format parser, and the numbers move when jobs run through a real
//! worker agent on a real CPU ComfyUI — queue depth, outcomes, wait and run
//! time, busy time, idle gap, connected workers and participants. Nothing
//! of the prompts appears.

mod support;
mod support_comfyui;

use comfy_multi::queue::NewJob;
use comfy_multi::worker::{run_agent, AgentConfig};
use prometheus_parse::{Sample, Scrape, Value as PValue};
use serde_json::json;
use std::time::{Duration, Instant};
use support::hub::{TestHub, WORKER_TOKEN};
use support::RedisServer;
use support_comfyui::ComfyUi;
use tokio_util::sync::CancellationToken;

async fn scrape(hub: &TestHub) -> (Scrape, String) {
    let text = reqwest::get(format!("{}/metrics", hub.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    (Scrape::parse(lines).expect("Prometheus text format"), text)
}

fn value(s: &Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let found: Vec<&Sample> = s
        .samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
        .collect();
    match found.first().map(|x| &x.value) {
        Some(PValue::Counter(v) | PValue::Gauge(v) | PValue::Untyped(v)) => *v,
        Some(PValue::Histogram(h)) => h.iter().map(|b| b.count).fold(0.0, f64::max),
        Some(other) => panic!("{name}: {other:?}"),
        None => 0.0,
    }
}

fn invert(n: u64) -> serde_json::Value {
    let path = format!(
        "{}/tests/comfyui_nodes/workflows/invert.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    p["1"]["inputs"]["color"] = json!(n);
    p["3"]["inputs"]["filename_prefix"] = json!("secret_prefix_xyz");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_when_jobs_run() {
    let redis = RedisServer::start();
    let comfy = ComfyUi::shared();
    let hub = TestHub::spawn(&redis, support::test_settings()).await;

    let (before, _) = scrape(&hub).await;
    assert_eq!(value(&before, "comfy_multi_workers_connected", None), 0.0);
    // Two jobs wait while no worker is connected.
    let mut ids = vec![];
    for n in 0..2 {
        let job = NewJob {
            participant: "user05".into(),
            prompt: invert(n),
            ..Default::default()
        };
        ids.push(hub.queue.enqueue(job).await.unwrap().id);
    }
    hub.queue
        .set_online("user05", "sid", Duration::from_secs(60))
        .await
        .unwrap();
    let (waiting, _) = scrape(&hub).await;
    assert_eq!(
        value(
            &waiting,
            "comfy_multi_waiting_jobs",
            Some(("participant", "user05"))
        ),
        2.0
    );
    assert_eq!(value(&waiting, "comfy_multi_waiting_jobs_all", None), 2.0);
    assert_eq!(
        value(&waiting, "comfy_multi_participants_online", None),
        1.0
    );
    assert_eq!(
        value(&waiting, "comfy_multi_jobs_enqueued_total", None),
        2.0
    );

    let stop = CancellationToken::new();
    tokio::spawn(run_agent(
        AgentConfig {
            id: "gpu0".into(),
            comfyui_url: comfy.url.clone(),
            hub_url: hub.url.clone(),
            token: WORKER_TOKEN.into(),
            capacity: 1,
            heartbeat: Duration::from_millis(500),
            pool: comfy_multi::pool::DEFAULT_POOL.into(),
            headers: vec![],
            starting: None,
        },
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        loop {
            let j = hub.queue.job(id).await.unwrap().unwrap();
            if j.status.is_terminal() {
                assert_eq!(j.status.as_str(), "succeeded", "{:?}", j.error);
                break;
            }
            assert!(Instant::now() < deadline, "jobs did not finish");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The gateway records timings as it acknowledges; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (after, text) = loop {
        let (s, t) = scrape(&hub).await;
        if value(&s, "comfy_multi_job_run_seconds_count", None) >= 2.0 || Instant::now() > deadline
        {
            break (s, t);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        value(
            &after,
            "comfy_multi_jobs_finished_total",
            Some(("outcome", "succeeded"))
        ),
        2.0
    );
    assert_eq!(
        value(
            &after,
            "comfy_multi_jobs_finished_total",
            Some(("outcome", "failed"))
        ),
        0.0
    );
    assert_eq!(value(&after, "comfy_multi_waiting_jobs_all", None), 0.0);
    assert_eq!(
        value(&after, "comfy_multi_job_wait_seconds_count", None),
        2.0
    );
    assert_eq!(
        value(&after, "comfy_multi_job_run_seconds_count", None),
        2.0
    );
    assert!(value(&after, "comfy_multi_job_run_seconds_sum", None) > 0.0);
    assert!(
        value(
            &after,
            "comfy_multi_worker_busy_seconds_total",
            Some(("worker", "gpu0"))
        ) > 0.0
    );
    assert!(
        value(
            &after,
            "comfy_multi_worker_idle_gap_seconds_count",
            Some(("worker", "gpu0"))
        ) >= 2.0
    );
    assert_eq!(value(&after, "comfy_multi_workers_connected", None), 1.0);
    assert_eq!(
        value(
            &after,
            "comfy_multi_worker_busy_ratio",
            Some(("worker", "gpu0"))
        ),
        0.0
    );
    assert!(!text.contains("secret_prefix_xyz"), "no prompt contents");
    assert!(!text.contains(WORKER_TOKEN), "no secrets");
    stop.cancel();
}
