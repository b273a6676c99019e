//! `comfy-multi frontend --user NAME`: one participant's ComfyUI server. It
//! serves the official ComfyUI web app (the pinned `comfyui-frontend-package`
//! wheel's `static/`) under `/NAME/` and the ComfyUI API the app calls, for
//! this participant only. This slice covers what the editor needs to boot
//! (see `tests/browser/BOOT_NOTES.md`); prompts, the socket's job events,
//! uploads and login come next.

mod boot;
mod export;
mod extension;
mod files;
mod jobs;
mod locate;
mod login;
mod outputs;
mod policy;
mod prompt;
mod seed;
mod userdata;
mod validate;
mod ws;

pub use files::remove_upload_leftovers;
pub use locate::{find_static_dir, find_workflows_dir, seed_participant, PINNED_FRONTEND};
pub use policy::NodePolicy;
pub use seed::seed_workflows;

use crate::queue::Queue;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tower_http::services::ServeDir;

/// (digest, catalogue) of the workers' node catalogue.
type CachedObjectInfo = (String, boot::Catalogue);

/// What one participant's server shares between requests.
#[derive(Clone)]
pub struct FrontendState {
    pub participant: String,
    pub queue: Queue,
    /// The frontend wheel's `static/` directory.
    pub static_dir: PathBuf,
    /// `<state_dir>/users/<participant>`.
    pub user_dir: PathBuf,
    pub max_upload_bytes: u64,
    /// object_info as last read from the hub's store.
    object_info: Arc<Mutex<Option<CachedObjectInfo>>>,
    /// Serializes read-modify-write of the settings file.
    settings_lock: Arc<Mutex<()>>,
    /// The participant's login; `None` serves without one (tests, embedding
    /// behind another guard).
    auth: Option<Arc<login::FrontendAuth>>,
    /// The instructor's node policy (everything allowed by default).
    node_policy: Arc<NodePolicy>,
    /// One permit per open editor socket.
    sockets: Arc<tokio::sync::Semaphore>,
    max_sockets: usize,
    /// How often an editor socket is pinged; one silent for three of
    /// these (a laptop closed, a network gone) is closed.
    socket_ping: std::time::Duration,
}

impl FrontendState {
    pub fn new(
        participant: &str,
        queue: Queue,
        static_dir: PathBuf,
        user_dir: PathBuf,
        max_upload_bytes: u64,
    ) -> Self {
        Self {
            participant: participant.to_string(),
            queue,
            static_dir,
            user_dir,
            max_upload_bytes,
            object_info: Arc::default(),
            settings_lock: Arc::default(),
            auth: None,
            node_policy: Arc::default(),
            sockets: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_SOCKETS)),
            max_sockets: DEFAULT_MAX_SOCKETS,
            socket_ping: std::time::Duration::from_secs(20),
        }
    }

    /// Pings editor sockets every `every`; one silent for three of these
    /// is closed (its slot and its "online" mark freed).
    pub fn with_socket_ping(mut self, every: std::time::Duration) -> Self {
        self.socket_ping = every.max(std::time::Duration::from_millis(10));
        self
    }

    /// Refuses prompts that use node types the instructor's policy refuses
    /// (and marks those types in `/object_info`).
    pub fn with_node_policy(mut self, policy: NodePolicy) -> Self {
        self.node_policy = Arc::new(policy);
        self
    }

    /// At most `n` (at least 1) editor sockets open at once; more are
    /// answered 429 until one closes.
    pub fn with_max_sockets(mut self, n: usize) -> Self {
        let n = n.max(1);
        self.sockets = Arc::new(tokio::sync::Semaphore::new(n));
        self.max_sockets = n;
        self
    }

    /// As the configuration says: `[frontend]` socket limit, `[nodes]` policy.
    pub fn configured(self, config: &crate::config::Config) -> Self {
        self.with_max_sockets(config.frontend.max_sockets_per_participant as usize)
            .with_node_policy(NodePolicy::new(&config.nodes))
    }

    /// Requires this participant's login (password → session cookie, or
    /// `Authorization: Bearer <token>`) on every API route. `secure`: the
    /// cookie is only sent over https.
    pub fn with_login(
        mut self,
        creds: crate::auth::Credentials,
        session_secret: &[u8],
        secure: bool,
    ) -> Self {
        self.auth = Some(Arc::new(login::FrontendAuth::new(
            &self.participant,
            creds,
            session_secret,
            secure,
        )));
        self
    }
}

/// Editor sockets one participant may hold open unless configured
/// (`frontend.max_sockets_per_participant`).
pub const DEFAULT_MAX_SOCKETS: usize = 32;

/// The largest user file (a saved workflow) `POST /userdata/{file}` takes.
pub const MAX_USERDATA_BYTES: usize = 8 << 20;
/// The largest settings file, and so the largest settings request.
pub const MAX_SETTINGS_BYTES: usize = 2 << 20;

/// The largest `POST /prompt` body: the prompt (up to the queue's
/// `max_prompt_bytes`), the editor's copy of its workflow in `extra_data`
/// (a saved workflow, up to [`MAX_USERDATA_BYTES`]) and some room.
fn max_prompt_body(max_prompt_bytes: usize) -> usize {
    max_prompt_bytes
        .saturating_add(MAX_USERDATA_BYTES)
        .saturating_add(64 << 10)
}

/// A JSON body whatever its Content-Type (the app and script clients send
/// none or a form type).
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, crate::error::AppError> {
    serde_json::from_slice(body)
        .map_err(|e| crate::error::AppError::BadRequest(format!("invalid JSON: {e}")))
}

