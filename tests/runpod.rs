//! RunPod serverless pools end to end: the hub's RunPod adapter against a
//! contract emulator of RunPod's API (tests/support/runpod_emulator.rs)
//! that runs every job on a real CPU ComfyUI as worker-comfyui does, with
//! real Redis, hub, frontends and (where a test needs one) a local worker.

mod support;
mod support_comfyui;

use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::cluster::{sleep_prompt, Cluster, Spec};
use support::runpod_emulator::{self, Emulator};
use support_comfyui::ComfyUi;

const KEY: &str = "rpa_TESTKEY0123456789abcdef";
const ENDPOINT: &str = "ep-workshop";

/// The pool entry for `emu`, with its key and catalogue in files under `dir`.
async fn pool(
    emu: &Emulator,
    comfy: &ComfyUi,
    dir: &std::path::Path,
    key: &str,
    extra: Value,
) -> Value {
    let info: Value = reqwest::get(format!("{}/object_info", comfy.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let info_file = dir.join("runpod-object_info.json");
    std::fs::write(&info_file, info.to_string()).unwrap();
    let key_file = dir.join("runpod-key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let mut p = json!({
        "name": "runpod", "kind": "runpod_serverless", "endpoint_id": emu.endpoint,
        "api_base": emu.api_base, "api_key_file": key_file, "object_info_file": info_file,
        "max_concurrency": 2, "poll_ms": 200, "price_per_gpu_hour": 2.0,
    });
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

/// A CPU ComfyUI and an emulated RunPod endpoint with `gpus` workers on it.
async fn endpoint(gpus: usize) -> (ComfyUi, Emulator) {
    let comfy = ComfyUi::start();
    let urls = vec![comfy.url.clone(); gpus];
    let emu = runpod_emulator::start(&urls, KEY, ENDPOINT, Duration::ZERO).await;
    (comfy, emu)
}

async fn wait_connected(c: &Cluster, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pools = c.admin_get("/pools").await;
        let rp = pools
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "runpod")
            .cloned();
        if rp.as_ref().is_some_and(|p| p["connected"] == n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "runpod pool: {pools}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn png(seed: u8) -> Vec<u8> {
    let mut out = vec![];
    let mut enc = png::Encoder::new(&mut out, 8, 6);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&[seed; 8 * 6 * 4]).unwrap();
    w.finish().unwrap();
    out
}

async fn job(c: &Cluster, id: &str) -> comfy_multi::queue::Job {
    c.queue().await.job(id).await.unwrap().unwrap()
}

/// Submits `prompt` as `user` and waits (at most `secs`) for its end.
async fn submit_and_wait(
    c: &Cluster,
    user: &str,
    prompt: &Value,
    secs: u64,
) -> comfy_multi::queue::Job {
    let id = c.submit(user, prompt).await.unwrap();
    wait_final(c, &id, Duration::from_secs(secs)).await
}

async fn wait_final(c: &Cluster, id: &str, timeout: Duration) -> comfy_multi::queue::Job {
    let deadline = Instant::now() + timeout;
    loop {
        let j = job(c, id).await;
        if j.status.is_terminal() {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never ended: {j:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participants_job_runs_on_a_runpod_endpoint_with_inputs_outputs_events_and_cancel() {
    let (comfy, emu) = endpoint(1).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        pools: vec![pool(&emu, &comfy, dir.path(), KEY, json!({})).await],
        ..Spec::default()
    };
    let c = Cluster::start(&spec).await;
    wait_connected(&c, 1).await;
    c.wait_catalogue("user01").await;

    // The participant uploads an image and runs LoadImage → scale → Save
    // plus a preview, watching the editor's socket.
    let f = c.frontend("user01");
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(png(7)).file_name("photo.png"),
    );
    let up: Value = reqwest::Client::new()
        .post(format!("{}/upload/image", f.base))
        .bearer_auth(&f.token)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(up["name"], "photo.png");
    let (mut ws, _) = tokio_tungstenite::connect_async(c.ws_request("user01", "editor-1"))
        .await
        .unwrap();
    let prompt = json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "width": 32, "height": 24, "crop": "disabled"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "class/scaled"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    });
    let id = c.submit_from("user01", &prompt, "editor-1").await.unwrap();
    let mut seen = vec![];
    let deadline = Instant::now() + Duration::from_secs(90);
    while !seen
        .iter()
        .any(|t: &String| t == "execution_success" || t == "execution_error")
    {
        let m = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no end event; saw {seen:?}\n{}", c.logs()));
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = m else {
            continue;
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["data"]["prompt_id"] == id.as_str() {
            seen.push(v["type"].as_str().unwrap_or_default().to_string());
        }
    }
    assert!(seen.contains(&"execution_start".into()), "{seen:?}");
    assert_eq!(
        seen.iter().filter(|t| *t == "executed").count(),
        2,
        "{seen:?}"
    );
    assert_eq!(seen.last().unwrap(), "execution_success");

    let j = wait_final(&c, &id, Duration::from_secs(30)).await;
    assert_eq!(j.worker.as_deref(), Some("runpod-1"));
    assert_eq!(j.status.as_str(), "succeeded");
    // Stored as a local worker stores them: the participant's prefix, its
    // subfolder, ComfyUI's counter; the preview under temp.
    let hist = c.history("user01").await.unwrap();
    let outs = &hist[&id]["outputs"];
    let saved = &outs["3"]["images"][0];
    assert_eq!(saved["filename"], "scaled_00001_.png", "{outs}");
    assert_eq!(saved["subfolder"], "class");
    assert_eq!(saved["type"], "output");
    assert_eq!(outs["4"]["images"][0]["type"], "temp", "{outs}");
    let view = reqwest::Client::new()
        .get(format!(
            "{}/api/view?filename=scaled_00001_.png&subfolder=class&type=output",
            f.base
        ))
        .bearer_auth(&f.token)
        .send()
        .await
        .unwrap();
    assert_eq!(view.status(), 200);
    let img = image::load_from_memory(&view.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (32, 24),
        "the scaled upload came back"
    );
    assert_eq!(emu.stats.runs.load(Ordering::Relaxed), 1);

    // The pool shows RunPod's health and the GPU time bought.
    let pools = c.admin_get("/pools").await;
    let health = pools[0]["workers"][0]["health"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(health.contains("RunPod workers"), "{pools}");
    assert!(pools[0]["gpu_hours"].as_f64().unwrap() > 0.0, "{pools}");

    // Cancel while RunPod runs it: /cancel reaches RunPod, the job ends cancelled.
    let id = c.submit("user01", &sleep_prompt(30.0, 2)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !emu.states().contains_key("IN_PROGRESS") {
        assert!(
            Instant::now() < deadline,
            "never started: {:?}",
            emu.states()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = reqwest::Client::new()
        .post(format!("{}/api/jobs/{id}/cancel", f.base))
        .bearer_auth(&f.token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let j = wait_final(&c, &id, Duration::from_secs(30)).await;
    assert_eq!(j.status.as_str(), "cancelled", "{}", c.logs());
    assert_eq!(emu.stats.cancels.load(Ordering::Relaxed), 1);
    assert_eq!(
        emu.states().get("CANCELLED"),
        Some(&1),
        "{:?}",
        emu.states()
    );
    assert!(!c.logs().contains(KEY), "the API key leaked into a log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_faults_lose_nothing_and_bad_payloads_fail_with_a_reason() {
    let (comfy, emu) = endpoint(2).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        pools: vec![pool(&emu, &comfy, dir.path(), KEY, json!({"timeout_s": 2})).await],
        max_attempts: 3,
        lease_ms: 3000,
        max_output_bytes: Some(1 << 20),
        ..Spec::default()
    };
    let c = Cluster::start(&spec).await;
    wait_connected(&c, 1).await;
    c.wait_catalogue("user01").await;

    // A burst of 503s and garbage status bodies: ridden out.
    emu.faults.unavailable.store(3, Ordering::SeqCst);
    emu.faults.garbage_status.store(3, Ordering::SeqCst);
    let j = submit_and_wait(&c, "user01", &sleep_prompt(0.2, 10), 60).await;
    assert_eq!(j.status.as_str(), "succeeded", "{}", c.logs());
    assert_eq!(j.attempts, 0, "a short outage is not a retry");

    // A job RunPod forgets (404): given back and run again, once.
    emu.faults.vanish.store(1, Ordering::SeqCst);
    let j = submit_and_wait(&c, "user01", &sleep_prompt(0.2, 11), 60).await;
    assert_eq!(j.status.as_str(), "succeeded", "{}", c.logs());
    assert_eq!(j.attempts, 1, "run again once");

    // A status that never completes: taken back after the time limit.
    emu.faults.hang.store(1, Ordering::SeqCst);
    let j = submit_and_wait(&c, "user01", &sleep_prompt(0.2, 12), 90).await;
    assert_eq!(j.status.as_str(), "succeeded", "{}", c.logs());
    assert_eq!(j.attempts, 1, "run again once");

    // A malformed output every time: retried, then failed saying why.
    emu.faults.malformed.store(100, Ordering::SeqCst);
    let j = submit_and_wait(&c, "user01", &sleep_prompt(0.2, 13), 90).await;
    emu.faults.malformed.store(0, Ordering::SeqCst);
    assert_eq!(j.status.as_str(), "failed");
    let why = j
        .error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    assert!(why.contains("not valid base64"), "{why}");

    // An output over the workshop's limit: failed at once, saying so.
    emu.faults.oversize_bytes.store(2 << 20, Ordering::SeqCst);
    emu.faults.oversize.store(1, Ordering::SeqCst);
    let j = submit_and_wait(&c, "user01", &sleep_prompt(0.2, 14), 60).await;
    assert_eq!(j.status.as_str(), "failed");
    assert_eq!(j.attempts, 0, "not retried: it would be as large again");
    let why = j
        .error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    assert!(why.contains("larger than the workshop's limit"), "{why}");

    // The workflow's own error: failed with ComfyUI's message.
    let fail: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/comfyui_nodes/workflows/fail.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let j = submit_and_wait(&c, "user01", &fail, 60).await;
    assert_eq!(j.status.as_str(), "failed");
    let why = j
        .error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    assert!(why.contains("intentional failure"), "{why}");

    // Exactly one output file per succeeded job: nothing duplicated.
    let files = c.output_files("user01");
    assert_eq!(files.len(), 3, "{files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_keeps_the_pool_out_and_jobs_run_on_the_local_gpu() {
    let (comfy, emu) = endpoint(1).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        comfyuis: vec![comfy.url.clone()],
        pools: vec![pool(&emu, &comfy, dir.path(), "rpa_WRONGKEY_999", json!({})).await],
        ..Spec::default()
    };
    let c = Cluster::start(&spec).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while emu.stats.unauthorized.load(Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline, "the adapter never tried");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pools = c.admin_get("/pools").await;
    let rp = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "runpod")
        .unwrap();
    assert_eq!(rp["workers"][0]["state"], "starting", "{pools}");
    let why = rp["workers"][0]["error"].as_str().unwrap_or_default();
    assert!(why.contains("API key") && why.contains("401"), "{pools}");
    let j = submit_and_wait(&c, "user01", &sleep_prompt(0.2, 20), 60).await;
    assert_eq!(j.status.as_str(), "succeeded");
    assert_eq!(j.worker.as_deref(), Some("gpu0"));
    assert_eq!(emu.stats.runs.load(Ordering::Relaxed), 0);
    assert!(!c.logs().contains("WRONGKEY"), "the key leaked into a log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_burst_pool_joins_only_while_the_line_is_long_and_draining_it_mid_job_loses_nothing() {
    let (comfy, emu) = endpoint(2).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        participants: 3,
        comfyuis: vec![comfy.url.clone()],
        pools: vec![
            pool(
                &emu,
                &comfy,
                dir.path(),
                KEY,
                json!({"burst": "line_over:3"}),
            )
            .await,
        ],
        ..Spec::default()
    };
    let c = Cluster::start(&spec).await;
    wait_connected(&c, 1).await;

    // A short line: the local GPU alone.
    let mut short = vec![];
    for n in 0..2 {
        short.push(
            c.submit("user01", &sleep_prompt(0.3, 30 + n))
                .await
                .unwrap(),
        );
    }
    for id in &short {
        let j = wait_final(&c, id, Duration::from_secs(60)).await;
        assert_eq!(j.worker.as_deref(), Some("gpu0"), "{}", c.logs());
    }
    assert_eq!(emu.stats.runs.load(Ordering::Relaxed), 0);

    // A long line: RunPod joins.
    let mut long = vec![];
    for n in 0..9 {
        let user = format!("user0{}", n % 3 + 1);
        long.push((
            user.clone(),
            c.submit(&user, &sleep_prompt(1.5, 40 + n)).await.unwrap(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while emu.stats.runs.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "RunPod never joined: {}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Drained while it holds a job: that job still ends well.
    let (s, v) = c
        .admin_post("/pools/runpod", json!({"state": "drain"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let jepsen = c.settle(&long, Duration::from_secs(180)).await;
    assert_eq!(jepsen.succeeded, 9, "{jepsen:?}\n{}", c.logs());
    let q = c.queue().await;
    let mut on_runpod = 0;
    for (_, id) in &long {
        if q.job(id).await.unwrap().unwrap().worker.as_deref() == Some("runpod-1") {
            on_runpod += 1;
        }
    }
    assert!(on_runpod >= 1, "no job ran on RunPod");
    let runs_after_drain = emu.stats.runs.load(Ordering::Relaxed);

    // Enabled again with a short line: it stays out.
    c.admin_post("/pools/runpod", json!({"state": "enable"}))
        .await;
    let j = submit_and_wait(&c, "user02", &sleep_prompt(0.2, 60), 60).await;
    assert_eq!(j.worker.as_deref(), Some("gpu0"));
    assert_eq!(emu.stats.runs.load(Ordering::Relaxed), runs_after_drain);
}
