//! Checks a prompt against the workers' node catalogue (`object_info`)
//! before it is queued, the way ComfyUI's own `POST /prompt` does
//! (`execution.py`: `validate_prompt`, `validate_inputs`;
//! `comfy_execution/validation.py`: `validate_node_input`), and refuses it
//! in ComfyUI's 400 shape.
//!
//! Why this exists: a participant's prompt may wait minutes for a GPU, and a
//! mistake found only on the worker comes back as a failed job. Found here,
//! the editor gets at once the answer the real ComfyUI would have given and
//! highlights the bad node and input. [`validate`] is a pure function of the
//! prompt, the catalogue and the participant's own input files.
//!
//! It follows current ComfyUI (newer than 0.3.64: `missing_node_type` for an
//! unknown or absent `class_type`, `dependency_cycle`, `*` and unions in
//! link types, `["COMBO", {"options": [...]}]` combos). Where ComfyUI itself
//! is not a function of the prompt, or could not be copied, it differs:
//! - A node's inputs are walked in catalogue order (required, then
//!   optional); ComfyUI walks a Python set, in an order that changes from
//!   one process to the next.
//! - Links are followed with an explicit stack: no depth limit, no stack
//!   overflow (ComfyUI recurses and reports Python's `RecursionError`).
//! - Python exceptions ComfyUI reports as errors (a link to a node that is
//!   not there: `KeyError`; to a slot the node lacks: `IndexError`) keep
//!   ComfyUI's types, `exception_during_validation` on the output itself and
//!   `exception_during_inner_validation` further up; their `traceback` is
//!   empty.
//! - Upload inputs (`*_upload: true` combos) are checked against the
//!   participant's own input files, not the worker's listing.
//! - The `VALIDATE_INPUTS` functions of nodes cannot run here; the checks
//!   ComfyUI skips for the inputs they take are skipped for the core nodes
//!   that have one ([`SELF_VALIDATED`]).
//! - `partial_execution_targets` is not supported: every output is checked.

use serde_json::{json, Map, Number, Value};
use std::cmp::Ordering;
use std::collections::HashMap;

/// A prompt that may be queued.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// The output nodes that passed, in prompt order; ComfyUI runs these.
    pub outputs: Vec<String>,
    /// The errors of outputs that failed while others passed. ComfyUI
    /// queues such a prompt and returns these in its 200 answer.
    pub node_errors: Map<String, Value>,
}

/// A refused prompt: ComfyUI's 400 body.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection(Box<Refusal>);

#[derive(Debug, Clone, PartialEq)]
struct Refusal {
    error: Value,
    node_errors: Map<String, Value>,
}

impl Rejection {
    fn new(error: Value, node_errors: Map<String, Value>) -> Self {
        Rejection(Box::new(Refusal { error, node_errors }))
    }

    fn whole(kind: &str, message: String, details: String, extra_info: Value) -> Self {
        Rejection::new(
            json!({"type": kind, "message": message, "details": details, "extra_info": extra_info}),
            Map::new(),
        )
    }

    /// `{type, message, details, extra_info}`.
    #[cfg(test)]
    fn error(&self) -> &Value {
        &self.0.error
    }

    /// `{node_id: {errors, dependent_outputs, class_type}}`.
    #[cfg(test)]
    fn node_errors(&self) -> &Map<String, Value> {
        &self.0.node_errors
    }

    /// `error.type`, e.g. `prompt_outputs_failed_validation`.
    pub fn kind(&self) -> &str {
        self.0.error["type"].as_str().unwrap_or_default()
    }

    /// The HTTP body: `{"error": ..., "node_errors": ...}`.
    pub fn body(&self) -> Value {
        json!({"error": self.0.error, "node_errors": self.0.node_errors})
    }
}

/// Inputs that core ComfyUI nodes check in their own `VALIDATE_INPUTS` /
/// `validate_inputs`; ComfyUI then skips its min/max and list checks for
/// them. `object_info` does not say which nodes have one, so ComfyUI
/// 0.3.64's are named here. Upload inputs among them are still checked
/// against the participant's files (the node's own check is "file exists").
const SELF_VALIDATED: &[(&str, &[&str])] = &[
    ("LoadImage", &["image"]),
    ("LoadImageMask", &["image"]),
    ("LoadLatent", &["latent"]),
    ("LoadAudio", &["audio"]),
    ("LoadVideo", &["file"]),
    ("LoadImageSetNode", &["images", "resize_method"]),
    ("FluxProUltraImageNode", &["aspect_ratio"]),
    (
        "KlingCameraControls",
        &[
            "horizontal_movement",
            "vertical_movement",
            "pan",
            "tilt",
            "roll",
            "zoom",
        ],
    ),
];

/// Core nodes whose validation function takes `input_types`: ComfyUI does
/// not match their links' types.
const CHECKS_OWN_TYPES: &[&str] = &["TripoConversionNode"];

/// ComfyUI's `name [folder]` annotations on file inputs.
const ANNOTATIONS: [(&str, &str); 3] = [
    (" [input]", "input"),
    (" [output]", "output"),
    (" [temp]", "temp"),
];

/// ComfyUI leaves a combo's options out of an error beyond this many.
const LIST_SHOWN: usize = 20;

/// At most this many `dependent_outputs` entries in all, so a hostile
/// prompt (thousands of outputs sharing thousands of bad nodes) cannot
/// make a huge answer; ComfyUI has no such bound.
const MAX_DEPENDENTS: usize = 10_000;

static NULL: Value = Value::Null;
static NO_VALUES: Vec<Value> = Vec::new();

/// Every node is an object with a string `class_type` (what runs when no
/// catalogue is known yet).
pub fn class_types_present(prompt: &Map<String, Value>) -> Result<(), Rejection> {
    for (id, node) in prompt {
        node_class(id, node)?;
    }
    Ok(())
}

/// Checks `prompt` as ComfyUI would with `catalogue` as its node set and
/// `own_inputs` (paths relative to the participant's `input/`, `/`
/// separated) as its input folder.
pub fn validate(
    prompt: &Map<String, Value>,
    catalogue: &Value,
    own_inputs: &[String],
) -> Result<Validated, Rejection> {
    let mut outputs = Vec::new();
    for (id, node) in prompt {
        let class = node_class(id, node)?;
        let Some(info) = catalogue.get(class).filter(|i| i.is_object()) else {
            return Err(unknown_class(id, node));
        };
        if info.get("output_node") == Some(&Value::Bool(true)) {
            outputs.push(id.as_str());
        }
    }
    if outputs.is_empty() {
        return Err(Rejection::whole(
            "prompt_no_outputs",
            "Prompt has no outputs".into(),
            String::new(),
            json!({}),
        ));
    }

    let mut v = Validator {
        prompt,
        catalogue,
        own_inputs,
        done: HashMap::new(),
        order: Vec::new(),
    };
    let mut good = Vec::new();
    let mut failed_reasons: Vec<Value> = Vec::new();
    let mut node_errors = Map::new();
    let mut scanned = 0;
    let mut dependents = 0;
    for o in outputs {
        let (ok, reasons) = match v.run(o) {
            Ok(outcome) => (outcome.ok, outcome.errors),
            Err(crash) => {
                let reasons = vec![crash.at_output()];
                v.record(o, false, reasons.clone());
                (false, reasons)
            }
        };
        if ok {
            good.push(o.to_string());
            continue;
        }
        failed_reasons.extend(reasons);
        // As ComfyUI: every failed node validated so far, not only those
        // this output depends on, lists it. Earlier entries never change.
        for id in &v.order[scanned..] {
            let Some(r) = v.done.get(id) else { continue };
            if !r.ok && !r.errors.is_empty() && !node_errors.contains_key(*id) {
                node_errors.insert(
                    id.to_string(),
                    json!({"errors": r.errors, "dependent_outputs": [], "class_type": v.class_value(id)}),
                );
            }
        }
        scanned = v.order.len();
        for entry in node_errors.values_mut() {
            if dependents >= MAX_DEPENDENTS {
                break;
            }
            if let Some(list) = entry
                .get_mut("dependent_outputs")
                .and_then(Value::as_array_mut)
            {
                list.push(Value::String(o.to_string()));
                dependents += 1;
            }
        }
    }
    if good.is_empty() {
        let details: Vec<String> = failed_reasons
            .iter()
            .map(|e| format!("{}: {}", text(&e["message"]), text(&e["details"])))
            .collect();
        return Err(Rejection::new(
            json!({
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": details.join("\n"),
                "extra_info": {},
            }),
            node_errors,
        ));
    }
    Ok(Validated {
        outputs: good,
        node_errors,
    })
}

