//! The instructor's remedy for a filling disk: what uses the space (per
//! participant and folder, the biggest files, free space) and pruning old
//! files — previews and temp files by default, outputs only when asked
//! with `force` (comfy-multi cannot tell which outputs were downloaded).

use super::{audit, session::who};
use crate::archive::walk;
use crate::error::AppError;
use crate::hub::HubState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// The folders of a participant, as the report and prune name them.
const KINDS: [&str; 3] = ["output", "input", "temp"];

/// `GET /admin/api/storage`: free space, use per participant, biggest files.
pub async fn report(State(s): State<HubState>) -> Result<Json<Value>, AppError> {
    let users = s.state_dir.join("users");
    let (participants, biggest) = tokio::task::spawn_blocking(move || {
        let mut participants = vec![];
        let mut files = vec![];
        let mut names: Vec<String> = std::fs::read_dir(&users)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let mut row = json!({"name": name});
            for kind in KINDS {
                let entries = walk(&users.join(&name).join(kind));
                row[format!("{kind}_bytes")] = json!(entries.iter().map(|e| e.len).sum::<u64>());
                row[format!("{kind}_files")] = json!(entries.len());
                files.extend(
                    entries
                        .into_iter()
                        .map(|e| (e.len, format!("{name}/{kind}/{}", e.rel))),
                );
            }
            participants.push(row);
        }
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        let biggest: Vec<Value> = files
            .into_iter()
            .take(20)
            .map(|(len, path)| json!({"path": path, "bytes": len}))
            .collect();
        (participants, biggest)
    })
    .await
    .map_err(AppError::internal)?;
    Ok(Json(json!({
        "storage": s.queue.storage().await?,
        "participants": participants,
        "biggest": biggest,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneBody {
    /// Temp files and previews (the default when nothing is named).
    #[serde(default)]
    temp: Option<bool>,
    /// Participants' outputs: only with `force`.
    #[serde(default)]
    outputs: bool,
    #[serde(default)]
    force: bool,
    /// Only files not modified for this long (default 2 h).
    #[serde(default)]
    older_than_s: Option<u64>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /admin/api/prune`: removes old files; answers what (with
/// `dry_run`: would be) removed and the bytes freed.
pub async fn prune(
    State(s): State<HubState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Json<Value>, AppError> {
    let b: PruneBody = if bytes.is_empty() {
        serde_json::from_str("{}").map_err(AppError::internal)?
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| AppError::BadRequest(format!("invalid JSON: {e}")))?
    };
    if b.outputs && !b.force {
        return Err(AppError::BadRequest(
            "outputs are participants' results and may not have been downloaded yet: add force to remove them".into(),
        ));
    }
    if let Some(u) = &b.user {
        if !crate::queue::valid_name(u) {
            return Err(AppError::BadRequest(format!("no such participant {u:?}")));
        }
    }
    let mut kinds = vec![];
    if b.temp.unwrap_or(!b.outputs) {
        kinds.push("temp");
    }
    if b.outputs {
        kinds.push("output");
    }
    let older = Duration::from_secs(b.older_than_s.unwrap_or(2 * 3600));
    let users = s.state_dir.join("users");
    let (user, dry) = (b.user.clone(), b.dry_run);
    let kinds2 = kinds.clone();
    let (removed, freed) = tokio::task::spawn_blocking(move || {
        let cutoff = SystemTime::now() - older;
        let mut removed = 0u64;
        let mut freed = 0u64;
        let names: Vec<String> = match user {
            Some(u) => vec![u],
            None => std::fs::read_dir(&users)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
        };
        for name in names {
            for kind in &kinds2 {
                for e in walk(&users.join(&name).join(kind)) {
                    if e.modified > cutoff {
                        continue;
                    }
                    if dry || std::fs::remove_file(&e.path).is_ok() {
                        removed += 1;
                        freed += e.len;
                    }
                }
            }
        }
        (removed, freed)
    })
    .await
    .map_err(AppError::internal)?;
    if !b.dry_run {
        audit(
            &who(&headers),
            "prune",
            &format!(
                "{} in {} older than {} s: {removed} files, {freed} bytes",
                b.user.as_deref().unwrap_or("everyone"),
                kinds.join("+"),
                older.as_secs()
            ),
        );
    }
    Ok(Json(
        json!({"ok": true, "action": "prune", "dry_run": b.dry_run,
                   "kinds": kinds, "files": removed, "bytes": freed}),
    ))
}
