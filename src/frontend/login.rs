//! Who may use this participant's server: the login page (in the ComfyUI
//! look), the signed, HttpOnly, SameSite session cookie it sets, bearer
//! tokens for scripts, logout, and the guard in front of every API route.
//! Browsers without a session are sent to the login page; API clients get
//! 401. Login attempts are rate-limited (see `auth::LoginLimiter`).

use super::FrontendState;
use crate::auth::{self, Credentials, LoginLimiter, SessionKey, SESSION_TTL};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
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
    participant: String,
    secret: Vec<u8>,
    /// The login in force and the key its cookies are signed with; replaced
    /// when the instructor resets it (see [`FrontendAuth::refresh`]).
    current: std::sync::RwLock<(Credentials, SessionKey)>,
    /// When the queue was last asked for a reset login.
    checked: std::sync::Mutex<Option<std::time::Instant>>,
    /// Set `Secure` on the cookie (the public URL is https).
    secure: bool,
    limiter: LoginLimiter,
}

/// How often a frontend looks for a reset login.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

impl FrontendAuth {
    pub fn new(participant: &str, creds: Credentials, session_secret: &[u8], secure: bool) -> Self {
        let key = SessionKey::derive(session_secret, "participant", participant, &creds);
        Self {
            participant: participant.to_string(),
            secret: session_secret.to_vec(),
            current: std::sync::RwLock::new((creds, key)),
            checked: std::sync::Mutex::new(None),
            secure,
            limiter: LoginLimiter::default(),
        }
    }

    fn creds(&self) -> Credentials {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    fn key(&self) -> SessionKey {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Takes a login the instructor reset (kept in the queue) in place of
    /// the credentials file's; asks at most every [`RECHECK`].
    async fn refresh(&self, queue: &crate::queue::Queue) {
        {
            let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if checked.is_some_and(|t| t.elapsed() < RECHECK) {
                return;
            }
            *checked = Some(std::time::Instant::now());
        }
        let Ok(Some((password, token))) = queue.login(&self.participant).await else {
            return;
        };
        let creds = Credentials { password, token };
        if creds != self.creds() {
            let key = SessionKey::derive(&self.secret, "participant", &self.participant, &creds);
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = (creds, key);
            tracing::info!(participant = %self.participant, "login reset by the instructor");
        }
    }

    /// Whether the request carries this participant's token or session.
    fn admits(&self, headers: &HeaderMap) -> bool {
        if let Some(t) = auth::bearer(headers) {
            return auth::constant_time_eq(t.as_bytes(), self.creds().token.as_bytes());
        }
        auth::http::cookie_value(headers, COOKIE).is_some_and(|c| self.key().verify(&c))
    }
}

/// The guard on every API route, the index page and the socket.
pub async fn guard(State(s): State<FrontendState>, req: Request, next: Next) -> Response {
    let Some(a) = &s.auth else {
        return next.run(req).await;
    };
    a.refresh(&s.queue).await;
    if a.admits(req.headers()) {
        return next.run(req).await;
    }
    auth::http::unauthenticated(&req, &format!("/{}/login", s.participant))
}

/// The login page, styled like the ComfyUI editor it leads to.
fn page(participant: &str, message: Option<&str>) -> Html<String> {
    auth::login_page(
        &format!("Workshop login for {participant}"),
        &format!("/{participant}/login"),
        "Password or join code",
        message,
    )
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
    if let Err(wait) = a.limiter.check(&auth::http::client_key(&headers)) {
        tracing::warn!(participant = %s.participant, "login attempts rate-limited");
        return auth::http::rate_limited(|m| page(&s.participant, Some(m)), wait);
    }
    let typed = form.password.trim();
    a.refresh(&s.queue).await;
    if !auth::constant_time_eq(typed.as_bytes(), a.creds().password.as_bytes()) {
        tracing::info!(participant = %s.participant, "login refused: wrong password");
        return (
            StatusCode::UNAUTHORIZED,
            page(&s.participant, Some("Wrong password or join code.")),
        )
            .into_response();
    }
    tracing::info!(participant = %s.participant, "login");
    let cookie = auth::http::session_cookie(
        COOKIE,
        Some(a.key().issue(SESSION_TTL)),
        format!("/{}/", s.participant),
        SameSite::Lax,
        a.secure,
    );
    redirect_home(&s, Some(cookie))
}

/// `POST /<name>/logout`.
pub async fn logout(State(s): State<FrontendState>) -> Response {
    let cookie = auth::http::session_cookie(
        COOKIE,
        None,
        format!("/{}/", s.participant),
        SameSite::Lax,
        false,
    );
    auth::http::redirect(&format!("/{}/login", s.participant), Some(cookie))
}

fn redirect_home(s: &FrontendState, cookie: Option<Cookie<'static>>) -> Response {
    auth::http::redirect(&format!("/{}/", s.participant), cookie)
}
