//! The participant's own files, as ComfyUI's file endpoints serve them:
//! uploads (`/upload/image`, `/upload/mask`), `/view` (with Range requests,
//! which video and audio widgets need), `/internal/files/{type}`, and the
//! participant's uploads in `LoadImage`-style combo lists. Also the model
//! lists (`/models…`), derived from the workers' node catalogue.
//!
//! Everything lives under `FrontendState.user_dir` (`input/`, `output/`,
//! `temp/`), so another participant's files are unreachable by
//! construction; every name a client sends is resolved inside those folders
//! by [`safe_join`]. Uploads are streamed to a hidden temp file in
//! `user_dir` (same file system), fsynced, then linked into place, so a
//! refused or broken upload leaves nothing behind (and the temp file of a
//! frontend killed mid-upload is removed when it starts again).

use super::FrontendState;
use crate::catalogue::{combo_list as combo_options, combo_list_mut as combo_options_mut};
use crate::error::AppError;
use crate::paths::{safe_join, store_unique_or_same, sync_dir};
use axum::body::Body;
use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;
use tower_http::services::ServeFile;

/// The folders a participant's files live in, as ComfyUI names them.
const KINDS: [&str; 3] = ["input", "output", "temp"];

/// Room for the multipart framing and the small text fields of an upload.
const FORM_OVERHEAD: u64 = 256 * 1024;
/// The longest text field (`subfolder`, `original_ref`, …) we read.
const MAX_TEXT_FIELD: usize = 16 * 1024;
/// More fields than any client sends.
const MAX_FIELDS: usize = 32;

/// Extensions Python's `mimetypes` calls `image/*`: ComfyUI's `LoadImage`
/// lists only these (`folder_paths.filter_files_content_types(files, ["image"])`).
const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "jpe", "jfif", "gif", "webp", "bmp", "tif", "tiff", "ico", "svg", "avif",
    "heic", "heif", "pbm", "pgm", "ppm", "pnm", "ras", "rgb", "xbm", "xpm", "xwd", "ief",
];

