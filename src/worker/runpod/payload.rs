//! The job as worker-comfyui (RunPod's widely used ComfyUI handler) takes
//! it, and its answer taken apart again. Pure: no I/O, unit-tested.
//!
//! Request: `{"input": {"workflow": <API prompt>, "images": [{name, image:
//! <base64>}]}, "policy": {"executionTimeout": ms}}`. The handler answers
//! a flat list of files per kind (`{"images": [{filename, type: "base64" |
//! "s3_url", data}]}`), naming no node, and skips temp files. So before
//! sending, every output node's `filename_prefix` gets a tag of ours
//! (`cm3_ComfyUI` for the fourth output node), which maps each returned
//! file back to its node and its name as a local worker would store it;
//! `PreviewImage` nodes become `SaveImage` nodes (their files come back
//! and are stored as the participant's temp previews).

use serde_json::{json, Map, Value};

/// Where a returned file belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The tag its file names start with (`cm3_`).
    pub tag: String,
    /// The node in the participant's prompt.
    pub node: String,
    /// The subfolder the participant's `filename_prefix` named.
    pub subfolder: String,
    /// `output`, or `temp` for a preview node.
    pub kind: &'static str,
}

/// What is sent, and how to read the answer.
#[derive(Debug, Clone)]
pub struct Request {
    pub body: Value,
    pub slots: Vec<Slot>,
}

/// One input file for the handler (`images[]`).
pub struct Image {
    pub name: String,
    pub base64: String,
}

/// Builds the `/run` body for `prompt` (inputs already renamed to the
/// `images` names).
pub fn build(prompt: &Value, images: Vec<Image>, timeout_ms: u64) -> Request {
    let mut workflow = prompt.clone();
    let mut slots = vec![];
    if let Some(nodes) = workflow.as_object_mut() {
        let mut ids: Vec<String> = nodes.keys().cloned().collect();
        ids.sort_by(|a, b| natural(a).cmp(&natural(b)));
        for id in ids {
            let node = &mut nodes[&id];
            let mut kind = "output";
            if node["class_type"] == "PreviewImage" {
                node["class_type"] = json!("SaveImage");
                node["inputs"]["filename_prefix"] = json!("ComfyUI_temp");
                kind = "temp";
            }
            let Some(Value::String(prefix)) = node.pointer_mut("/inputs/filename_prefix") else {
                continue;
            };
            let clean: Vec<&str> = prefix
                .split(['/', '\\'])
                .filter(|c| !c.is_empty() && *c != "." && *c != "..")
                .collect();
            let (base, dir) = match clean.split_last() {
                Some((b, d)) => (b.to_string(), d.join("/")),
                None => ("ComfyUI".to_string(), String::new()),
            };
            let tag = format!("cm{}_", slots.len());
            *prefix = format!("{tag}{base}");
            slots.push(Slot {
                tag,
                node: id.clone(),
                subfolder: dir,
                kind,
            });
        }
    }
    let images: Vec<Value> = images
        .into_iter()
        .map(|i| json!({"name": i.name, "image": i.base64}))
        .collect();
    let mut input = Map::new();
    input.insert("workflow".into(), workflow);
    if !images.is_empty() {
        input.insert("images".into(), Value::Array(images));
    }
    Request {
        body: json!({"input": input, "policy": {"executionTimeout": timeout_ms}}),
        slots,
    }
}

/// Node ids sort as numbers where they are numbers.
fn natural(id: &str) -> (u64, &str) {
    (id.parse().unwrap_or(u64::MAX), id)
}

/// Where a returned file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Base64(String),
    Url(String),
}

/// One returned file, placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Index into `Request::slots`.
    pub slot: usize,
    /// The output kind it came under (`images`, `videos`, …).
    pub key: String,
    /// Its name with our tag taken off (what a local worker would store).
    pub filename: String,
    pub data: Data,
}

/// What a completed job's output says.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Files for their nodes (possibly none).
    Files(Vec<File>),
    /// The handler reported the workflow failed.
    Failed(String),
}

/// Reads a COMPLETED job's `output`; `Err` says what is malformed.
pub fn parse(output: Option<&Value>, slots: &[Slot]) -> Result<Outcome, String> {
    let Some(output) = output else {
        return Ok(Outcome::Files(vec![]));
    };
    let Some(obj) = output.as_object() else {
        return Err("the output is not an object".into());
    };
    if let Some(e) = obj.get("error").filter(|e| !e.is_null()) {
        let mut msg = e
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string());
        if let Some(d) = obj.get("details").and_then(Value::as_array) {
            let d: Vec<String> = d
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            if !d.is_empty() {
                msg = format!("{msg}: {}", d.join("; "));
            }
        }
        return Ok(Outcome::Failed(msg));
    }
    let mut files = vec![];
    for (key, list) in obj {
        if !matches!(key.as_str(), "images" | "videos" | "gifs" | "audio") {
            continue;
        }
        let Some(list) = list.as_array() else {
            return Err(format!("output.{key} is not a list"));
        };
        for item in list {
            let field = |k: &str| item.get(k).and_then(Value::as_str);
            let (Some(name), Some(kind), Some(data)) =
                (field("filename"), field("type"), field("data"))
            else {
                return Err(format!(
                    "an entry of output.{key} lacks filename, type or data"
                ));
            };
            if name.is_empty() || name.contains(['/', '\\', '\0']) || name.starts_with('.') {
                return Err(format!(
                    "output.{key} names a file {name:?} that is not a plain name"
                ));
            }
            let data = match kind {
                "base64" => Data::Base64(data.to_string()),
                "s3_url" | "url" => Data::Url(data.to_string()),
                other => return Err(format!("output.{key} has a file of unknown type {other:?}")),
            };
            // Files of nodes we did not tag (none should come) are skipped.
            let Some((slot, s)) = slots
                .iter()
                .enumerate()
                .find(|(_, s)| name.starts_with(&s.tag))
            else {
                continue;
            };
            let filename = name[s.tag.len()..].to_string();
            if filename.is_empty() {
                return Err(format!(
                    "output.{key} names a file {name:?} that is not a plain name"
                ));
            }
            files.push(File {
                slot,
                key: key.clone(),
                filename,
                data,
            });
        }
    }
    Ok(Outcome::Files(files))
}

