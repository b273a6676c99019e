//! The instructor's node policy (`[nodes] allow/deny`) at a participant's
//! `POST /prompt`: a workflow using a denied node — one the workers have or
//! one they do not — or, in allow-list mode, a node outside the list is
//! refused with ComfyUI's 400 shape naming the node and the policy, and
//! nothing is queued; workflows within the policy are queued as before.
//!
//! Why this exists: some nodes run arbitrary code or read files on the GPU
//! server (`LoadImageOutput` reads the worker's output folder, where every
//! participant's results pass). The policy is the instructor's only guard
//! against a participant's hand-edited or downloaded workflow using one,
//! so it must hold at the one door every prompt comes through, and the
//! real editor must be able to show why.

mod support;

use comfy_multi::config::NodesConfig;
use comfy_multi::frontend::{run, FrontendState, NodePolicy};
use comfy_multi::queue::Queue;
use serde_json::{json, Value};
use support::report::{Record, Section};
use support::RedisServer;
use tokio_util::sync::CancellationToken;

/// Nodes that read the server's files or would run code.
const DENIED: [&str; 2] = ["LoadImageOutput", "RunPythonCode"];
/// The allow-list participant may use only these.
const ALLOWED: [&str; 3] = ["EmptyImage", "SaveImage", "PreviewImage"];

struct Setup {
    _redis: RedisServer,
    queue: Queue,
    _state: tempfile::TempDir,
    http: reqwest::Client,
}

impl Setup {
    async fn start() -> Setup {
        let redis = RedisServer::start();
        let queue = support::queue(&redis, support::test_settings()).await;
        support::store_catalogue(&queue).await;
        Setup {
            _redis: redis,
            queue,
            _state: tempfile::tempdir().unwrap(),
            http: reqwest::Client::new(),
        }
    }

    /// `participant`'s server under `policy`; returns its base URL.
    async fn frontend(&self, participant: &str, policy: NodesConfig) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/{participant}", listener.local_addr().unwrap());
        let state = self._state.path();
        let fs = FrontendState::new(
            participant,
            self.queue.clone(),
            state.join("static"),
            state.join("users").join(participant),
            1 << 20,
        )
        .with_node_policy(NodePolicy::new(&policy));
        tokio::spawn(run(listener, fs, CancellationToken::new()));
        base
    }

    /// (status, body) of `POST <base><path>` with `prompt`.
    async fn submit(&self, base: &str, path: &str, prompt: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{base}{path}"))
            .json(&json!({"prompt": prompt, "client_id": "policy-test"}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Jobs of `participant` waiting in the queue.
    async fn waiting(&self, participant: &str) -> usize {
        self.queue
            .participant_queue(participant, 1)
            .await
            .unwrap()
            .waiting
            .len()
    }
}

fn deny_list() -> NodesConfig {
    NodesConfig {
        allow: vec![],
        deny: DENIED.iter().map(|s| s.to_string()).collect(),
    }
}

fn allow_list() -> NodesConfig {
    NodesConfig {
        allow: ALLOWED.iter().map(|s| s.to_string()).collect(),
        deny: vec![],
    }
}

/// EmptyImage → `middle` (taking `image`) → SaveImage; node "2" is `middle`.
fn through(middle: &str, n: u64) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": n}},
        "2": {"class_type": middle, "inputs": {"image": ["1", 0]}, "_meta": {"title": "Step"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}}
    })
}

/// Reads the worker's output folder: LoadImageOutput → SaveImage.
fn reads_outputs(n: u64) -> Value {
    json!({
        "1": {"class_type": "LoadImageOutput", "inputs": {"image": format!("someone_{n}.png [output]")}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}}
    })
}