fn is_image(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

/// `user_dir/<kind>` for `input|output|temp`.
fn kind_dir(s: &FrontendState, kind: &str) -> Option<PathBuf> {
    KINDS.contains(&kind).then(|| s.user_dir.join(kind))
}

/// ComfyUI's `annotated_filepath`: `x.png [input]` names its folder.
fn annotated(name: &str) -> (&str, Option<&'static str>) {
    for kind in KINDS {
        if let Some(rest) = name.strip_suffix(&format!(" [{kind}]")) {
            return (rest, Some(kind));
        }
    }
    (name, None)
}

/// A client's subfolder as path components: `""` is the folder itself;
/// empty and `.` parts are dropped (as `normpath` does); `..`, absolute
/// paths, backslashes, NUL and hidden names are refused.
fn subfolder_parts(sub: &str) -> Result<Vec<&str>, AppError> {
    let bad = || {
        AppError::BadRequest(format!(
            "subfolder {sub:?} must be a relative folder inside your files (no '..', no absolute path)"
        ))
    };
    if sub.starts_with('/') || sub.contains('\\') || sub.contains('\0') {
        return Err(bad());
    }
    let parts: Vec<&str> = sub
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.iter().any(|p| p.starts_with('.')) {
        return Err(bad());
    }
    Ok(parts)
}

/// `dir/<subfolder parts>/<name>`, inside `dir`.
fn resolve(dir: &FsPath, parts: &[&str], name: &str) -> Option<PathBuf> {
    let mut rel = parts.join("/");
    if !rel.is_empty() {
        rel.push('/');
    }
    rel.push_str(name);
    safe_join(dir, &rel)
}

/// An uploaded file's name: one plain path component.
fn upload_name(name: Option<&str>) -> Result<String, AppError> {
    let name = name.unwrap_or("");
    if name.is_empty() {
        return Err(AppError::BadRequest(
            "the image field needs a file name".into(),
        ));
    }
    if name.contains(['/', '\\', '\0']) || name.starts_with('.') || name.len() > 255 {
        return Err(AppError::BadRequest(format!(
            "file name {name:?} is not allowed (no folders, no '..', no hidden names)"
        )));
    }
    Ok(name.to_string())
}

// ---------------------------------------------------------------- /view

#[derive(Deserialize)]
pub struct ViewQuery {
    filename: Option<String>,
    subfolder: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    // `preview` and `channel` are accepted and ignored: the original is sent.
}

/// `GET /view?filename=&subfolder=&type=`: one of this participant's files,
/// with Range, If-Modified-Since and HEAD (through `ServeFile`). Status
/// codes as ComfyUI's: 404 for a missing file or `filename`, 400 for a
/// `filename` with `..` or a leading `/` and for an unknown `type` (ComfyUI
/// answers a subfolder escape with 403; here it is a 400 too).
pub async fn view(
    State(s): State<FrontendState>,
    Query(q): Query<ViewQuery>,
    req: Request,
) -> Result<Response, AppError> {
    let filename = q.filename.ok_or(AppError::NotFound)?;
    let (name, annotated_kind) = annotated(&filename);
    if name.is_empty() || name.starts_with('/') || name.contains("..") {
        return Err(AppError::BadRequest(format!(
            "filename {filename:?} is not allowed"
        )));
    }
    let kind = annotated_kind.unwrap_or(q.kind.as_deref().unwrap_or("output"));
    let dir = kind_dir(&s, kind)
        .ok_or_else(|| AppError::BadRequest("type must be input, output or temp".into()))?;
    let parts = subfolder_parts(q.subfolder.as_deref().unwrap_or(""))?;
    // ComfyUI takes the base name of `filename`.
    let base = name.rsplit('/').next().unwrap_or(name);
    let path = resolve(&dir, &parts, base).ok_or(AppError::NotFound)?;
    if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
        return Err(AppError::NotFound);
    }
    let mut res = ServeFile::new(&path)
        .try_call(req)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AppError::NotFound,
            _ => AppError::internal(e),
        })?;
    let headers = res.headers_mut();
    let scripty = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|ct| {
            matches!(
                ct.as_str(),
                "text/html"
                    | "application/xhtml+xml"
                    | "text/javascript"
                    | "application/javascript"
                    | "text/css"
            )
        });
    if scripty {
        // As ComfyUI: never let a participant's file run as a page.
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let disposition = format!("filename=\"{}\"", base.replace('"', "\\\""));
    if let Ok(v) = HeaderValue::from_bytes(disposition.as_bytes()) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res.map(Body::new))
}

/// `GET /view_metadata/{folder}`: safetensors headers of the workers'
/// models are not available here.
pub async fn view_metadata() -> AppError {
    AppError::NotFound
}

// ------------------------------------------------------------- uploads

/// An uploaded file, in a hidden temp file under `user_dir` (removed on drop).
struct Upload {
    filename: Option<String>,
    tmp: TempPath,
}

/// A parsed upload form: the first `image` file and the text fields.
#[derive(Default)]
struct Form {
    image: Option<Upload>,
    text: HashMap<String, String>,
}

fn multipart_error(e: MultipartError, limit: u64) -> AppError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limit)
    } else {
        AppError::BadRequest(format!("malformed multipart body: {}", e.body_text()))
    }
}

fn too_large(limit: u64) -> AppError {
    AppError::TooLarge(format!(
        "the file is larger than the upload limit of {limit} bytes"
    ))
}

