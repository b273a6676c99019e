//! Durability: SIGKILL the redis-server in the middle of a stream of submits
//! and restart it on the same data directory (AOF, `appendfsync always`):
//! every submit that was acknowledged is still there, and the queue's
//! connection comes back by itself.

mod support;

use comfy_multi::queue::Status;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{job, queue, test_settings, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_submit_survives_a_redis_crash() {
    let mut redis = RedisServer::start();
    let q = queue(&redis, test_settings()).await;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(Mutex::new(0usize));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut submitters = vec![];
    for s in 0..4 {
        let (q, acked, refused, stop) = (q.clone(), acked.clone(), refused.clone(), stop.clone());
        submitters.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                match q.enqueue(job(&format!("user{s}"), s * 1_000_000 + n)).await {
                    Ok(e) => acked.lock().unwrap().push(e.id),
                    Err(_) => {
                        *refused.lock().unwrap() += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before_crash = acked.lock().unwrap().len();
    redis.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    // Submits resume on the same handle, without reconnecting by hand.
    let resumed_from = acked.lock().unwrap().len();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < resumed_from + 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "submits did not resume after restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    for s in submitters {
        s.await.unwrap();
    }
    // A second crash after the last ack, then check everything.
    redis.restart();
    let acked = acked.lock().unwrap().clone();
    println!(
        "{before_crash} acked before the crash, {} in all, {} refused while Redis was down",
        acked.len(),
        refused.lock().unwrap()
    );
    assert!(before_crash > 20, "the test ran submits before the crash");
    let mut lost = 0;
    for id in &acked {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let stored = loop {
            match q.job(id).await {
                Ok(j) => break j,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("redis did not come back: {e}"),
            }
        };
        match stored {
            Some(j) => assert_eq!(j.status, Status::Queued),
            None => lost += 1,
        }
    }
    assert_eq!(lost, 0, "{lost} acknowledged submits lost");
    let c = q.counts().await.unwrap();
    assert!(c.waiting >= acked.len() as u64);
}
