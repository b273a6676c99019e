//! The small endpoints the ComfyUI app calls while it boots: features,
//! system stats, the (single-user) users answer, settings, extensions,
//! i18n and the node catalogue (`object_info`, from the workers via the hub).

use super::{json_body, limited_body, FrontendState, MAX_SETTINGS_BYTES};
use crate::error::AppError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Settings a participant starts with: the editor opens its default graph
/// instead of an empty canvas with the templates dialog.
fn seed_settings() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Comfy.TutorialCompleted".into(), json!(true));
    m
}

pub async fn features(State(s): State<FrontendState>) -> Json<Value> {
    Json(json!({"supports_preview_metadata": true, "max_upload_size": s.max_upload_bytes}))
}

/// The first connected worker's description, if any.
async fn a_worker(s: &FrontendState) -> Option<Value> {
    let workers = s.queue.workers().await.ok()?;
    let mut ids: Vec<&String> = workers.keys().collect();
    ids.sort();
    serde_json::from_str(workers.get(*ids.first()?)?).ok()
}

pub async fn system_stats(State(s): State<FrontendState>) -> Json<Value> {
    let worker = a_worker(&s).await.unwrap_or(Value::Null);
    let stats = &worker["system_stats"];
    let mut system = stats["system"].as_object().cloned().unwrap_or_default();
    // The app reads `argv.includes(...)`; `--disable-api-nodes` also stops it
    // asking the internet for release notes.
    system.insert("argv".into(), json!(["main.py", "--disable-api-nodes"]));
    system.entry("os").or_insert(json!("posix"));
    Json(json!({
        "system": system,
        "devices": stats["devices"].as_array().cloned().unwrap_or_default(),
    }))
}

/// Single-user shape: no `users` key, so no user-select screen.
pub async fn users() -> Json<Value> {
    Json(json!({"storage": "server", "migrated": true}))
}

fn settings_path(s: &FrontendState) -> std::path::PathBuf {
    s.user_dir.join("user").join("comfy.settings.json")
}

async fn read_settings(s: &FrontendState) -> Map<String, Value> {
    match tokio::fs::read(settings_path(s)).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|_| seed_settings()),
        Err(_) => seed_settings(),
    }
}

/// Writes the settings file, refusing (413, nothing written) one past
/// [`MAX_SETTINGS_BYTES`]: merged a key at a time, it could grow otherwise.
async fn write_settings(s: &FrontendState, m: &Map<String, Value>) -> Result<(), AppError> {
    let text = serde_json::to_vec_pretty(m).map_err(AppError::internal)?;
    if text.len() > MAX_SETTINGS_BYTES {
        return Err(AppError::TooLarge(format!(
            "the settings would take {} bytes; the limit is {MAX_SETTINGS_BYTES}",
            text.len()
        )));
    }
    super::userdata::write_atomic(&settings_path(s), &text).await
}

pub async fn settings(State(s): State<FrontendState>) -> Json<Map<String, Value>> {
    Json(read_settings(&s).await)
}

pub async fn setting(State(s): State<FrontendState>, Path(id): Path<String>) -> Json<Value> {
    Json(read_settings(&s).await.remove(&id).unwrap_or(Value::Null))
}

/// `POST /settings`: merges an object of settings.
pub async fn post_settings(
    State(s): State<FrontendState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), AppError> {
    let body = limited_body(body, MAX_SETTINGS_BYTES)?;
    let update: Map<String, Value> = json_body(&body)?;
    let _guard = s.settings_lock.lock().await;
    let mut m = read_settings(&s).await;
    m.extend(update);
    write_settings(&s, &m).await
}

/// `POST /settings/{id}`: the body is the JSON value.
pub async fn post_setting(
    State(s): State<FrontendState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), AppError> {
    let body = limited_body(body, MAX_SETTINGS_BYTES)?;
    let value: Value = json_body(&body)?;
    let _guard = s.settings_lock.lock().await;
    let mut m = read_settings(&s).await;
    m.insert(id, value);
    write_settings(&s, &m).await
}

pub async fn i18n() -> Json<Value> {
    Json(json!({}))
}

pub async fn empty_list() -> Json<Value> {
    Json(json!([]))
}

pub async fn empty_object() -> Json<Value> {
    Json(json!({}))
}

pub async fn no_content() {}

pub async fn user_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css")], "")
}