/// A hidden temp file in `user_dir`, on the same file system as the
/// folders uploads are linked into.
async fn temp_file(s: &FrontendState) -> Result<(tokio::fs::File, TempPath), AppError> {
    tokio::fs::create_dir_all(&s.user_dir)
        .await
        .map_err(AppError::internal)?;
    let dir = s.user_dir.clone();
    let tmp = tokio::task::spawn_blocking(move || {
        tempfile::Builder::new().prefix(".upload-").tempfile_in(dir)
    })
    .await
    .map_err(AppError::internal)?
    .map_err(AppError::internal)?;
    let (file, path) = tmp.into_parts();
    Ok((tokio::fs::File::from_std(file), path))
}

/// Removes the upload temp files (`.upload-…`) a frontend killed mid-upload
/// left in `user_dir` (hidden, so never listed, but each as large as the
/// part of the upload that had arrived). Called at start, before serving:
/// a participant's folder has one frontend, so none of them is in use.
pub fn remove_upload_leftovers(participant: &str, user_dir: &FsPath) {
    let Ok(entries) = std::fs::read_dir(user_dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(".upload-") {
            continue;
        }
        match std::fs::remove_file(e.path()) {
            Ok(()) => {
                tracing::info!(participant, file = %e.path().display(), "removed an interrupted upload")
            }
            Err(err) => tracing::warn!(participant, "removing {}: {err}", e.path().display()),
        }
    }
}

/// Reads the multipart body, streaming the `image` file to a temp file and
/// refusing it (413, nothing kept) once it passes `max_upload_bytes`.
async fn read_form(s: &FrontendState, req: Request) -> Result<Form, AppError> {
    let limit = s.max_upload_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(FORM_OVERHEAD)) {
        return Err(too_large(limit));
    }
    let body_limit = usize::try_from(limit.saturating_add(FORM_OVERHEAD)).unwrap_or(usize::MAX);
    let req = req.map(|b| Body::new(http_body_util::Limited::new(b, body_limit)));
    let mut mp = Multipart::from_request(req, &()).await.map_err(|e| {
        AppError::BadRequest(format!("expected a multipart form: {}", e.body_text()))
    })?;
    let mut form = Form::default();
    let mut fields = 0;
    while let Some(mut field) = mp
        .next_field()
        .await
        .map_err(|e| multipart_error(e, limit))?
    {
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(AppError::BadRequest("too many form fields".into()));
        }
        let name = field.name().unwrap_or("").to_string();
        if name == "image" && form.image.is_none() {
            let filename = field.file_name().map(str::to_string);
            let (file, tmp) = temp_file(s).await?;
            let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, file);
            let mut size = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
                size += chunk.len() as u64;
                if size > limit {
                    return Err(too_large(limit));
                }
                file.write_all(&chunk).await.map_err(AppError::internal)?;
            }
            file.flush().await.map_err(AppError::internal)?;
            file.get_mut()
                .sync_all()
                .await
                .map_err(AppError::internal)?;
            form.image = Some(Upload { filename, tmp });
        } else {
            let mut buf = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(e, limit))? {
                if buf.len() + chunk.len() > MAX_TEXT_FIELD {
                    return Err(AppError::BadRequest(format!(
                        "form field {name:?} is too long"
                    )));
                }
                buf.extend_from_slice(&chunk);
            }
            let text = String::from_utf8(buf)
                .map_err(|_| AppError::BadRequest(format!("form field {name:?} is not text")))?;
            form.text.entry(name).or_insert(text);
        }
    }
    Ok(form)
}

/// Where an upload goes: `type`, `subfolder` and the file name.
struct Target {
    kind: &'static str,
    subfolder: String,
    dir: PathBuf,
    name: String,
    overwrite: bool,
}

