//! `comfy-multi serve`: the hub — worker gateway, participants' file store,
//! lease reaper and health check; the admin API and metrics join it here
//! (one route table in [`router`]).

pub mod admin;
pub mod auth;
pub mod door;
mod files;
mod gateway;
pub mod metrics;
mod reaper;
pub mod storage;
pub mod warmup;

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
    /// The instructor's warm-up workflows, and who can be asked to rerun them.
    pub warmups: Arc<warmup::Warmups>,
    /// The configured worker pools (kind, price); their runtime state is
    /// in the queue.
    pub pools: Arc<Vec<crate::config::PoolConfig>>,
    /// The front door at `/` (the workshop's name, its login limiter).
    pub door: Arc<door::Door>,
    /// Why each in-hub worker (a `comfyui_url` pool's) is not connected
    /// yet, as it last found its ComfyUI.
    pub starting: crate::worker::Starting,
}

impl HubState {
    /// A participant's folder (the name is validated by the queue).
    pub fn user_dir(&self, participant: &str) -> PathBuf {
        self.state_dir.join("users").join(participant)
    }

    /// The logins in force: the credentials file's, each replaced by the
    /// one the instructor reset (kept in the queue) — for `only` these
    /// names, or for every name in the file and the workshop.
    pub async fn current_logins(
        &self,
        only: Option<&[String]>,
    ) -> Result<crate::auth::CredentialsFile, crate::error::AppError> {
        use crate::auth::{Credentials, CredentialsFile};
        use crate::error::AppError;
        let mut file = match self.credentials_file.clone() {
            None => CredentialsFile::default(),
            Some(path) => tokio::task::spawn_blocking(move || {
                if !path.exists() {
                    return Ok(CredentialsFile::default());
                }
                CredentialsFile::load(&path).map_err(|e| AppError::internal(format!("{e:#}")))
            })
            .await
            .map_err(AppError::internal)??,
        };
        let names: Vec<String> = match only {
            Some(names) => {
                file.logins.retain(|n, _| names.contains(n));
                names.to_vec()
            }
            None => file
                .logins
                .keys()
                .chain(self.participants.iter())
                .cloned()
                .collect(),
        };
        for n in names {
            if let Some((password, token)) = self.queue.login(&n).await? {
                file.logins.insert(n, Credentials { password, token });
            }
        }
        Ok(file)
    }
}

/// The hub's one route table.
pub fn router(state: HubState) -> Router {
    Router::new()
        .route("/", get(door::show).post(door::submit))
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
    let text = s.metrics.render(&s.queue, &s.pools).await?;
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

/// The hub's parts that come from the config beyond its state: the
/// warm-up workflows (read and checked now), the pools' initial state and
/// burst policy (where the instructor has not switched them at runtime),
/// and the storage watch (started until `shutdown`).
pub async fn from_config(
    config: &crate::config::Config,
    queue: &Queue,
    state_dir: &std::path::Path,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<warmup::Warmups>> {
    for p in &config.pools {
        queue
            .init_pool(&p.name, p.state, p.burst, p.max_concurrency)
            .await?;
    }
    tokio::spawn(storage::watch(
        queue.clone(),
        state_dir.to_path_buf(),
        config.storage.clone(),
        shutdown.clone(),
    ));
    let paths: Vec<PathBuf> = config.warmup.iter().map(|w| w.workflow.clone()).collect();
    Ok(Arc::new(warmup::Warmups::load(
        &paths,
        Duration::from_secs(config.hub.warmup_timeout_s),
    )?))
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
