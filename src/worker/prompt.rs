//! Pure rewriting of one job's API-format prompt before it runs on a shared
//! ComfyUI, and of the file names that come back (no I/O here).
//!
//! Why this exists: many participants share one ComfyUI's `input/` and
//! `output/` folders. Each job therefore gets its own subfolder: the files
//! its loader nodes reference are uploaded there and the prompt is pointed
//! at them ([`input_files`], [`rewrite_inputs`]); its save nodes write there
//! ([`namespace_outputs`]); and the names ComfyUI reports are mapped back to
//! what the participant expects ([`strip_job_prefix`]). Which inputs are
//! files is read from `/object_info` (an `*_upload: true` flag), whose
//! digest ([`object_info_digest`]) lets the hub store each version once.

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::comfyui::FileRef;

/// The folder ComfyUI resolves an unannotated upload-input value in.
const INPUT_FOLDER: &str = "input";
/// Used when a participant's `filename_prefix` is empty after cleaning.
const DEFAULT_PREFIX: &str = "ComfyUI";
/// ComfyUI's `name [folder]` annotations (`folder_paths.annotated_filepath`).
const ANNOTATIONS: [(&str, &str); 3] = [
    (" [input]", "input"),
    (" [output]", "output"),
    (" [temp]", "temp"),
];

/// One file a prompt's loader node reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InputRef {
    /// The node id in the prompt.
    pub node: String,
    /// The input's name on that node (e.g. `image`, `file`, `audio`).
    pub input: String,
    /// The file's path as the participant named it (`photo.png`,
    /// `sub/photo.png`), without any ` [input]`-style annotation.
    pub name: String,
    /// Which of the participant's folders it is in: `input` (the usual),
    /// `output` or `temp` — from the annotation, or from the node's
    /// `image_folder` option (e.g. `LoadImageOutput` reads `output`).
    pub folder: String,
}

/// The input files a prompt references: for every node whose class in
/// `object_info` declares an input with an upload flag (`image_upload`,
/// `video_upload`, `audio_upload`, any `*_upload: true`), that input's
/// string value. Links (`["node", slot]`) and empty values are skipped.
pub fn input_files(prompt: &Value, object_info: &Value) -> Vec<InputRef> {
    let Some(nodes) = prompt.as_object() else {
        return Vec::new();
    };
    let mut refs = Vec::new();
    for (node_id, node) in nodes {
        let Some(class) = node.get("class_type").and_then(Value::as_str) else {
            continue;
        };
        for (input, default_folder) in upload_inputs(object_info, class) {
            let value = node.pointer(&format!("/inputs/{}", escape_pointer(&input)));
            let Some(raw) = value.and_then(Value::as_str) else {
                continue;
            };
            let (name, folder) = split_annotation(raw);
            if name.trim().is_empty() {
                continue;
            }
            refs.push(InputRef {
                node: node_id.clone(),
                input,
                name: name.to_string(),
                folder: folder.unwrap_or(&default_folder).to_string(),
            });
        }
    }
    refs
}

/// Points each referenced input at `subfolder/<renamed(name)>` in the
/// worker's `input/` folder. When the participant's value was annotated or
/// the node reads another folder by default, ` [input]` is appended so
/// ComfyUI still looks in `input/`. A ref whose input no longer holds its
/// name (already rewritten, now a link) is left alone.
pub fn rewrite_inputs(
    prompt: &mut Value,
    refs: &[InputRef],
    subfolder: &str,
    renamed: &dyn Fn(&str) -> String,
) {
    for r in refs {
        let path = format!(
            "/{}/inputs/{}",
            escape_pointer(&r.node),
            escape_pointer(&r.input)
        );
        let Some(slot) = prompt.pointer_mut(&path) else {
            continue;
        };
        let Some((name, annotation)) = slot.as_str().map(split_annotation) else {
            continue;
        };
        if name != r.name {
            continue;
        }
        let annotate = annotation.is_some() || r.folder != INPUT_FOLDER;
        let target = join_path(subfolder, &renamed(&r.name));
        *slot = Value::String(if annotate {
            format!("{target} [input]")
        } else {
            target
        });
    }
}