impl Target {
    fn of(s: &FrontendState, form: &Form, upload: &Upload) -> Result<Self, AppError> {
        let kind = match form.text.get("type").map(String::as_str) {
            None | Some("") | Some("input") => "input",
            Some("output") => "output",
            Some("temp") => "temp",
            Some(other) => {
                return Err(AppError::BadRequest(format!(
                    "type {other:?} is not one of input, output, temp"
                )))
            }
        };
        let name = upload_name(upload.filename.as_deref())?;
        let subfolder = form.text.get("subfolder").cloned().unwrap_or_default();
        let parts = subfolder_parts(&subfolder)?;
        let root = s.user_dir.join(kind);
        let dir = match parts.is_empty() {
            true => root,
            false => safe_join(&root, &parts.join("/")).ok_or_else(|| {
                AppError::BadRequest(format!("subfolder {subfolder:?} is not allowed"))
            })?,
        };
        let overwrite = matches!(
            form.text.get("overwrite").map(String::as_str),
            Some("true") | Some("1")
        );
        Ok(Target {
            kind,
            subfolder,
            dir,
            name,
            overwrite,
        })
    }

    /// Moves `tmp` into place; returns ComfyUI's answer.
    async fn store(self, tmp: TempPath) -> Result<Json<Value>, AppError> {
        let Target {
            kind,
            subfolder,
            dir,
            name,
            overwrite,
        } = self;
        let stored = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            if overwrite {
                std::fs::create_dir_all(&dir)?;
                tmp.persist(dir.join(&name)).map_err(|e| e.error)?;
                sync_dir(&dir);
                Ok(name)
            } else {
                // `tmp` is removed by the store (or on drop if it fails).
                store_unique_or_same(&tmp, &dir, &name)
            }
        })
        .await
        .map_err(AppError::internal)?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotADirectory | std::io::ErrorKind::IsADirectory => {
                AppError::BadRequest("a file and a folder have the same name".into())
            }
            _ => AppError::internal(e),
        })?;
        Ok(Json(
            json!({"name": stored, "subfolder": subfolder, "type": kind}),
        ))
    }
}

/// `POST /upload/image` (multipart `image`, `type`, `subfolder`,
/// `overwrite`): stores the file in the participant's folder and answers
/// `{name, subfolder, type}`. A taken name whose file has the same bytes is
/// reused; otherwise the name becomes `name (1).ext`, `name (2).ext`, …
pub async fn upload_image(
    State(s): State<FrontendState>,
    req: Request,
) -> Result<Json<Value>, AppError> {
    let mut form = read_form(&s, req).await?;
    let upload = form
        .image
        .take()
        .ok_or_else(|| AppError::BadRequest("the form has no image file".into()))?;
    let target = Target::of(&s, &form, &upload)?;
    target.store(upload.tmp).await
}

/// `POST /upload/mask`: as `/upload/image`, plus `original_ref` (JSON
/// `{filename, subfolder?, type?}`, type `output` by default). The stored
/// PNG is the original image with the uploaded image's alpha channel, its
/// PNG text (the workflow) kept. A missing original is a 400 (ComfyUI
/// silently stores nothing and still answers 200).
pub async fn upload_mask(
    State(s): State<FrontendState>,
    req: Request,
) -> Result<Json<Value>, AppError> {
    let mut form = read_form(&s, req).await?;
    let upload = form
        .image
        .take()
        .ok_or_else(|| AppError::BadRequest("the form has no image file".into()))?;
    let target = Target::of(&s, &form, &upload)?;
    let original = original_path(&s, form.text.get("original_ref"))?;
    let (file, out) = temp_file(&s).await?;
    drop(file);
    let mask = upload.tmp;
    let out = tokio::task::spawn_blocking(move || paste_alpha(&original, &mask, out))
        .await
        .map_err(AppError::internal)??;
    target.store(out).await
}

