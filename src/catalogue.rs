//! What a worker can run and what a job needs, both read from ComfyUI's own
//! node catalogue (`/object_info`) — no hard-coded list of loader nodes.
//!
//! Why this exists: a workshop's fleet is mixed (the host's GPUs, rented
//! ones with other models or custom nodes), so every job must go to a
//! worker that has its nodes and model files. The agent turns its
//! ComfyUI's catalogue into capability tags ([`caps`]); the frontend turns
//! a prompt into requirement tags ([`needs`]) with the same spelling; the
//! queue's lease matches the two (a job's tags ⊆ the worker's). The editor
//! is served the [`merge`] of every registered worker's catalogue, so a
//! model that exists anywhere is listed.
//!
//! Which inputs name model files ([`model_inputs`]): the COMBO inputs whose
//! options include a file from one of ComfyUI's model folders (`/models`,
//! `/models/{folder}`, when the ComfyUI has those routes), else — older
//! ComfyUIs — the COMBO inputs with an option ending in one of ComfyUI's
//! model file extensions (`folder_paths.supported_pt_extensions`, plus
//! `.gguf`). Upload inputs (`image_upload` & co.) are the participant's
//! files, never a model. Limit: a loader whose folder is empty on every
//! worker has no option to recognise it by; a value for it is refused by
//! the ordinary `value_not_in_list` check instead.

use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashSet};

/// ComfyUI's `folder_paths.supported_pt_extensions`, plus GGUF (custom
/// loaders): what a model file is called when no folder list is at hand.
const MODEL_EXTENSIONS: [&str; 9] = [
    ".ckpt",
    ".pt",
    ".pt2",
    ".bin",
    ".pth",
    ".safetensors",
    ".pkl",
    ".sft",
    ".gguf",
];

/// Tag of a node type a job uses / a worker has.
pub fn node_tag(class: &str) -> String {
    format!("node:{class}")
}

/// Tag of a model file named by a node's input (tabs separate the parts:
/// class names and file names may hold `/` and spaces).
pub fn file_tag(class: &str, input: &str, file: &str) -> String {
    format!("file:{class}\t{input}\t{file}")
}

/// What a tag means, for people: `flux1-schnell.safetensors (ckpt_name of
/// CheckpointLoaderSimple)` or `node type KSampler`.
pub fn describe(tag: &str) -> String {
    if let Some(class) = tag.strip_prefix("node:") {
        return format!("node type {class}");
    }
    if let Some(rest) = tag.strip_prefix("file:") {
        let mut parts = rest.splitn(3, '\t');
        if let (Some(class), Some(input), Some(file)) = (parts.next(), parts.next(), parts.next()) {
            return format!("{file} ({input} of {class})");
        }
    }
    tag.to_string()
}

/// A COMBO input's option list: the old shape `[[a, b], {…}]` or the new
/// `["COMBO", {"options": [a, b]}]`. `None` for other input types.
pub fn combo_list(spec: &Value) -> Option<&Vec<Value>> {
    match spec.get(0)? {
        Value::Array(list) => Some(list),
        Value::String(t) if t == "COMBO" => spec.get(1)?.get("options")?.as_array(),
        _ => None,
    }
}

/// The same list, to change it.
pub fn combo_list_mut(spec: &mut Value) -> Option<&mut Vec<Value>> {
    let Value::Array(parts) = spec else {
        return None;
    };
    match parts.first()? {
        Value::Array(_) => parts.first_mut()?.as_array_mut(),
        Value::String(t) if t == "COMBO" => parts.get_mut(1)?.get_mut("options")?.as_array_mut(),
        _ => None,
    }
}

/// A COMBO input's options as text.
pub fn combo_options(spec: &Value) -> Option<Vec<&str>> {
    Some(combo_list(spec)?.iter().filter_map(Value::as_str).collect())
}

/// Whether an input is one the participant uploads into (`image_upload`,
/// `video_upload`, any `*_upload: true`).
fn is_upload(spec: &Value) -> bool {
    spec.get(1).and_then(Value::as_object).is_some_and(|o| {
        o.iter()
            .any(|(k, v)| k.ends_with("_upload") && v.as_bool() == Some(true))
    })
}

