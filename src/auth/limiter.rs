//! The login rate limit: a few attempts per client, and a cap per login
//! whatever the client, so guessing a password online stays hopeless
//! (≤10 guesses a minute against ≈59 bits) while a participant who
//! mistypes twice is not locked out. Built on `governor`.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

pub struct LoginLimiter {
    per_client: DefaultKeyedRateLimiter<String>,
    per_login: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginLimiter")
    }
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(5, Duration::from_secs(12), 20, Duration::from_secs(6))
    }
}

fn quota(burst: u32, every: Duration) -> Quota {
    Quota::with_period(every)
        .expect("a non-zero period")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("at least 1"))
}

impl LoginLimiter {
    /// `client_burst` attempts per client, then one per `client_every`;
    /// `login_burst` attempts in all, then one per `login_every`.
    pub fn new(
        client_burst: u32,
        client_every: Duration,
        login_burst: u32,
        login_every: Duration,
    ) -> Self {
        Self {
            per_client: RateLimiter::keyed(quota(client_burst, client_every)),
            per_login: RateLimiter::direct(quota(login_burst, login_every)),
        }
    }

    /// Takes one attempt for `client`; `Err(wait)` when over the limit.
    pub fn check(&self, client: &str) -> Result<(), Duration> {
        let clock = DefaultClock::default();
        if let Err(n) = self.per_client.check_key(&client.to_string()) {
            return Err(n.wait_time_from(clock.now()));
        }
        if let Err(n) = self.per_login.check() {
            return Err(n.wait_time_from(clock.now()));
        }
        // Forget idle clients now and then (memory stays bounded).
        if self.per_client.len() > 10_000 {
            self.per_client.retain_recent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_waits() {
        let l = LoginLimiter::new(3, Duration::from_secs(60), 100, Duration::from_secs(1));
        for _ in 0..3 {
            assert!(l.check("10.0.0.1").is_ok());
        }
        let wait = l.check("10.0.0.1").unwrap_err();
        assert!(wait > Duration::from_secs(1), "{wait:?}");
        assert!(
            l.check("10.0.0.2").is_ok(),
            "another client is not affected"
        );
    }

    #[test]
    fn the_login_cap_holds_across_clients() {
        let l = LoginLimiter::new(100, Duration::from_secs(1), 4, Duration::from_secs(60));
        for i in 0..4 {
            assert!(l.check(&format!("10.0.0.{i}")).is_ok());
        }
        assert!(l.check("10.0.0.99").is_err());
    }
}
