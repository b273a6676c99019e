//! The worker's ComfyUI client (`worker::comfyui`) and prompt rewriting
//! (`worker::prompt`) against a REAL ComfyUI on CPU — the early-2024 one
//! `scripts/comfyui/install.sh` installs, with the project's test nodes.
//!
//! Why this exists: the client's job is to cope with what a genuine ComfyUI
//! really sends (event order, end markers, error shapes, renames on upload),
//! which no mock can vouch for. One ComfyUI serves the whole file; tests run
//! one at a time because its queue and `/interrupt` are global.

mod support_comfyui;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use comfy_multi::worker::comfyui::{
    file_refs, ComfyClient, ComfyError, ComfyEvent, EventStream, FileRef, SubmitError,
};
use comfy_multi::worker::prompt;
use serde_json::{json, Value};
use support_comfyui::ComfyUi;

/// Serializes the tests: one ComfyUI, one queue, a global interrupt.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
const TINY_PNG: &[u8] = include_bytes!("fixtures/tiny_8x6.png");

fn client() -> ComfyClient {
    let id = format!("cm-test-{}", uuid::Uuid::new_v4());
    ComfyClient::new(&ComfyUi::shared().url, &id).unwrap()
}

fn workflow(name: &str) -> Value {
    let path = format!(
        "{}/tests/comfyui_nodes/workflows/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A workflow with a color no earlier prompt used, so ComfyUI's cache
/// cannot skip it.
fn fresh(name: &str) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let color = NEXT.fetch_add(1, Ordering::Relaxed) * 7919 % 0xFF_FFFF;
    let mut p = workflow(name);
    for node in p.as_object_mut().unwrap().values_mut() {
        if node["class_type"] == "EmptyImage" {
            node["inputs"]["color"] = json!(color);
        }
    }
    p
}

fn sleep_prompt(seconds: f64, steps: u64) -> Value {
    let mut p = fresh("sleep_save");
    p["2"]["inputs"]["seconds"] = json!(seconds);
    p["2"]["inputs"]["steps"] = json!(steps);
    p
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn submit(c: &ComfyClient, prompt: &Value) -> String {
    let s = c.submit(prompt, &new_id(), &json!({})).await.unwrap();
    assert!(!s.prompt_id.is_empty());
    s.prompt_id
}

/// Collects events until `done` holds for one; panics (showing what came)
/// on timeout or a closed socket.
async fn until(events: &mut EventStream, done: impl Fn(&ComfyEvent) -> bool) -> Vec<ComfyEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        let event = match next {
            Ok(Some(Ok(e))) => e,
            Ok(Some(Err(e))) => panic!("bad event {e}; so far {seen:#?}"),
            Ok(None) => panic!("socket closed; so far {seen:#?}"),
            Err(_) => panic!("timed out; so far {seen:#?}"),
        };
        let stop = done(&event);
        seen.push(event);
        if stop {
            return seen;
        }
    }
}

fn is_end_of(pid: &str) -> impl Fn(&ComfyEvent) -> bool + '_ {
    move |e| matches!(e, ComfyEvent::Executing { prompt_id: Some(p), node: None } if p == pid)
}

fn executed_files(events: &[ComfyEvent]) -> Vec<FileRef> {
    events
        .iter()
        .filter_map(|e| match e {
            ComfyEvent::Executed { output, .. } => Some(file_refs(output)),
            _ => None,
        })
        .flatten()
        .collect()
}

#[tokio::test]
async fn object_info_lists_the_builtin_and_the_project_test_nodes() {
    let _serial = SERIAL.lock().await;
    let info = client().object_info().await.unwrap();
    for class in ["EmptyImage", "SaveImage", "LoadImage", "CMSleep", "CMFail"] {
        assert!(info.get(class).is_some(), "no {class} in object_info");
    }
    assert_eq!(
        info["LoadImage"]["input"]["required"]["image"][1]["image_upload"],
        true
    );
}

#[tokio::test]
async fn system_stats_reports_the_cpu_device() {
    let _serial = SERIAL.lock().await;
    let stats = client().system_stats().await.unwrap();
    assert_eq!(stats["devices"][0]["type"], "cpu");
}