/// Every `(class, input, spec)` of a catalogue, required and optional.
fn inputs(object_info: &Value) -> impl Iterator<Item = (&str, &str, &Value)> {
    object_info
        .as_object()
        .into_iter()
        .flat_map(|nodes| nodes.iter())
        .flat_map(|(class, node)| {
            ["required", "optional"].into_iter().flat_map(move |group| {
                node.get("input")
                    .and_then(|i| i.get(group))
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(move |specs| {
                        specs
                            .iter()
                            .map(move |(input, spec)| (class.as_str(), input.as_str(), spec))
                    })
            })
        })
}

/// The inputs (`(class, input)`) whose values name model files, given the
/// files of ComfyUI's model folders when it lists them (module doc).
pub fn model_inputs(
    object_info: &Value,
    model_files: Option<&HashSet<String>>,
) -> BTreeSet<(String, String)> {
    let looks_like_model = |o: &str| {
        let lower = o.to_ascii_lowercase();
        MODEL_EXTENSIONS.iter().any(|e| lower.ends_with(e))
    };
    inputs(object_info)
        .filter(|(_, _, spec)| !is_upload(spec))
        .filter(|(_, _, spec)| {
            combo_options(spec).is_some_and(|opts| match model_files {
                Some(files) => opts.iter().any(|o| files.contains(*o)),
                None => opts.iter().any(|o| looks_like_model(o)),
            })
        })
        .map(|(c, i, _)| (c.to_string(), i.to_string()))
        .collect()
}

/// A worker's capability tags: every node type, and every model file each
/// model input of its catalogue offers.
pub fn caps(object_info: &Value, model_inputs: &BTreeSet<(String, String)>) -> Vec<String> {
    let mut tags: BTreeSet<String> = object_info
        .as_object()
        .map(|n| n.keys().map(|c| node_tag(c)).collect())
        .unwrap_or_default();
    for (class, input, spec) in inputs(object_info) {
        if model_inputs.contains(&(class.to_string(), input.to_string())) {
            for file in combo_options(spec).unwrap_or_default() {
                tags.insert(file_tag(class, input, file));
            }
        }
    }
    tags.into_iter().collect()
}

/// One model file a prompt names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRef {
    pub node: String,
    pub class: String,
    pub input: String,
    pub file: String,
}

/// The model files a prompt's nodes name (literal values of model inputs;
/// links are not files).
pub fn model_refs(
    prompt: &Map<String, Value>,
    model_inputs: &BTreeSet<(String, String)>,
) -> Vec<ModelRef> {
    let mut refs = Vec::new();
    for (node, n) in prompt {
        let Some(class) = n.get("class_type").and_then(Value::as_str) else {
            continue;
        };
        let Some(ins) = n.get("inputs").and_then(Value::as_object) else {
            continue;
        };
        for (input, v) in ins {
            if let Some(file) = v.as_str() {
                if model_inputs.contains(&(class.to_string(), input.clone())) {
                    refs.push(ModelRef {
                        node: node.clone(),
                        class: class.to_string(),
                        input: input.clone(),
                        file: file.to_string(),
                    });
                }
            }
        }
    }
    refs
}

/// A job's requirement tags: its node types and the model files it names.
pub fn needs(
    prompt: &Map<String, Value>,
    model_inputs: &BTreeSet<(String, String)>,
) -> Vec<String> {
    let mut tags: BTreeSet<String> = prompt
        .values()
        .filter_map(|n| n.get("class_type").and_then(Value::as_str))
        .map(node_tag)
        .collect();
    for r in model_refs(prompt, model_inputs) {
        tags.insert(file_tag(&r.class, &r.input, &r.file));
    }
    tags.into_iter().collect()
}

/// The union of several workers' catalogues: every node type of any of
/// them (the first definition seen), each COMBO's options the union of
/// theirs (first worker's order, then what others add).
pub fn merge<'a>(catalogues: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut out = Map::new();
    for cat in catalogues {
        let Some(nodes) = cat.as_object() else {
            continue;
        };
        for (class, node) in nodes {
            match out.get_mut(class) {
                None => {
                    out.insert(class.clone(), node.clone());
                }
                Some(have) => merge_options(have, node),
            }
        }
    }
    Value::Object(out)
}

