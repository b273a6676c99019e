//! `comfy-multi serve`: the hub. For now it runs the lease reaper and a
//! health endpoint; the worker gateway, file store, admin API and metrics
//! join it here (one route table in [`router`]).

mod reaper;

use crate::queue::Queue;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the hub's handlers share.
#[derive(Clone)]
pub struct HubState {
    pub queue: Queue,
    pub reap_interval: Duration,
}

/// The hub's one route table.
pub fn router(state: HubState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// `200 ok` while Redis answers, `503` otherwise.
async fn healthz(State(s): State<HubState>) -> (StatusCode, &'static str) {
    if s.queue.ping().await {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable\n")
    }
}

/// Runs the hub on an already-bound listener until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    state: HubState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let reaper = tokio::spawn(reaper::run(
        state.queue.clone(),
        state.reap_interval,
        shutdown.clone(),
    ));
    let app = router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;
    shutdown.cancel();
    reaper.await?;
    Ok(())
}
