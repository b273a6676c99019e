//! The instructor's side of the hub: `/admin/` (dashboard, login) and the
//! admin API under `/admin/api/…` that both the dashboard and
//! `comfy-multi admin` use. One route table here; handlers in `api.rs`,
//! login and the guard in `session.rs`, the outputs gallery and its files
//! in `gallery.rs`, the zip export in `export.rs`, join cards in
//! `cards.rs`, worker pools in `pools.rs`, sending a workflow to
//! participants' editors in `push.rs`, the dashboard's files in
//! `session.rs`, the chart's
//! queue sampler in `samples.rs`. Every action is logged to the
//! `audit` target (who, what, when).

mod api;
mod cards;
mod export;
mod gallery;
mod pools;
mod push;
pub mod samples;
mod session;
mod storage;

pub use session::AdminAuth;

use super::HubState;
use axum::routing::{get, post};
use axum::Router;

/// The admin routes, guarded except for the login page.
pub fn routes(state: HubState) -> Router {
    let guard = axum::middleware::from_fn_with_state(state.clone(), session::guard);
    let api = Router::new()
        .route("/status", get(api::status))
        .route("/queue", get(api::queue))
        .route("/users", get(api::users))
        .route("/workers", get(api::workers))
        .route("/samples", get(samples::list))
        .route("/events", get(api::events))
        .route("/jobs/{id}/cancel", post(api::cancel))
        .route("/jobs/{id}/prioritize", post(api::prioritize))
        .route("/jobs/{id}/move", post(api::move_job))
        .route("/mode", post(api::set_mode))
        .route("/affinity", post(api::set_affinity))
        .route("/warmup", post(api::warmup))
        .route("/storage", get(storage::report))
        .route("/prune", post(storage::prune))
        .route("/pause", post(api::pause))
        .route("/resume", post(api::resume))
        .route("/broadcast", post(api::broadcast))
        .route("/max_pending", post(api::max_pending))
        .route("/users/{name}/lock", post(api::lock))
        .route("/users/{name}/unlock", post(api::unlock))
        .route("/users/{name}/clear", post(api::clear))
        .route("/users/{name}/reset", post(api::reset))
        .route("/users/{name}/max_pending", post(api::user_max_pending))
        .route(
            "/push_workflow",
            post(push::push).layer(axum::extract::DefaultBodyLimit::max(
                push::MAX_WORKFLOW_BYTES + 128 * 1024,
            )),
        )
        .route("/pools", get(pools::list))
        .route("/pools/{name}", post(pools::set))
        .route("/workers/{id}/drain", post(api::drain))
        .route("/workers/{id}/undrain", post(api::undrain))
        .route("/gallery", get(gallery::gallery))
        .route("/export.zip", get(export::export));
    Router::new()
        .nest("/admin/api", api)
        .route("/admin/", get(session::dashboard))
        .route("/admin/cards", get(cards::cards))
        .route("/admin/files/{participant}/{*path}", get(gallery::file))
        .route("/admin/dashboard.js", get(session::dashboard_js))
        .route("/admin/dashboard.css", get(session::dashboard_css))
        .route_layer(guard)
        .route("/admin", get(session::to_slash))
        .route("/admin/login", get(session::show).post(session::submit))
        .route("/admin/logout", post(session::logout))
        .with_state(state)
}

/// Records an admin action in the log (target `audit`).
fn audit(who: &str, action: &str, target: &str) {
    tracing::info!(target: "audit", admin = who, action, target, "admin action");
}
