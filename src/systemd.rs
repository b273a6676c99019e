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

/// When systemd asked for a watchdog (`WATCHDOG_USEC`), pings it at half the
/// interval for as long as `healthy()` says so; a hung or unhealthy process
/// stops pinging and systemd restarts it.
pub fn spawn_watchdog<F, Fut>(shutdown: CancellationToken, healthy: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
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
