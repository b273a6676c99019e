//! The dashboard's chart needs history the queue does not keep: how deep
//! the queue was and how long jobs had been waiting, over the last hour.
//! A background task of the hub samples the queue every 15 s into a ring
//! buffer in memory (240 entries = 1 hour; lost on restart, which is fine
//! for a live chart) served at `GET /admin/api/samples`.

use crate::clock::now_ms;
use crate::error::AppError;
use crate::hub::HubState;
use crate::queue::Queue;
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the queue is sampled.
pub const INTERVAL: Duration = Duration::from_secs(15);
/// How many samples are kept (one hour at [`INTERVAL`]).
pub const CAPACITY: usize = 240;

/// The queue at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    /// Jobs waiting (not yet leased).
    pub waiting: u64,
    /// Median of how long the waiting jobs had waited so far (0 when none).
    pub median_wait_s: f64,
}

/// The ring buffer shared by the sampler and the API (oldest first).
pub type Samples = Arc<Mutex<VecDeque<Sample>>>;

/// The median of `values` (0 for none; the mean of the middle two for an
/// even count). Sorts `values`.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// A sample of the jobs waiting now, from their creation times.
pub fn sample(now_ms: u64, created_ms: impl IntoIterator<Item = u64>) -> Sample {
    let mut waits: Vec<f64> = created_ms
        .into_iter()
        .map(|c| now_ms.saturating_sub(c) as f64 / 1000.0)
        .collect();
    Sample {
        at_ms: now_ms,
        waiting: waits.len() as u64,
        median_wait_s: median(&mut waits),
    }
}

/// Appends `s`, dropping the oldest beyond [`CAPACITY`].
pub fn push(buf: &mut VecDeque<Sample>, s: Sample) {
    buf.push_back(s);
    while buf.len() > CAPACITY {
        buf.pop_front();
    }
}

/// Samples the queue every `interval` (the first one at once) until
/// `shutdown`. A failed read (Redis away) skips that sample.
pub async fn run(queue: Queue, samples: Samples, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match queue.snapshot(1).await {
            Ok(snap) => {
                let s = sample(now_ms(), snap.waiting.iter().map(|w| w.created_ms));
                if let Ok(mut buf) = samples.lock() {
                    push(&mut buf, s);
                }
            }
            Err(e) => tracing::debug!("sampling the queue: {e}"),
        }
    }
}

/// `GET /admin/api/samples`: the last hour, oldest first.
pub async fn list(State(s): State<HubState>) -> Result<Json<Value>, AppError> {
    let samples: Vec<Sample> = s
        .samples
        .lock()
        .map_err(|_| AppError::internal("samples lock poisoned"))?
        .iter()
        .cloned()
        .collect();
    Ok(Json(json!({
        "interval_s": INTERVAL.as_secs(),
        "capacity": CAPACITY,
        "samples": samples,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_odd_even_and_no_values() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [7.0]), 7.0);
        assert_eq!(median(&mut [9.0, 1.0, 5.0]), 5.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [1.0, 100.0, 2.0, 3.0, 1000.0]), 3.0);
    }

    #[test]
    fn a_sample_counts_waiting_jobs_and_their_median_wait() {
        let now = 1_000_000;
        let s = sample(now, [now - 10_000, now - 30_000, now - 20_000]);
        assert_eq!(s.at_ms, now);
        assert_eq!(s.waiting, 3);
        assert_eq!(s.median_wait_s, 20.0);
        let empty = sample(now, []);
        assert_eq!((empty.waiting, empty.median_wait_s), (0, 0.0));
        // A clock a little behind a job's creation time: no negative wait.
        assert_eq!(sample(now, [now + 500]).median_wait_s, 0.0);
    }

    #[test]
    fn the_ring_keeps_the_last_hour() {
        let mut buf = VecDeque::new();
        for i in 0..(CAPACITY as u64 + 10) {
            push(
                &mut buf,
                Sample {
                    at_ms: i,
                    waiting: i,
                    median_wait_s: 0.0,
                },
            );
        }
        assert_eq!(buf.len(), CAPACITY);
        assert_eq!(buf.front().unwrap().at_ms, 10, "the oldest dropped");
        assert_eq!(buf.back().unwrap().at_ms, CAPACITY as u64 + 9);
        assert_eq!(
            CAPACITY as u64 * INTERVAL.as_secs(),
            3600,
            "one hour of samples"
        );
    }
}
