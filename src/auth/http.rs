//! The HTTP side of logging in, shared by participants' editors and the
//! admin dashboard: reading a session cookie, naming the client for the
//! rate limit, answering an unauthenticated request (login page for a
//! browser, 401 for an API client), the rate-limited answer, and the
//! session cookie itself (set and cleared).

use super::SESSION_TTL;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use cookie::{Cookie, SameSite};
use std::time::Duration;

/// The value of cookie `name`, if the request carries it.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// Who is attempting a login, for the per-client limit: nginx's
/// `X-Real-IP` (set from the peer address) when present.
pub fn client_key(headers: &HeaderMap) -> String {
    headers
        .get("x-real-ip")
        .or_else(|| headers.get("x-forwarded-for"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().chars().take(64).collect())
        .unwrap_or_else(|| "direct".into())
}

/// A request without a valid login: a browser navigating is sent to
/// `login`, anything else gets 401.
pub fn unauthenticated(req: &Request, login: &str) -> Response {
    let wants_page = req.method() == Method::GET
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
    if wants_page {
        return redirect(login, None);
    }
    crate::error::AppError::Unauthorized.into_response()
}

/// 303 to `to`, setting `cookie` if given.
pub fn redirect(to: &str, cookie: Option<Cookie<'static>>) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response();
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c.to_string()).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// 429 with the login page saying how long to wait, and `Retry-After`.
pub fn rate_limited(page: impl Fn(&str) -> Html<String>, wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        page(&format!("Too many attempts. Try again in {secs} s.")),
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// The session cookie `name` for `path` (HttpOnly), or — with `value`
/// `None` — the one that clears it.
pub fn session_cookie(
    name: &'static str,
    value: Option<String>,
    path: String,
    same_site: SameSite,
    secure: bool,
) -> Cookie<'static> {
    let max_age = if value.is_some() {
        cookie::time::Duration::seconds(SESSION_TTL.as_secs() as i64)
    } else {
        cookie::time::Duration::ZERO
    };
    Cookie::build((name, value.unwrap_or_default()))
        .path(path)
        .http_only(true)
        .same_site(same_site)
        .secure(secure)
        .max_age(max_age)
        .build()
}