/// Whether `(status, body)` is the policy's refusal of node `id` of type
/// `class`, in ComfyUI's 400 shape with `outputs` depending on it.
fn is_policy_refusal(
    (status, body): &(u16, Value),
    id: &str,
    class: &str,
    outputs: &[&str],
) -> bool {
    let e = &body["error"];
    let n = &body["node_errors"][id];
    let message = e["message"].as_str().unwrap_or_default();
    *status == 400
        && e["type"] == "node_not_allowed"
        && message.contains(&format!("node policy does not allow node '{class}'"))
        && e["details"].is_string()
        && e["extra_info"].is_object()
        && body["node_errors"].as_object().map(|m| m.len()) == Some(1)
        && n["class_type"] == class
        && n["dependent_outputs"] == json!(outputs)
        && n["errors"][0]["type"] == "node_not_allowed"
        && n["errors"][0]["message"] == e["message"]
        && n["errors"][0]["details"].is_string()
        && n["errors"][0]["extra_info"]["class_type"] == class
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_with_nodes_the_instructor_refused_are_refused_with_the_policy_error_and_never_queued(
) {
    let t = Setup::start().await;
    let denying = t.frontend("user07", deny_list()).await;
    let allowing = t.frontend("user08", allow_list()).await;

    let mut denied_submits = 0;
    let mut denied_refused = 0;
    let mut unlisted_submits = 0;
    let mut unlisted_refused = 0;
    let mut allowed_submits = 0;
    let mut allowed_accepted = 0;
    let mut wrong = vec![];
    for n in 0..10u64 {
        // Both route spellings the app and script clients use.
        let path = if n % 2 == 0 { "/prompt" } else { "/api/prompt" };
        // A denied node the workers have, and one they do not: the policy
        // answers first, not "missing node type".
        for (prompt, id, class, outputs) in [
            (reads_outputs(n), "1", "LoadImageOutput", vec!["2"]),
            (through("RunPythonCode", n), "2", "RunPythonCode", vec!["3"]),
        ] {
            denied_submits += 1;
            let r = t.submit(&denying, path, &prompt).await;
            if is_policy_refusal(&r, id, class, &outputs) {
                denied_refused += 1;
            } else {
                wrong.push(format!("user07 {class}: {r:?}"));
            }
        }
        // Allow-list mode: ImageInvert is a fine node, but not on the list.
        unlisted_submits += 1;
        let r = t.submit(&allowing, path, &through("ImageInvert", n)).await;
        if is_policy_refusal(&r, "2", "ImageInvert", &["3"]) {
            unlisted_refused += 1;
        } else {
            wrong.push(format!("user08 ImageInvert: {r:?}"));
        }
        // Within the policy: queued as ever, on both.
        for base in [&denying, &allowing] {
            allowed_submits += 1;
            let (status, body) = t.submit(base, path, &support::prompt(n)).await;
            if status == 200 && body["prompt_id"].is_string() {
                allowed_accepted += 1;
            } else {
                wrong.push(format!("allowed prompt on {base}: {status} {body}"));
            }
        }
    }
    // A refused node in the middle of an otherwise fine workflow on the
    // deny-list frontend (ImageInvert is allowed there).
    allowed_submits += 1;
    if t.submit(&denying, "/prompt", &through("ImageInvert", 99))
        .await
        .0
        == 200
    {
        allowed_accepted += 1;
    }
    let waiting = t.waiting("user07").await + t.waiting("user08").await;

    let passed = denied_refused == denied_submits
        && unlisted_refused == unlisted_submits
        && allowed_accepted == allowed_submits
        && waiting == allowed_accepted
        && wrong.is_empty();
    let mut record = Record::new(
        Section::Input,
        "input-node-policy",
        "A workflow with a node the instructor's node policy refuses",
    )
    .setup(format!(
        "two participants' frontends on one queue with the ComfyUI 0.3.64 catalogue: user07 with \
         nodes.deny = {DENIED:?} (one the workers have, one they do not), user08 with \
         nodes.allow = {ALLOWED:?}; POST /prompt and /api/prompt alternately"
    ))
    .measure("submits with a denied node", denied_submits)
    .measure("refused 400 node_not_allowed", denied_refused)
    .measure(
        "submits with a node outside the allow list",
        unlisted_submits,
    )
    .measure(
        "refused 400 node_not_allowed (allow list)",
        unlisted_refused,
    )
    .measure(
        "refused jobs queued",
        waiting as i64 - allowed_accepted as i64,
    )
    .measure("submits within the policy", allowed_submits)
    .measure("accepted and queued", allowed_accepted)
    .measure("other answers", wrong.len());
    record.passed = passed;
    record.write();
    assert!(
        wrong.is_empty(),
        "unexpected answers:\n{}",
        wrong.join("\n")
    );
    assert!(passed, "denied {denied_refused}/{denied_submits}, unlisted {unlisted_refused}/{unlisted_submits}, allowed {allowed_accepted}/{allowed_submits}, waiting {waiting}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_names_every_refused_node_and_the_editor_can_highlight_each() {
    let t = Setup::start().await;
    let base = t.frontend("user07", deny_list()).await;
    let prompt = json!({
        "1": {"class_type": "LoadImageOutput", "inputs": {"image": "x.png [output]"}},
        "2": {"class_type": "RunPythonCode", "inputs": {"image": ["1", 0], "code": "import os"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    });
    let (status, body) = t.submit(&base, "/prompt", &prompt).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "node_not_allowed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("does not allow nodes 'LoadImageOutput', 'RunPythonCode'"),
        "{message}"
    );
    let errors = body["node_errors"].as_object().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    assert_eq!(errors["1"]["class_type"], "LoadImageOutput");
    // Everything downstream of a refused node, as ComfyUI lists them.
    assert_eq!(errors["1"]["dependent_outputs"], json!(["3", "4"]));
    assert_eq!(errors["2"]["dependent_outputs"], json!(["3"]));
    let details = errors["1"]["errors"][0]["details"].as_str().unwrap();
    assert!(details.contains("deny list"), "{details}");
    assert_eq!(t.waiting("user07").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_nodes_stay_in_the_editors_catalogue_marked_deprecated_with_the_reason() {
    let t = Setup::start().await;
    let base = t.frontend("user08", allow_list()).await;
    let info: Value = t
        .http
        .get(format!("{base}/object_info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The editor hides deprecated nodes from its search and library, and a
    // workflow that uses one still loads (and is refused at submit).
    let invert = &info["ImageInvert"];
    assert_eq!(invert["deprecated"], true, "{invert}");
    let description = invert["description"].as_str().unwrap();
    assert!(description.contains("allow list"), "{description}");
    for allowed in ALLOWED {
        assert_ne!(info[allowed]["deprecated"], true, "{allowed}");
    }
    assert!(info.as_object().unwrap().len() > 500, "nothing is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_holds_before_any_worker_has_said_which_nodes_it_has() {
    let redis = RedisServer::start();
    // No catalogue stored: prompts are only checked for a class_type.
    let t = Setup {
        queue: support::queue(&redis, support::test_settings()).await,
        _redis: redis,
        _state: tempfile::tempdir().unwrap(),
        http: reqwest::Client::new(),
    };
    let base = t.frontend("user07", deny_list()).await;
    let r = t.submit(&base, "/prompt", &reads_outputs(1)).await;
    // Without a catalogue no output is known to depend on it.
    assert!(is_policy_refusal(&r, "1", "LoadImageOutput", &[]), "{r:?}");
    assert_eq!(t.submit(&base, "/prompt", &support::prompt(1)).await.0, 200);
    assert_eq!(t.waiting("user07").await, 1);
}