/// Prefixes every `filename_prefix` string input (any node) with
/// `prefix/`, so the job's outputs land in its own subfolder; returns how
/// many were rewritten. The participant's own subfolders are kept after
/// ours, but empty, `.` and `..` components are dropped (so a value can
/// neither be absolute nor climb out of our subfolder).
pub fn namespace_outputs(prompt: &mut Value, prefix: &str) -> usize {
    let Some(nodes) = prompt.as_object_mut() else {
        return 0;
    };
    let mut count = 0;
    for node in nodes.values_mut() {
        let slot = node.pointer_mut("/inputs/filename_prefix");
        if let Some(Value::String(value)) = slot {
            *value = join_path(prefix, &clean_relative(value));
            count += 1;
        }
    }
    count
}

/// Maps a file as the worker's ComfyUI reports it to the participant's
/// view: drops our job `prefix` from the subfolder (`cm-<job>/x` → `x`,
/// `cm-<job>` → ``). Files outside the prefix are returned unchanged.
pub fn strip_job_prefix(file: &FileRef, prefix: &str) -> FileRef {
    let prefix = prefix.trim_end_matches('/');
    let subfolder = match file.subfolder.strip_prefix(prefix) {
        Some("") => String::new(),
        Some(rest) if rest.starts_with(['/', '\\']) => rest[1..].to_string(),
        _ => file.subfolder.clone(),
    };
    FileRef {
        subfolder,
        ..file.clone()
    }
}

/// A stable digest of an `object_info` value: hex SHA-256 of its canonical
/// JSON (object keys sorted, no whitespace), whatever the key order it was
/// received or built in.
pub fn object_info_digest(object_info: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(object_info, &mut canonical);
    format!("{:x}", Sha256::digest(canonical.as_bytes()))
}

/// The inputs of `class` that carry an upload flag, with the folder an
/// unannotated value is read from.
fn upload_inputs(object_info: &Value, class: &str) -> Vec<(String, String)> {
    let Some(inputs) = object_info.get(class).and_then(|c| c.get("input")) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for section in ["required", "optional"] {
        let Some(specs) = inputs.get(section).and_then(Value::as_object) else {
            continue;
        };
        for (name, spec) in specs {
            if let Some(folder) = upload_folder(spec) {
                found.push((name.clone(), folder));
            }
        }
    }
    found
}

/// For an input spec `[type_or_choices, {options}]`, whether the options
/// flag an upload (`"*_upload": true`), and then the default folder.
fn upload_folder(spec: &Value) -> Option<String> {
    let options = spec.get(1)?.as_object()?;
    let is_upload = options
        .iter()
        .any(|(key, flag)| key.ends_with("_upload") && flag == &Value::Bool(true));
    if !is_upload {
        return None;
    }
    let folder = options.get("image_folder").and_then(Value::as_str);
    Some(folder.unwrap_or(INPUT_FOLDER).to_string())
}

/// `"a.png [output]"` → (`"a.png"`, Some(`"output"`)); unannotated → None.
fn split_annotation(value: &str) -> (&str, Option<&'static str>) {
    for (suffix, folder) in ANNOTATIONS {
        if let Some(name) = value.strip_suffix(suffix) {
            return (name, Some(folder));
        }
    }
    (value, None)
}

/// The participant's path, relative and without `.`/`..`/empty parts.
fn clean_relative(value: &str) -> String {
    let parts: Vec<&str> = value
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != "." && *p != "..")
        .collect();
    if parts.is_empty() {
        return DEFAULT_PREFIX.to_string();
    }
    parts.join("/")
}

fn join_path(dir: &str, name: &str) -> String {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        return name.to_string();
    }
    format!("{dir}/{name}")
}

