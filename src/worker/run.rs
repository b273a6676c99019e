//! Runs one leased job on the agent's ComfyUI: uploads the participant's
//! input files into a per-job subfolder, namespaces outputs per job,
//! submits, translates ComfyUI's events (both protocol generations) into
//! the participant's events, copies every output file to the hub before
//! forwarding `executed`, and ends with a result for the hub.

use super::backend::{fail, place_inputs, result_message, Abort, Ended, JobIo};
use super::comfyui::{file_refs, rewrite_file_refs, ComfyClient, ComfyEvent, FileRef, SubmitError};
use super::events::Dispatcher;
use super::prompt;
use crate::clock::now_ms;
use crate::protocol::WorkerMsg;
use crate::queue::{JobError, Lease, Outcome};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A job on this ComfyUI: its client and event routes, and what the
/// agent gives every job.
pub struct JobCtx {
    pub comfy: Arc<ComfyClient>,
    pub events: Dispatcher,
    pub io: JobIo,
}

/// Runs the job to its end; answers the final message (`Finished` or
/// `Release`). `cancel` fires when the hub passes on a cancel.
pub async fn run(ctx: &JobCtx, lease: Lease, cancel: CancellationToken) -> WorkerMsg {
    let ended = execute(ctx, &lease, &cancel).await;
    result_message(&lease, ended)
}

async fn execute(ctx: &JobCtx, lease: &Lease, cancel: &CancellationToken) -> Result<Ended, Abort> {
    let job = lease.job_id.as_str();
    let sub = format!("cm-{job}");
    let mut p = lease.prompt.clone();

    // 1. Inputs: the participant's files, uploaded under the job's subfolder.
    place_inputs(&ctx.io, lease, &mut p, &sub, |data, base| {
        let (comfy, sub) = (ctx.comfy.clone(), sub.clone());
        async move {
            comfy
                .upload_image(data, &base, &sub, true)
                .await
                .map(|up| up.filename)
                .map_err(|e| Abort::Release(format!("ComfyUI upload failed: {e}")))
        }
    })
    .await?;
    // 2. Outputs land in a per-job subfolder on the worker.
    prompt::namespace_outputs(&mut p, &sub);

    // 3. Submit under the job's id (older ComfyUI picks its own).
    let mut events = ctx.events.route(job);
    let submitted = ctx.comfy.submit(&p, job, &lease.extra).await;
    let pid = match submitted {
        Ok(s) => s.prompt_id,
        Err(SubmitError::Rejected { error, node_errors }) => {
            ctx.events.unroute(&[job]);
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("ComfyUI refused the prompt")
                .to_string();
            let kind = error
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("prompt_rejected")
                .to_string();
            return Err(fail(
                &kind,
                message,
                json!({"error": error, "node_errors": node_errors}),
            ));
        }
        Err(SubmitError::Unavailable(m)) => {
            ctx.events.unroute(&[job]);
            return Err(Abort::Release(format!("ComfyUI unavailable: {m}")));
        }
    };
    ctx.events.alias(job, &pid);
    let result = follow(ctx, lease, &pid, &sub, &mut events, cancel).await;
    ctx.events.unroute(&[job, &pid]);
    result
}

