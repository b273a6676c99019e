//! The instructor's node policy (`[nodes] allow/deny`): which node types a
//! participant's prompt may use. Some ComfyUI nodes run arbitrary code or
//! read files on the GPU server; the instructor names them, and a prompt
//! using one is refused at `POST /prompt` — before it is checked against
//! the catalogue or queued — in ComfyUI's 400 shape, with the node named
//! and highlighted in the editor.
//!
//! Refused nodes stay in the editor's node catalogue (`/object_info`),
//! marked `deprecated` with a description that says why: the editor then
//! leaves them out of its node search and library, while a shared workflow
//! that uses one still loads as it is and gets this policy's error at
//! submit — not the misleading "custom node may not be installed" that a
//! node missing from the catalogue would give.

use crate::config::NodesConfig;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};

/// At most this many steps in all when finding the outputs that depend on
/// refused nodes, so a hostile prompt cannot make the refusal expensive.
const MAX_WALK: usize = 200_000;

/// Which node types participants may use. The default allows every one.
#[derive(Clone, Debug, Default)]
pub struct NodePolicy {
    /// Empty: every type not denied.
    allow: HashSet<String>,
    deny: HashSet<String>,
}

impl NodePolicy {
    pub fn new(config: &NodesConfig) -> Self {
        Self {
            allow: config.allow.iter().cloned().collect(),
            deny: config.deny.iter().cloned().collect(),
        }
    }

    /// Why `class` is refused, or `None` when it may be used.
    pub fn refusal(&self, class: &str) -> Option<&'static str> {
        if self.deny.contains(class) {
            Some("it is on the instructor's deny list (nodes.deny)")
        } else if !self.allow.is_empty() && !self.allow.contains(class) {
            Some("it is not on the instructor's allow list (nodes.allow)")
        } else {
            None
        }
    }

    /// Whether the policy refuses anything at all.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Checks every node's `class_type` (nodes without a string one are
    /// left to the catalogue check). `catalogue` names the output nodes for
    /// `dependent_outputs`. The refusal is ComfyUI's 400 body.
    pub fn check(
        &self,
        prompt: &Map<String, Value>,
        catalogue: Option<&Value>,
    ) -> Result<(), Value> {
        if self.is_open() {
            return Ok(());
        }
        let refused: Vec<(&str, &str, &str)> = prompt
            .iter()
            .filter_map(|(id, node)| {
                let class = node.get("class_type")?.as_str()?;
                Some((id.as_str(), class, self.refusal(class)?))
            })
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        let dependents = dependent_outputs(prompt, catalogue, &refused);
        let mut node_errors = Map::new();
        for (id, class, why) in &refused {
            node_errors.insert(
                id.to_string(),
                json!({
                    "errors": [{
                        "type": "node_not_allowed",
                        "message": message(&[class]),
                        "details": format!("Node ID '#{id}': {why}"),
                        "extra_info": {"class_type": class},
                    }],
                    "dependent_outputs": dependents.get(*id).cloned().unwrap_or_default(),
                    "class_type": class,
                }),
            );
        }
        let mut classes: Vec<&str> = refused.iter().map(|(_, c, _)| *c).collect();
        classes.sort_unstable();
        classes.dedup();
        let ids: Vec<String> = refused
            .iter()
            .take(20)
            .map(|(id, _, _)| format!("'#{id}'"))
            .collect();
        Err(json!({
            "error": {
                "type": "node_not_allowed",
                "message": message(&classes),
                "details": format!("Node ID {}", ids.join(", ")),
                "extra_info": {},
            },
            "node_errors": node_errors,
        }))
    }

    /// Marks the refused node types of a catalogue (ComfyUI's
    /// `object_info`) `deprecated`, with the reason in their description.
    pub fn mark(&self, nodes: &mut Map<String, Value>) {
        if self.is_open() {
            return;
        }
        for (class, node) in nodes.iter_mut() {
            let (Some(why), Some(n)) = (self.refusal(class), node.as_object_mut()) else {
                continue;
            };
            n.insert("deprecated".into(), json!(true));
            let old = n
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let note = format!("Not allowed at this workshop: {why}.");
            let description = if old.is_empty() {
                note
            } else {
                format!("{note} {old}")
            };
            n.insert("description".into(), json!(description));
        }
    }
}