/// The node's `class_type`, or ComfyUI's refusal of the whole prompt.
fn node_class<'a>(id: &str, node: &'a Value) -> Result<&'a str, Rejection> {
    match node.get("class_type") {
        Some(Value::String(class)) => Ok(class.as_str()),
        Some(_) => Err(unknown_class(id, node)),
        None => {
            let title = title(node).cloned().unwrap_or(Value::Null);
            let shown = if truthy(&title) {
                py_str(&title)
            } else {
                format!("ID #{id}")
            };
            Err(Rejection::whole(
                "missing_node_type",
                format!("Node '{shown}' has no class_type. The workflow may be corrupted or a custom node is missing."),
                format!("Node ID '#{id}'"),
                json!({"node_id": id, "class_type": null, "node_title": title}),
            ))
        }
    }
}

fn title(node: &Value) -> Option<&Value> {
    node.get("_meta")?.as_object()?.get("title")
}

/// ComfyUI's refusal of a node type the workers do not have.
fn unknown_class(id: &str, node: &Value) -> Rejection {
    let class = node.get("class_type").cloned().unwrap_or(Value::Null);
    let title = title(node).cloned().unwrap_or_else(|| class.clone());
    Rejection::whole(
        "missing_node_type",
        format!(
            "Node '{}' not found. The custom node may not be installed.",
            py_str(&title)
        ),
        format!("Node ID '#{id}'"),
        json!({"node_id": id, "class_type": class, "node_title": title}),
    )
}

/// A Python exception ComfyUI catches and reports.
#[derive(Debug)]
struct Crash {
    /// The exception's type name, e.g. `KeyError`.
    kind: &'static str,
    /// `str(exception)`.
    message: String,
}

impl Crash {
    fn new(kind: &'static str, message: String) -> Self {
        Crash { kind, message }
    }

    /// Raised while validating an output node itself.
    fn at_output(&self) -> Value {
        json!({
            "type": "exception_during_validation",
            "message": "Exception when validating node",
            "details": self.message,
            "extra_info": {"exception_type": self.kind, "traceback": []},
        })
    }

    /// Raised while validating a node linked to input `name`.
    fn inner(&self, name: &str, config: Value, link: &Value) -> Value {
        json!({
            "type": "exception_during_inner_validation",
            "message": "Exception when validating inner node",
            "details": self.message,
            "extra_info": {
                "input_name": name,
                "input_config": config,
                "exception_message": self.message,
                "exception_type": self.kind,
                "traceback": [],
                "linked_node": link,
            },
        })
    }
}

/// One node's result: ComfyUI's `validated[node_id]`.
#[derive(Debug, Clone)]
struct Outcome {
    ok: bool,
    errors: Vec<Value>,
}

/// One input as the catalogue declares it: `[type, {options}]`.
#[derive(Clone, Copy)]
struct Spec<'a> {
    name: &'a str,
    required: bool,
    kind: &'a Value,
    extra: Option<&'a Map<String, Value>>,
}

impl<'a> Spec<'a> {
    fn opt(&self, key: &str) -> Option<&'a Value> {
        self.extra.and_then(|e| e.get(key))
    }

    /// ComfyUI's `input_config`: `[type, {options}]`.
    fn config(&self) -> Value {
        let extra = self.extra.cloned().unwrap_or_default();
        json!([self.kind, extra])
    }

    fn is_combo(&self) -> bool {
        self.kind.is_array() || self.kind == "COMBO"
    }

    /// For a file-upload combo, the folder an unannotated value is read from.
    fn upload_folder(&self) -> Option<&'a str> {
        let extra = self.extra?;
        let upload = extra
            .iter()
            .any(|(k, v)| k.ends_with("_upload") && v == &Value::Bool(true));
        (upload && self.is_combo()).then(|| {
            extra
                .get("image_folder")
                .and_then(Value::as_str)
                .unwrap_or("input")
        })
    }
}

/// A node being validated: ComfyUI's `validate_inputs` call, unrolled.
struct Frame<'a> {
    id: &'a str,
    class: &'a str,
    inputs: &'a Map<String, Value>,
    specs: Vec<Spec<'a>>,
    next: usize,
    errors: Vec<Value>,
    valid: bool,
    /// The link being followed: (input name, input_config, link value).
    waiting: Option<(&'a str, Value, &'a Value)>,
}

enum Step<'a> {
    /// Every input is checked.
    Done,
    /// Validate this linked node first.
    Follow(&'a str),
}

struct Validator<'a> {
    prompt: &'a Map<String, Value>,
    catalogue: &'a Value,
    own_inputs: &'a [String],
    /// ComfyUI's `validated`...
    done: HashMap<&'a str, Outcome>,
    /// ...and its insertion order.
    order: Vec<&'a str>,
}

impl<'a> Validator<'a> {
    fn record(&mut self, id: &'a str, ok: bool, errors: Vec<Value>) {
        if self.done.insert(id, Outcome { ok, errors }).is_none() {
            self.order.push(id);
        }
    }