/// The file `original_ref` names, which must exist.
fn original_path(s: &FrontendState, original_ref: Option<&String>) -> Result<PathBuf, AppError> {
    let raw = original_ref.ok_or_else(|| AppError::BadRequest("original_ref is missing".into()))?;
    let r: Value = serde_json::from_str(raw)
        .map_err(|e| AppError::BadRequest(format!("original_ref is not JSON: {e}")))?;
    let filename = r["filename"].as_str().unwrap_or("");
    let (name, annotated_kind) = annotated(filename);
    if name.is_empty() || name.starts_with('/') || name.contains("..") {
        return Err(AppError::BadRequest(format!(
            "original_ref filename {filename:?} is not allowed"
        )));
    }
    let kind = annotated_kind.unwrap_or(r["type"].as_str().unwrap_or("output"));
    let dir = kind_dir(s, kind).ok_or_else(|| {
        AppError::BadRequest("original_ref type must be input, output or temp".into())
    })?;
    let parts = subfolder_parts(r["subfolder"].as_str().unwrap_or(""))?;
    let path = resolve(&dir, &parts, name)
        .ok_or_else(|| AppError::BadRequest(format!("original {filename:?} is not allowed")))?;
    if !path.is_file() {
        return Err(AppError::BadRequest(format!(
            "the original image {filename:?} ({kind}) does not exist"
        )));
    }
    Ok(path)
}

/// Writes to `out` the original as RGBA PNG with the mask's alpha channel
/// (as ComfyUI's `putalpha`), keeping the original's PNG text chunks.
fn paste_alpha(original: &FsPath, mask: &FsPath, out: TempPath) -> Result<TempPath, AppError> {
    let decode = |p: &FsPath, what: &str| {
        image::ImageReader::open(p)
            .and_then(|r| r.with_guessed_format())
            .map_err(AppError::internal)?
            .decode()
            .map(|i| i.into_rgba8())
            .map_err(|e| AppError::BadRequest(format!("the {what} is not a readable image: {e}")))
    };
    let mut img = decode(original, "original image")?;
    let mask = decode(mask, "mask")?;
    if img.dimensions() != mask.dimensions() {
        return Err(AppError::BadRequest(format!(
            "the mask is {}x{} but the original image is {}x{}",
            mask.width(),
            mask.height(),
            img.width(),
            img.height()
        )));
    }
    for (p, m) in img.pixels_mut().zip(mask.pixels()) {
        p.0[3] = m.0[3];
    }
    let texts = png_texts(original);
    let mut w = std::io::BufWriter::new(std::fs::File::create(&out).map_err(AppError::internal)?);
    let mut enc = png::Encoder::new(&mut w, img.width(), img.height());
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    for (k, v) in texts {
        let r = if v.chars().all(|c| (c as u32) < 256) {
            enc.add_text_chunk(k, v)
        } else {
            enc.add_itxt_chunk(k, v)
        };
        r.map_err(AppError::internal)?;
    }
    let mut writer = enc.write_header().map_err(AppError::internal)?;
    writer
        .write_image_data(img.as_raw())
        .map_err(AppError::internal)?;
    writer.finish().map_err(AppError::internal)?;
    let file = w
        .into_inner()
        .map_err(|e| AppError::internal(e.into_error()))?;
    file.sync_all().map_err(AppError::internal)?;
    Ok(out)
}

/// The text chunks (tEXt, zTXt, iTXt) before a PNG's image data; none for
/// other formats.
fn png_texts(path: &FsPath) -> Vec<(String, String)> {
    let Ok(file) = std::fs::File::open(path) else {
        return vec![];
    };
    let Ok(reader) = png::Decoder::new(std::io::BufReader::new(file)).read_info() else {
        return vec![];
    };
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    out.extend(
        info.compressed_latin1_text
            .iter()
            .filter_map(|t| Some((t.keyword.clone(), t.get_text().ok()?))),
    );
    out.extend(
        info.utf8_text
            .iter()
            .filter_map(|t| Some((t.keyword.clone(), t.get_text().ok()?))),
    );
    out
}

// -------------------------------------------------------- file listings