/// "The instructor's node policy does not allow node 'X'" (or nodes).
fn message(classes: &[&str]) -> String {
    let shown: Vec<String> = classes.iter().take(10).map(|c| format!("'{c}'")).collect();
    let more = if classes.len() > 10 {
        format!(" and {} more", classes.len() - 10)
    } else {
        String::new()
    };
    let noun = if classes.len() == 1 { "node" } else { "nodes" };
    format!(
        "The instructor's node policy does not allow {noun} {}{more} in this workshop; remove it from the workflow",
        shown.join(", ")
    )
}

/// For each refused node, the output nodes (by the catalogue's
/// `output_node`) that use its result, itself included when it is one.
fn dependent_outputs(
    prompt: &Map<String, Value>,
    catalogue: Option<&Value>,
    refused: &[(&str, &str, &str)],
) -> HashMap<String, Vec<String>> {
    let mut out = HashMap::new();
    let Some(catalogue) = catalogue else {
        return out;
    };
    let is_output = |id: &str| {
        prompt
            .get(id)
            .and_then(|n| n.get("class_type"))
            .and_then(Value::as_str)
            .and_then(|c| catalogue.get(c))
            .and_then(|i| i.get("output_node"))
            == Some(&Value::Bool(true))
    };
    // Who uses each node's outputs.
    let mut users: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, node) in prompt {
        let Some(inputs) = node.get("inputs").and_then(Value::as_object) else {
            continue;
        };
        for v in inputs.values() {
            if let Some([Value::String(from), Value::Number(_)]) = v.as_array().map(Vec::as_slice) {
                users.entry(from.as_str()).or_default().push(id.as_str());
            }
        }
    }
    let mut budget = MAX_WALK;
    for (id, _, _) in refused {
        let mut seen = HashSet::from([*id]);
        let mut stack = vec![*id];
        let mut found = vec![];
        while let Some(n) = stack.pop() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            if is_output(n) {
                found.push(n.to_string());
            }
            for u in users.get(n).into_iter().flatten() {
                if seen.insert(u) {
                    stack.push(u);
                }
            }
        }
        found.sort_unstable();
        out.insert(id.to_string(), found);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> NodePolicy {
        NodePolicy::new(&NodesConfig {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn prompt() -> Map<String, Value> {
        json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8}},
            "2": {"class_type": "RunPython", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn catalogue() -> Value {
        json!({"EmptyImage": {}, "RunPython": {}, "SaveImage": {"output_node": true},
               "PreviewImage": {"output_node": true}})
    }

    #[test]
    fn the_default_policy_allows_every_node() {
        assert!(policy(&[], &[]).check(&prompt(), None).is_ok());
    }

    #[test]
    fn a_denied_node_is_named_and_listed_with_the_outputs_that_use_it() {
        let e = policy(&[], &["RunPython"])
            .check(&prompt(), Some(&catalogue()))
            .unwrap_err();
        assert_eq!(e["error"]["type"], "node_not_allowed");
        let m = e["error"]["message"].as_str().unwrap();
        assert!(m.contains("does not allow node 'RunPython'"), "{m}");
        let n = &e["node_errors"]["2"];
        assert_eq!(n["class_type"], "RunPython");
        assert_eq!(n["dependent_outputs"], json!(["3"]));
        assert_eq!(n["errors"][0]["type"], "node_not_allowed");
        assert_eq!(e["node_errors"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn an_allow_list_refuses_every_node_outside_it_and_deny_wins_over_allow() {
        let e = policy(&["EmptyImage", "SaveImage"], &["SaveImage"])
            .check(&prompt(), Some(&catalogue()))
            .unwrap_err();
        let mut ids: Vec<&String> = e["node_errors"].as_object().unwrap().keys().collect();
        ids.sort();
        assert_eq!(ids, ["2", "3", "4"]);
        let m = e["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("nodes 'PreviewImage', 'RunPython', 'SaveImage'"),
            "{m}"
        );
        assert!(e["node_errors"]["3"]["errors"][0]["details"]
            .as_str()
            .unwrap()
            .contains("deny list"));
        assert!(e["node_errors"]["2"]["errors"][0]["details"]
            .as_str()
            .unwrap()
            .contains("allow list"));
    }

    #[test]
    fn refused_nodes_are_marked_deprecated_in_the_catalogue_and_others_are_untouched() {
        let mut c = catalogue().as_object().unwrap().clone();
        policy(&[], &["RunPython"]).mark(&mut c);
        assert_eq!(c["RunPython"]["deprecated"], true);
        assert!(c["RunPython"]["description"]
            .as_str()
            .unwrap()
            .starts_with("Not allowed"));
        assert_eq!(c["SaveImage"], json!({"output_node": true}));
    }
}