/// Escapes a key for a JSON pointer (RFC 6901).
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn current_object_info() -> Value {
        let path = format!(
            "{}/tests/fixtures/comfyui-0.3.64/object_info.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path} : {e}"));
        serde_json::from_str(&text).unwrap()
    }

    /// `/object_info` of the early-2024 ComfyUI our tests run.
    fn old_object_info() -> Value {
        json!({
            "LoadImage": {"input": {"required": {"image": [["a.png"], {"image_upload": true}]}}},
            "ImageInvert": {"input": {"required": {"image": ["IMAGE"]}}},
            "SaveImage": {"input": {"required": {
                "images": ["IMAGE"],
                "filename_prefix": ["STRING", {"default": "ComfyUI"}]
            }}},
        })
    }

    fn names(refs: &[InputRef]) -> Vec<(&str, &str, &str, &str)> {
        refs.iter()
            .map(|r| {
                (
                    r.node.as_str(),
                    r.input.as_str(),
                    r.name.as_str(),
                    r.folder.as_str(),
                )
            })
            .collect()
    }

    #[test]
    fn input_files_finds_every_upload_input_of_current_comfyui() {
        let prompt = json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
            "2": {"class_type": "LoadImageMask", "inputs": {"image": "sub/mask.png [input]", "channel": "alpha"}},
            "3": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
            "4": {"class_type": "LoadAudio", "inputs": {"audio": "song.flac"}},
            "5": {"class_type": "LoadImageOutput", "inputs": {"image": "ComfyUI_00001_.png [output]"}},
            "6": {"class_type": "LoadImageOutput", "inputs": {"image": "plain.png"}},
            "7": {"class_type": "Load3D", "inputs": {"model_file": "3d/cube.glb", "image": "x", "width": 1}},
            "8": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "a.png"}},
        });
        let refs = input_files(&prompt, &current_object_info());
        assert_eq!(
            names(&refs),
            [
                ("1", "image", "photo.png", "input"),
                ("2", "image", "sub/mask.png", "input"),
                ("3", "file", "clip.mp4", "input"),
                ("4", "audio", "song.flac", "input"),
                ("5", "image", "ComfyUI_00001_.png", "output"),
                ("6", "image", "plain.png", "output"),
                ("7", "model_file", "3d/cube.glb", "input"),
            ]
        );
    }

    #[test]
    fn input_files_reads_the_old_object_info_shape() {
        let prompt = json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        });
        let refs = input_files(&prompt, &old_object_info());
        assert_eq!(names(&refs), [("1", "image", "cat.png", "input")]);
    }

    #[test]
    fn links_empty_values_and_unknown_classes_are_not_files() {
        let prompt = json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": ["9", 0]}},
            "2": {"class_type": "LoadImage", "inputs": {"image": ""}},
            "3": {"class_type": "LoadImage", "inputs": {}},
            "4": {"class_type": "NotInstalled", "inputs": {"image": "x.png"}},
            "5": {"inputs": {"image": "x.png"}},
            "6": "garbage",
        });
        assert!(input_files(&prompt, &old_object_info()).is_empty());
        assert!(input_files(&json!([]), &old_object_info()).is_empty());
        assert!(input_files(&prompt, &Value::Null).is_empty());
    }

    #[test]
    fn an_upload_flag_set_to_false_is_not_an_upload() {
        let info = json!({"N": {"input": {"optional": {
            "a": [[], {"image_upload": false}],
            "b": ["COMBO", {"options": [], "video_upload": true}],
        }}}});
        let prompt = json!({"1": {"class_type": "N", "inputs": {"a": "a.png", "b": "b.mp4"}}});
        assert_eq!(
            names(&input_files(&prompt, &info)),
            [("1", "b", "b.mp4", "input")]
        );
    }

    #[test]
    fn rewrite_inputs_points_loaders_at_the_job_subfolder() {
        let mut prompt = json!({
            "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
            "2": {"class_type": "LoadImageMask", "inputs": {"image": "sub/mask.png [input]"}},
            "5": {"class_type": "LoadImageOutput", "inputs": {"image": "out.png [output]"}},
            "6": {"class_type": "LoadImageOutput", "inputs": {"image": "plain.png"}},
        });
        let refs = input_files(&prompt, &current_object_info());
        rewrite_inputs(&mut prompt, &refs, "cm-job", &|n| {
            format!("{} (1)", n.rsplit('/').next().unwrap())
        });
        assert_eq!(prompt["1"]["inputs"]["image"], "cm-job/photo.png (1)");
        assert_eq!(
            prompt["2"]["inputs"]["image"],
            "cm-job/mask.png (1) [input]"
        );
        assert_eq!(prompt["5"]["inputs"]["image"], "cm-job/out.png (1) [input]");
        assert_eq!(
            prompt["6"]["inputs"]["image"],
            "cm-job/plain.png (1) [input]"
        );
    }

    #[test]
    fn rewrite_inputs_leaves_stale_refs_alone() {
        let mut prompt = json!({"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}}});
        let refs = input_files(&prompt, &old_object_info());
        rewrite_inputs(&mut prompt, &refs, "cm-j", &|n| n.to_string());
        rewrite_inputs(&mut prompt, &refs, "cm-j", &|n| n.to_string());
        assert_eq!(prompt["1"]["inputs"]["image"], "cm-j/a.png");
        prompt["1"]["inputs"]["image"] = json!(["2", 0]);
        rewrite_inputs(&mut prompt, &refs, "cm-j", &|n| n.to_string());
        assert_eq!(prompt["1"]["inputs"]["image"], json!(["2", 0]));
    }

    #[test]
    fn namespace_outputs_prefixes_every_filename_prefix() {
        let mut prompt = json!({
            "1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI"}},
            "2": {"class_type": "SaveAnimatedWEBP", "inputs": {"filename_prefix": "anim/run1/x"}},
            "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": ["7", 0]}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        });
        assert_eq!(namespace_outputs(&mut prompt, "cm-job"), 2);
        assert_eq!(prompt["1"]["inputs"]["filename_prefix"], "cm-job/ComfyUI");
        assert_eq!(
            prompt["2"]["inputs"]["filename_prefix"],
            "cm-job/anim/run1/x"
        );
        assert_eq!(prompt["3"]["inputs"]["filename_prefix"], json!(["7", 0]));
    }

    #[test]
    fn namespace_outputs_never_lets_a_prefix_escape_the_job_folder() {
        let mut prompt = json!({
            "1": {"inputs": {"filename_prefix": "/etc/passwd"}},
            "2": {"inputs": {"filename_prefix": "../../other-job/x"}},
            "3": {"inputs": {"filename_prefix": "a/../../b/./c"}},
            "4": {"inputs": {"filename_prefix": "..\\..\\win"}},
            "5": {"inputs": {"filename_prefix": "../"}},
            "6": {"inputs": {"filename_prefix": ""}},
        });
        assert_eq!(namespace_outputs(&mut prompt, "cm-j/"), 6);
        let got: Vec<&str> = (1..=6)
            .map(|i| {
                prompt[i.to_string()]["inputs"]["filename_prefix"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            got,
            [
                "cm-j/etc/passwd",
                "cm-j/other-job/x",
                "cm-j/a/b/c",
                "cm-j/win",
                "cm-j/ComfyUI",
                "cm-j/ComfyUI"
            ]
        );
    }

    #[test]
    fn strip_job_prefix_maps_worker_subfolders_back() {
        let f = |sub: &str| FileRef {
            filename: "a.png".into(),
            subfolder: sub.into(),
            kind: "output".into(),
        };
        assert_eq!(strip_job_prefix(&f("cm-j"), "cm-j"), f(""));
        assert_eq!(strip_job_prefix(&f("cm-j/x/y"), "cm-j"), f("x/y"));
        assert_eq!(strip_job_prefix(&f("cm-j\\x"), "cm-j"), f("x"));
        assert_eq!(strip_job_prefix(&f("cm-jx"), "cm-j"), f("cm-jx"));
        assert_eq!(strip_job_prefix(&f(""), "cm-j"), f(""));
        assert_eq!(strip_job_prefix(&f("other"), "cm-j"), f("other"));
    }

    #[test]
    fn the_digest_ignores_key_order_and_sees_every_change() {
        let a: Value = serde_json::from_str(r#"{"b":{"y":1,"x":[1,"2"]},"a":null}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":null,"b":{"x":[1,"2"],"y":1}}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":null,"b":{"x":["2",1],"y":1}}"#).unwrap();
        let d = object_info_digest(&a);
        assert_eq!(d.len(), 64);
        assert!(d.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(d, object_info_digest(&b));
        assert_ne!(d, object_info_digest(&c));
    }

    #[test]
    fn the_digest_is_the_sha256_of_sorted_compact_json() {
        let v = json!({"b": 1, "a": "x\"y"});
        let expected = format!("{:x}", Sha256::digest(br#"{"a":"x\"y","b":1}"#));
        assert_eq!(object_info_digest(&v), expected);
        let info = current_object_info();
        assert_eq!(object_info_digest(&info), object_info_digest(&info.clone()));
    }
}
