//! What this worker's ComfyUI holds loaded, as the hub is told (for model
//! affinity: warm models first).
//!
//! The method: ComfyUI (its default, "classic" cache) keeps the outputs of
//! the last prompt's nodes, and a loader node whose inputs did not change is
//! served from that cache (`execution_cached`) instead of reading its file
//! again; a node the next prompt does not use is dropped from it. So the
//! models loaded are the files named by the loader nodes of the last prompt
//! ComfyUI ran that executed or were served from the cache (the loader
//! inputs are `catalogue::model_inputs`: no node list is hard-coded).
//!
//! Limits: ComfyUI started with `--cache-lru`/`--cache-ram` keeps more
//! than the last prompt (the report then understates what is warm); a model
//! evicted under memory pressure stays in the report until the next prompt;
//! a warm-up counts only when it succeeded (it is followed by history, not
//! events); a ComfyUI restart empties the report as soon as the agent sees
//! the connection drop.

use crate::catalogue::{file_tag, model_refs};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use tokio::sync::watch;

/// What the hub is told: model-file tags, and the fencing token of the
/// last job run to its end (the hub keeps a newer lease's prediction over
/// an older report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub files: Vec<String>,
    pub as_of: u64,
}

/// The agent's record of what its ComfyUI holds loaded.
pub struct Loaded {
    /// Which `(node type, input)` name model files.
    inputs: Mutex<BTreeSet<(String, String)>>,
    report: watch::Sender<Report>,
}

impl Loaded {
    pub fn new(inputs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            inputs: Mutex::new(inputs.into_iter().collect()),
            report: watch::Sender::new(Report::default()),
        }
    }

    /// The catalogue changed: these inputs name model files now.
    pub fn set_inputs(&self, inputs: impl IntoIterator<Item = (String, String)>) {
        *self.inputs.lock().unwrap() = inputs.into_iter().collect();
    }

    /// Changes to the report (the current one first).
    pub fn subscribe(&self) -> watch::Receiver<Report> {
        self.report.subscribe()
    }

    /// The current report.
    #[cfg(test)]
    pub fn current(&self) -> Report {
        self.report.borrow().clone()
    }

    /// A job's prompt ended (succeeded, failed or was interrupted) under
    /// lease `token`; `touched`: the nodes that executed or were served
    /// from the cache.
    pub fn ran(&self, token: u64, prompt: &Value, touched: &HashSet<String>) {
        let files = self.files(prompt, |node| touched.contains(node));
        self.set(files, Some(token));
    }

    /// A warm-up prompt ran to its end (outside any lease).
    pub fn warmed(&self, prompt: &Value, succeeded: bool) {
        let files = if succeeded {
            self.files(prompt, |_| true)
        } else {
            Vec::new()
        };
        self.set(files, None);
    }

    /// ComfyUI went away: whatever it held is gone.
    pub fn cleared(&self) {
        self.set(Vec::new(), None);
    }

    fn files(&self, prompt: &Value, used: impl Fn(&str) -> bool) -> Vec<String> {
        let Some(p) = prompt.as_object() else {
            return Vec::new();
        };
        let inputs = self.inputs.lock().unwrap();
        let tags: BTreeSet<String> = model_refs(p, &inputs)
            .into_iter()
            .filter(|r| used(&r.node))
            .map(|r| file_tag(&r.class, &r.input, &r.file))
            .collect();
        tags.into_iter().collect()
    }

    fn set(&self, files: Vec<String>, token: Option<u64>) {
        self.report.send_if_modified(|r| {
            let as_of = r.as_of.max(token.unwrap_or(0));
            if r.files == files && r.as_of == as_of {
                return false;
            }
            *r = Report { files, as_of };
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn loaded() -> Loaded {
        Loaded::new([
            (
                "CheckpointLoaderSimple".to_string(),
                "ckpt_name".to_string(),
            ),
            ("LoraLoader".to_string(), "lora_name".to_string()),
        ])
    }

    fn prompt() -> Value {
        json!({
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
            "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "l.safetensors", "model": ["1", 0]}},
            "3": {"class_type": "KSampler", "inputs": {"model": ["2", 0]}}
        })
    }

    #[test]
    fn a_finished_job_leaves_the_files_of_the_loaders_that_ran_or_were_cached() {
        let l = loaded();
        let touched: HashSet<String> = ["1".to_string(), "3".to_string()].into();
        l.ran(7, &prompt(), &touched);
        assert_eq!(
            l.current(),
            Report {
                files: vec![file_tag(
                    "CheckpointLoaderSimple",
                    "ckpt_name",
                    "a.safetensors"
                )],
                as_of: 7
            },
            "the LoRA loader never ran: its file is not loaded"
        );
    }

    #[test]
    fn a_report_never_goes_back_to_an_older_lease() {
        let l = loaded();
        l.ran(9, &prompt(), &HashSet::new());
        l.ran(8, &prompt(), &["1".to_string()].into());
        assert_eq!(l.current().as_of, 9);
        l.cleared();
        assert_eq!(
            l.current(),
            Report {
                files: vec![],
                as_of: 9
            }
        );
    }

    #[test]
    fn a_successful_warm_up_loads_every_file_it_names_and_a_failed_one_nothing() {
        let l = loaded();
        let mut rx = l.subscribe();
        l.warmed(&prompt(), true);
        assert!(rx.has_changed().unwrap());
        assert_eq!(l.current().files.len(), 2);
        rx.mark_unchanged();
        l.warmed(&prompt(), true);
        assert!(
            !rx.has_changed().unwrap(),
            "the same report is not sent twice"
        );
        l.warmed(&prompt(), false);
        assert!(l.current().files.is_empty());
    }
}
