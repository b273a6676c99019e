//! The instructor's workflows (`workflows/` at the repo root), checked so a
//! broken one cannot land: each must open in the editor as it is, name only
//! nodes ComfyUI 0.3.64 has, wire outputs to inputs of the same type, give
//! every widget a value it accepts, and say in `workflows/README.md` which
//! model files it needs. The model-free demos are also converted to API
//! prompts (as the editor does on Run) and run on a REAL CPU ComfyUI.
//!
//! Why this exists: every participant gets these files in their workflow
//! browser at the start of the workshop; one that fails to load or to run
//! costs a room full of people their first minutes.

mod support_comfyui;

use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support_comfyui::ComfyUi;

/// Nodes that live only in the editor: never sent to ComfyUI.
const FRONTEND_ONLY: &[&str] = &["Note", "MarkdownNote", "PrimitiveNode", "Reroute"];
/// Combo inputs naming a model file: the options depend on the machine.
const MODEL_COMBOS: &[&str] = &[
    "ckpt_name",
    "unet_name",
    "vae_name",
    "lora_name",
    "control_net_name",
    "style_model_name",
    "clip_vision_name",
    "model_name",
    "upscale_model",
];
const MODEL_EXTENSIONS: &[&str] = &[
    ".safetensors",
    ".ckpt",
    ".pt",
    ".pth",
    ".bin",
    ".gguf",
    ".sft",
];
const IMAGE_EXTENSIONS: &[&str] = &[".png", ".jpg", ".jpeg", ".webp"];
const SEED_CONTROLS: &[&str] = &["fixed", "increment", "decrement", "randomize"];
const TINY_PNG: &[u8] = include_bytes!("fixtures/tiny_8x6.png");

fn workflows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows")
}

fn object_info() -> &'static Map<String, Value> {
    static INFO: OnceLock<Map<String, Value>> = OnceLock::new();
    INFO.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/comfyui-0.3.64/object_info.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    })
}

/// Every `*.json` under `workflows/` as (name relative to it, path), sorted.
fn workflow_files() -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let rel = format!("{prefix}{name}");
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), &format!("{rel}/"), out);
            } else if name.ends_with(".json") {
                out.push((rel, e.path()));
            }
        }
    }
    let mut out = vec![];
    walk(&workflows_dir(), "", &mut out);
    out.sort();
    assert!(!out.is_empty(), "no workflows in {:?}", workflows_dir());
    out
}

/// Every workflow, parsed; panics naming the files that are not JSON.
fn workflows() -> Vec<(String, Value)> {
    let mut bad = vec![];
    let mut out = vec![];
    for (rel, path) in workflow_files() {
        match serde_json::from_slice(&std::fs::read(&path).unwrap()) {
            Ok(v) => out.push((rel, v)),
            Err(e) => bad.push(format!("{rel}: {e}")),
        }
    }
    assert!(bad.is_empty(), "invalid JSON:\n{}", bad.join("\n"));
    out
}

fn demos() -> Vec<(String, Value)> {
    let d: Vec<_> = workflows()
        .into_iter()
        .filter(|(rel, _)| rel.starts_with("demo/"))
        .collect();
    assert!(!d.is_empty(), "no demo workflows");
    d
}

