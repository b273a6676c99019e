//! Warm-up: the instructor's warm-up workflows run on every worker when it
//! connects, and again on demand (`comfy-multi admin warmup`, the
//! dashboard), before any participant's job on that worker.
//!
//! Why this exists: loading a model costs seconds to a minute; without a
//! warm-up the first participants of the day pay it, one GPU at a time.
//! The gateway holds a worker's leases while its warm-up runs ([`Run`]),
//! never longer than `hub.warmup_timeout_s`; a failed warm-up is shown and
//! the worker takes jobs anyway. Warm-ups are not queue jobs: nobody is
//! charged for them and their outputs are never shown to anyone. A
//! workflow whose nodes or models a worker lacks is skipped there.

use crate::catalogue::{describe, needs};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A warm-up workflow, read and checked at start.
#[derive(Clone, Debug)]
pub struct Workflow {
    pub name: String,
    pub prompt: Map<String, Value>,
}

/// Reads a warm-up workflow: ComfyUI's API format (node id → `{class_type,
/// inputs}`); the editor's own format is refused with what to do instead.
pub fn read_workflow(path: &Path) -> Result<Map<String, Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let Value::Object(map) = v else {
        return Err(format!("{} is not a JSON object", path.display()));
    };
    if map.contains_key("nodes") && map.contains_key("links") {
        return Err(format!(
            "{} is in the editor's format; save it with Workflow → Export (API) instead",
            path.display()
        ));
    }
    if map.is_empty() {
        return Err(format!("{} has no nodes", path.display()));
    }
    for (id, node) in &map {
        if node.get("class_type").and_then(Value::as_str).is_none()
            || !node.get("inputs").is_some_and(Value::is_object)
        {
            return Err(format!(
                "{}: node {id} has no class_type/inputs (ComfyUI's API format expected)",
                path.display()
            ));
        }
    }
    Ok(map)
}

/// The hub's warm-ups and the connected workers that can be asked to run
/// them again.
#[derive(Default)]
pub struct Warmups {
    pub workflows: Vec<Workflow>,
    pub timeout: Duration,
    sessions: Mutex<HashMap<String, mpsc::Sender<()>>>,
}

impl Warmups {
    /// Loads the configured workflows (already checked by `check-config`).
    pub fn load(paths: &[PathBuf], timeout: Duration) -> anyhow::Result<Self> {
        let mut workflows = Vec::new();
        for p in paths {
            let prompt = read_workflow(p).map_err(anyhow::Error::msg)?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            workflows.push(Workflow { name, prompt });
        }
        Ok(Self {
            workflows,
            timeout,
            sessions: Mutex::default(),
        })
    }

    /// A connected worker's session: what asks it to warm up again.
    pub fn attach(&self, worker: &str) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel(1);
        self.sessions.lock().unwrap().insert(worker.to_string(), tx);
        rx
    }

    pub fn detach(&self, worker: &str) {
        self.sessions.lock().unwrap().remove(worker);
    }

    /// Asks one worker (or every connected one) to run the warm-up now;
    /// the workers asked (`None` when the named worker is not connected).
    pub fn request(&self, worker: Option<&str>) -> Option<Vec<String>> {
        let sessions = self.sessions.lock().unwrap();
        let mut asked: Vec<String> = match worker {
            Some(w) => {
                let tx = sessions.get(w)?;
                let _ = tx.try_send(());
                vec![w.to_string()]
            }
            None => {
                for tx in sessions.values() {
                    let _ = tx.try_send(());
                }
                sessions.keys().cloned().collect()
            }
        };
        asked.sort();
        Some(asked)
    }
}

/// One worker's warm-up in progress.
pub struct Run {
    /// Warm-up ids sent and not reported yet → workflow name.
    pending: HashMap<String, String>,
    total: usize,
    done: usize,
    errors: Vec<String>,
    skipped: Vec<String>,
    pub deadline: Instant,
    seq: u64,
}

impl Run {
    /// Starts the warm-up on a worker that can run `caps` (its capability
    /// tags, empty: anything); the messages to send it.
    pub fn start(
        warmups: &Warmups,
        caps: &[String],
        model_inputs: &[(String, String)],
        seq: u64,
    ) -> (Run, Vec<crate::protocol::HubMsg>) {
        let inputs: BTreeSet<(String, String)> = model_inputs.iter().cloned().collect();
        let caps: BTreeSet<&String> = caps.iter().collect();
        let mut run = Run {
            pending: HashMap::new(),
            total: 0,
            done: 0,
            errors: vec![],
            skipped: vec![],
            deadline: Instant::now() + warmups.timeout,
            seq,
        };
        let mut msgs = Vec::new();
        for (i, w) in warmups.workflows.iter().enumerate() {
            let missing: Vec<String> = needs(&w.prompt, &inputs)
                .into_iter()
                .filter(|t| !caps.is_empty() && !caps.contains(t))
                .collect();
            if !missing.is_empty() {
                let what: Vec<String> = missing.iter().map(|t| describe(t)).collect();
                run.skipped.push(format!(
                    "{}: not on this worker ({})",
                    w.name,
                    what.join(", ")
                ));
                continue;
            }
            let id = format!("warmup-{seq}-{i}");
            run.pending.insert(id.clone(), w.name.clone());
            run.total += 1;
            msgs.push(crate::protocol::HubMsg::Warmup {
                id,
                prompt: Value::Object(w.prompt.clone()),
            });
        }
        (run, msgs)
    }

    /// Records a worker's report; ignores ids of an earlier run.
    pub fn report(&mut self, id: &str, error: Option<String>) {
        if let Some(name) = self.pending.remove(id) {
            self.done += 1;
            if let Some(e) = error {
                self.errors.push(format!("{name}: {e}"));
            }
        }
    }

    /// Gives up on what has not been reported.
    pub fn time_out(&mut self) {
        for (_, name) in self.pending.drain() {
            self.errors.push(format!("{name}: no answer in time"));
        }
    }

    /// Whether participants' jobs must still wait.
    pub fn holding(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// What the dashboard and the CLI show.
    pub fn status(&self) -> Value {
        let state = if self.holding() {
            "running"
        } else if !self.errors.is_empty() {
            "failed"
        } else {
            "done"
        };
        json!({"state": state, "done": self.done, "total": self.total,
               "errors": self.errors, "skipped": self.skipped})
    }
}
