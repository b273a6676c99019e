//! Admin login: the instructor's password (login page → signed session
//! cookie scoped to `/admin/`) or `Authorization: Bearer` with the admin
//! token (or password) for `comfy-multi admin`. Participants' credentials
//! never match: the key is derived from the admin login and the "admin"
//! scope. Attempts are rate-limited like participants' logins.

use crate::auth::{self, Credentials, LoginLimiter, SessionKey, SESSION_TTL};
use crate::error::AppError;
use crate::hub::HubState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use cookie::{Cookie, SameSite};
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
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .any(|c| c.name() == COOKIE && self.key.verify(c.value()))
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
    let wants_page = req.method() == Method::GET
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
    if wants_page {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/admin/login")]).into_response();
    }
    AppError::Unauthorized.into_response()
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
    let client = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("direct")
        .chars()
        .take(64)
        .collect::<String>();
    if let Err(wait) = a.limiter.check(&client) {
        let secs = wait.as_secs().max(1);
        tracing::warn!(target: "audit", "admin login attempts rate-limited");
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            page(Some(&format!("Too many attempts. Try again in {secs} s."))),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    if !auth::constant_time_eq(form.password.trim().as_bytes(), a.creds.password.as_bytes()) {
        tracing::warn!(target: "audit", "admin login refused: wrong password");
        return (StatusCode::UNAUTHORIZED, page(Some("Wrong password."))).into_response();
    }
    tracing::info!(target: "audit", "admin login");
    let cookie = Cookie::build((COOKIE, a.key.issue(SESSION_TTL)))
        .path(PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(a.secure)
        .max_age(cookie::time::Duration::seconds(SESSION_TTL.as_secs() as i64))
        .build();
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, PATH)]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub async fn logout() -> Response {
    let cookie = Cookie::build((COOKIE, ""))
        .path(PATH)
        .http_only(true)
        .max_age(cookie::time::Duration::ZERO)
        .build();
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/admin/login")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
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
