//! Admin login: the instructor's password (login page → signed session
//! cookie scoped to `/admin/`) or `Authorization: Bearer` with the admin
//! token (or password) for `comfy-multi admin`. Participants' credentials
//! never match: the key is derived from the admin login and the "admin"
//! scope. Attempts are rate-limited like participants' logins.

use crate::auth::{self, Credentials, LoginLimiter, SessionKey, SESSION_TTL};
use crate::error::AppError;
use crate::hub::HubState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use cookie::SameSite;
use serde::Deserialize;

const COOKIE: &str = "cm_admin";
const PATH: &str = "/admin/";

/// The instructor's login.
#[derive(Debug)]
pub struct AdminAuth {
    creds: Credentials,
    key: SessionKey,
    secure: bool,
    limiter: LoginLimiter,
}

impl AdminAuth {
    pub fn new(creds: Credentials, session_secret: &[u8], secure: bool) -> Self {
        Self {
            key: SessionKey::derive(session_secret, "admin", auth::ADMIN, &creds),
            creds,
            secure,
            limiter: LoginLimiter::default(),
        }
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        if let Some(t) = auth::bearer(headers) {
            return auth::constant_time_eq(t.as_bytes(), self.creds.token.as_bytes())
                || auth::constant_time_eq(t.as_bytes(), self.creds.password.as_bytes());
        }
        auth::http::cookie_value(headers, COOKIE).is_some_and(|c| self.key.verify(&c))
    }
}

/// Who did it, for the audit log: the admin and where from.
pub fn who(headers: &HeaderMap) -> String {
    let via = if auth::bearer(headers).is_some() {
        "token"
    } else {
        "dashboard"
    };
    match headers.get("x-real-ip").and_then(|v| v.to_str().ok()) {
        Some(ip) => format!(
            "admin via {via} from {}",
            ip.chars().take(64).collect::<String>()
        ),
        None => format!("admin via {via}"),
    }
}

/// Guards the dashboard and the admin API.
pub async fn guard(State(s): State<HubState>, req: Request, next: Next) -> Response {
    let Some(a) = &s.admin else {
        return AppError::Unauthorized.into_response();
    };
    if a.admits(req.headers()) {
        return next.run(req).await;
    }
    auth::http::unauthenticated(&req, "/admin/login")
}

pub async fn to_slash() -> Response {
    (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, PATH)]).into_response()
}

fn page(message: Option<&str>) -> Html<String> {
    auth::login_page(
        "Instructor dashboard",
        "/admin/login",
        "Admin password",
        message,
    )
}

pub async fn show() -> Html<String> {
    page(None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    password: String,
}

pub async fn submit(
    State(s): State<HubState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(a) = &s.admin else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            page(Some("No admin login is configured on this hub.")),
        )
            .into_response();
    };
    if let Err(wait) = a.limiter.check(&auth::http::client_key(&headers)) {
        tracing::warn!(target: "audit", "admin login attempts rate-limited");
        return auth::http::rate_limited(|m| page(Some(m)), wait);
    }
    if !auth::constant_time_eq(form.password.trim().as_bytes(), a.creds.password.as_bytes()) {
        tracing::warn!(target: "audit", "admin login refused: wrong password");
        return (StatusCode::UNAUTHORIZED, page(Some("Wrong password."))).into_response();
    }
    tracing::info!(target: "audit", "admin login");
    let cookie = auth::http::session_cookie(
        COOKIE,
        Some(a.key.issue(SESSION_TTL)),
        PATH.into(),
        SameSite::Strict,
        a.secure,
    );
    auth::http::redirect(PATH, Some(cookie))
}

pub async fn logout() -> Response {
    let cookie = auth::http::session_cookie(COOKIE, None, PATH.into(), SameSite::Strict, false);
    auth::http::redirect("/admin/login", Some(cookie))
}

/// One of the dashboard's files, compiled in (no CDN, no build step).
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The dashboard page; its script and style sheet are the two below.
pub async fn dashboard() -> Response {
    asset("text/html; charset=utf-8", include_str!("dashboard.html"))
}

pub async fn dashboard_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("dashboard.js"),
    )
}

pub async fn dashboard_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("dashboard.css"))
}
