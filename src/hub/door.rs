//! The workshop's front door at `/`: the one address on the board. A
//! participant types the name on their card and the password; the door
//! checks both (the credentials file, or the login the instructor reset)
//! and hands the same form on to that participant's editor login with a
//! 307 — the browser posts it there, the editor sets its session cookie and
//! opens. A wrong name and a wrong password get the same answer, so the
//! door tells nobody which names exist; attempts are rate-limited per
//! client as on every login.

use super::HubState;
use crate::auth::{self, LoginLimiter};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the door needs beyond the hub's state.
#[derive(Debug, Default)]
pub struct Door {
    /// The workshop's name, shown on the page (`hub.workshop_name`).
    pub workshop: String,
    /// One limiter per participant name (as each editor's own login has),
    /// so a class behind one NAT address is never held up by one person's
    /// typos; guesses at names nobody has share one.
    limiters: Mutex<HashMap<String, Arc<LoginLimiter>>>,
}

impl Door {
    pub fn new(workshop: &str) -> Self {
        Self {
            workshop: workshop.to_string(),
            limiters: Mutex::default(),
        }
    }

    fn limiter(&self, key: &str) -> Arc<LoginLimiter> {
        self.limiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone()
    }
}

const FOOTER: &str = r#"<p class="foot">Instructor? <a href="/admin/">Open the dashboard</a></p>"#;

fn page(s: &HubState, name: &str, message: Option<&str>) -> Html<String> {
    auth::front_door_page(&s.door.workshop, "/", name, message, FOOTER)
}

/// `GET /`.
pub async fn show(State(s): State<HubState>) -> Html<String> {
    page(&s, "", None)
}

#[derive(Deserialize)]
pub struct DoorForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

/// `POST /`: name + password → that participant's editor.
pub async fn submit(
    State(s): State<HubState>,
    headers: HeaderMap,
    Form(form): Form<DoorForm>,
) -> Response {
    // Names are typed from a card: case and stray spaces do not matter.
    let name = form.name.trim().to_ascii_lowercase();
    let known = s.participants.contains(&name);
    let limiter = s.door.limiter(if known { &name } else { "" });
    if let Err(wait) = limiter.check(&auth::http::client_key(&headers)) {
        tracing::warn!("front door: login attempts rate-limited");
        return auth::http::rate_limited(|m| page(&s, form.name.trim(), Some(m)), wait);
    }
    if known && password_matches(&s, &name, form.password.trim()).await {
        tracing::info!(participant = %name, "front door: on to the editor");
        // 307 keeps the method and the form: the editor's own login sets
        // its cookie (path /<name>/) and opens the editor.
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("/{name}/login"))],
        )
            .into_response();
    }
    tracing::info!("front door: login refused");
    (
        StatusCode::UNAUTHORIZED,
        page(&s, form.name.trim(), Some("Wrong name or password.")),
    )
        .into_response()
}

/// Whether `typed` is `name`'s password now (the instructor's reset if
/// there is one, else the credentials file's).
async fn password_matches(s: &HubState, name: &str, typed: &str) -> bool {
    let Ok(logins) = s.current_logins(Some(&[name.to_string()])).await else {
        return false;
    };
    logins.get(name).is_some_and(|c| {
        !typed.is_empty() && auth::constant_time_eq(typed.as_bytes(), c.password.as_bytes())
    })
}
