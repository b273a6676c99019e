//! systemd integration, best-effort: `READY=1` once listening, `STOPPING=1`
//! on shutdown, and watchdog pings while the process is healthy. Outside
//! systemd (no `NOTIFY_SOCKET`) every call is a silent no-op.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Tells systemd the service is ready (listening).
pub fn ready() {
    notify(&[sd_notify::NotifyState::Ready]);
}

/// Tells systemd the service is shutting down.
pub fn stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

/// The watchdog interval, as `sd_watchdog_enabled(3)` reads it:
/// `WATCHDOG_USEC` set, and `WATCHDOG_PID` either unset or this process.
fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then_some(usec)
}

/// When systemd asked for a watchdog (`WATCHDOG_USEC`), pings it at half the
/// interval for as long as `healthy()` says so; a hung or unhealthy process
/// stops pinging and systemd restarts it.
pub fn spawn_watchdog<F, Fut>(shutdown: CancellationToken, healthy: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let Some(usec) = watchdog_usec() else { return };
    let every = Duration::from_micros(usec / 2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if healthy().await {
                        notify(&[sd_notify::NotifyState::Watchdog]);
                    } else {
                        tracing::warn!("unhealthy: not pinging the systemd watchdog");
                    }
                }
            }
        }
    });
}