/// Decodes a base64 file (a `data:` URI prefix allowed); `Err` says why.
pub fn decode(b64: &str, limit: usize) -> Result<Vec<u8>, DecodeError> {
    use base64::Engine;
    let b64 = match b64.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map(|(_, d)| d).unwrap_or(""),
        None => b64,
    };
    if b64.len() / 4 * 3 > limit + 3 {
        return Err(DecodeError::TooLarge);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| DecodeError::Malformed)?;
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge);
    }
    Ok(bytes)
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    TooLarge,
    Malformed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt() -> Value {
        json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "walls/blue"}},
            "10": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
            "12": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "../../etc/x"}}
        })
    }

    #[test]
    fn every_output_node_gets_its_own_tag_and_previews_become_saves() {
        let r = build(&prompt(), vec![], 60_000);
        let wf = &r.body["input"]["workflow"];
        assert_eq!(wf["9"]["inputs"]["filename_prefix"], "cm0_blue");
        assert_eq!(wf["10"]["class_type"], "SaveImage");
        assert_eq!(wf["10"]["inputs"]["filename_prefix"], "cm1_ComfyUI_temp");
        // A prefix cannot climb out: `..` is dropped, the rest kept as a subfolder.
        assert_eq!(wf["12"]["inputs"]["filename_prefix"], "cm2_x");
        assert_eq!(r.slots[0].subfolder, "walls");
        assert_eq!(r.slots[1].kind, "temp");
        assert_eq!(r.slots[2].subfolder, "etc");
        assert_eq!(r.body["policy"]["executionTimeout"], 60_000);
        assert!(r.body["input"].get("images").is_none());
    }

    #[test]
    fn returned_files_go_back_to_their_nodes_under_their_own_names() {
        let r = build(&prompt(), vec![], 1000);
        let out = json!({"images": [
            {"filename": "cm1_ComfyUI_temp_00001_.png", "type": "base64", "data": "AAAA"},
            {"filename": "cm0_blue_00001_.png", "type": "s3_url", "data": "https://b/x.png"},
            {"filename": "someone_else.png", "type": "base64", "data": "AAAA"}
        ]});
        let Outcome::Files(files) = parse(Some(&out), &r.slots).unwrap() else {
            panic!()
        };
        assert_eq!(files.len(), 2);
        assert_eq!(
            (files[0].slot, files[0].filename.as_str()),
            (1, "ComfyUI_temp_00001_.png")
        );
        assert_eq!(files[1].data, Data::Url("https://b/x.png".into()));
        assert_eq!(r.slots[files[1].slot].node, "9");
    }

    #[test]
    fn a_handler_error_is_the_jobs_failure_with_its_details() {
        let out = json!({"error": "Workflow validation failed", "details": ["Node 3: bad ckpt"]});
        assert_eq!(
            parse(Some(&out), &[]).unwrap(),
            Outcome::Failed("Workflow validation failed: Node 3: bad ckpt".into())
        );
    }

    #[test]
    fn malformed_outputs_are_named_not_guessed() {
        let slots = build(&prompt(), vec![], 1).slots;
        for bad in [
            json!("just a string"),
            json!({"images": "nope"}),
            json!({"images": [{"filename": "cm0_a.png"}]}),
            json!({"images": [{"filename": "../cm0_a.png", "type": "base64", "data": ""}]}),
            json!({"images": [{"filename": "cm0_", "type": "base64", "data": ""}]}),
            json!({"images": [{"filename": "cm0_a.png", "type": "ftp", "data": "x"}]}),
        ] {
            assert!(parse(Some(&bad), &slots).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_is_decoded_within_the_limit_only() {
        assert_eq!(decode("aGk=", 10).unwrap(), b"hi");
        assert_eq!(decode("data:image/png;base64,aGk=", 10).unwrap(), b"hi");
        assert_eq!(decode("aGVsbG8gd29ybGQ=", 4), Err(DecodeError::TooLarge));
        assert_eq!(decode("@@@@", 10), Err(DecodeError::Malformed));
    }
}