/// Follows the prompt's events to its end.
async fn follow(
    ctx: &JobCtx,
    lease: &Lease,
    pid: &str,
    sub: &str,
    events: &mut mpsc::UnboundedReceiver<ComfyEvent>,
    cancel: &CancellationToken,
) -> Result<Ended, Abort> {
    let job = lease.job_id.as_str();
    let mut outputs = Map::new();
    let mut started: Option<Instant> = None;
    let mut cancelling = false;
    // Nodes that executed or were served from ComfyUI's cache: their
    // loaders' files are what it holds loaded once the prompt ends.
    let mut touched: HashSet<String> = HashSet::new();
    let ran = |touched: &HashSet<String>| ctx.io.loaded.ran(lease.token, &lease.prompt, touched);
    let data = |mut v: Value| {
        v["prompt_id"] = json!(job);
        v
    };
    loop {
        let e = tokio::select! {
            e = events.recv() => e,
            _ = cancel.cancelled(), if !cancelling => {
                cancelling = true;
                let running = ctx.comfy.queue().await.map(|q| q.running.iter().any(|r| r == pid)).unwrap_or(false);
                if running || started.is_some() {
                    // Older ComfyUI interrupts whatever runs: only when it is ours.
                    if running {
                        let _ = ctx.comfy.interrupt(Some(pid)).await;
                    }
                } else {
                    let _ = ctx.comfy.delete_queued(&[pid.to_string()]).await;
                    // If it was still queued inside ComfyUI, it is gone now.
                    if !ctx.comfy.queue().await.map(|q| q.running.iter().any(|r| r == pid)).unwrap_or(false) {
                        ctx.io.emit(lease, "execution_interrupted", json!({"node_id": null, "node_type": null, "executed": []}));
                        return Ok((Outcome::Cancelled, json!({}), None, None));
                    }
                }
                continue;
            }
        };
        let Some(e) = e else {
            return Err(Abort::Release(
                "lost the connection to ComfyUI mid-job".into(),
            ));
        };
        let gpu = || started.map(|t| t.elapsed().as_secs_f64());
        match e {
            ComfyEvent::ExecutionStart { .. } => {
                started = Some(Instant::now());
                let _ = ctx
                    .io
                    .out
                    .send(WorkerMsg::Started {
                        job: job.into(),
                        token: lease.token,
                    })
                    .await;
                ctx.io
                    .emit(lease, "execution_start", json!({"timestamp": now_ms()}));
            }
            ComfyEvent::ExecutionCached { nodes, .. } => {
                touched.extend(nodes.iter().cloned());
                ctx.io.emit(
                    lease,
                    "execution_cached",
                    json!({"nodes": nodes, "timestamp": now_ms()}),
                )
            }
            ComfyEvent::Executing {
                node: Some(node), ..
            } => {
                touched.insert(node.clone());
                ctx.io.emit(
                    lease,
                    "executing",
                    json!({"node": node, "display_node": node}),
                )
            }
            ComfyEvent::Progress {
                node, value, max, ..
            } => ctx.io.emit(
                lease,
                "progress",
                json!({"value": value, "max": max, "node": node}),
            ),
            ComfyEvent::ProgressState { nodes, .. } => {
                ctx.io
                    .emit(lease, "progress_state", json!({"nodes": nodes}))
            }
            ComfyEvent::Executed {
                node, mut output, ..
            } => {
                copy_outputs(ctx, lease, sub, &mut output).await?;
                outputs.insert(node.clone(), output.clone());
                ctx.io.emit(
                    lease,
                    "executed",
                    json!({"node": node, "display_node": node, "output": output}),
                );
            }
            ComfyEvent::Preview {
                mime,
                image,
                metadata,
            } => {
                let _ = ctx.io.out.try_send(WorkerMsg::Preview {
                    job: job.into(),
                    token: lease.token,
                    mime,
                    data_b64: base64::engine::general_purpose::STANDARD.encode(&image),
                    metadata: metadata.map(data),
                });
            }
            ComfyEvent::ExecutionSuccess { .. } | ComfyEvent::Executing { node: None, .. } => {
                if cancelling {
                    // Finished before the interrupt landed: keep the result.
                }
                add_cached_outputs(ctx, lease, pid, sub, &mut outputs).await?;
                ran(&touched);
                ctx.io
                    .emit(lease, "execution_success", json!({"timestamp": now_ms()}));
                return Ok((Outcome::Succeeded, Value::Object(outputs), None, gpu()));
            }
            ComfyEvent::ExecutionError { data: mut d, .. } => {
                // Printouts of tensors: kilobytes nobody reads.
                if let Some(m) = d.as_object_mut() {
                    m.remove("current_inputs");
                    m.remove("current_outputs");
                }
                ran(&touched);
                ctx.io.emit(lease, "execution_error", d.clone());
                let message = d
                    .get("exception_message")
                    .and_then(Value::as_str)
                    .unwrap_or("the workflow failed")
                    .trim()
                    .to_string();
                let err = JobError {
                    kind: "execution_error".into(),
                    message,
                    details: d,
                };
                return Ok((Outcome::Failed, Value::Object(outputs), Some(err), gpu()));
            }
            ComfyEvent::ExecutionInterrupted { data: d, .. } => {
                ran(&touched);
                ctx.io.emit(lease, "execution_interrupted", d);
                return Ok((Outcome::Cancelled, Value::Object(outputs), None, gpu()));
            }
            ComfyEvent::Status { .. } | ComfyEvent::Other { .. } => {}
        }
    }
}

/// Copies every file an output names to the hub and rewrites the output to
/// the stored names (the participant never sees the worker's paths).
async fn copy_outputs(
    ctx: &JobCtx,
    lease: &Lease,
    sub: &str,
    output: &mut Value,
) -> Result<(), Abort> {
    let mut stored: HashMap<FileRef, FileRef> = HashMap::new();
    for f in file_refs(output) {
        if stored.contains_key(&f) {
            continue;
        }
        let data = ctx.comfy.view(&f).await.map_err(|e| {
            Abort::Release(format!(
                "cannot read output {} from ComfyUI: {e}",
                f.filename
            ))
        })?;
        let target = prompt::strip_job_prefix(&f, sub);
        let s = ctx
            .io
            .hub
            .output(&lease.job_id, lease.token, &target, data)
            .await
            .map_err(|e| Abort::Release(format!("cannot store output {}: {e}", f.filename)))?;
        stored.insert(f, s);
    }
    rewrite_file_refs(output, &|f| stored.get(f).cloned());
    Ok(())
}

/// Outputs of nodes ComfyUI answered from its cache never come as
/// `executed` events: take them from the history entry.
async fn add_cached_outputs(
    ctx: &JobCtx,
    lease: &Lease,
    pid: &str,
    sub: &str,
    outputs: &mut Map<String, Value>,
) -> Result<(), Abort> {
    let Ok(Some(entry)) = ctx.comfy.history(pid).await else {
        return Ok(());
    };
    let Some(all) = entry.get("outputs").and_then(Value::as_object) else {
        return Ok(());
    };
    for (node, output) in all {
        if outputs.contains_key(node) {
            continue;
        }
        let mut output = output.clone();
        copy_outputs(ctx, lease, sub, &mut output).await?;
        outputs.insert(node.clone(), output);
    }
    Ok(())
}