/// Files under `dir` (recursively, hidden names skipped), as relative
/// names with `/`, each with its modification time.
fn walk(dir: &FsPath, prefix: &str, recurse: bool, out: &mut Vec<(String, std::time::SystemTime)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let Ok(meta) = e.metadata() else { continue };
        let rel = format!("{prefix}{name}");
        if meta.is_dir() {
            if recurse {
                walk(&e.path(), &format!("{rel}/"), recurse, out);
            }
        } else if meta.is_file() {
            out.push((rel, meta.modified().unwrap_or(std::time::UNIX_EPOCH)));
        }
    }
}

/// This participant's images in `kind` (recursively, sorted, `/`-separated).
async fn own_images(s: &FrontendState, kind: &'static str) -> Vec<String> {
    let dir = s.user_dir.join(kind);
    tokio::task::spawn_blocking(move || {
        let mut files = vec![];
        walk(&dir, "", true, &mut files);
        let mut names: Vec<String> = files
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| is_image(n))
            .collect();
        names.sort();
        names
    })
    .await
    .unwrap_or_default()
}

/// This participant's uploaded images (`input/`, recursively, sorted,
/// `sub/name.png`): what `LoadImage`'s list offers and accepts.
pub(crate) async fn own_input_files(s: &FrontendState) -> Vec<String> {
    own_images(s, "input").await
}