#[tokio::test]
async fn an_upload_keeps_its_name_and_a_different_file_under_that_name_gets_numbered() {
    let _serial = SERIAL.lock().await;
    let c = client();
    let sub = format!("cm-up-{}", uuid::Uuid::new_v4().simple());
    let first = c
        .upload_image(Bytes::from_static(b"first"), "pic.png", &sub, false)
        .await
        .unwrap();
    assert_eq!(
        first,
        FileRef {
            filename: "pic.png".into(),
            subfolder: sub.clone(),
            kind: "input".into()
        }
    );
    let second = c
        .upload_image(Bytes::from_static(b"second"), "pic.png", &sub, false)
        .await
        .unwrap();
    assert_eq!(second.filename, "pic (1).png");
    assert_eq!(&c.view(&first).await.unwrap()[..], b"first");
    assert_eq!(&c.view(&second).await.unwrap()[..], b"second");

    let replaced = c
        .upload_image(Bytes::from_static(b"third"), "pic.png", &sub, true)
        .await
        .unwrap();
    assert_eq!(replaced.filename, "pic.png");
    assert_eq!(&c.view(&first).await.unwrap()[..], b"third");
}

#[tokio::test]
async fn an_upload_name_with_a_path_is_refused_before_reaching_comfyui() {
    let c = ComfyClient::new("http://127.0.0.1:9", "cid").unwrap();
    let err = c
        .upload_image(Bytes::from_static(b"x"), "../escape.png", "sub", false)
        .await
        .unwrap_err();
    assert!(matches!(err, ComfyError::BadArgument(_)), "{err}");
}

#[tokio::test]
async fn an_invert_prompt_streams_start_executing_executed_and_the_end_marker() {
    let _serial = SERIAL.lock().await;
    let c = client();
    let mut events = c.events().await.unwrap();
    let pid = submit(&c, &fresh("invert")).await;
    let seen = until(&mut events, is_end_of(&pid)).await;

    assert!(
        matches!(&seen[0], ComfyEvent::Status { sid: Some(s), .. } if s == c.client_id()),
        "first event {:?}",
        seen[0]
    );
    let pos = |want: &dyn Fn(&ComfyEvent) -> bool| seen.iter().position(want);
    let start =
        pos(&|e| matches!(e, ComfyEvent::ExecutionStart { prompt_id } if *prompt_id == pid));
    let exec = pos(&|e| matches!(e, ComfyEvent::Executing { node: Some(n), .. } if n == "2"));
    let done = pos(
        &|e| matches!(e, ComfyEvent::Executed { node, prompt_id, .. } if node == "3" && *prompt_id == pid),
    );
    assert!(
        start.is_some() && exec.is_some() && done.is_some(),
        "{seen:#?}"
    );
    assert!(start < exec && exec < done, "out of order: {seen:#?}");

    let files = executed_files(&seen);
    assert_eq!(files.len(), 1, "{seen:#?}");
    assert_eq!(files[0].kind, "output");
    assert!(files[0].filename.starts_with("comfy_multi_invert"));
    let png = c.view(&files[0]).await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");

    let entry = c.history(&pid).await.unwrap().expect("a history entry");
    assert_eq!(file_refs(&entry["outputs"]), files);
    assert_eq!(entry["status"]["status_str"], "success");
}

#[tokio::test]
async fn an_uploaded_image_feeds_a_loader_after_prompt_rewriting() {
    let _serial = SERIAL.lock().await;
    let c = client();
    let info = c.object_info().await.unwrap();
    let job = format!("cm-{}", uuid::Uuid::new_v4().simple());
    let mut p = workflow("upload_scale");
    p["1"]["inputs"]["image"] = json!("tiny.png [input]");

    let refs = prompt::input_files(&p, &info);
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].name, "tiny.png");
    let up = c
        .upload_image(Bytes::from_static(TINY_PNG), &refs[0].name, &job, false)
        .await
        .unwrap();
    prompt::rewrite_inputs(&mut p, &refs, &job, &|_| up.filename.clone());
    assert_eq!(prompt::namespace_outputs(&mut p, &job), 1);

    let mut events = c.events().await.unwrap();
    let pid = submit(&c, &p).await;
    let seen = until(&mut events, is_end_of(&pid)).await;
    let files = executed_files(&seen);
    assert_eq!(files.len(), 1, "{seen:#?}");
    assert_eq!(files[0].subfolder, job);
    assert_eq!(prompt::strip_job_prefix(&files[0], &job).subfolder, "");
    assert!(files[0].filename.starts_with("comfy_multi_scaled"));
    let png = c.view(&files[0]).await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
}

