//! Signed session cookies. A cookie is `<expiry>.<nonce>.<mac>`: the MAC is
//! HMAC-SHA256 under a key derived from the server's session secret and the
//! login's own password and token, so a cookie is valid for one login only
//! (user01's cookie means nothing to user02's server) and resetting a
//! password or token ends its sessions. Nothing is stored server-side.

use super::Credentials;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a login lasts: a workshop day and its follow-up.
pub const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The key that signs one login's cookies.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl SessionKey {
    /// Derives the key of login `name` (`scope` keeps participant and admin
    /// sessions apart). `secret` may be empty: the login's own secrets
    /// still make the key unguessable.
    pub fn derive(secret: &[u8], scope: &str, name: &str, creds: &Credentials) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        for part in [
            "comfy-multi session v1",
            scope,
            name,
            &creds.password,
            &creds.token,
        ] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        Self(mac.finalize().into_bytes().into())
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        mac
    }

    /// A new cookie value valid for `ttl`.
    pub fn issue(&self, ttl: Duration) -> String {
        let nonce: [u8; 12] = rand::random();
        let payload = format!(
            "{}.{}",
            now_secs() + ttl.as_secs(),
            URL_SAFE_NO_PAD.encode(nonce)
        );
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// Whether `cookie` was issued under this key and has not expired.
    pub fn verify(&self, cookie: &str) -> bool {
        let Some((payload, tag)) = cookie.rsplit_once('.') else {
            return false;
        };
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
            return false;
        };
        if self.mac(payload).verify_slice(&tag).is_err() {
            return false;
        }
        payload
            .split_once('.')
            .and_then(|(expiry, _)| expiry.parse::<u64>().ok())
            .is_some_and(|expiry| expiry > now_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, creds: &Credentials) -> SessionKey {
        SessionKey::derive(b"secret", "participant", name, creds)
    }

    #[test]
    fn an_issued_cookie_verifies_under_its_own_key_only() {
        let a = Credentials::generate();
        let b = Credentials::generate();
        let cookie = key("user01", &a).issue(SESSION_TTL);
        assert!(key("user01", &a).verify(&cookie));
        assert!(!key("user02", &a).verify(&cookie), "another login");
        assert!(!key("user01", &b).verify(&cookie), "reset credentials");
        assert!(!SessionKey::derive(b"secret", "admin", "user01", &a).verify(&cookie));
        assert!(!SessionKey::derive(b"other", "participant", "user01", &a).verify(&cookie));
    }

    #[test]
    fn expired_forged_and_garbled_cookies_are_refused() {
        let c = Credentials::generate();
        let k = key("user01", &c);
        assert!(!k.verify(&k.issue(Duration::ZERO)), "expired");
        let good = k.issue(SESSION_TTL);
        let (payload, tag) = good.rsplit_once('.').unwrap();
        let (_, nonce) = payload.split_once('.').unwrap();
        // A later expiry with the old tag.
        assert!(!k.verify(&format!("99999999999.{nonce}.{tag}")));
        for bad in ["", ".", "..", "1.2.3", "x.y.z.w", &good[..good.len() - 1]] {
            assert!(!k.verify(bad), "{bad:?}");
        }
    }
}
