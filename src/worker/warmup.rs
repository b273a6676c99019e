//! One warm-up prompt on this worker's ComfyUI: the instructor's workflow
//! that loads the workshop's models before the first participant's job.
//!
//! Why this exists: a model load costs seconds to a minute on a real GPU;
//! paying it before class instead of on the first participant's job is the
//! RUNBOOK's old manual click-through, done by the hub for every worker.
//! Nothing here touches the queue or a participant's files: the prompt is
//! sent straight to ComfyUI (its save nodes write under
//! `comfy-multi-warmup/` in ComfyUI's own output folder, which nobody is
//! shown), and the outcome goes back to the hub as `WarmupDone`.

use super::comfyui::{ComfyClient, SubmitError};
use super::prompt::namespace_outputs;
use crate::protocol::WorkerMsg;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long one warm-up may take before the agent gives up on it (the hub
/// has its own limit for the whole warm-up).
const LIMIT: Duration = Duration::from_secs(30 * 60);
const POLL: Duration = Duration::from_millis(250);

/// Runs `prompt` on ComfyUI until it ends; the report for the hub.
pub async fn run(comfy: &ComfyClient, id: String, mut prompt: Value) -> WorkerMsg {
    let t0 = Instant::now();
    namespace_outputs(&mut prompt, "comfy-multi-warmup");
    let error = run_once(comfy, &prompt).await.err();
    if let Some(e) = &error {
        tracing::warn!(warmup = %id, "warm-up failed: {e}");
    } else {
        tracing::info!(warmup = %id, seconds = t0.elapsed().as_secs_f64(), "warm-up done");
    }
    WorkerMsg::WarmupDone {
        id,
        error,
        seconds: t0.elapsed().as_secs_f64(),
    }
}

async fn run_once(comfy: &ComfyClient, prompt: &Value) -> Result<(), String> {
    let submitted = match comfy.submit(prompt, "", &json!({})).await {
        Ok(s) => s,
        Err(SubmitError::Rejected { error, node_errors }) => {
            return Err(format!(
                "ComfyUI refused it: {} {}",
                error["message"].as_str().unwrap_or("invalid prompt"),
                node_errors
            ))
        }
        Err(e) => return Err(e.to_string()),
    };
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(Some(entry)) = comfy.history(&submitted.prompt_id).await {
            let status = &entry["status"];
            if status["completed"] == true || status["status_str"] == "success" {
                return Ok(());
            }
            if status["status_str"] == "error" {
                return Err(execution_error(status));
            }
        }
        if Instant::now() > deadline {
            let _ = comfy.interrupt(Some(&submitted.prompt_id)).await;
            return Err(format!("did not finish within {} s", LIMIT.as_secs()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// ComfyUI's own words for a failed run (from the history entry's messages).
fn execution_error(status: &Value) -> String {
    status["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m[0] == "execution_error")
        .map(|m| {
            format!(
                "{} failed: {}",
                m[1]["node_type"].as_str().unwrap_or("a node"),
                m[1]["exception_message"].as_str().unwrap_or("error").trim()
            )
        })
        .unwrap_or_else(|| "ComfyUI reported an error".into())
}