    fn class_value(&self, id: &str) -> Value {
        self.prompt
            .get(id)
            .and_then(|n| n.get("class_type"))
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn class_of(&self, id: &str) -> &'a str {
        self.prompt
            .get(id)
            .and_then(|n| n.get("class_type"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn class_info(&self, class: &str) -> Option<&'a Value> {
        self.catalogue.get(class)
    }

    fn frame(&self, id: &'a str) -> Result<Frame<'a>, Crash> {
        let class = self.class_of(id);
        let inputs = match self.prompt.get(id).and_then(|n| n.get("inputs")) {
            None => return Err(Crash::new("KeyError", "'inputs'".into())),
            Some(Value::Object(inputs)) => inputs,
            Some(other) => {
                return Err(Crash::new(
                    "TypeError",
                    format!("argument of type '{}' is not iterable", type_name(other)),
                ))
            }
        };
        let declared = self.class_info(class).and_then(|i| i.get("input"));
        let mut specs: Vec<Spec<'a>> = Vec::new();
        for (section, required) in [("required", true), ("optional", false)] {
            let Some(list) = declared
                .and_then(|d| d.get(section))
                .and_then(Value::as_object)
            else {
                continue;
            };
            for (name, spec) in list {
                if specs.iter().any(|s| s.name == name) {
                    continue;
                }
                let parts = spec.as_array().map(Vec::as_slice).unwrap_or_default();
                specs.push(Spec {
                    name,
                    required,
                    kind: parts.first().unwrap_or(&NULL),
                    extra: parts.get(1).and_then(Value::as_object),
                });
            }
        }
        Ok(Frame {
            id,
            class,
            inputs,
            specs,
            next: 0,
            errors: Vec::new(),
            valid: true,
            waiting: None,
        })
    }

    /// Validates `output` and everything it links to (ComfyUI's recursion,
    /// on an explicit stack). `Err` is an exception raised by the output
    /// node itself.
    fn run(&mut self, output: &'a str) -> Result<Outcome, Crash> {
        if let Some(r) = self.done.get(output) {
            return Ok(r.clone());
        }
        let mut stack = vec![self.frame(output)?];
        // Position of each node on the stack (ComfyUI's `visiting`).
        let mut on_stack: HashMap<&'a str, usize> = HashMap::from([(output, 0)]);
        loop {
            let Some(top) = stack.last_mut() else {
                return Err(Crash::new("RuntimeError", "empty validation stack".into()));
            };
            match self.step(top) {
                Ok(Step::Done) => {
                    let Some(frame) = stack.pop() else { continue };
                    on_stack.remove(frame.id);
                    let outcome = self.finish(frame);
                    match stack.last_mut() {
                        Some(parent) => {
                            parent.valid &= outcome.ok;
                            parent.waiting = None;
                        }
                        None => return Ok(outcome),
                    }
                }
                Ok(Step::Follow(child)) => {
                    if let Some(r) = self.done.get(child) {
                        top.valid &= r.ok;
                        top.waiting = None;
                    } else if let Some(&pos) = on_stack.get(child) {
                        let path: Vec<&'a str> = stack[pos..].iter().map(|f| f.id).collect();
                        self.mark_cycle(path, child);
                        if let Some(top) = stack.last_mut() {
                            top.valid = false;
                            top.waiting = None;
                        }
                    } else {
                        match self.frame(child) {
                            Ok(frame) => {
                                on_stack.insert(child, stack.len());
                                stack.push(frame);
                            }
                            Err(crash) => self.inner_crash(top, child, crash),
                        }
                    }
                }
                Err(crash) => {
                    let Some(frame) = stack.pop() else { continue };
                    on_stack.remove(frame.id);
                    match stack.last_mut() {
                        Some(parent) => self.inner_crash(parent, frame.id, crash),
                        None => return Err(crash),
                    }
                }
            }
        }
    }

    /// The parent's `except` around its recursive call: the child is
    /// recorded as failed with the exception.
    fn inner_crash(&mut self, parent: &mut Frame<'a>, child: &'a str, crash: Crash) {
        parent.valid = false;
        let error = match parent.waiting.take() {
            Some((name, config, link)) => crash.inner(name, config, link),
            None => crash.at_output(),
        };
        self.record(child, false, vec![error]);
    }

    /// `path` runs from `child` (on the stack) to the node linking it.
    fn mark_cycle(&mut self, mut path: Vec<&'a str>, child: &'a str) {
        path.push(child);
        let mut nodes: Vec<&'a str> = Vec::new();
        for id in &path {
            if !nodes.contains(id) {
                nodes.push(id);
            }
        }
        let details = path
            .iter()
            .map(|id| format!("{id} ({})", self.class_of(id)))
            .collect::<Vec<_>>()
            .join(" -> ");
        for id in &nodes {
            let error = json!({
                "type": "dependency_cycle",
                "message": "Dependency cycle detected",
                "details": details,
                "extra_info": {"node_id": id, "cycle_nodes": nodes},
            });
            self.record(id, false, vec![error]);
        }
    }

    /// Joins the frame's errors with any recorded meanwhile (a cycle).
    fn finish(&mut self, frame: Frame<'a>) -> Outcome {
        let (ok, mut errors) = match self.done.get(frame.id) {
            Some(r) => (r.ok, r.errors.clone()),
            None => (true, Vec::new()),
        };
        let ok = ok && frame.valid && frame.errors.is_empty();
        for e in frame.errors {
            if !errors.contains(&e) {
                errors.push(e);
            }
        }
        self.record(frame.id, ok, errors.clone());
        Outcome { ok, errors }
    }

    /// Checks the frame's inputs up to the next link to follow.
    fn step(&self, frame: &mut Frame<'a>) -> Result<Step<'a>, Crash> {
        while let Some(spec) = frame.specs.get(frame.next).copied() {
            frame.next += 1;
            let name = spec.name;
            let Some(val) = frame.inputs.get(name) else {
                if spec.required {
                    frame.errors.push(json!({
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": name,
                        "extra_info": {"input_name": name},
                    }));
                }
                continue;
            };
            let Value::Array(link) = val else {
                if let Some(e) = self.check_value(frame.class, spec, val)? {
                    frame.errors.push(e);
                }
                continue;
            };
            let (Some(target), Some(slot), 2) = (link.first(), link.get(1), link.len()) else {
                frame.errors.push(json!({
                    "type": "bad_linked_input",
                    "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    "details": name,
                    "extra_info": {"input_name": name, "input_config": spec.config(), "received_value": val},
                }));
                continue;
            };
            let child = self.node_key(target)?;
            let received = self.return_type(child, slot)?;
            if !CHECKS_OWN_TYPES.contains(&frame.class) && !types_match(received, spec.kind) {
                frame.errors.push(json!({
                    "type": "return_type_mismatch",
                    "message": "Return type mismatch between linked nodes",
                    "details": format!("{name}, received_type({}) mismatch input_type({})", py_str(received), py_str(spec.kind)),
                    "extra_info": {
                        "input_name": name,
                        "input_config": spec.config(),
                        "received_type": received,
                        "linked_node": val,
                    },
                }));
                continue;
            }
            frame.waiting = Some((name, spec.config(), val));
            return Ok(Step::Follow(child));
        }
        Ok(Step::Done)
    }

    /// `prompt[id]` with ComfyUI's exceptions for ids that are not there.
    fn node_key(&self, target: &Value) -> Result<&'a str, Crash> {
        match target {
            Value::String(s) => self
                .prompt
                .get_key_value(s)
                .map(|(k, _)| k.as_str())
                .ok_or_else(|| Crash::new("KeyError", py_repr(target))),
            Value::Array(_) | Value::Object(_) => Err(Crash::new(
                "TypeError",
                format!("unhashable type: '{}'", type_name(target)),
            )),
            other => Err(Crash::new("KeyError", py_repr(other))),
        }
    }

    /// `RETURN_TYPES[slot]` of the linked node, Python indexing included.
    fn return_type(&self, child: &str, slot: &Value) -> Result<&'a Value, Crash> {
        let outputs = self
            .class_info(self.class_of(child))
            .and_then(|i| i.get("output"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let index: i128 = match slot {
            Value::Bool(b) => i128::from(*b),
            Value::Number(n) if n.is_i64() || n.is_u64() => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .unwrap_or_default(),
            other => {
                return Err(Crash::new(
                    "TypeError",
                    format!(
                        "tuple indices must be integers or slices, not {}",
                        type_name(other)
                    ),
                ))
            }
        };
        let len = outputs.len() as i128;
        let at = if index < 0 { index + len } else { index };
        usize::try_from(at)
            .ok()
            .and_then(|i| outputs.get(i))
            .ok_or_else(|| Crash::new("IndexError", "tuple index out of range".into()))
    }

    /// A widget value: conversion, min/max and the list of choices.
    fn check_value(
        &self,
        class: &str,
        spec: Spec<'a>,
        raw: &'a Value,
    ) -> Result<Option<Value>, Crash> {
        let name = spec.name;
        let val = match raw {
            Value::Object(m) => m.get("__value__").unwrap_or(raw),
            _ => raw,
        };
        let converted = match spec.kind.as_str() {
            Some("INT") => to_int(val),
            Some("FLOAT") => to_float(val),
            Some("STRING") => Ok(Py::Str(py_str(val))),
            Some("BOOLEAN") => Ok(Py::Bool(truthy(val))),
            _ => Ok(Py::Json(val)),
        };
        let converted = match converted {
            Ok(c) => c,
            Err(why) => {
                return Ok(Some(json!({
                    "type": "invalid_input_type",
                    "message": format!("Failed to convert an input value to a {} value", py_str(spec.kind)),
                    "details": format!("{name}, {}, {why}", py_str(val)),
                    "extra_info": {
                        "input_name": name,
                        "input_config": spec.config(),
                        "received_value": val,
                        "exception_message": why,
                    },
                })))
            }
        };
        let self_validated = SELF_VALIDATED
            .iter()
            .any(|(c, inputs)| *c == class && inputs.contains(&name));
        if !self_validated {
            for (key, below) in [("min", true), ("max", false)] {
                let Some(limit) = spec.opt(key) else { continue };
                let order = py_compare(&converted, limit, if below { "<" } else { ">" })?;
                let wanted = if below {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
                if order == Some(wanted) {
                    let (kind, word) = if below {
                        ("value_smaller_than_min", "smaller than min")
                    } else {
                        ("value_bigger_than_max", "bigger than max")
                    };
                    return Ok(Some(json!({
                        "type": kind,
                        "message": format!("Value {} {word} of {}", converted.to_str(), py_str(limit)),
                        "details": name,
                        "extra_info": {
                            "input_name": name,
                            "input_config": spec.config(),
                            "received_value": converted.to_json(),
                        },
                    })));
                }
            }
        }
        if let Some(folder) = spec.upload_folder() {
            return Ok(self.check_upload(spec, val, folder));
        }
        if self_validated {
            return Ok(None);
        }
        let options: &[Value] = if let Some(list) = spec.kind.as_array() {
            list
        } else if spec.kind == "COMBO" {
            // Options fetched by the editor are not known to the server.
            if spec.opt("remote_combo").is_some_and(truthy) || spec.opt("remote").is_some() {
                return Ok(None);
            }
            match spec.opt("options") {
                None => &NO_VALUES,
                Some(Value::Array(list)) => list,
                Some(_) => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        let multiselect = spec.opt("multiselect").is_some_and(truthy);
        let missing: Vec<&Value> = match val {
            Value::Array(items) if multiselect => items
                .iter()
                .filter(|v| !options.iter().any(|o| py_eq(v, o)))
                .collect(),
            _ if options.iter().any(|o| py_eq(val, o)) => Vec::new(),
            _ => vec![val],
        };
        if missing.is_empty() {
            return Ok(None);
        }
        Ok(Some(not_in_list(
            name,
            spec.config(),
            val,
            &missing,
            options,
        )))
    }

    /// An upload input names one of the participant's own files.
    fn check_upload(&self, spec: Spec<'a>, val: &Value, folder: &str) -> Option<Value> {
        if let Some(s) = val.as_str() {
            let (file, annotated) = split_annotation(s);
            if annotated.unwrap_or(folder) != "input" || self.own_inputs.iter().any(|f| f == file) {
                return None;
            }
        }
        let options: Vec<Value> = self
            .own_inputs
            .iter()
            .map(|f| Value::String(f.clone()))
            .collect();
        let config = json!([options, spec.extra.cloned().unwrap_or_default()]);
        Some(not_in_list(spec.name, config, val, &[val], &options))
    }
}

fn not_in_list(
    name: &str,
    config: Value,
    val: &Value,
    missing: &[&Value],
    options: &[Value],
) -> Value {
    let (list_info, config) = if options.len() > LIST_SHOWN {
        (format!("(list of length {})", options.len()), Value::Null)
    } else {
        (py_str(&Value::Array(options.to_vec())), config)
    };
    let shown: Vec<String> = missing.iter().map(|v| py_repr(v)).collect();
    json!({
        "type": "value_not_in_list",
        "message": "Value not in list",
        "details": format!("{name}: {} not in {list_info}", shown.join(", ")),
        "extra_info": {"input_name": name, "input_config": config, "received_value": val},
    })
}

fn split_annotation(value: &str) -> (&str, Option<&'static str>) {
    for (suffix, folder) in ANNOTATIONS {
        if let Some(name) = value.strip_suffix(suffix) {
            return (name, Some(folder));
        }
    }
    (value, None)
}

/// `validate_node_input`: may an output of type `received` feed an input
/// of type `input`? `*` matches anything; `A,B` matches `B,C`.
fn types_match(received: &Value, input: &Value) -> bool {
    const ANY: &str = "*";
    const MATCH_TYPE: &str = "COMFY_MATCHTYPE_V3";
    if py_eq(received, input) {
        return true;
    }
    if received == ANY || input == ANY || received == MATCH_TYPE || input == MATCH_TYPE {
        return true;
    }
    if received.is_array() && input == "COMBO" {
        return true;
    }
    let (Some(received), Some(input)) = (received.as_str(), input.as_str()) else {
        return false;
    };
    let split = |s: &str| {
        s.split(',')
            .map(str::trim)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (received, input) = (split(received), split(input));
    if received.iter().chain(&input).any(|t| t == ANY) {
        return true;
    }
    received.iter().any(|t| input.contains(t))
}

// ---- Python value semantics -------------------------------------------

/// A value after ComfyUI's conversion (`int(v)`, `float(v)`, ...).
#[derive(Debug)]
enum Py<'a> {
    Json(&'a Value),
    Int(i128),
    /// An `int` beyond `i128`, approximated.
    BigInt(f64),
    Float(f64),
    Str(String),
    Bool(bool),
}

/// A number for comparisons: exact integers or floats.
#[derive(Clone, Copy)]
enum Num {
    I(i128),
    F(f64),
}

impl Py<'_> {
    fn num(&self) -> Option<Num> {
        match self {
            Py::Json(v) => json_num(v),
            Py::Int(i) => Some(Num::I(*i)),
            Py::BigInt(f) | Py::Float(f) => Some(Num::F(*f)),
            Py::Bool(b) => Some(Num::I(i128::from(*b))),
            Py::Str(_) => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Py::Json(v) => v.as_str(),
            Py::Str(s) => Some(s),
            _ => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Py::Json(v) => type_name(v),
            Py::Int(_) | Py::BigInt(_) => "int",
            Py::Float(_) => "float",
            Py::Str(_) => "str",
            Py::Bool(_) => "bool",
        }
    }

    /// `str(value)`.
    fn to_str(&self) -> String {
        match self {
            Py::Json(v) => py_str(v),
            Py::Int(i) => i.to_string(),
            Py::BigInt(f) => format!("{f:.0}"),
            Py::Float(f) => py_float(*f),
            Py::Str(s) => s.clone(),
            Py::Bool(b) => py_bool(*b).into(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Py::Json(v) => (*v).clone(),
            Py::Int(i) => i64::try_from(*i)
                .map(Value::from)
                .or_else(|_| u64::try_from(*i).map(Value::from))
                .unwrap_or_else(|_| float_json(*i as f64)),
            Py::BigInt(f) | Py::Float(f) => float_json(*f),
            Py::Str(s) => Value::String(s.clone()),
            Py::Bool(b) => Value::Bool(*b),
        }
    }
}

fn float_json(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn json_num(v: &Value) -> Option<Num> {
    match v {
        Value::Bool(b) => Some(Num::I(i128::from(*b))),
        Value::Number(n) => n
            .as_i64()
            .map(|i| Num::I(i.into()))
            .or_else(|| n.as_u64().map(|u| Num::I(u.into())))
            .or_else(|| n.as_f64().map(Num::F)),
        _ => None,
    }
}

/// Python's exact comparison of numbers (NaN compares as nothing).
fn cmp_num(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::I(x), Num::I(y)) => Some(x.cmp(&y)),
        (Num::F(x), Num::F(y)) => x.partial_cmp(&y),
        (Num::I(i), Num::F(f)) => cmp_int_float(i, f),
        (Num::F(f), Num::I(i)) => cmp_int_float(i, f).map(Ordering::reverse),
    }
}

fn cmp_int_float(i: i128, f: f64) -> Option<Ordering> {
    const LIMIT: f64 = 1.7014118346046923e38; // 2^127
    if f.is_nan() {
        return None;
    }
    if f >= LIMIT {
        return Some(Ordering::Less);
    }
    if f < -LIMIT {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    match i.cmp(&(whole as i128)) {
        Ordering::Equal => 0.0_f64.partial_cmp(&(f - whole)),
        other => Some(other),
    }
}

/// `a < limit` / `a > limit` as Python orders them; comparing a string
/// with a number raises `TypeError` there, and so here.
fn py_compare(a: &Py, limit: &Value, op: &str) -> Result<Option<Ordering>, Crash> {
    if let (Some(x), Some(y)) = (a.num(), json_num(limit)) {
        return Ok(cmp_num(x, y));
    }
    if let (Some(x), Some(y)) = (a.as_str(), limit.as_str()) {
        return Ok(Some(x.cmp(y)));
    }
    Err(Crash::new(
        "TypeError",
        format!(
            "'{op}' not supported between instances of '{}' and '{}'",
            a.type_name(),
            type_name(limit)
        ),
    ))
}

/// Python `==` on JSON-decoded values (`1 == 1.0 == True`).
fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => match (json_num(a), json_num(b)) {
            (Some(x), Some(y)) => cmp_num(x, y) == Some(Ordering::Equal),
            (None, None) => a == b,
            _ => false,
        },
    }
}

/// `int(v)`; `Err` is the exception's message.
fn to_int(v: &Value) -> Result<Py<'static>, String> {
    match v {
        Value::Bool(b) => Ok(Py::Int(i128::from(*b))),
        Value::Number(n) => match json_num(v) {
            Some(Num::I(i)) => Ok(Py::Int(i)),
            _ => {
                let whole = n.as_f64().unwrap_or_default().trunc();
                if whole.abs() < 1.7e38 {
                    Ok(Py::Int(whole as i128))
                } else {
                    Ok(Py::BigInt(whole))
                }
            }
        },
        Value::String(s) => parse_int(s),
        other => Err(format!(
            "int() argument must be a string, a bytes-like object or a real number, not '{}'",
            type_name(other)
        )),
    }
}

/// Python's `int(str)` in base 10: blanks around, a sign, digits with
/// single underscores between them.
fn parse_int(s: &str) -> Result<Py<'static>, String> {
    let invalid = || format!("invalid literal for int() with base 10: {}", py_repr_str(s));
    let t = s.trim();
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    if !digits_with_underscores(body) {
        return Err(invalid());
    }
    let digits: String = t.chars().filter(|c| *c != '_').collect();
    let count = digits.chars().filter(char::is_ascii_digit).count();
    if count > 4300 {
        return Err(format!("Exceeds the limit (4300 digits) for integer string conversion: value has {count} digits; use sys.set_int_max_str_digits() to increase the limit"));
    }
    match digits.parse::<i128>() {
        Ok(i) => Ok(Py::Int(i)),
        Err(_) => digits.parse::<f64>().map(Py::BigInt).map_err(|_| invalid()),
    }
}

fn digits_with_underscores(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().enumerate().all(|(i, c)| {
            c.is_ascii_digit()
                || (*c == b'_'
                    && i > 0
                    && b[i - 1].is_ascii_digit()
                    && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        })
}

/// `float(v)`; `Err` is the exception's message.
fn to_float(v: &Value) -> Result<Py<'static>, String> {
    match v {
        Value::Bool(b) => Ok(Py::Float(f64::from(u8::from(*b)))),
        Value::Number(n) => Ok(Py::Float(n.as_f64().unwrap_or_default())),
        Value::String(s) => parse_float(s)
            .map(Py::Float)
            .ok_or_else(|| format!("could not convert string to float: {}", py_repr_str(s))),
        other => Err(format!(
            "float() argument must be a string or a real number, not '{}'",
            type_name(other)
        )),
    }
}

/// Python's `float(str)`: Rust's grammar plus blanks and digit underscores.
fn parse_float(s: &str) -> Option<f64> {
    let t = s.trim();
    let b = t.as_bytes();
    let mut clean = String::with_capacity(t.len());
    for (i, c) in t.char_indices() {
        if c == '_' {
            let around =
                i > 0 && b[i - 1].is_ascii_digit() && b.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !around {
                return None;
            }
        } else {
            clean.push(c);
        }
    }
    clean.parse().ok()
}

/// Python truthiness.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// A string field of an error, for joining.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_str(other),
    }
}

/// Python's `str()` of a JSON-decoded value.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python's `repr()` of a JSON-decoded value.
fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => py_bool(*b).into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => py_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => py_repr_str(s),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(py_repr).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", py_repr_str(k), py_repr(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr(float)`: shortest round-trip digits, exponent from 1e16
/// and below 1e-4.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if f < 0.0 { "-" } else { "" };
    let body = if (-4..16).contains(&exp) {
        if exp >= 0 {
            let point = exp as usize + 1;
            let int_part: String = if digits.len() >= point {
                digits[..point].to_string()
            } else {
                format!("{digits}{}", "0".repeat(point - digits.len()))
            };
            let frac = digits.get(point..).filter(|r| !r.is_empty()).unwrap_or("0");
            format!("{int_part}.{frac}")
        } else {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{first}{frac}e{esign}{:02}", exp.abs())
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    /// The recorded ComfyUI 0.3.64 catalogue.
    static CATALOGUE: LazyLock<Value> = LazyLock::new(|| {
        serde_json::from_str(include_str!(
            "../../tests/fixtures/comfyui-0.3.64/object_info.json"
        ))
        .expect("the recorded catalogue is JSON")
    });

    fn run(prompt: Value) -> Result<Validated, Rejection> {
        run_with(prompt, &[])
    }

    fn run_with(prompt: Value, own: &[&str]) -> Result<Validated, Rejection> {
        let own: Vec<String> = own.iter().map(|s| s.to_string()).collect();
        let Value::Object(map) = prompt else {
            panic!("a prompt is an object")
        };
        validate(&map, &CATALOGUE, &own)
    }

    fn refused(prompt: Value) -> Rejection {
        run(prompt).expect_err("refused")
    }

    fn empty(extra: Value) -> Value {
        let mut inputs = json!({"width": 8, "height": 8, "batch_size": 1, "color": 0});
        if let (Some(i), Value::Object(e)) = (inputs.as_object_mut(), extra) {
            i.extend(e);
        }
        json!({"class_type": "EmptyImage", "inputs": inputs})
    }

    fn save(images: Value) -> Value {
        json!({"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": "t"}})
    }

    /// (node id, error type, input name) of every node error.
    fn errors(r: &Rejection) -> Vec<(String, String, Value)> {
        let mut out = vec![];
        for (id, entry) in r.node_errors() {
            for e in entry["errors"].as_array().expect("errors list") {
                out.push((
                    id.clone(),
                    e["type"].as_str().expect("type").to_string(),
                    e["extra_info"]["input_name"].clone(),
                ));
            }
        }
        out
    }

    fn one_error(r: &Rejection) -> (String, String, Value) {
        assert_eq!(
            r.kind(),
            "prompt_outputs_failed_validation",
            "{:#}",
            r.body()
        );
        let all = errors(r);
        assert_eq!(all.len(), 1, "{:#}", r.body());
        all.into_iter().next().expect("one")
    }

    #[test]
    fn a_good_prompt_passes_with_its_outputs() {
        let v = run(json!({"1": empty(json!({})), "2": save(json!(["1", 0]))})).unwrap();
        assert_eq!(v.outputs, ["2"]);
        assert!(v.node_errors.is_empty());
    }

    #[test]
    fn a_node_without_class_type_refuses_the_whole_prompt() {
        let r = refused(
            json!({"1": {"inputs": {}, "_meta": {"title": "Mine"}}, "2": save(json!(["1", 0]))}),
        );
        assert_eq!(r.kind(), "missing_node_type");
        assert_eq!(
            r.error()["extra_info"],
            json!({"node_id": "1", "class_type": null, "node_title": "Mine"})
        );
        assert_eq!(r.error()["details"], "Node ID '#1'");
        assert!(r.node_errors().is_empty());
        let r = refused(json!({"7": "not a node"}));
        assert_eq!(r.error()["message"], "Node 'ID #7' has no class_type. The workflow may be corrupted or a custom node is missing.");
        assert!(class_types_present(json!({"1": {"inputs": {}}}).as_object().unwrap()).is_err());
        assert!(
            class_types_present(json!({"1": {"class_type": "X"}}).as_object().unwrap()).is_ok()
        );
    }

    #[test]
    fn an_unknown_node_type_is_missing_node_type_with_its_title() {
        let r = refused(
            json!({"1": empty(json!({})), "5": {"class_type": "NoSuchNode", "inputs": {}}}),
        );
        assert_eq!(r.kind(), "missing_node_type");
        assert_eq!(
            r.error(),
            &json!({
                "type": "missing_node_type",
                "message": "Node 'NoSuchNode' not found. The custom node may not be installed.",
                "details": "Node ID '#5'",
                "extra_info": {"node_id": "5", "class_type": "NoSuchNode", "node_title": "NoSuchNode"},
            })
        );
        let r = refused(
            json!({"5": {"class_type": "Nope", "inputs": {}, "_meta": {"title": "My node"}}}),
        );
        assert_eq!(r.error()["extra_info"]["node_title"], "My node");
        assert_eq!(r.error()["extra_info"]["class_type"], "Nope");
        let r = refused(json!({"5": {"class_type": 12, "inputs": {}}}));
        assert_eq!(r.kind(), "missing_node_type");
    }

    #[test]
    fn a_prompt_without_an_output_node_has_no_outputs() {
        let r = refused(json!({"1": empty(json!({}))}));
        assert_eq!(
            r.body(),
            json!({"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}, "node_errors": {}})
        );
        assert_eq!(refused(json!({})).kind(), "prompt_no_outputs");
    }

    #[test]
    fn nodes_no_output_reaches_are_not_validated() {
        let v = run(json!({
            "1": empty(json!({})),
            "2": save(json!(["1", 0])),
            "3": {"class_type": "ImageInvert", "inputs": {}},
        }));
        assert_eq!(v.unwrap().outputs, ["2"]);
    }

    #[test]
    fn a_missing_required_input_is_named() {
        let r = refused(
            json!({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}}, "2": save(json!(["1", 0]))}),
        );
        assert_eq!(
            one_error(&r),
            ("1".into(), "required_input_missing".into(), json!("color"))
        );
        let e = &r.node_errors()["1"];
        assert_eq!(e["class_type"], "EmptyImage");
        assert_eq!(e["dependent_outputs"], json!(["2"]));
        assert_eq!(e["errors"][0]["details"], "color");
        assert_eq!(r.error()["details"], "");
    }

    #[test]
    fn optional_and_hidden_inputs_may_be_left_out_but_optional_ones_are_checked() {
        // SaveImage declares hidden prompt/extra_pnginfo; ImageStitch has optional inputs.
        let ok = run(json!({
            "1": empty(json!({})),
            "2": {"class_type": "ImageStitch", "inputs": {"image1": ["1", 0], "direction": "right", "match_image_size": true, "spacing_width": 0, "spacing_color": "white"}},
            "3": save(json!(["2", 0])),
        }));
        assert!(ok.is_ok(), "{ok:?}");
        let r = refused(json!({
            "1": empty(json!({})),
            "2": {"class_type": "ImageStitch", "inputs": {"image1": ["1", 0], "image2": ["1", 5], "direction": "right", "match_image_size": true, "spacing_width": 0, "spacing_color": "white"}},
            "3": save(json!(["2", 0])),
        }));
        let (id, kind, _) = one_error(&r);
        assert_eq!(
            (id.as_str(), kind.as_str()),
            ("2", "exception_during_inner_validation")
        );
    }

    #[test]
    fn a_link_that_is_not_a_pair_is_a_bad_linked_input() {
        let r = refused(json!({"1": empty(json!({})), "2": save(json!(["1", 0, 1]))}));
        assert_eq!(
            one_error(&r),
            ("2".into(), "bad_linked_input".into(), json!("images"))
        );
        assert_eq!(
            r.node_errors()["2"]["errors"][0]["extra_info"]["received_value"],
            json!(["1", 0, 1])
        );
    }

    #[test]
    fn a_link_to_a_missing_node_is_reported_as_comfyui_reports_its_key_error() {
        let r = refused(json!({"1": empty(json!({})), "2": save(json!(["9", 0]))}));
        let (id, kind, _) = one_error(&r);
        assert_eq!(
            (id.as_str(), kind.as_str()),
            ("2", "exception_during_validation")
        );
        let e = &r.node_errors()["2"]["errors"][0];
        assert_eq!(e["details"], "'9'");
        assert_eq!(e["extra_info"]["exception_type"], "KeyError");
        assert_eq!(r.error()["details"], "Exception when validating node: '9'");
        // One node further up: the linking node's parent reports it.
        let r = refused(json!({
            "1": {"class_type": "ImageInvert", "inputs": {"image": [1, 0]}},
            "2": save(json!(["1", 0])),
        }));
        assert_eq!(
            one_error(&r),
            (
                "1".into(),
                "exception_during_inner_validation".into(),
                json!("images")
            )
        );
        let e = &r.node_errors()["1"]["errors"][0];
        assert_eq!(e["details"], "1");
        assert_eq!(e["extra_info"]["linked_node"], json!(["1", 0]));
    }

    #[test]
    fn an_out_of_range_slot_is_an_index_error_and_a_negative_one_counts_from_the_end() {
        let r = refused(json!({"1": empty(json!({})), "2": save(json!(["1", 1]))}));
        assert_eq!(
            r.node_errors()["2"]["errors"][0]["details"],
            "tuple index out of range"
        );
        assert!(run(json!({"1": empty(json!({})), "2": save(json!(["1", -1]))})).is_ok());
        let r = refused(json!({"1": empty(json!({})), "2": save(json!(["1", "0"]))}));
        assert_eq!(
            r.node_errors()["2"]["errors"][0]["details"],
            "tuple indices must be integers or slices, not str"
        );
    }

    #[test]
    fn a_link_of_the_wrong_type_is_a_return_type_mismatch() {
        let r = refused(json!({
            "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "2": save(json!(["1", 0])),
        }));
        assert_eq!(
            one_error(&r),
            ("2".into(), "return_type_mismatch".into(), json!("images"))
        );
        let e = &r.node_errors()["2"]["errors"][0];
        assert_eq!(
            e["details"],
            "images, received_type(LATENT) mismatch input_type(IMAGE)"
        );
        assert_eq!(e["extra_info"]["received_type"], "LATENT");
        assert_eq!(e["extra_info"]["linked_node"], json!(["1", 0]));
    }

    #[test]
    fn wildcards_and_unions_match_as_in_comfyui() {
        assert!(types_match(&json!("IMAGE"), &json!("IMAGE,FLOAT")));
        assert!(types_match(&json!("STRING,INT"), &json!("INT")));
        assert!(types_match(&json!("LATENT"), &json!("*")));
        assert!(types_match(&json!("*"), &json!("MODEL")));
        assert!(types_match(&json!("A, *"), &json!("MODEL")));
        assert!(types_match(&json!(["a", "b"]), &json!("COMBO")));
        assert!(types_match(&json!(["a", "b"]), &json!(["a", "b"])));
        assert!(!types_match(&json!(["a"]), &json!(["a", "b"])));
        assert!(!types_match(&json!("LATENT"), &json!("IMAGE,FLOAT")));
        // PreviewAny takes `*`; TestCustomValidation1 takes IMAGE,FLOAT.
        let ok = run(json!({
            "1": empty(json!({})),
            "2": {"class_type": "TestCustomValidation1", "inputs": {"input1": ["1", 0], "input2": ["1", 0]}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        }));
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn an_int_that_is_not_a_number_is_an_invalid_input_type() {
        let r = refused(json!({"1": empty(json!({"width": "wide"})), "2": save(json!(["1", 0]))}));
        assert_eq!(
            one_error(&r),
            ("1".into(), "invalid_input_type".into(), json!("width"))
        );
        let e = &r.node_errors()["1"]["errors"][0];
        assert_eq!(
            e["message"],
            "Failed to convert an input value to a INT value"
        );
        assert_eq!(
            e["details"],
            "width, wide, invalid literal for int() with base 10: 'wide'"
        );
        assert_eq!(e["extra_info"]["received_value"], "wide");
        for bad in [
            json!("nan"),
            json!("1.5"),
            json!(null),
            json!({"a": 1}),
            json!("1__0"),
            json!(""),
        ] {
            let r = refused(json!({"1": empty(json!({"width": bad})), "2": save(json!(["1", 0]))}));
            assert_eq!(one_error(&r).1, "invalid_input_type", "{bad}");
        }
        for good in [
            json!(" 12 "),
            json!("1_2"),
            json!(8.9),
            json!(true),
            json!({"__value__": 9}),
            json!("+9"),
        ] {
            let ok = run(json!({"1": empty(json!({"width": good})), "2": save(json!(["1", 0]))}));
            assert!(ok.is_ok(), "{good}: {ok:?}");
        }
    }

    #[test]
    fn floats_convert_as_python_does_and_nan_passes_any_range() {
        let sampler = |cfg: Value| {
            json!({
                "1": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "seed": 0, "steps": 1, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal", "positive": ["3", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
                "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x"}},
                "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["2", 1]}},
                "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                "5": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}},
            })
        };
        // The checkpoint list is empty in the recording: that is the only error.
        let only_ckpt = |r: Rejection| errors(&r).iter().all(|(id, _, _)| id == "2");
        assert!(only_ckpt(refused(sampler(json!("nan")))));
        assert!(only_ckpt(refused(sampler(json!(" 1_0.5 ")))));
        let r = refused(sampler(json!("inf")));
        assert!(errors(&r).contains(&("1".into(), "value_bigger_than_max".into(), json!("cfg"))));
        let r = refused(sampler(json!("abc")));
        let e = errors(&r);
        assert!(
            e.contains(&("1".into(), "invalid_input_type".into(), json!("cfg"))),
            "{e:?}"
        );
        assert_eq!(
            r.node_errors()["1"]["errors"][0]["extra_info"]["exception_message"],
            "could not convert string to float: 'abc'"
        );
    }

    #[test]
    fn a_value_below_min_or_above_max_is_refused() {
        let r = refused(json!({"1": empty(json!({"width": 0})), "2": save(json!(["1", 0]))}));
        assert_eq!(
            one_error(&r),
            ("1".into(), "value_smaller_than_min".into(), json!("width"))
        );
        assert_eq!(
            r.node_errors()["1"]["errors"][0]["message"],
            "Value 0 smaller than min of 1"
        );
        let r = refused(json!({"1": empty(json!({"width": "99999"})), "2": save(json!(["1", 0]))}));
        assert_eq!(
            one_error(&r),
            ("1".into(), "value_bigger_than_max".into(), json!("width"))
        );
        let e = &r.node_errors()["1"]["errors"][0];
        assert_eq!(e["message"], "Value 99999 bigger than max of 16384");
        assert_eq!(e["extra_info"]["received_value"], 99999);
    }

    #[test]
    fn huge_numbers_compare_exactly() {
        // PrimitiveInt takes -(2^63-1) ..= 2^63-1.
        let seed = |s: Value| json!({"1": {"class_type": "PrimitiveInt", "inputs": {"value": s}}, "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}});
        assert!(run(seed(json!(9223372036854775807_i64))).is_ok());
        let r = refused(seed(json!(18446744073709551615_u64)));
        assert_eq!(one_error(&r).1, "value_bigger_than_max");
        let r = refused(seed(serde_json::from_str("1e300").unwrap()));
        assert_eq!(one_error(&r).1, "value_bigger_than_max");
        let r = refused(seed(json!("-99999999999999999999999999999999999999999999")));
        assert_eq!(one_error(&r).1, "value_smaller_than_min");
        let r = refused(seed(json!("9".repeat(5000))));
        assert_eq!(one_error(&r).1, "invalid_input_type");
    }

    #[test]
    fn a_combo_value_not_in_the_list_is_refused_in_both_catalogue_formats() {
        let scale = |method: &str| json!({"1": empty(json!({})), "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": method, "width": 8, "height": 8, "crop": "disabled"}}, "3": save(json!(["2", 0]))});
        assert!(run(scale("bilinear")).is_ok());
        let r = refused(scale("sharpest"));
        assert_eq!(
            one_error(&r),
            (
                "2".into(),
                "value_not_in_list".into(),
                json!("upscale_method")
            )
        );
        let e = &r.node_errors()["2"]["errors"][0];
        assert_eq!(e["details"], "upscale_method: 'sharpest' not in ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']");
        assert_eq!(e["extra_info"]["input_config"][0][1], "bilinear");
        // New format: ["COMBO", {"options": [...]}].
        let concat = |dim: &str| {
            json!({
                "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                "2": {"class_type": "LatentConcat", "inputs": {"samples1": ["1", 0], "samples2": ["1", 0], "dim": dim}},
                "3": {"class_type": "SaveLatent", "inputs": {"samples": ["2", 0], "filename_prefix": "x"}},
            })
        };
        assert!(run(concat("-y")).is_ok());
        let r = refused(concat("z"));
        assert_eq!(
            one_error(&r),
            ("2".into(), "value_not_in_list".into(), json!("dim"))
        );
        // More than 20 choices: the list is not sent back.
        let r = refused(json!({
            "1": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "nope"}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        }));
        let e = &r.node_errors()["1"]["errors"][0];
        assert_eq!(e["extra_info"]["input_config"], Value::Null);
        assert!(
            e["details"]
                .as_str()
                .unwrap()
                .ends_with("not in (list of length 42)"),
            "{e}"
        );
    }

    #[test]
    fn an_upload_input_must_name_one_of_the_participants_own_files() {
        let load = |image: &str| json!({"1": {"class_type": "LoadImage", "inputs": {"image": image}}, "2": save(json!(["1", 0]))});
        // noise256.png is on the worker, not the participant's.
        let r = run_with(load("noise256.png"), &["cat.png", "sub/dog.png"]).unwrap_err();
        assert_eq!(
            one_error(&r),
            ("1".into(), "value_not_in_list".into(), json!("image"))
        );
        assert_eq!(
            r.node_errors()["1"]["errors"][0]["extra_info"]["input_config"][0],
            json!(["cat.png", "sub/dog.png"])
        );
        assert!(run_with(load("cat.png"), &["cat.png", "sub/dog.png"]).is_ok());
        assert!(run_with(load("sub/dog.png [input]"), &["sub/dog.png"]).is_ok());
        // Files elsewhere are not the input folder's: left to the worker.
        assert!(run_with(load("old_00001_.png [output]"), &[]).is_ok());
        let out = json!({"1": {"class_type": "LoadImageOutput", "inputs": {"image": "x.png"}}, "2": save(json!(["1", 0]))});
        assert!(run_with(out, &[]).is_ok());
    }

    #[test]
    fn a_dependency_cycle_names_every_node_on_it() {
        let r = refused(json!({
            "1": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
            "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "2": save(json!(["1", 0])),
        }));
        let e = errors(&r);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e.iter().all(|(_, kind, _)| kind == "dependency_cycle"));
        let first = &r.node_errors()["1"]["errors"][0];
        assert_eq!(
            first["details"],
            "1 (ImageInvert) -> 3 (ImageInvert) -> 1 (ImageInvert)"
        );
        assert_eq!(first["extra_info"]["cycle_nodes"], json!(["1", "3"]));
        let r = refused(
            json!({"1": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}, "2": save(json!(["1", 0]))}),
        );
        assert_eq!(
            one_error(&r),
            ("1".into(), "dependency_cycle".into(), Value::Null)
        );
    }

    #[test]
    fn a_very_deep_chain_is_validated_without_recursion() {
        let mut prompt = Map::new();
        prompt.insert("0".into(), empty(json!({})));
        for i in 1..200_000 {
            prompt.insert(
                i.to_string(),
                json!({"class_type": "ImageInvert", "inputs": {"image": [(i - 1).to_string(), 0]}}),
            );
        }
        prompt.insert("out".into(), save(json!(["199999", 0])));
        assert!(validate(&prompt, &CATALOGUE, &[]).is_ok());
        prompt.insert("0".into(), empty(json!({"width": -1})));
        let r = validate(&prompt, &CATALOGUE, &[]).unwrap_err();
        assert_eq!(one_error(&r).0, "0");
    }

    #[test]
    fn a_node_without_inputs_raises_as_in_comfyui() {
        let r = refused(json!({"1": {"class_type": "EmptyImage"}, "2": save(json!(["1", 0]))}));
        let (id, kind, input) = one_error(&r);
        assert_eq!(
            (id.as_str(), kind.as_str(), input),
            ("1", "exception_during_inner_validation", json!("images"))
        );
        assert_eq!(r.node_errors()["1"]["errors"][0]["details"], "'inputs'");
        let r = refused(json!({"2": {"class_type": "SaveImage", "inputs": []}}));
        assert_eq!(one_error(&r).1, "exception_during_validation");
    }

    #[test]
    fn one_good_output_queues_the_prompt_with_the_others_errors() {
        let v = run(json!({
            "1": empty(json!({})),
            "2": save(json!(["1", 0])),
            "3": empty(json!({"width": 0})),
            "4": save(json!(["3", 0])),
        }))
        .unwrap();
        assert_eq!(v.outputs, ["2"]);
        assert_eq!(v.node_errors["3"]["dependent_outputs"], json!(["4"]));
    }

    #[test]
    fn every_failing_output_is_listed_on_every_failed_node_as_comfyui_does() {
        let r = refused(json!({
            "1": empty(json!({"width": 0})),
            "2": save(json!(["1", 0])),
            "3": empty(json!({"height": 0})),
            "4": save(json!(["3", 0])),
        }));
        assert_eq!(r.node_errors()["1"]["dependent_outputs"], json!(["2", "4"]));
        assert_eq!(r.node_errors()["3"]["dependent_outputs"], json!(["4"]));
    }

    #[test]
    fn self_validating_inputs_skip_range_checks() {
        let kling = json!({
            "1": {"class_type": "KlingCameraControls", "inputs": {"camera_control_type": "simple", "horizontal_movement": 50.0, "vertical_movement": 0, "pan": 0, "tilt": 0, "roll": 0, "zoom": 0}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
        });
        assert!(run(kling).is_ok());
    }

    #[test]
    fn python_formatting_matches() {
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(0.1), "0.1");
        assert_eq!(py_float(1e16), "1e+16");
        assert_eq!(py_float(1.5e-5), "1.5e-05");
        assert_eq!(py_float(0.0001), "0.0001");
        assert_eq!(py_float(123456789012345678.0), "1.2345678901234568e+17");
        assert_eq!(py_float(-2.5), "-2.5");
        assert_eq!(py_float(100.0), "100.0");
        assert_eq!(
            py_repr(&json!(["a", 1, 2.0, null, true, {"k": "it's"}])),
            r#"['a', 1, 2.0, None, True, {'k': "it's"}]"#
        );
    }

    // ---- properties ------------------------------------------------------

    fn is_text(v: &Value) -> bool {
        v.is_string()
    }

    /// ComfyUI's 400 shape, and node errors only for nodes of the prompt.
    fn assert_shape(r: &Rejection, prompt: &Map<String, Value>) {
        let e = r.error();
        assert!(
            is_text(&e["type"]) && is_text(&e["message"]) && is_text(&e["details"]),
            "{e}"
        );
        assert!(e["extra_info"].is_object(), "{e}");
        for (id, entry) in r.node_errors() {
            assert!(prompt.contains_key(id), "{id}");
            let list = entry["errors"].as_array().expect("errors");
            assert!(!list.is_empty());
            for err in list {
                assert!(
                    is_text(&err["type"]) && is_text(&err["message"]) && is_text(&err["details"]),
                    "{err}"
                );
                assert!(err["extra_info"].is_object(), "{err}");
            }
            let deps = entry["dependent_outputs"]
                .as_array()
                .expect("dependent_outputs");
            assert!(deps
                .iter()
                .all(|d| d.as_str().is_some_and(|d| prompt.contains_key(d))));
            assert!(entry.get("class_type").is_some());
        }
        match r.kind() {
            "missing_node_type" | "prompt_no_outputs" => assert!(r.node_errors().is_empty()),
            "prompt_outputs_failed_validation" => assert!(!r.node_errors().is_empty()),
            other => panic!("unexpected error type {other}"),
        }
        serde_json::to_string(&r.body()).expect("serializable");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(float_json),
            prop::sample::select(vec![
                "nan", "inf", "-inf", "1e400", "1_0", " 7 ", "", "1", "0", "euler", "*", "IMAGE"
            ])
            .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z_]{0,6}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    const CLASSES: &[&str] = &[
        "EmptyImage",
        "SaveImage",
        "SaveImage",
        "PreviewImage",
        "ImageScale",
        "ImageInvert",
        "LoadImage",
        "PreviewAny",
        "PreviewAny",
        "LatentConcat",
        "EmptyLatentImage",
        "SaveLatent",
        "KSampler",
        "PrimitiveInt",
        "PrimitiveFloat",
        "PrimitiveBoolean",
        "TestCustomValidation1",
        "ImageStitch",
        "LoadImageOutput",
        "KlingCameraControls",
        "KSamplerSelect",
        "NoSuchNode",
    ];

    /// A value the input would accept, from its declaration.
    fn plausible(spec: &Value) -> Value {
        let extra = &spec[1];
        if let Some(d) = extra.get("default") {
            return d.clone();
        }
        match &spec[0] {
            Value::Array(options) => options.first().cloned().unwrap_or(json!("x")),
            Value::String(t) if t == "COMBO" => {
                extra["options"].get(0).cloned().unwrap_or(json!("x"))
            }
            Value::String(t) if t == "INT" || t == "FLOAT" => {
                extra.get("min").cloned().unwrap_or(json!(0))
            }
            Value::String(t) if t == "STRING" => json!("s"),
            Value::String(t) if t == "BOOLEAN" => json!(true),
            _ => Value::Null,
        }
    }

    /// Nodes of real classes whose declared inputs get, each, a link to a
    /// random node and slot, a plausible value, a number, arbitrary JSON,
    /// or nothing.
    fn arb_prompt() -> impl Strategy<Value = Map<String, Value>> {
        let input = (0u8..11, arb_json(), 0usize..8, -1i64..3, -100i64..20_000);
        let node = (
            prop::sample::select(CLASSES),
            prop::collection::vec(input, 12),
            prop::option::weighted(0.03, arb_json()),
        );
        prop::collection::vec(node, 0..8).prop_map(|nodes| {
            let mut prompt = Map::new();
            for (i, (class, choices, odd)) in nodes.into_iter().enumerate() {
                if let Some(v) = odd {
                    prompt.insert(i.to_string(), v);
                    continue;
                }
                let declared = &CATALOGUE[class]["input"];
                let specs = ["required", "optional"]
                    .iter()
                    .filter_map(|s| declared[*s].as_object())
                    .flatten();
                let mut inputs = Map::new();
                for ((name, spec), (choice, any, id, slot, number)) in specs.zip(choices) {
                    let value = match choice {
                        0 => continue,
                        1..=3 => json!([id.to_string(), slot]),
                        4..=6 => plausible(spec),
                        7 => json!(number),
                        _ => any,
                    };
                    inputs.insert(name.clone(), value);
                }
                prompt.insert(
                    i.to_string(),
                    json!({"class_type": class, "inputs": inputs}),
                );
            }
            prompt
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(600))]

        #[test]
        fn structured_prompts_never_panic_and_refusals_have_comfyuis_shape(prompt in arb_prompt()) {
            let first = validate(&prompt, &CATALOGUE, &["a.png".to_string()]);
            let again = validate(&prompt, &CATALOGUE, &["a.png".to_string()]);
            prop_assert_eq!(&first, &again);
            match first {
                Ok(v) => {
                    prop_assert!(!v.outputs.is_empty());
                    prop_assert!(v.outputs.iter().all(|o| prompt.contains_key(o)));
                }
                Err(r) => assert_shape(&r, &prompt),
            }
        }

        #[test]
        fn arbitrary_json_prompts_never_panic(prompt in prop::collection::vec(("[0-9]{1,2}", arb_json()), 0..6)) {
            let prompt: Map<String, Value> = prompt.into_iter().collect();
            if let Err(r) = validate(&prompt, &CATALOGUE, &[]) {
                assert_shape(&r, &prompt);
            }
            let _ = class_types_present(&prompt);
        }

        #[test]
        fn an_arbitrary_catalogue_never_panics(catalogue in arb_json(), prompt in arb_prompt()) {
            let catalogue = json!({"SaveImage": catalogue, "EmptyImage": {"input": {"required": {"width": ["INT", {"min": "a", "max": []}]}}, "output_node": true, "output": 5}});
            if let Err(r) = validate(&prompt, &catalogue, &[]) {
                assert_shape(&r, &prompt);
            }
        }
    }
}
