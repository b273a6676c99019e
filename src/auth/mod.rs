//! Who is asking: participants' and the instructor's credentials (one TOML
//! file), signed session cookies, bearer tokens and the login rate limit.
//! Shared by the participant frontends and the hub's admin API, so both
//! apply one policy.

mod credentials;
pub mod http;
mod limiter;
mod page;
mod session;

pub use credentials::{Credentials, CredentialsFile, ADMIN};
pub use limiter::LoginLimiter;
pub use page::{escape, front_door_page, login_page};
pub use session::{SessionKey, SESSION_TTL};

/// Compares two byte strings in constant time (no early exit).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}
