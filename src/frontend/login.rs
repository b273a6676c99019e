//! Who may use this participant's server: the login page (in the ComfyUI
//! look), the signed, HttpOnly, SameSite session cookie it sets, bearer
//! tokens for scripts, logout, and the guard in front of every API route.
//! Browsers without a session are sent to the login page; API clients get
//! 401. Login attempts are rate-limited (see `auth::LoginLimiter`).

use super::FrontendState;
use crate::auth::{self, Credentials, LoginLimiter, SessionKey, SESSION_TTL};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use cookie::{Cookie, SameSite};
use serde::Deserialize;

/// The session cookie's name (its path is the participant's `/<name>/`).
pub const COOKIE: &str = "cm_session";

/// This participant's login.
#[derive(Debug)]
pub struct FrontendAuth {
    creds: Credentials,
    key: SessionKey,
    /// Set `Secure` on the cookie (the public URL is https).
    secure: bool,
    limiter: LoginLimiter,
}

impl FrontendAuth {
    pub fn new(participant: &str, creds: Credentials, session_secret: &[u8], secure: bool) -> Self {
        Self {
            key: SessionKey::derive(session_secret, "participant", participant, &creds),
            creds,
            secure,
            limiter: LoginLimiter::default(),
        }
    }

    /// Whether the request carries this participant's token or session.
    fn admits(&self, headers: &HeaderMap) -> bool {
        if let Some(t) = auth::bearer(headers) {
            return auth::constant_time_eq(t.as_bytes(), self.creds.token.as_bytes());
        }
        session_cookie(headers).is_some_and(|c| self.key.verify(&c))
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_string())
}

/// The guard on every API route, the index page and the socket.
pub async fn guard(State(s): State<FrontendState>, req: Request, next: Next) -> Response {
    let Some(a) = &s.auth else {
        return next.run(req).await;
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
        let to = format!("/{}/login", s.participant);
        return (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    }
    crate::error::AppError::Unauthorized.into_response()
}

/// Who is attempting a login, for the per-client limit: nginx's
/// `X-Real-IP` (set from the peer address) when present.
fn client_key(headers: &HeaderMap) -> String {
    headers
        .get("x-real-ip")
        .or_else(|| headers.get("x-forwarded-for"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().chars().take(64).collect())
        .unwrap_or_else(|| "direct".into())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The login page, styled like the ComfyUI editor it leads to.
fn page(participant: &str, message: Option<&str>) -> Html<String> {
    let message = message
        .map(|m| format!(r#"<p class="err" role="alert">{}</p>"#, escape(m)))
        .unwrap_or_default();
    let name = escape(participant);
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ComfyUI · {name}</title>
<link rel="icon" href="/{name}/assets/favicon.ico">
<style>
:root {{ color-scheme: dark; }}
body {{ margin:0; min-height:100vh; display:grid; place-items:center;
  background:#202020; color:#ddd; font:15px/1.4 Inter, Arial, sans-serif; }}
form {{ background:#353535; border:1px solid #4e4e4e; border-radius:8px;
  padding:28px 32px; width:min(320px, 86vw); box-shadow:0 8px 24px #0008; }}
h1 {{ margin:0 0 4px; font-size:22px; color:#fff; }}
p {{ margin:0 0 18px; color:#aaa; }}
label {{ display:block; margin-bottom:6px; }}
input {{ box-sizing:border-box; width:100%; padding:9px 10px; border-radius:6px;
  border:1px solid #4e4e4e; background:#222; color:#fff; font-size:16px; }}
input:focus {{ outline:2px solid #4a8cff; }}
button {{ margin-top:16px; width:100%; padding:10px; border:0; border-radius:6px;
  background:#4a8cff; color:#fff; font-size:15px; cursor:pointer; }}
.err {{ color:#ff8080; margin:12px 0 0; }}
</style></head>
<body><form method="post" action="/{name}/login">
<h1>ComfyUI</h1><p>Workshop login for <b>{name}</b></p>
<label for="password">Password or join code</label>
<input id="password" name="password" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Log in</button>{message}
</form></body></html>"#
    ))
}

/// `GET /<name>/login`.
pub async fn show(State(s): State<FrontendState>) -> Html<String> {
    page(&s.participant, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    password: String,
}

/// `POST /<name>/login`: the password (or join code) → session cookie.
pub async fn submit(
    State(s): State<FrontendState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(a) = &s.auth else {
        return redirect_home(&s, None);
    };
    if let Err(wait) = a.limiter.check(&client_key(&headers)) {
        let secs = wait.as_secs().max(1);
        tracing::warn!(participant = %s.participant, "login attempts rate-limited");
        let msg = format!("Too many attempts. Try again in {secs} s.");
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            page(&s.participant, Some(&msg)),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let typed = form.password.trim();
    if !auth::constant_time_eq(typed.as_bytes(), a.creds.password.as_bytes()) {
        tracing::info!(participant = %s.participant, "login refused: wrong password");
        return (
            StatusCode::UNAUTHORIZED,
            page(&s.participant, Some("Wrong password or join code.")),
        )
            .into_response();
    }
    tracing::info!(participant = %s.participant, "login");
    let cookie = Cookie::build((COOKIE, a.key.issue(SESSION_TTL)))
        .path(format!("/{}/", s.participant))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(a.secure)
        .max_age(cookie::time::Duration::seconds(SESSION_TTL.as_secs() as i64))
        .build();
    redirect_home(&s, Some(cookie))
}

/// `POST /<name>/logout`.
pub async fn logout(State(s): State<FrontendState>) -> Response {
    let cookie = Cookie::build((COOKIE, ""))
        .path(format!("/{}/", s.participant))
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::ZERO)
        .build();
    let mut r = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("/{}/login", s.participant))],
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn redirect_home(s: &FrontendState, cookie: Option<Cookie<'static>>) -> Response {
    let mut r = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("/{}/", s.participant))],
    )
        .into_response();
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c.to_string()).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
