//! The instructor's view of what the workshop made: `GET /admin/api/gallery`
//! lists the newest output images and videos of every participant, and
//! `GET /admin/files/<participant>/<path>` serves one of them (only files
//! under that participant's `output/`, with Range requests for videos).
//! Both sit behind the admin guard; participants have their own outputs
//! through their editor's `/view`.

use crate::archive::{self, FileEntry};
use crate::error::AppError;
use crate::hub::HubState;
use crate::paths::safe_join;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tower_http::services::ServeFile;

const DEFAULT_LIMIT: usize = 60;
const MAX_LIMIT: usize = 1000;

/// Content types of the media the gallery shows, by extension.
const MEDIA: &[(&str, &str, &str)] = &[
    ("png", "image", "image/png"),
    ("jpg", "image", "image/jpeg"),
    ("jpeg", "image", "image/jpeg"),
    ("webp", "image", "image/webp"),
    ("gif", "image", "image/gif"),
    ("bmp", "image", "image/bmp"),
    ("avif", "image", "image/avif"),
    ("tif", "image", "image/tiff"),
    ("tiff", "image", "image/tiff"),
    ("mp4", "video", "video/mp4"),
    ("m4v", "video", "video/mp4"),
    ("webm", "video", "video/webm"),
    ("mov", "video", "video/quicktime"),
    ("mkv", "video", "video/x-matroska"),
    ("avi", "video", "video/x-msvideo"),
];

/// (`image`|`video`, content type) of a media file name.
fn media(name: &str) -> Option<(&'static str, &'static str)> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    MEDIA
        .iter()
        .find(|(e, ..)| *e == ext)
        .map(|(_, kind, ct)| (*kind, *ct))
}

/// `a b/c#d.png` → `a%20b/c%23d.png` (each segment percent-encoded).
fn url_path(rel: &str) -> String {
    rel.split('/')
        .map(crate::paths::url_component)
        .collect::<Vec<_>>()
        .join("/")
}

/// The participants with a folder under `<state_dir>/users/`.
pub(super) fn participant_dirs(s: &HubState) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(s.state_dir.join("users"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| crate::queue::valid_name(n))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[derive(Deserialize)]
pub struct GalleryQuery {
    limit: Option<usize>,
    /// Only this participant's outputs.
    participant: Option<String>,
}

/// `GET /admin/api/gallery?limit=60[&participant=user01]`: the newest
/// output images and videos, newest first, across participants.
pub async fn gallery(
    State(s): State<HubState>,
    Query(q): Query<GalleryQuery>,
) -> Result<Json<Value>, AppError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    if let Some(p) = &q.participant {
        if !crate::queue::valid_name(p) {
            return Err(AppError::BadRequest(format!(
                "{p:?} is not a participant name"
            )));
        }
    }
    let state = s.clone();
    let items = tokio::task::spawn_blocking(move || {
        let names = match q.participant {
            Some(p) => vec![p],
            None => participant_dirs(&state),
        };
        let mut all: Vec<(String, FileEntry)> = vec![];
        for p in names {
            let out = state.user_dir(&p).join("output");
            all.extend(
                archive::walk(&out)
                    .into_iter()
                    .filter(|f| media(&f.rel).is_some())
                    .map(|f| (p.clone(), f)),
            );
        }
        all.sort_by(|(pa, a), (pb, b)| {
            b.modified
                .cmp(&a.modified)
                .then_with(|| pa.cmp(pb))
                .then_with(|| a.rel.cmp(&b.rel))
        });
        all.truncate(limit);
        all
    })
    .await
    .map_err(AppError::internal)?;
    let out: Vec<Value> = items
        .into_iter()
        .map(|(p, f)| {
            let (subfolder, filename) = match f.rel.rsplit_once('/') {
                Some((dir, name)) => (dir.to_string(), name.to_string()),
                None => (String::new(), f.rel.clone()),
            };
            json!({
                "participant": p,
                "filename": filename,
                "subfolder": subfolder,
                "kind": media(&f.rel).map(|m| m.0),
                "url": format!("/admin/files/{p}/{}", url_path(&f.rel)),
                "at_ms": archive::unix_ms(f.modified),
                "bytes": f.len,
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// `GET /admin/files/{participant}/{*path}`: one file of a participant's
/// `output/` (Range, If-Modified-Since and HEAD through `ServeFile`). Only
/// plain relative paths (no `..`, hidden names, symlinks); media get their
/// own content type, anything else is a download.
pub async fn file(
    State(s): State<HubState>,
    Path((participant, rel)): Path<(String, String)>,
    req: Request,
) -> Result<Response, AppError> {
    if !crate::queue::valid_name(&participant) {
        return Err(AppError::NotFound);
    }
    let root = s.user_dir(&participant).join("output");
    let path = safe_join(&root, &rel).ok_or(AppError::NotFound)?;
    // No symlinks on the way (a plain file inside `output/`, nothing else).
    let real = tokio::fs::canonicalize(&path)
        .await
        .map_err(|_| AppError::NotFound)?;
    let real_root = tokio::fs::canonicalize(&root)
        .await
        .map_err(|_| AppError::NotFound)?;
    let meta = tokio::fs::symlink_metadata(&path)
        .await
        .map_err(|_| AppError::NotFound)?;
    if !real.starts_with(&real_root) || !meta.is_file() {
        return Err(AppError::NotFound);
    }
    let name = rel.rsplit('/').next().unwrap_or(&rel);
    let content_type = media(name).map_or("application/octet-stream", |m| m.1);
    let mut res = ServeFile::new(&real)
        .try_call(req)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AppError::NotFound,
            _ => AppError::internal(e),
        })?;
    let h = res.headers_mut();
    if h.contains_key(header::CONTENT_TYPE) {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    let inline = if media(name).is_some() {
        "inline"
    } else {
        "attachment"
    };
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("{inline}; filename=\"{ascii}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res.map(Body::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_each_segment() {
        assert_eq!(url_path("a b/c#d?.png"), "a%20b/c%23d%3F.png");
        assert_eq!(url_path("x.png"), "x.png");
    }

    #[test]
    fn only_images_and_videos_are_media() {
        assert_eq!(media("a.PNG"), Some(("image", "image/png")));
        assert_eq!(media("clip.mp4").unwrap().0, "video");
        assert_eq!(media("notes.txt"), None);
        assert_eq!(media("page.html"), None);
        assert_eq!(media("noext"), None);
    }
}
