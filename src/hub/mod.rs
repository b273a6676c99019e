//! `comfy-multi serve`: the hub — worker gateway, participants' file store,
//! lease reaper and health check; the admin API and metrics join it here
//! (one route table in [`router`]).

pub mod admin;
pub mod auth;
mod files;
mod gateway;
pub mod metrics;
mod reaper;

use crate::queue::Queue;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the hub's handlers share.
#[derive(Clone)]
pub struct HubState {
    pub queue: Queue,
    pub reap_interval: Duration,
    /// Participants' files live in `<state_dir>/users/<name>/…`.
    pub state_dir: PathBuf,
    /// Accepted worker tokens.
    pub worker_tokens: Arc<Vec<String>>,
    /// Largest output file a worker may upload.
    pub max_output_bytes: u64,
    /// Cancelled when the hub shuts down (ends worker sessions).
    pub shutdown: CancellationToken,
    /// Woken when a job becomes available (idle workers lease at once).
    pub work_available: Arc<tokio::sync::Notify>,
    /// The instructor's login; `None`: the admin routes answer 401.
    pub admin: Option<Arc<admin::AdminAuth>>,
    /// The workshop's participants (shown even before their first job).
    pub participants: Arc<Vec<String>>,
    /// What `/metrics` reports.
    pub metrics: Arc<metrics::Metrics>,
    /// `participants.toml`, read for the join cards' passwords.
    pub credentials_file: Option<PathBuf>,
    /// The address participants use (`public_url`); `None`: the join cards
    /// name the host the instructor reached the hub by.
    pub public_url: Option<String>,
    /// The last hour of queue depth and waiting time, for the dashboard's
    /// chart (filled by a background task, see `admin::samples`).
    pub samples: admin::samples::Samples,
}

impl HubState {
    /// A participant's folder (the name is validated by the queue).
    pub fn user_dir(&self, participant: &str) -> PathBuf {
        self.state_dir.join("users").join(participant)
    }
}

/// The hub's one route table.
pub fn router(state: HubState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route(crate::protocol::CONNECT_PATH, get(gateway::connect))
        .route("/worker/v1/jobs/{job}/input", get(files::get_input))
        .route("/worker/v1/jobs/{job}/output", post(files::put_output))
        .with_state(state.clone())
        .merge(admin::routes(state))
}

/// `GET /metrics`: Prometheus text format.
async fn metrics_text(
    State(s): State<HubState>,
) -> Result<impl axum::response::IntoResponse, crate::error::AppError> {
    let text = s.metrics.render(&s.queue).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

/// `200 ok` while Redis answers, `503` otherwise.
async fn healthz(State(s): State<HubState>) -> (StatusCode, &'static str) {
    if s.queue.ping().await {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable\n")
    }
}

/// Starts the hub's background tasks (lease reaper, work watcher, the
/// dashboard's queue sampler) until `shutdown`; the handle ends with the
/// reaper.
pub fn spawn_background(
    state: &HubState,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(admin::samples::run(
        state.queue.clone(),
        state.samples.clone(),
        admin::samples::INTERVAL,
        shutdown.clone(),
    ));
    tokio::spawn(watch_for_work(
        state.queue.clone(),
        state.work_available.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(reaper::run(
        state.queue.clone(),
        state.state_dir.clone(),
        state.reap_interval,
        shutdown.clone(),
    ))
}

/// Serves `app` on a TCP listener with Nagle off (worker and browser
/// sockets carry many small frames) until `shutdown`.
pub async fn serve_tcp(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Runs the hub on an already-bound listener until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    state: HubState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let background = spawn_background(&state, &shutdown);
    let result = serve_tcp(listener, router(state), shutdown.clone()).await;
    shutdown.cancel();
    background.await?;
    result
}

/// Wakes idle worker sessions whenever a job is queued (new, requeued or
/// moved), so a lease follows a submit without polling delay.
async fn watch_for_work(queue: Queue, wake: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match queue.subscribe(None).await {
            Ok(mut rx) => loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) if m.contains("\"status\":\"queued\"") => wake.notify_waiters(),
                        Some(_) => {}
                        None => break,
                    },
                    _ = shutdown.cancelled() => return,
                }
            },
            Err(e) => tracing::debug!("watching for work: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