/// The workers' node catalogue as served to the app, and parsed for
/// checking prompts (`None` when the text is not a JSON object). Built
/// once per set of workers' digests, so a prompt check does not parse it
/// again.
#[derive(Clone)]
pub struct Catalogue {
    pub text: Arc<String>,
    pub parsed: Option<Arc<Value>>,
    /// Which `(node type, input)` name model files, over all workers.
    pub model_inputs: Arc<BTreeSet<(String, String)>>,
}

/// The catalogue as JSON text, when a worker has stored one.
pub async fn catalogue(s: &FrontendState) -> Option<Arc<String>> {
    load_catalogue(s).await.ok().map(|c| c.text)
}

/// The catalogue, when a worker has stored one.
pub async fn current_catalogue(s: &FrontendState) -> Option<Catalogue> {
    load_catalogue(s).await.ok()
}

/// The node catalogue of the workshop's workers, merged (every node type
/// and model file any worker connected or seen recently has), cached until
/// their digests change; `LoadImage`-style file lists show this
/// participant's own uploads.
pub async fn object_info(State(s): State<FrontendState>) -> Result<impl IntoResponse, AppError> {
    let text = load_catalogue(&s).await?.text;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        super::files::with_own_files(&s, &text).await,
    ))
}

async fn load_catalogue(s: &FrontendState) -> Result<Catalogue, AppError> {
    let workers = s.queue.known_workers().await?;
    let mut digests: Vec<String> = workers
        .iter()
        .filter_map(|w| w.description["object_info_digest"].as_str())
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    digests.sort();
    digests.dedup();
    if digests.is_empty() {
        return Err(AppError::Unavailable(
            "no GPU worker is connected yet".into(),
        ));
    }
    let key = digests.join(",");
    let mut cache = s.object_info.lock().await;
    if let Some((k, c)) = cache.as_ref() {
        if *k == key {
            return Ok(c.clone());
        }
    }
    let mut parts = Vec::new();
    let mut complete = true;
    for d in &digests {
        // A worker whose catalogue is not stored yet (it registered, its
        // object_info is on the way) is left out until it is.
        match s.queue.object_info(d).await? {
            Some(text) => parts.push(serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)),
            None => complete = false,
        }
    }
    if parts.is_empty() {
        return Err(AppError::Unavailable(
            "the workers' node list is not stored yet".into(),
        ));
    }
    let merged = if parts.len() == 1 {
        parts.pop().unwrap_or_default()
    } else {
        crate::catalogue::merge(parts.iter())
    };
    let mut model_inputs = crate::catalogue::model_inputs(&merged, None);
    for w in &workers {
        if let Ok(list) =
            serde_json::from_value::<Vec<(String, String)>>(w.description["model_inputs"].clone())
        {
            model_inputs.extend(list);
        }
    }
    let mut c = for_the_app(merged, &s.node_policy);
    c.model_inputs = Arc::new(model_inputs);
    // Kept only when every worker's catalogue was there: a partial merge
    // must not stand for the whole set of digests.
    if complete {
        *cache = Some((key, c.clone()));
    }
    Ok(c)
}

/// Fills in what frontend 1.58 expects of every node and older ComfyUIs
/// leave out: `python_module` (read with `.split`) and `input_order` (the
/// widget order, else taken from the key order of `input`). Node types the
/// instructor's policy refuses are marked (see `policy.rs`).
fn for_the_app(catalogue: Value, policy: &super::NodePolicy) -> Catalogue {
    let Value::Object(mut nodes) = catalogue else {
        return Catalogue {
            text: Arc::new(catalogue.to_string()),
            parsed: None,
            model_inputs: Arc::default(),
        };
    };
    for node in nodes.values_mut() {
        let Some(n) = node.as_object_mut() else {
            continue;
        };
        n.entry("python_module").or_insert(json!("nodes"));
        if !n.contains_key("input_order") {
            let mut order = Map::new();
            for group in ["required", "optional"] {
                if let Some(inputs) = n
                    .get("input")
                    .and_then(|i| i.get(group))
                    .and_then(Value::as_object)
                {
                    order.insert(group.into(), json!(inputs.keys().collect::<Vec<_>>()));
                }
            }
            n.insert("input_order".into(), Value::Object(order));
        }
    }
    policy.mark(&mut nodes);
    let parsed = Value::Object(nodes);
    Catalogue {
        text: Arc::new(parsed.to_string()),
        parsed: Some(Arc::new(parsed)),
        model_inputs: Arc::default(),
    }
}
