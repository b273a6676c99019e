//! Many concurrent submitters and leasers over thousands of jobs: no job is
//! held by two workers at once, none is lost, none completes twice — also
//! when workers abandon jobs and the reaper hands them to others.

mod support;

use comfy_multi::queue::{Outcome, Queue, Refusal, Status};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{job, queue, test_settings, RedisServer};

const SUBMITTERS: usize = 8;
const LEASERS: usize = 8;
const JOBS_PER_SUBMITTER: usize = 400;

async fn submit_all(q: &Queue) -> Vec<String> {
    let mut tasks = vec![];
    for s in 0..SUBMITTERS {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = vec![];
            for n in 0..JOBS_PER_SUBMITTER {
                let who = format!("user{:02}", (s * 3 + n) % 20);
                ids.push(
                    q.enqueue(job(&who, (s * 100_000 + n) as u64))
                        .await
                        .unwrap()
                        .id,
                );
            }
            ids
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_leasers_never_share_a_job_and_lose_none() {
    let redis = RedisServer::start();
    let q = queue(&redis, test_settings()).await;
    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    let finished: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let submitted = Arc::new(AtomicUsize::new(0));
    let total = SUBMITTERS * JOBS_PER_SUBMITTER;

    let submit = {
        let q = q.clone();
        let submitted = submitted.clone();
        tokio::spawn(async move {
            let ids = submit_all(&q).await;
            submitted.store(ids.len(), Ordering::SeqCst);
            ids
        })
    };
    let mut leasers = vec![];
    for w in 0..LEASERS {
        let (q, held, finished) = (q.clone(), held.clone(), finished.clone());
        leasers.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            loop {
                let done: usize = finished.lock().unwrap().values().sum();
                if done >= total {
                    break;
                }
                let Some(l) = q.lease(&worker).await.unwrap() else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                };
                assert!(
                    held.lock().unwrap().insert(l.job_id.clone()),
                    "job {} leased to two workers at once",
                    l.job_id
                );
                support::complete(&q, &l, 0.01).await;
                held.lock().unwrap().remove(&l.job_id);
                *finished.lock().unwrap().entry(l.job_id).or_default() += 1;
            }
        }));
    }
    let ids = submit.await.unwrap();
    for l in leasers {
        l.await.unwrap();
    }
    let finished = finished.lock().unwrap().clone();
    println!("{} jobs submitted, {} completed", ids.len(), finished.len());
    assert_eq!(ids.len(), total);
    assert_eq!(finished.len(), total, "every job completed");
    assert!(finished.values().all(|n| *n == 1), "no job completed twice");
    for id in ids.iter().step_by(97) {
        assert_eq!(q.job(id).await.unwrap().unwrap().status, Status::Succeeded);
    }
    let c = q.counts().await.unwrap();
    assert_eq!(
        (c.waiting, c.leased_or_running, c.succeeded),
        (0, 0, total as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abandoned_jobs_are_rerun_and_each_completes_exactly_once() {
    let redis = RedisServer::start();
    let mut settings = test_settings();
    settings.lease_ms = 150;
    settings.max_attempts = 1000;
    let q = queue(&redis, settings).await;
    let ids = submit_all(&q).await;
    let total = ids.len();
    let successes: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let stale = Arc::new(AtomicUsize::new(0));
    let abandoned = Arc::new(AtomicUsize::new(0));

    let stop = tokio_util::sync::CancellationToken::new();
    let reaper = {
        let (q, stop) = (q.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                q.requeue_expired().await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut leasers = vec![];
    for w in 0..LEASERS {
        let (q, successes, stale, abandoned) = (
            q.clone(),
            successes.clone(),
            stale.clone(),
            abandoned.clone(),
        );
        leasers.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut n = 0u64;
            loop {
                if successes.lock().unwrap().len() >= total {
                    break;
                }
                let Some(l) = q.lease(&worker).await.unwrap() else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                n += 1;
                if n % 20 == (w as u64) % 20 {
                    // This worker "dies" with the job; the reaper must notice.
                    abandoned.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if n % 50 == 7 {
                    // A slow worker: its lease expires before it reports.
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                match q
                    .finish(
                        &l.job_id,
                        l.token,
                        Outcome::Succeeded,
                        &json!({}),
                        None,
                        Some(0.01),
                    )
                    .await
                {
                    Ok(()) => *successes.lock().unwrap().entry(l.job_id).or_default() += 1,
                    Err(e) if e.refusal() == Some(Refusal::StaleToken) => {
                        stale.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("unexpected: {e}"),
                }
            }
        }));
    }
    for l in leasers {
        tokio::time::timeout(Duration::from_secs(240), l)
            .await
            .expect("all jobs complete")
            .unwrap();
    }
    stop.cancel();
    reaper.await.unwrap();
    let successes = successes.lock().unwrap().clone();
    println!(
        "{total} jobs, {} abandoned by workers, {} late reports refused, {} completed",
        abandoned.load(Ordering::Relaxed),
        stale.load(Ordering::Relaxed),
        successes.len()
    );
    assert!(abandoned.load(Ordering::Relaxed) > 0);
    assert_eq!(successes.len(), total, "no job lost");
    assert!(
        successes.values().all(|n| *n == 1),
        "no job completed twice"
    );
    for id in &ids {
        assert_eq!(q.job(id).await.unwrap().unwrap().status, Status::Succeeded);
    }
}
