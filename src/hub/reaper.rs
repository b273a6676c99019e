//! The lease reaper: periodically hands expired leases back to the queue
//! (or fails them after too many attempts). Safe to run in several hubs at
//! once: each pass is one atomic script. A job that ends here (failed after
//! too many attempts, or cancelled meanwhile) has its attempts' uploaded
//! outputs removed, as a job that ends at a worker's report has those its
//! result does not name.

use crate::queue::{Expiry, Queue};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(
    queue: Queue,
    state_dir: std::path::PathBuf,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match queue.requeue_expired().await {
            Ok(done) => {
                for (job, what) in done {
                    if what != Expiry::Requeued {
                        if let Ok(Some(j)) = queue.job(&job).await {
                            super::files::discard_unrecorded_outputs(&state_dir, &j).await;
                        }
                    }
                    match what {
                        Expiry::Requeued => tracing::warn!(%job, "lease expired; job requeued"),
                        Expiry::Failed => {
                            tracing::warn!(%job, "lease expired too often; job failed")
                        }
                        Expiry::Cancelled => {
                            tracing::info!(%job, "lease expired on a cancelled job")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("reaper: {e}"),
        }
    }
}
