//! The participant's user files (`<user_dir>/user/…`): saved workflows,
//! settings and the like, as ComfyUI's `/userdata` API serves them, with
//! the editor's rename (`POST /userdata/{file}/move/{dest}`). Names arrive
//! `%2F`-encoded (`workflows%2Fx.json`); every path is resolved inside the
//! participant's folder.

use super::FrontendState;
use crate::error::AppError;
use crate::paths::safe_join;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path as FsPath, PathBuf};

fn root(s: &FrontendState) -> PathBuf {
    s.user_dir.join("user")
}

/// Writes a file so readers never see half of it (temp file + rename).
pub async fn write_atomic(path: &FsPath, bytes: &[u8]) -> Result<(), AppError> {
    let dir = path
        .parent()
        .ok_or_else(|| AppError::internal("no parent dir"))?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(AppError::internal)?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let written = match tokio::fs::write(&tmp, bytes).await {
        Ok(()) => tokio::fs::rename(&tmp, path).await,
        Err(e) => Err(e),
    };
    if written.is_err() {
        // No temp file left behind, whatever failed.
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    written.map_err(AppError::internal)
}

fn flag(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true") | Some("1"))
}

#[derive(Deserialize)]
pub struct ListQuery {
    dir: Option<String>,
    recurse: Option<String>,
    split: Option<String>,
    full_info: Option<String>,
}

fn walk(dir: &FsPath, base: &FsPath, recurse: bool, out: &mut Vec<(String, std::fs::Metadata)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            if recurse {
                walk(&e.path(), base, recurse, out);
            }
        } else if let Ok(rel) = e.path().strip_prefix(base) {
            out.push((rel.to_string_lossy().to_string(), meta));
        }
    }
}

/// `GET /userdata?dir=workflows&recurse=true&split=false&full_info=true`.
pub async fn list(
    State(s): State<FrontendState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, AppError> {
    let dir = q
        .dir
        .ok_or_else(|| AppError::BadRequest("dir is required".into()))?;
    let path = safe_join(&root(&s), &dir).ok_or(AppError::NotFound)?;
    if !path.is_dir() {
        return Err(AppError::NotFound);
    }
    let mut files = vec![];
    walk(&path, &path, flag(&q.recurse), &mut files);
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let items: Vec<Value> = files
        .into_iter()
        .map(|(rel, meta)| {
            if flag(&q.full_info) {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                json!({"path": rel, "size": meta.len(), "modified": modified})
            } else if flag(&q.split) {
                let mut parts = vec![json!(rel)];
                parts.extend(rel.split('/').map(|p| json!(p)));
                Value::Array(parts)
            } else {
                json!(rel)
            }
        })
        .collect();
    Ok(Json(items).into_response())
}

/// `GET /userdata/{file}`.
pub async fn get(
    State(s): State<FrontendState>,
    Path(file): Path<String>,
) -> Result<Response, AppError> {
    let path = safe_join(&root(&s), &file).ok_or(AppError::NotFound)?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| AppError::NotFound)?;
    let kind = if file.ends_with(".json") {
        "application/json"
    } else if file.ends_with(".css") {
        "text/css"
    } else {
        "application/octet-stream"
    };
    Ok(([(header::CONTENT_TYPE, kind)], bytes).into_response())
}

#[derive(Deserialize)]
pub struct PostQuery {
    overwrite: Option<String>,
    full_info: Option<String>,
}

/// The answer to a write: the name, or `{path, size, modified}`.
fn written(file: &str, size: u64, full_info: bool) -> Response {
    if full_info {
        let modified = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Json(json!({"path": file, "size": size, "modified": modified})).into_response()
    } else {
        Json(json!(file)).into_response()
    }
}

fn invalid_name(file: &str) -> AppError {
    AppError::BadRequest(format!("{file:?} is not a valid file name"))
}

/// `(source, dest)` when the raw path is ComfyUI's move route,
/// `…/userdata/{file}/move/{dest}`, each name one `%2F`-encoded segment.
fn move_names(uri: &Uri) -> Option<(String, String)> {
    let mut segs = uri.path().rsplit('/');
    let (dest, verb, source, userdata) = (segs.next()?, segs.next()?, segs.next()?, segs.next()?);
    if verb != "move" || userdata != "userdata" {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|d| d.into_owned())
    };
    Some((decode(source)?, decode(dest)?))
}

/// `POST /userdata/{file}?overwrite=true&full_info=true` with the content,
/// or `POST /userdata/{file}/move/{dest}?overwrite=…` (a rename).
pub async fn post(
    State(s): State<FrontendState>,
    Path(file): Path<String>,
    Query(q): Query<PostQuery>,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let body = super::limited_body(body, super::MAX_USERDATA_BYTES)?;
    let overwrite = q.overwrite.as_deref() != Some("false");
    if let Some((source, dest)) = move_names(&uri) {
        return rename(&s, &source, &dest, overwrite, flag(&q.full_info)).await;
    }
    let path = safe_join(&root(&s), &file).ok_or_else(|| invalid_name(&file))?;
    // A folder, or a file where a folder of the path should be: 409, as
    // for a move (ComfyUI itself fails with a 500 on these).
    if path.is_dir() {
        return Err(AppError::Conflict(format!("{file} is a folder")));
    }
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|_| {
            AppError::Conflict(format!("{file}: a file has the name of its folder"))
        })?;
    }
    if !overwrite && path.exists() {
        return Err(AppError::Conflict(format!("{file} already exists")));
    }
    write_atomic(&path, &body).await?;
    Ok(written(&file, body.len() as u64, flag(&q.full_info)))
}

/// Renames one of the participant's files (ComfyUI's `move_userdata`):
/// 404 for a missing source, 409 for a taken `dest` without `overwrite`.
async fn rename(
    s: &FrontendState,
    source: &str,
    dest: &str,
    overwrite: bool,
    full_info: bool,
) -> Result<Response, AppError> {
    let from = safe_join(&root(s), source).ok_or_else(|| invalid_name(source))?;
    let to = safe_join(&root(s), dest).ok_or_else(|| invalid_name(dest))?;
    if !tokio::fs::metadata(&from).await.is_ok_and(|m| m.is_file()) {
        return Err(AppError::NotFound);
    }
    match tokio::fs::metadata(&to).await {
        Ok(m) if m.is_dir() => return Err(AppError::Conflict(format!("{dest} is a folder"))),
        Ok(_) if !overwrite => return Err(AppError::Conflict(format!("{dest} already exists"))),
        _ => {}
    }
    if let Some(dir) = to.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|_| {
            AppError::Conflict(format!("{dest}: a file has the name of its folder"))
        })?;
    }
    tokio::fs::rename(&from, &to)
        .await
        .map_err(AppError::internal)?;
    let size = tokio::fs::metadata(&to).await.map(|m| m.len()).unwrap_or(0);
    Ok(written(dest, size, full_info))
}

/// `DELETE /userdata/{file}`.
pub async fn delete(
    State(s): State<FrontendState>,
    Path(file): Path<String>,
) -> Result<StatusCode, AppError> {
    let path = safe_join(&root(&s), &file).ok_or(AppError::NotFound)?;
    tokio::fs::remove_file(&path)
        .await
        .map_err(|_| AppError::NotFound)?;
    Ok(StatusCode::NO_CONTENT)
}
