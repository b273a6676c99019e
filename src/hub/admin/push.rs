//! "Open the one I just built": the instructor sends a workflow to every
//! participant (or chosen ones). It is saved in each one's workflows
//! folder — under a new name when theirs already has that name, so nobody's
//! edits are ever overwritten — and every open editor of theirs opens it in
//! a new tab with a toast (the editor extension, on the participant's event
//! channel). Participants not online find it there at their next login.

use super::{audit, session::who};
use crate::error::AppError;
use crate::hub::HubState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;

/// Largest workflow accepted (an editor workflow is rarely over 1 MB).
pub const MAX_WORKFLOW_BYTES: usize = 8 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    /// The name it is saved and shown under (without `.json`).
    name: String,
    /// The workflow, in the editor's format (`nodes`, `links`).
    workflow: Value,
    /// Participants to send it to; absent: everyone.
    #[serde(default)]
    to: Option<Vec<String>>,
}

/// A name that is safe as one file name and reads well in the sidebar.
fn check_name(name: &str) -> Result<String, AppError> {
    let name = name.trim().trim_end_matches(".json").trim();
    let ok = !name.is_empty()
        && name.chars().count() <= 80
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || " -_.,()+&'".contains(c));
    if ok {
        Ok(name.to_string())
    } else {
        Err(AppError::BadRequest(format!(
            "workflow name {name:?}: 1–80 letters, digits, spaces and - _ . , ( ) + & ' (no slashes)"
        )))
    }
}

/// The editor's format, not the API format (which opens as nothing).
fn check_workflow(w: &Value) -> Result<(), AppError> {
    if w.get("nodes").is_some_and(Value::is_array) {
        return Ok(());
    }
    let api_format = w
        .as_object()
        .is_some_and(|o| !o.is_empty() && o.values().all(|n| n.get("class_type").is_some()));
    Err(AppError::BadRequest(if api_format {
        "this is an API-format prompt: send the workflow as the editor saves it (Workflow → Save/Export, not Export (API))".into()
    } else {
        "not a ComfyUI workflow: expected the editor's JSON with a \"nodes\" list".into()
    }))
}

/// Writes `bytes` as `<dir>/<name>.json`, or `<name> (2).json`, … when
/// that exists; answers the file name used.
fn save_beside(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<String> {
    std::fs::create_dir_all(dir)?;
    for n in 1..1000 {
        let file = if n == 1 {
            format!("{name}.json")
        } else {
            format!("{name} ({n}).json")
        };
        let tmp = dir.join(format!(".{file}.push"));
        std::fs::write(&tmp, bytes)?;
        // hard_link fails if the name is taken: never overwrites.
        match std::fs::hard_link(&tmp, dir.join(&file)) {
            Ok(()) => {
                std::fs::remove_file(&tmp)?;
                return Ok(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&tmp)?;
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
    }
    Err(std::io::Error::other("999 workflows of that name already"))
}

/// `POST /admin/api/push_workflow {"name", "workflow", "to"?}`.
pub async fn push(
    State(s): State<HubState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, AppError> {
    if bytes.len() > MAX_WORKFLOW_BYTES + 64 * 1024 {
        return Err(AppError::TooLarge(format!(
            "the workflow is larger than {} MB",
            MAX_WORKFLOW_BYTES >> 20
        )));
    }
    let b: PushBody = serde_json::from_slice(&bytes)
        .map_err(|e| AppError::BadRequest(format!("invalid JSON: {e}")))?;
    let name = check_name(&b.name)?;
    check_workflow(&b.workflow)?;
    let targets: Vec<String> = match b.to {
        None => s.participants.iter().cloned().collect(),
        Some(to) => {
            let unknown: Vec<&String> = to.iter().filter(|t| !s.participants.contains(t)).collect();
            if !unknown.is_empty() {
                return Err(AppError::BadRequest(format!(
                    "not participants of this workshop: {}",
                    unknown
                        .iter()
                        .map(|u| u.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            to
        }
    };
    if targets.is_empty() {
        return Err(AppError::BadRequest("nobody to send it to".into()));
    }
    let pretty = serde_json::to_vec_pretty(&b.workflow).map_err(AppError::internal)?;
    let mut delivered = vec![];
    for u in &targets {
        let dir = s.user_dir(u).join("user").join("workflows");
        let (n, data) = (name.clone(), pretty.clone());
        let file = tokio::task::spawn_blocking(move || save_beside(&dir, &n, &data))
            .await
            .map_err(AppError::internal)?
            .map_err(AppError::internal)?;
        let event = json!({"workflow_pushed": {"file": file, "name": name,
            "at_ms": crate::clock::now_ms()}});
        s.queue.publish_event(u, &event.to_string()).await?;
        delivered.push(json!({"participant": u, "file": file}));
    }
    audit(
        &who(&headers),
        "push_workflow",
        &format!("{name} to {} participant(s)", targets.len()),
    );
    Ok(Json(json!({
        "ok": true, "action": "push_workflow", "name": name, "delivered": delivered,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_taken_gets_the_next_number_and_nothing_is_overwritten() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Lesson.json"), "mine").unwrap();
        assert_eq!(
            save_beside(d.path(), "Lesson", b"new").unwrap(),
            "Lesson (2).json"
        );
        assert_eq!(
            save_beside(d.path(), "Lesson", b"newer").unwrap(),
            "Lesson (3).json"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("Lesson.json")).unwrap(),
            "mine"
        );
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 3, "no temporary file left behind");
    }

    #[test]
    fn names_and_formats_are_checked() {
        assert!(check_name(" Lesson 2: upscale ").is_err(), "a colon");
        assert_eq!(
            check_name("Lesson 2 (upscale).json").unwrap(),
            "Lesson 2 (upscale)"
        );
        assert!(check_name("../etc/passwd").is_err());
        assert!(check_name(".hidden").is_err());
        assert!(check_workflow(&json!({"nodes": [], "links": []})).is_ok());
        let api = check_workflow(&json!({"3": {"class_type": "KSampler", "inputs": {}}}));
        assert!(format!("{:?}", api.unwrap_err()).contains("API-format"));
        assert!(check_workflow(&json!([1, 2])).is_err());
    }
}