/// A request body read within its route's `DefaultBodyLimit` (`limit`);
/// past it, a 413 that names the limit.
fn limited_body(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    limit: usize,
) -> Result<axum::body::Bytes, crate::error::AppError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            crate::error::AppError::TooLarge(format!(
                "the request body is larger than the limit of {limit} bytes"
            ))
        } else {
            crate::error::AppError::BadRequest(e.body_text())
        }
    })
}

/// The API routes, as ComfyUI registers them: each at `/X` and `/api/X`.
fn api(max_prompt_bytes: usize) -> Router<FrontendState> {
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    Router::new()
        .route("/features", get(boot::features))
        .route("/system_stats", get(boot::system_stats))
        .route("/users", get(boot::users))
        .route(
            "/settings",
            get(boot::settings)
                .post(boot::post_settings)
                .layer(DefaultBodyLimit::max(MAX_SETTINGS_BYTES)),
        )
        .route(
            "/settings/{id}",
            get(boot::setting)
                .post(boot::post_setting)
                .layer(DefaultBodyLimit::max(MAX_SETTINGS_BYTES)),
        )
        .route("/userdata", get(userdata::list))
        .route(
            "/userdata/{*file}",
            get(userdata::get)
                .post(userdata::post)
                .delete(userdata::delete)
                .layer(DefaultBodyLimit::max(MAX_USERDATA_BYTES)),
        )
        .route("/extensions", get(extension::list))
        .route("/comfy-multi/status", get(extension::status))
        .route("/comfy-multi/outputs.zip", get(export::outputs))
        .route("/i18n", get(boot::i18n))
        .route("/object_info", get(boot::object_info))
        .route("/embeddings", get(boot::empty_list))
        .route("/global_subgraphs", get(boot::empty_object))
        .route("/workflow_templates", get(boot::empty_object))
        .route("/experiment/models", get(boot::empty_list))
        .route("/ws", get(ws::connect))
        .route(
            "/prompt",
            get(prompt::get)
                .post(prompt::post)
                .layer(DefaultBodyLimit::max(max_prompt_body(max_prompt_bytes))),
        )
        .route("/queue", get(prompt::queue).post(jobs::post_queue))
        .route("/interrupt", post(jobs::interrupt))
        .route("/api/jobs", get(jobs::list))
        .route("/api/jobs/cancel", post(jobs::cancel_many))
        .route("/api/jobs/{id}", get(jobs::one))
        .route("/api/jobs/{id}/cancel", post(jobs::cancel))
        .route("/history", get(prompt::history).post(prompt::post_history))
        .route("/history/{id}", get(prompt::history_one))
        .route("/view", get(files::view))
        .route("/view_metadata/{folder}", get(files::view_metadata))
        .route("/models", get(files::models))
        .route("/models/{folder}", get(files::models_in))
        // Uploads check `max_upload_bytes` themselves, while streaming.
        .route(
            "/upload/image",
            post(files::upload_image).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/upload/mask",
            post(files::upload_mask).layer(DefaultBodyLimit::disable()),
        )
        .route("/free", post(boot::no_content))
}

/// The participant's whole server, mounted under `/<participant>/`, with the
/// app's absolute `/assets/` paths.
pub fn router(state: FrontendState) -> Router {
    let static_dir = state.static_dir.clone();
    routes(state).merge(assets(&static_dir))
}

/// The app's manifest and favicons name a few absolute `/assets/` paths;
/// served once per address (several participants may share one).
pub fn assets(static_dir: &std::path::Path) -> Router {
    Router::new().nest_service("/assets", ServeDir::new(static_dir.join("assets")))
}

/// One participant's routes under `/<participant>/` (no `/assets`), so that
/// several participants can be merged into one router.
pub fn routes(state: FrontendState) -> Router {
    use axum::routing::post;
    let prefix = format!("/{}", state.participant);
    let static_dir = state.static_dir.clone();
    let guard = axum::middleware::from_fn_with_state(state.clone(), login::guard);
    let max_prompt = state.queue.settings().max_prompt_bytes;
    let inner = Router::new()
        .merge(api(max_prompt))
        .nest("/api", api(max_prompt))
        .route("/internal/folder_paths", get(boot::empty_object))
        .route("/internal/files/{kind}", get(files::internal_files))
        .route("/user.css", get(boot::user_css))
        .route("/outputs", get(outputs::page))
        .route(extension::SCRIPT_PATH, get(extension::script))
        .route_layer(guard.clone())
        .route("/login", get(login::show).post(login::submit))
        .route("/logout", post(login::logout))
        // The app's own files are public; everything they call is guarded.
        .fallback_service(ServeDir::new(&static_dir))
        .with_state(state.clone());
    let index = static_dir.join("index.html");
    let index_page = Router::new()
        .route(
            &format!("{prefix}/"),
            get(move || async move {
                match tokio::fs::read(&index).await {
                    Ok(html) => (
                        [
                            (header::CONTENT_TYPE, "text/html"),
                            (header::CACHE_CONTROL, "no-cache"),
                        ],
                        html,
                    )
                        .into_response(),
                    Err(_) => StatusCode::NOT_FOUND.into_response(),
                }
            }),
        )
        .route_layer(guard)
        .with_state(state);
    let bare = prefix.clone();
    Router::new()
        .merge(index_page)
        .nest(&prefix, inner)
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let bare = bare.clone();
                async move {
                    // The app derives its API base from the page path: `/user07`
                    // must become `/user07/`.
                    if req.uri().path() == bare {
                        let q = req
                            .uri()
                            .query()
                            .map(|q| format!("?{q}"))
                            .unwrap_or_default();
                        let to = format!("{bare}/{q}");
                        return (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, to)])
                            .into_response();
                    }
                    next.run(req).await
                }
            },
        ))
}

/// Serves on an already-bound listener (TCP or unix socket) until `shutdown`.
pub async fn run<L>(
    listener: L,
    state: FrontendState,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