/// Adds `other`'s COMBO options to `have`'s, input by input.
fn merge_options(have: &mut Value, other: &Value) {
    for group in ["required", "optional"] {
        let Some(theirs) = other
            .get("input")
            .and_then(|i| i.get(group))
            .and_then(Value::as_object)
        else {
            continue;
        };
        let Some(ours) = have
            .get_mut("input")
            .and_then(|i| i.get_mut(group))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for (input, spec) in theirs {
            let Some(add) = combo_options(spec) else {
                continue;
            };
            let Some(list) = ours.get_mut(input).and_then(combo_list_mut) else {
                continue;
            };
            let known: HashSet<String> = list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            for o in add {
                if !known.contains(o) {
                    list.push(Value::String(o.to_string()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalogue(ckpts: &[&str], upscalers: &[&str]) -> Value {
        json!({
            "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [ckpts, {}]}}},
            "UpscaleModelLoader": {"input": {"required": {"model_name": ["COMBO", {"options": upscalers}]}}},
            "LoadImage": {"input": {"required": {"image": [["a.png", "b.safetensors"], {"image_upload": true}]}}},
            "KSampler": {"input": {"required": {"sampler_name": [["euler", "dpmpp_2m"], {}], "seed": ["INT", {}]}}},
        })
    }

    fn prompt(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn loader_inputs_are_found_by_their_files_not_by_node_name() {
        let c = catalogue(&["sd15.safetensors"], &["x4.pth"]);
        let by_ext = model_inputs(&c, None);
        assert_eq!(
            by_ext.into_iter().collect::<Vec<_>>(),
            vec![
                ("CheckpointLoaderSimple".into(), "ckpt_name".into()),
                ("UpscaleModelLoader".into(), "model_name".into()),
            ],
            "upload inputs and plain combos are not model inputs"
        );
        let files: HashSet<String> = ["x4.pth".to_string()].into();
        let by_folder = model_inputs(&c, Some(&files));
        assert_eq!(by_folder.len(), 1, "the folder lists decide when present");
    }

    #[test]
    fn a_worker_offers_its_nodes_and_files_and_a_job_needs_what_it_names() {
        let c = catalogue(&["sd15.safetensors", "sdxl.safetensors"], &[]);
        let mi = model_inputs(&c, None);
        let caps = caps(&c, &mi);
        assert!(caps.contains(&node_tag("KSampler")));
        assert!(caps.contains(&file_tag(
            "CheckpointLoaderSimple",
            "ckpt_name",
            "sdxl.safetensors"
        )));
        let p = prompt(json!({
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
            "2": {"class_type": "KSampler", "inputs": {"sampler_name": "euler", "seed": 1, "model": ["1", 0]}},
        }));
        let needs = needs(&p, &mi);
        assert_eq!(needs.len(), 3, "{needs:?}");
        assert!(needs.iter().all(|t| caps.contains(t)));
        assert!(
            !needs.iter().any(|t| t.contains("euler")),
            "a sampler name is not a file"
        );
    }

    #[test]
    fn the_editor_sees_every_file_of_every_worker() {
        let a = catalogue(&["sd15.safetensors"], &["x2.pth"]);
        let b = catalogue(&["flux.safetensors", "sd15.safetensors"], &["x4.pth"]);
        let mut extra = b.clone();
        extra["OnlyOnB"] = json!({"input": {}});
        let m = merge([&a, &extra]);
        assert_eq!(
            m["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0],
            json!(["sd15.safetensors", "flux.safetensors"])
        );
        assert_eq!(
            m["UpscaleModelLoader"]["input"]["required"]["model_name"][1]["options"],
            json!(["x2.pth", "x4.pth"])
        );
        assert!(m.get("OnlyOnB").is_some());
    }

    #[test]
    fn tags_describe_themselves_for_error_messages() {
        assert_eq!(
            describe(&file_tag(
                "CheckpointLoaderSimple",
                "ckpt_name",
                "dir/flux1 schnell.safetensors"
            )),
            "dir/flux1 schnell.safetensors (ckpt_name of CheckpointLoaderSimple)"
        );
        assert_eq!(describe(&node_tag("Foo")), "node type Foo");
    }
}