/// Runs `check` on every workflow and fails listing every problem found.
fn check_every_workflow(check: impl Fn(&Value, &mut Vec<String>)) {
    let mut problems = vec![];
    for (rel, wf) in workflows() {
        let mut found = vec![];
        check(&wf, &mut found);
        problems.extend(found.into_iter().map(|p| format!("{rel}: {p}")));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

// ---- what object_info says about a node ------------------------------------

fn node_def(class: &str) -> Option<&'static Value> {
    object_info().get(class)
}

fn nodes(wf: &Value) -> &Vec<Value> {
    wf["nodes"].as_array().expect("nodes is an array")
}

fn class_of(node: &Value) -> &str {
    node["type"].as_str().unwrap_or("")
}

fn is_frontend_only(node: &Value) -> bool {
    FRONTEND_ONLY.contains(&class_of(node))
}

/// The type of an input spec: `INT`, `IMAGE`…, or `COMBO` for option lists.
fn spec_type(spec: &Value) -> &str {
    match &spec[0] {
        Value::Array(_) => "COMBO",
        v => v.as_str().unwrap_or(""),
    }
}

fn spec_opts(spec: &Value) -> &Value {
    &spec[1]
}

/// Whether the editor shows this input as a widget (not a socket).
fn is_widget(spec: &Value) -> bool {
    ["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"].contains(&spec_type(spec))
        && spec_opts(spec)["forceInput"] != true
}

fn combo_options(spec: &Value) -> Vec<Value> {
    match &spec[0] {
        Value::Array(list) => list.clone(),
        _ => spec_opts(spec)["options"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    }
}

/// (name, spec) of a node's inputs in the order the editor lays them out:
/// `input_order`'s required, then optional.
fn ordered_inputs(def: &'static Value) -> Vec<(&'static str, &'static Value)> {
    let mut out = vec![];
    for section in ["required", "optional"] {
        let names: Vec<&str> = match def["input_order"][section].as_array() {
            Some(order) => order.iter().filter_map(Value::as_str).collect(),
            None => def["input"][section]
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default(),
        };
        for name in names {
            out.push((name, &def["input"][section][name]));
        }
    }
    out
}

fn input_spec(def: &'static Value, name: &str) -> Option<&'static Value> {
    ordered_inputs(def)
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| s)
}

/// One entry of a node's `widgets_values`.
enum Slot {
    Input(&'static str, &'static Value),
    /// The "control after generate" combo the editor adds after a seed.
    SeedControl,
    /// The "choose file to upload" button after an upload combo (Load
    /// Image's): the editor saves its value, `"image"`, too.
    UploadButton,
}

/// The editor's widgets for a node, in `widgets_values` order. Like the
/// editor (1.58), an INT input gets a control widget after it when its spec
/// says `control_after_generate`, or, when the spec is silent, when it is
/// named `seed` or `noise_seed`; an `image_upload` combo gets its button.
fn widget_slots(def: &'static Value) -> Vec<Slot> {
    let mut out = vec![];
    for (name, spec) in ordered_inputs(def) {
        if !is_widget(spec) {
            continue;
        }
        out.push(Slot::Input(name, spec));
        let control = match &spec_opts(spec)["control_after_generate"] {
            Value::Null => ["seed", "noise_seed"].contains(&name),
            Value::Bool(b) => *b,
            _ => true,
        };
        if spec_type(spec) == "INT" && control {
            out.push(Slot::SeedControl);
        }
        if spec_type(spec) == "COMBO" && spec_opts(spec)["image_upload"] == true {
            out.push(Slot::UploadButton);
        }
    }
    out
}

fn is_model_combo(name: &str) -> bool {
    MODEL_COMBOS.contains(&name) || name.starts_with("clip_name")
}

/// The model files a workflow names (values of model-file combos).
fn model_files(wf: &Value) -> Vec<String> {
    let mut out = vec![];
    for node in nodes(wf) {
        let Some(def) = node_def(class_of(node)) else {
            continue;
        };
        let values = node["widgets_values"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (slot, value) in widget_slots(def).iter().zip(values) {
            if let (Slot::Input(name, _), Value::String(file)) = (slot, value) {
                if is_model_combo(name) {
                    out.push(file);
                }
            }
        }
    }
    out
}

// ---- the editor → API conversion ------------------------------------------

/// The API prompt the editor sends on Run: node id → {class_type, inputs},
/// widget values mapped through `input_order`, links as [from id, slot].
/// Editor-only nodes are left out. (Checked once by hand against the real
/// editor: frontend 1.58.1's `app.graphToPrompt()` gave the same prompt for
/// every workflow here, but for its `_meta` titles.)
fn to_api_prompt(wf: &Value) -> Value {
    let links: HashMap<u64, (u64, u64)> = wf["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l[0].as_u64().unwrap(),
                (l[1].as_u64().unwrap(), l[2].as_u64().unwrap()),
            )
        })
        .collect();
    let mut prompt = Map::new();
    for node in nodes(wf) {
        if is_frontend_only(node) {
            continue;
        }
        assert_eq!(node["mode"], 0, "muted or bypassed node in a demo");
        let class = class_of(node);
        let def = node_def(class).unwrap_or_else(|| panic!("unknown node {class}"));
        let linked: HashMap<&str, u64> = node["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| Some((i["name"].as_str()?, i["link"].as_u64()?)))
            .collect();
        let mut values = node["widgets_values"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter();
        let mut inputs = Map::new();
        for slot in widget_slots(def) {
            let value = values.next().expect("a value for every widget");
            if let Slot::Input(name, _) = slot {
                inputs.insert(name.to_string(), value);
            }
        }
        for (name, link) in linked {
            let (from, slot) = links[&link];
            inputs.insert(name.to_string(), json!([from.to_string(), slot]));
        }
        prompt.insert(
            node["id"].to_string(),
            json!({"class_type": class, "inputs": inputs}),
        );
    }
    Value::Object(prompt)
}

// ---- the checks ------------------------------------------------------------

#[test]
fn every_workflow_is_editor_json_in_format_0_4() {
    check_every_workflow(|wf, found| {
        for key in [
            "last_node_id",
            "last_link_id",
            "nodes",
            "links",
            "groups",
            "config",
            "extra",
            "version",
        ] {
            if wf.get(key).is_none() {
                found.push(format!("no top-level {key:?}"));
            }
        }
        if wf["version"] != json!(0.4) {
            found.push(format!("version is {}, not 0.4", wf["version"]));
        }
        for (key, ok) in [
            ("nodes", wf["nodes"].is_array()),
            ("links", wf["links"].is_array()),
            ("groups", wf["groups"].is_array()),
            ("config", wf["config"].is_object()),
            ("extra", wf["extra"].is_object()),
        ] {
            if !ok {
                found.push(format!("{key} has the wrong JSON type"));
            }
        }
        let Some(nodes) = wf["nodes"].as_array() else {
            return;
        };
        let mut ids = HashSet::new();
        let mut orders = HashSet::new();
        for node in nodes {
            let id = node["id"].as_u64();
            let what = format!("node {}", node["id"]);
            if !id.is_some_and(|id| ids.insert(id)) {
                found.push(format!("{what}: id missing, not a number or repeated"));
            }
            if !node["type"].is_string() {
                found.push(format!("{what}: no type"));
            }
            for key in ["pos", "size"] {
                let ok = node[key]
                    .as_array()
                    .is_some_and(|a| a.len() == 2 && a.iter().all(Value::is_number));
                if !ok {
                    found.push(format!("{what}: {key} is not [x, y]"));
                }
            }
            for (key, ok) in [
                ("flags", node["flags"].is_object()),
                ("properties", node["properties"].is_object()),
                ("inputs", node["inputs"].is_array()),
                ("outputs", node["outputs"].is_array()),
                ("mode", node["mode"].is_u64()),
                (
                    "widgets_values",
                    node.get("widgets_values").is_none_or(Value::is_array),
                ),
            ] {
                if !ok {
                    found.push(format!("{what}: {key} missing or of the wrong JSON type"));
                }
            }
            if !node["order"].as_u64().is_some_and(|o| orders.insert(o)) {
                found.push(format!("{what}: order missing or repeated"));
            }
            if !is_frontend_only(node) && node["properties"]["Node name for S&R"] != node["type"] {
                found.push(format!("{what}: \"Node name for S&R\" is not its type"));
            }
        }
        if ids.iter().any(|&id| Some(id) > wf["last_node_id"].as_u64()) {
            found.push("last_node_id is below a node's id".into());
        }
        let mut link_ids = HashSet::new();
        for link in wf["links"].as_array().into_iter().flatten() {
            let ok = link.as_array().is_some_and(|l| {
                l.len() == 6 && l[..5].iter().all(Value::is_u64) && l[5].is_string()
            });
            if !ok || !link_ids.insert(link[0].as_u64()) {
                found.push(format!(
                    "link {link} is not [id, from, slot, to, slot, type] or repeats an id"
                ));
            }
            if link[0].as_u64() > wf["last_link_id"].as_u64() {
                found.push(format!("last_link_id is below link {}", link[0]));
            }
        }
    });
}

#[test]
fn every_node_is_one_comfyui_0_3_64_has_or_lives_in_the_editor() {
    check_every_workflow(|wf, found| {
        for node in nodes(wf) {
            let class = class_of(node);
            if node_def(class).is_none() && !is_frontend_only(node) {
                found.push(format!("node {}: unknown type {class:?}", node["id"]));
            }
        }
    });
}

#[test]
fn every_link_joins_existing_slots_of_the_same_type() {
    check_every_workflow(|wf, found| {
        let by_id: HashMap<u64, &Value> = nodes(wf)
            .iter()
            .filter_map(|n| Some((n["id"].as_u64()?, n)))
            .collect();
        let mut link_ids = HashSet::new();
        for link in wf["links"].as_array().unwrap() {
            let l = link.as_array().unwrap();
            let (id, ty) = (l[0].as_u64().unwrap(), l[5].as_str().unwrap());
            link_ids.insert(id);
            let (Some(from), Some(to)) = (
                by_id.get(&l[1].as_u64().unwrap()),
                by_id.get(&l[3].as_u64().unwrap()),
            ) else {
                found.push(format!("link {id} joins a node that does not exist"));
                continue;
            };
            let out = &from["outputs"][l[2].as_u64().unwrap() as usize];
            let inp = &to["inputs"][l[4].as_u64().unwrap() as usize];
            if !out["links"]
                .as_array()
                .is_some_and(|ls| ls.contains(&json!(id)))
            {
                found.push(format!("link {id}: its output slot does not list it"));
            }
            if inp["link"] != json!(id) {
                found.push(format!(
                    "link {id}: its input slot names link {}",
                    inp["link"]
                ));
            }
            if is_frontend_only(from) || is_frontend_only(to) {
                continue;
            }
            if out["type"] != ty || inp["type"] != ty {
                found.push(format!(
                    "link {id} is {ty} but joins {} to {}",
                    out["type"], inp["type"]
                ));
            }
            let declared_out = node_def(class_of(from))
                .and_then(|d| d["output"].get(l[2].as_u64().unwrap() as usize));
            if declared_out != Some(&json!(ty)) {
                found.push(format!(
                    "link {id}: {} has no {ty} output in that slot",
                    class_of(from)
                ));
            }
            let declared_in = inp["name"]
                .as_str()
                .zip(node_def(class_of(to)))
                .and_then(|(name, def)| input_spec(def, name));
            if declared_in.map(spec_type) != Some(ty) {
                found.push(format!(
                    "link {id}: {}.{} does not take {ty}",
                    class_of(to),
                    inp["name"]
                ));
            }
        }
        for node in nodes(wf) {
            for slot in node["inputs"].as_array().into_iter().flatten() {
                if let Some(link) = slot["link"].as_u64() {
                    if !link_ids.contains(&link) {
                        found.push(format!(
                            "node {}: input names missing link {link}",
                            node["id"]
                        ));
                    }
                }
            }
            for slot in node["outputs"].as_array().into_iter().flatten() {
                for link in slot["links"].as_array().into_iter().flatten() {
                    if !link_ids.contains(&link.as_u64().unwrap_or(0)) {
                        found.push(format!(
                            "node {}: output names missing link {link}",
                            node["id"]
                        ));
                    }
                }
            }
        }
    });
}

#[test]
fn every_required_input_of_every_node_is_connected() {
    check_every_workflow(|wf, found| {
        for node in nodes(wf) {
            let Some(def) = node_def(class_of(node)) else {
                continue;
            };
            let slots: HashMap<&str, &Value> = node["inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| Some((s["name"].as_str()?, s)))
                .collect();
            for name in def["input_order"]["required"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let name = name.as_str().unwrap();
                let spec = input_spec(def, name).unwrap();
                if !is_widget(spec) && !slots.get(name).is_some_and(|s| s["link"].is_u64()) {
                    found.push(format!(
                        "node {} ({}): {name} is not connected",
                        node["id"],
                        class_of(node)
                    ));
                }
            }
            for name in slots.keys() {
                if input_spec(def, name).is_none() {
                    found.push(format!(
                        "node {}: {} has no input {name}",
                        node["id"],
                        class_of(node)
                    ));
                }
            }
        }
    });
}

#[test]
fn widget_values_fit_the_widgets_in_number_order_and_kind() {
    check_every_workflow(|wf, found| {
        for node in nodes(wf) {
            let what = format!("node {} ({})", node["id"], class_of(node));
            let values = node["widgets_values"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if matches!(class_of(node), "Note" | "MarkdownNote") {
                if !(values.len() == 1 && values[0].is_string()) {
                    found.push(format!("{what}: a note holds one text"));
                }
                continue;
            }
            let Some(def) = node_def(class_of(node)) else {
                continue;
            };
            let slots = widget_slots(def);
            if values.len() != slots.len() {
                found.push(format!(
                    "{what}: {} widget values for {} widgets",
                    values.len(),
                    slots.len()
                ));
                continue;
            }
            for (slot, value) in slots.iter().zip(&values) {
                let problem = match slot {
                    Slot::SeedControl => {
                        (!value.as_str().is_some_and(|v| SEED_CONTROLS.contains(&v)))
                            .then(|| format!("{value} is not a seed control"))
                    }
                    Slot::UploadButton => (value != "image")
                        .then(|| format!("upload button: {value} is not \"image\"")),
                    Slot::Input(name, spec) => widget_problem(class_of(node), name, spec, value)
                        .map(|p| format!("{name}: {p}")),
                };
                if let Some(p) = problem {
                    found.push(format!("{what}: {p}"));
                }
            }
        }
    });
}

/// What is wrong with `value` for the widget `name` of `class`, if anything.
fn widget_problem(class: &str, name: &str, spec: &Value, value: &Value) -> Option<String> {
    let opts = spec_opts(spec);
    let out_of_range = |v: f64| {
        opts["min"].as_f64().is_some_and(|min| v < min)
            || opts["max"].as_f64().is_some_and(|max| v > max)
    };
    match spec_type(spec) {
        "INT" if !(value.is_i64() || value.is_u64()) => Some(format!("{value} is not an integer")),
        "INT" | "FLOAT" => match value.as_f64() {
            None => Some(format!("{value} is not a number")),
            Some(v) if out_of_range(v) => Some(format!("{value} is out of range")),
            Some(_) => None,
        },
        "STRING" => (!value.is_string()).then(|| format!("{value} is not text")),
        "BOOLEAN" => (!value.is_boolean()).then(|| format!("{value} is not true/false")),
        "COMBO" => {
            let file_kinds = if is_model_combo(name) {
                Some(MODEL_EXTENSIONS)
            } else if class == "LoadImage" && name == "image" {
                Some(IMAGE_EXTENSIONS)
            } else {
                None
            };
            match (file_kinds, value.as_str()) {
                (_, None) => Some(format!("{value} is not text")),
                (Some(exts), Some(file)) => {
                    let lower = file.to_lowercase();
                    let stem_ok = exts
                        .iter()
                        .any(|e| lower.len() > e.len() && lower.ends_with(e));
                    (!stem_ok)
                        .then(|| format!("{file:?} is not a file name ending in one of {exts:?}"))
                }
                (None, Some(_)) => {
                    let options = combo_options(spec);
                    (!options.contains(value)).then(|| {
                        let list: Vec<String> = options.iter().map(Value::to_string).collect();
                        format!("{value} is not one of {}", list.join(", "))
                    })
                }
            }
        }
        other => Some(format!("unexpected widget type {other}")),
    }
}

#[test]
fn every_workflow_and_model_file_it_needs_is_in_the_readme() {
    let readme =
        std::fs::read_to_string(workflows_dir().join("README.md")).expect("workflows/README.md");
    let mut missing = vec![];
    for (rel, wf) in workflows() {
        if !readme.contains(&rel) {
            missing.push(format!("{rel} is not described"));
        }
        for file in model_files(&wf) {
            if !readme.contains(&file) {
                missing.push(format!(
                    "{rel} needs {file}, which the README does not name"
                ));
            }
        }
    }
    assert!(missing.is_empty(), "\n{}", missing.join("\n"));
}

#[test]
fn the_demos_need_no_model_files() {
    for (rel, wf) in demos() {
        assert_eq!(model_files(&wf), Vec::<String>::new(), "{rel}");
    }
}

#[test]
fn a_demo_becomes_the_api_prompt_the_editor_would_send() {
    let (_, wf) = demos()
        .into_iter()
        .find(|(rel, _)| rel == "demo/01-solid-color-invert.json")
        .expect("demo 01");
    assert_eq!(
        to_api_prompt(&wf),
        json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": 1, "color": 3381657}},
            "5": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "demo/inverted", "images": ["2", 0]}},
        })
    );
}

#[test]
fn a_seeds_widget_values_skip_its_control_after_generate() {
    let (_, wf) = workflows()
        .into_iter()
        .find(|(rel, _)| rel == "sd15/txt2img.json")
        .expect("sd15/txt2img.json");
    let prompt = to_api_prompt(&wf);
    let sampler = prompt
        .as_object()
        .unwrap()
        .values()
        .find(|n| n["class_type"] == "KSampler")
        .unwrap();
    let inputs = &sampler["inputs"];
    assert!(inputs["seed"].is_u64());
    assert!(inputs["steps"].is_u64());
    assert_eq!(inputs["sampler_name"], "euler");
    assert_eq!(inputs["scheduler"], "normal");
    assert_eq!(inputs["denoise"], 1.0);
    assert!(inputs.get("control_after_generate").is_none());
}

#[tokio::test]
async fn seeding_a_participant_puts_every_workflow_in_their_browser() {
    let user = tempfile::tempdir().unwrap();
    let files = workflow_files();
    let written = comfy_multi::frontend::seed_workflows(&workflows_dir(), user.path())
        .await
        .unwrap();
    assert_eq!(written, files.len());
    for (rel, path) in files {
        let seeded = user.path().join("user/workflows").join(&rel);
        assert_eq!(
            std::fs::read(&seeded).ok(),
            std::fs::read(&path).ok(),
            "{rel}"
        );
    }
}

// ---- run the demos on a real ComfyUI ---------------------------------------

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

async fn upload_png(http: &reqwest::Client, url: &str) -> String {
    let part = reqwest::multipart::Part::bytes(TINY_PNG.to_vec())
        .file_name("workshop-demo.png")
        .mime_str("image/png")
        .unwrap();
    let form = reqwest::multipart::Form::new().part("image", part);
    let resp = http
        .post(format!("{url}/upload/image"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "upload: {}", resp.status());
    let body: Value = resp.json().await.unwrap();
    match body["subfolder"].as_str() {
        Some(sub) if !sub.is_empty() => format!("{sub}/{}", body["name"].as_str().unwrap()),
        _ => body["name"].as_str().unwrap().to_string(),
    }
}

/// Queues `prompt` and waits for its /history entry; returns that entry.
async fn run_to_end(http: &reqwest::Client, comfy: &ComfyUi, rel: &str, prompt: &Value) -> Value {
    let resp = http
        .post(format!("{}/prompt", comfy.url))
        .json(&json!({"prompt": prompt, "client_id": "cm-workflows-test"}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    assert!(
        status.is_success(),
        "{rel}: ComfyUI refused the prompt ({status}): {body:#}"
    );
    let id = body["prompt_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let history: Value = http
            .get(format!("{}/history/{id}", comfy.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(entry) = history.get(&id) {
            return entry.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{rel}: no result in time; log:\n{}",
            comfy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_demo_runs_to_success_on_a_real_comfyui() {
    let comfy = tokio::task::spawn_blocking(ComfyUi::shared).await.unwrap();
    let http = reqwest::Client::new();
    for (rel, wf) in demos() {
        let mut prompt = to_api_prompt(&wf);
        for node in prompt.as_object_mut().unwrap().values_mut() {
            if node["class_type"] == "LoadImage" {
                node["inputs"]["image"] = json!(upload_png(&http, &comfy.url).await);
            }
        }
        let entry = run_to_end(&http, comfy, &rel, &prompt).await;
        assert_eq!(
            entry["status"]["status_str"], "success",
            "{rel}: {:#}",
            entry["status"]
        );
        for (id, node) in prompt.as_object().unwrap() {
            if !["SaveImage", "PreviewImage"].contains(&node["class_type"].as_str().unwrap()) {
                continue;
            }
            let image = &entry["outputs"][id]["images"][0];
            let kind = image["type"]
                .as_str()
                .unwrap_or_else(|| panic!("{rel}: node {id} made no image: {entry:#}"));
            let file = comfy
                .base_dir
                .join(if kind == "output" { "output" } else { "temp" })
                .join(image["subfolder"].as_str().unwrap())
                .join(image["filename"].as_str().unwrap());
            assert!(
                file.is_file(),
                "{rel}: node {id}'s image {file:?} is missing"
            );
        }
    }
}