/// `GET /internal/files/{input|output|temp}`: the folder's file names (top
/// level only), newest first, as ComfyUI's internal route answers.
pub async fn internal_files(State(s): State<FrontendState>, Path(kind): Path<String>) -> Response {
    let Some(dir) = kind_dir(&s, &kind) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "Invalid directory type"})),
        )
            .into_response();
    };
    let files = tokio::task::spawn_blocking(move || {
        let mut files = vec![];
        walk(&dir, "", false, &mut files);
        files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        files.into_iter().map(|(n, _)| n).collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    Json(files).into_response()
}

/// The node catalogue with every `image_upload` combo list (`LoadImage`,
/// `LoadImageMask`, …) replaced by this participant's own images of the
/// input's `image_folder` (`input` by default). Inputs without a list (the
/// new `LoadImageOutput` fetches `/internal/files/output` itself) are left
/// as they are.
pub(crate) async fn with_own_files(s: &FrontendState, catalogue: &str) -> String {
    let Ok(Value::Object(mut nodes)) = serde_json::from_str::<Value>(catalogue) else {
        return catalogue.to_string();
    };
    let mut lists: HashMap<&'static str, Vec<Value>> = HashMap::new();
    for node in nodes.values_mut() {
        for group in ["required", "optional"] {
            let Some(inputs) = node
                .get_mut("input")
                .and_then(|i| i.get_mut(group))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            for spec in inputs.values_mut() {
                let opts = spec.get(1);
                if opts.and_then(|o| o.get("image_upload")) != Some(&Value::Bool(true)) {
                    continue;
                }
                let kind = match opts
                    .and_then(|o| o.get("image_folder"))
                    .and_then(Value::as_str)
                {
                    Some("output") => "output",
                    Some("temp") => "temp",
                    _ => "input",
                };
                let Some(list) = combo_options_mut(spec) else {
                    continue;
                };
                if !lists.contains_key(kind) {
                    let names = match kind {
                        "input" => own_input_files(s).await,
                        _ => own_images(s, kind).await,
                    };
                    lists.insert(kind, names.into_iter().map(Value::String).collect());
                }
                list.clone_from(&lists[kind]);
            }
        }
    }
    Value::Object(nodes).to_string()
}

// --------------------------------------------------------------- models

/// Model folders (ComfyUI's `folder_names_and_paths` keys) and the loader
/// inputs whose combo lists name their files in the workers' catalogue.
/// `/models/{folder}` is the sorted union of those lists; folders without a
/// loader here (`embeddings`, `vae_approx`, `custom_nodes`, `classifiers`)
/// answer `[]`. The legacy names `clip` and `unet` (older ComfyUIs) are
/// accepted for `text_encoders` and `diffusion_models`. `VAELoader`'s
/// built-in choices (`pixel_space`, `taesd*`, `taef1`) are not files and
/// are left out.
const MODEL_FOLDERS: &[(&str, &[(&str, &str)])] = &[
    (
        "checkpoints",
        &[
            ("CheckpointLoaderSimple", "ckpt_name"),
            ("CheckpointLoader", "ckpt_name"),
            ("unCLIPCheckpointLoader", "ckpt_name"),
            ("ImageOnlyCheckpointLoader", "ckpt_name"),
        ],
    ),
    ("configs", &[("CheckpointLoader", "config_name")]),
    (
        "loras",
        &[
            ("LoraLoader", "lora_name"),
            ("LoraLoaderModelOnly", "lora_name"),
        ],
    ),
    ("vae", &[("VAELoader", "vae_name")]),
    (
        "text_encoders",
        &[
            ("CLIPLoader", "clip_name"),
            ("DualCLIPLoader", "clip_name1"),
            ("DualCLIPLoader", "clip_name2"),
            ("TripleCLIPLoader", "clip_name1"),
            ("TripleCLIPLoader", "clip_name2"),
            ("TripleCLIPLoader", "clip_name3"),
            ("QuadrupleCLIPLoader", "clip_name1"),
            ("QuadrupleCLIPLoader", "clip_name2"),
            ("QuadrupleCLIPLoader", "clip_name3"),
            ("QuadrupleCLIPLoader", "clip_name4"),
        ],
    ),
    ("diffusion_models", &[("UNETLoader", "unet_name")]),
    ("clip_vision", &[("CLIPVisionLoader", "clip_name")]),
    ("style_models", &[("StyleModelLoader", "style_model_name")]),
    ("embeddings", &[]),
    ("diffusers", &[("DiffusersLoader", "model_path")]),
    ("vae_approx", &[]),
    (
        "controlnet",
        &[
            ("ControlNetLoader", "control_net_name"),
            ("DiffControlNetLoader", "control_net_name"),
        ],
    ),
    ("gligen", &[("GLIGENLoader", "gligen_name")]),
    ("upscale_models", &[("UpscaleModelLoader", "model_name")]),
    ("custom_nodes", &[]),
    (
        "hypernetworks",
        &[("HypernetworkLoader", "hypernetwork_name")],
    ),
    (
        "photomaker",
        &[("PhotoMakerLoader", "photomaker_model_name")],
    ),
    ("classifiers", &[]),
    ("model_patches", &[("ModelPatchLoader", "name")]),
    (
        "audio_encoders",
        &[("AudioEncoderLoader", "audio_encoder_name")],
    ),
];

const NOT_FILES: &[&str] = &["pixel_space", "taesd", "taesdxl", "taesd3", "taef1"];

/// `GET /models`: the model folder names.
pub async fn models() -> Json<Value> {
    Json(json!(MODEL_FOLDERS
        .iter()
        .map(|(f, _)| *f)
        .collect::<Vec<_>>()))
}

/// The file names of model folder `folder` in `catalogue`; `None` for an
/// unknown folder.
fn models_of(catalogue: &Map<String, Value>, folder: &str) -> Option<Vec<String>> {
    let folder = match folder {
        "clip" => "text_encoders",
        "unet" => "diffusion_models",
        f => f,
    };
    let (_, loaders) = MODEL_FOLDERS.iter().find(|(f, _)| *f == folder)?;
    let mut names: Vec<String> = loaders
        .iter()
        .filter_map(|(class, input)| {
            let inputs = catalogue.get(*class)?.get("input")?;
            ["required", "optional"]
                .iter()
                .find_map(|g| inputs.get(*g)?.get(*input))
                .and_then(combo_options)
        })
        .flatten()
        .filter_map(Value::as_str)
        .filter(|n| !NOT_FILES.contains(n))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    Some(names)
}

/// `GET /models/{folder}`: the workers' files of one model folder; 404 for
/// an unknown folder.
pub async fn models_in(
    State(s): State<FrontendState>,
    Path(folder): Path<String>,
) -> Result<Json<Value>, AppError> {
    let text = super::boot::catalogue(&s)
        .await
        .ok_or_else(|| AppError::Unavailable("no GPU worker is connected yet".into()))?;
    let catalogue: Map<String, Value> = serde_json::from_str(&text).map_err(AppError::internal)?;
    let names = models_of(&catalogue, &folder).ok_or(AppError::NotFound)?;
    Ok(Json(json!(names)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_name_the_folder() {
        assert_eq!(annotated("a.png [input]"), ("a.png", Some("input")));
        assert_eq!(annotated("a.png [temp]"), ("a.png", Some("temp")));
        assert_eq!(annotated("a.png"), ("a.png", None));
        assert_eq!(annotated("a.png [other]"), ("a.png [other]", None));
    }

    #[test]
    fn subfolders_normalize_and_refuse_escapes() {
        assert_eq!(subfolder_parts("").unwrap(), Vec::<&str>::new());
        assert_eq!(subfolder_parts("a/./b/").unwrap(), ["a", "b"]);
        for bad in ["../x", "a/../../x", "/etc", "a\\b", ".hidden", "a/.."] {
            assert!(subfolder_parts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upload_names_are_one_plain_component() {
        assert_eq!(upload_name(Some("a b (1).png")).unwrap(), "a b (1).png");
        for bad in [
            None,
            Some(""),
            Some("../x.png"),
            Some("a/b.png"),
            Some(".x"),
            Some("a\0"),
        ] {
            assert!(upload_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn image_files_are_told_by_extension() {
        assert!(is_image("a.PNG"));
        assert!(is_image("sub/b.webp"));
        assert!(!is_image("clip.mp4"));
        assert!(!is_image("noext"));
    }

    #[test]
    fn combo_lists_are_read_in_both_formats() {
        let old = json!([["a", "b"], {"image_upload": true}]);
        let new = json!(["COMBO", {"options": ["c"], "image_upload": true}]);
        assert_eq!(combo_options(&old).unwrap().len(), 2);
        assert_eq!(combo_options(&new).unwrap()[0], "c");
        assert!(combo_options(&json!(["INT", {}])).is_none());
        let mut new = new;
        *combo_options_mut(&mut new).unwrap() = vec![json!("mine.png")];
        assert_eq!(
            new,
            json!(["COMBO", {"options": ["mine.png"], "image_upload": true}])
        );
        assert!(combo_options_mut(&mut json!(["COMBO", {"image_upload": true}])).is_none());
    }

    #[test]
    fn model_folders_come_from_loader_lists() {
        let cat: Map<String, Value> = serde_json::from_value(json!({
            "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["b.safetensors", "a.ckpt"], {}]}}},
            "ImageOnlyCheckpointLoader": {"input": {"required": {"ckpt_name": [["a.ckpt"]]}}},
            "VAELoader": {"input": {"required": {"vae_name": [["pixel_space", "taesd", "v.pt"]]}}},
            "DualCLIPLoader": {"input": {"required": {"clip_name1": [["t5.sft"]], "clip_name2": [["l.sft"]]}}},
            "UpscaleModelLoader": {"input": {"required": {"model_name": ["COMBO", {"options": ["x4.pth"]}]}}}
        }))
        .unwrap();
        assert_eq!(
            models_of(&cat, "checkpoints").unwrap(),
            ["a.ckpt", "b.safetensors"]
        );
        assert_eq!(models_of(&cat, "vae").unwrap(), ["v.pt"]);
        assert_eq!(models_of(&cat, "clip").unwrap(), ["l.sft", "t5.sft"]);
        assert_eq!(models_of(&cat, "upscale_models").unwrap(), ["x4.pth"]);
        assert_eq!(models_of(&cat, "embeddings").unwrap(), Vec::<String>::new());
        assert!(models_of(&cat, "nope").is_none());
    }
}
