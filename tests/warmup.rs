//! The instructor's warm-up on a workshop of real processes: redis-server,
//! the hub, frontends and a worker agent on a real CPU ComfyUI holding a
//! generated SD 1.5-layout checkpoint (`scripts/comfyui/make_models.py`).

mod support;
mod support_comfyui;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::cluster::{sleep_prompt, Cluster, Spec};
use support_comfyui::{generated_model, ComfyUi};

/// One workshop at a time on this 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn txt2img(ckpt: &str, seed: u64) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/comfyui_nodes/workflows/checkpoint_txt2img.json"
    );
    let mut p: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    p["1"]["inputs"]["ckpt_name"] = json!(ckpt);
    p["5"]["inputs"]["seed"] = json!(seed);
    p
}

fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

/// The worker's description as the hub keeps it (warm-up progress included).
async fn worker_info(c: &Cluster, id: &str) -> Value {
    let q = c.queue().await;
    q.workers()
        .await
        .unwrap()
        .get(id)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

/// ComfyUI's own history: (queue number, filename prefix of its save node,
/// status) per prompt it ran, in queue order.
async fn comfy_history(url: &str) -> Vec<(i64, String, Value)> {
    let h: Value = reqwest::get(format!("{url}/history"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out: Vec<(i64, String, Value)> = h
        .as_object()
        .unwrap()
        .values()
        .map(|e| {
            let prompt = &e["prompt"][2];
            let prefix = prompt
                .as_object()
                .unwrap()
                .values()
                .find_map(|n| n["inputs"]["filename_prefix"].as_str())
                .unwrap_or_default()
                .to_string();
            (
                e["prompt"][0].as_i64().unwrap(),
                prefix,
                e["status"].clone(),
            )
        })
        .collect();
    out.sort_by_key(|e| e.0);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warmup_runs_before_any_participant_job_and_leaves_its_model_warm() {
    let _serial = SERIAL.lock().await;
    let ckpt = generated_model("checkpoint", 1);
    let comfy = ComfyUi::start();
    comfy.add_model("checkpoints", "sd-a.safetensors", &ckpt);
    let dir = tempfile::tempdir().unwrap();
    // The checkpoint, then a pause: long enough to see the worker hold jobs.
    let mut warm = txt2img("sd-a.safetensors", 1);
    warm["8"] =
        json!({"class_type": "CMSleep", "inputs": {"image": ["6", 0], "seconds": 3.0, "steps": 3}});
    warm["7"]["inputs"]["images"] = json!(["8", 0]);
    let spec = Spec {
        comfyuis: vec![comfy.url.clone()],
        warmup: vec![write(dir.path(), "sd-a.json", &warm)],
        ..Spec::default()
    };
    let c = Cluster::start(&spec).await;
    let id = c
        .submit("user01", &txt2img("sd-a.safetensors", 2))
        .await
        .unwrap();
    // While the warm-up runs, the participant's job waits in line.
    let q = c.queue().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut saw_running = false;
    loop {
        let info = worker_info(&c, "gpu0").await;
        let job = q.job(&id).await.unwrap().unwrap();
        if info["warmup"]["state"] == "running" {
            saw_running = true;
            assert_eq!(
                job.status,
                comfy_multi::queue::Status::Queued,
                "a job was handed out during the warm-up"
            );
        }
        if info["warmup"]["state"] == "done" {
            assert_eq!(info["warmup"]["total"], 1, "{info}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "warm-up never ended: {info}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_running, "the warm-up's progress is shown while it runs");
    let jepsen = c
        .settle(&[("user01".into(), id.clone())], Duration::from_secs(120))
        .await;
    assert_eq!(jepsen.succeeded, 1, "{jepsen:?}\n{}", c.logs());

    // ComfyUI ran the warm-up first; the participant's job found the
    // checkpoint loaded (its loader node served from ComfyUI's cache).
    let runs = comfy_history(&comfy.url).await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs[0].1.starts_with("comfy-multi-warmup"), "{runs:?}");
    assert_eq!(runs[0].2["status_str"], "success", "{runs:?}");
    let cached = cached_nodes(&runs[1].2);
    assert!(
        cached.contains(&"1".to_string()),
        "loader not warm: {:?}",
        runs[1].2
    );
    // Nobody was charged for the warm-up, and nobody got its image.
    assert_eq!(c.output_files("user01").len(), 1);
    assert!(c.jobs("user02").await.unwrap().is_empty());

    // On demand: the instructor runs it again.
    let admin = c.admin_token();
    let r = c
        .http
        .post(format!("{}/admin/api/warmup", c.hub_url))
        .bearer_auth(&admin)
        .json(&json!({"worker": "gpu0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .http
        .post(format!("{}/admin/api/warmup", c.hub_url))
        .bearer_auth(&admin)
        .json(&json!({"worker": "gpu9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "an unknown worker is named as such");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let info = worker_info(&c, "gpu0").await;
        if info["warmup"]["run"] == 2 && info["warmup"]["state"] == "done" {
            break;
        }
        assert!(Instant::now() < deadline, "second warm-up: {info}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(comfy_history(&comfy.url).await.len(), 3);

    // What the agent reports loaded follows ComfyUI's cache, which no lease
    // could predict: a model-free job drops the checkpoint, and the next
    // checkpoint job loads it again.
    let tag =
        comfy_multi::catalogue::file_tag("CheckpointLoaderSimple", "ckpt_name", "sd-a.safetensors");
    assert_eq!(
        q.warm_models("gpu0").await.unwrap(),
        std::slice::from_ref(&tag)
    );
    let free = c.submit("user02", &sleep_prompt(0.1, 7)).await.unwrap();
    let jepsen = c
        .settle(&[("user02".into(), free)], Duration::from_secs(120))
        .await;
    assert_eq!(jepsen.succeeded, 1, "{jepsen:?}");
    wait_for_warm(&q, &[]).await;
    let again = c
        .submit("user01", &txt2img("sd-a.safetensors", 3))
        .await
        .unwrap();
    let jepsen = c
        .settle(&[("user01".into(), again)], Duration::from_secs(120))
        .await;
    assert_eq!(jepsen.succeeded, 1, "{jepsen:?}");
    let runs = comfy_history(&comfy.url).await;
    let last = &runs.last().unwrap().2;
    assert!(
        !cached_nodes(last).contains(&"1".to_string()),
        "the checkpoint was still cached after a model-free prompt: {last}"
    );
    wait_for_warm(&q, &[tag]).await;
}

/// The node ids ComfyUI served from its cache in one run (history status).
fn cached_nodes(status: &Value) -> Vec<String> {
    status["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m[0] == "execution_cached")
        .flat_map(|m| m[1]["nodes"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

/// Waits until the queue holds `want` as gpu0's warm models.
async fn wait_for_warm(q: &comfy_multi::queue::Queue, want: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = q.warm_models("gpu0").await.unwrap();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "warm models {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_stuck_warmup_is_reported_and_does_not_hold_the_worker() {
    let _serial = SERIAL.lock().await;
    let comfy = ComfyUi::start();
    let dir = tempfile::tempdir().unwrap();
    let refused = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "nope.pth"}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "w"}},
    });
    let spec = Spec {
        comfyuis: vec![comfy.url.clone()],
        warmup: vec![
            write(dir.path(), "refused.json", &refused),
            write(dir.path(), "stuck.json", &sleep_prompt(8.0, 1)),
        ],
        warmup_timeout_s: 2,
        ..Spec::default()
    };
    let c = Cluster::start(&spec).await;
    let id = c.submit("user01", &sleep_prompt(0.1, 2)).await.unwrap();
    let jepsen = c
        .settle(&[("user01".into(), id)], Duration::from_secs(120))
        .await;
    assert_eq!(jepsen.succeeded, 1, "{jepsen:?}\n{}", c.logs());
    let info = worker_info(&c, "gpu0").await;
    assert_eq!(info["warmup"]["state"], "failed", "{info}");
    let errors = info["warmup"]["errors"].to_string();
    assert!(
        errors.contains("refused.json") && errors.contains("ComfyUI refused it"),
        "{errors}"
    );
    assert!(errors.contains("stuck.json: no answer in time"), "{errors}");
}