#[tokio::test]
async fn a_failing_node_reports_execution_error_with_its_exception_message() {
    let _serial = SERIAL.lock().await;
    let c = client();
    let mut events = c.events().await.unwrap();
    let pid = submit(&c, &fresh("fail")).await;
    let seen = until(&mut events, is_end_of(&pid)).await;
    let data = seen
        .iter()
        .find_map(|e| match e {
            ComfyEvent::ExecutionError { prompt_id, data } if *prompt_id == pid => Some(data),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no execution_error: {seen:#?}"));
    assert_eq!(
        data["exception_message"],
        "comfy-multi: intentional failure"
    );
    assert_eq!(data["node_type"], "CMFail");
    let entry = c.history(&pid).await.unwrap().expect("a history entry");
    assert_eq!(entry["status"]["status_str"], "error");
}

#[tokio::test]
async fn an_unknown_class_type_is_rejected_so_it_is_not_retried() {
    let _serial = SERIAL.lock().await;
    let mut p = fresh("invert");
    p["2"]["class_type"] = json!("NoSuchNodeAnywhere");
    let err = client()
        .submit(&p, &new_id(), &json!({}))
        .await
        .unwrap_err();
    let SubmitError::Rejected { error, node_errors } = err else {
        panic!("not rejected: {err:?}");
    };
    assert!(
        error["type"].is_string() && error["message"].is_string(),
        "{error}"
    );
    assert!(node_errors.is_object(), "{node_errors}");
}

#[tokio::test]
async fn a_missing_required_input_is_rejected_with_node_errors() {
    let _serial = SERIAL.lock().await;
    let mut p = fresh("invert");
    p["1"]["inputs"].as_object_mut().unwrap().remove("width");
    let err = client()
        .submit(&p, &new_id(), &json!({}))
        .await
        .unwrap_err();
    let SubmitError::Rejected { error, node_errors } = err else {
        panic!("not rejected: {err:?}");
    };
    assert_eq!(error["type"], "prompt_outputs_failed_validation");
    let node = &node_errors["1"];
    assert_eq!(
        node["errors"][0]["type"], "required_input_missing",
        "{node_errors}"
    );
}

#[tokio::test]
async fn interrupting_a_running_sleep_reports_execution_interrupted() {
    let _serial = SERIAL.lock().await;
    let c = client();
    let mut events = c.events().await.unwrap();
    let pid = submit(&c, &sleep_prompt(5.0, 50)).await;
    until(&mut events, |e| matches!(e, ComfyEvent::Progress { .. })).await;
    let asked = tokio::time::Instant::now();
    c.interrupt(Some(&pid)).await.unwrap();
    let seen = until(&mut events, is_end_of(&pid)).await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "interrupt took {:?}",
        asked.elapsed()
    );
    assert!(
        seen.iter().any(|e| matches!(e, ComfyEvent::ExecutionInterrupted { prompt_id, data } if *prompt_id == pid && data["node_type"] == "CMSleep")),
        "{seen:#?}"
    );
    assert!(executed_files(&seen).is_empty());
}

#[tokio::test]
async fn a_deleted_pending_prompt_never_runs() {
    let _serial = SERIAL.lock().await;
    let c = client();
    let mut events = c.events().await.unwrap();
    let first = submit(&c, &sleep_prompt(1.5, 3)).await;
    let second = submit(&c, &sleep_prompt(0.5, 1)).await;
    let before = c.queue().await.unwrap();
    assert!(before.pending.contains(&second), "{before:?}");

    c.delete_queued(std::slice::from_ref(&second))
        .await
        .unwrap();
    let after = c.queue().await.unwrap();
    assert!(
        !after.pending.contains(&second) && !after.running.contains(&second),
        "{after:?}"
    );

    let seen = until(&mut events, is_end_of(&first)).await;
    assert!(!seen
        .iter()
        .any(|e| matches!(e, ComfyEvent::ExecutionStart { prompt_id } if *prompt_id == second)));
    let idle = c.queue().await.unwrap();
    assert!(
        idle.running.is_empty() && idle.pending.is_empty(),
        "{idle:?}"
    );
    assert!(c.history(&second).await.unwrap().is_none());
}

#[tokio::test]
async fn history_of_an_unknown_prompt_is_none() {
    let _serial = SERIAL.lock().await;
    assert!(client().history(&new_id()).await.unwrap().is_none());
}

#[tokio::test]
async fn viewing_a_missing_file_is_a_404_error() {
    let _serial = SERIAL.lock().await;
    let missing = FileRef {
        filename: "nope.png".into(),
        subfolder: "".into(),
        kind: "output".into(),
    };
    let err = client().view(&missing).await.unwrap_err();
    assert!(
        matches!(err, ComfyError::Status { status: 404, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("/view?filename=nope.png"), "{err}");
}

#[tokio::test]
async fn a_comfyui_that_is_not_listening_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = ComfyClient::new(&format!("http://127.0.0.1:{port}"), "cid").unwrap();
    let err = c.submit(&json!({}), "p", &json!({})).await.unwrap_err();
    assert!(matches!(err, SubmitError::Unavailable(_)), "{err:?}");
    let err = c.system_stats().await.unwrap_err();
    assert!(err.to_string().contains("/system_stats"), "{err}");
    assert!(c.events().await.is_err());
}
