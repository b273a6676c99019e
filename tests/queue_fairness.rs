//! Fairness of the scheduling policies, measured on the real scripts with
//! simulated GPU time: each test prints its numbers and asserts bounds.

mod support;

use comfy_multi::queue::{Mode, Queue};
use std::collections::HashMap;
use support::{job, queue, test_settings, RedisServer};

fn name(i: usize) -> String {
    format!("user{i:02}")
}

/// Leases one job and completes it at once, charging `secs(participant)`.
async fn run_one(q: &Queue, secs: &dyn Fn(&str) -> f64) -> Option<String> {
    let l = q.lease("gpu0").await.unwrap()?;
    support::complete(q, &l, secs(&l.participant)).await;
    Some(l.participant)
}

/// Jain's fairness index: 1 when all equal, 1/n when one takes everything.
fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    sum * sum / (xs.len() as f64 * sq)
}

#[tokio::test]
async fn under_round_robin_nobody_waits_behind_more_than_one_job_of_each_other_participant() {
    let redis = RedisServer::start();
    let q = queue(&redis, test_settings()).await;
    q.set_mode(Mode::RoundRobin).await.unwrap();
    // The heavy participant submits all 100 first, then 19 others 5 each.
    for n in 0..100 {
        q.enqueue(job(&name(0), n)).await.unwrap();
    }
    for p in 1..20 {
        for n in 0..5 {
            q.enqueue(job(&name(p), 1000 + (p * 10 + n) as u64))
                .await
                .unwrap();
        }
    }
    let mut served: HashMap<String, usize> = HashMap::new();
    let mut worst = 0usize;
    while let Some(p) = run_one(&q, &|_| 1.0).await {
        let k = served.get(&p).copied().unwrap_or(0) + 1;
        // Before p's k-th job, every other participant got at most k jobs.
        for (other, n) in &served {
            if *other != p {
                worst = worst.max(n.saturating_sub(k - 1));
                assert!(*n <= k, "{p}'s job #{k} waited behind {n} jobs of {other}");
            }
        }
        served.insert(p, k);
    }
    println!(
        "round_robin: 195 jobs, at most {worst} job(s) of any other participant ahead of each job"
    );
    assert_eq!(served.values().sum::<usize>(), 195);
}

async fn gpu_seconds_share(mode: Mode) -> (f64, Vec<f64>) {
    let redis = RedisServer::start();
    let q = queue(&redis, test_settings()).await;
    q.set_mode(mode).await.unwrap();
    // Ten participants, all backlogged, whose jobs take 1 s … 10 s.
    let secs = |p: &str| p[4..].parse::<f64>().unwrap() + 1.0;
    for p in 0..10 {
        for n in 0..40 {
            q.enqueue(job(&name(p), (p * 100 + n) as u64))
                .await
                .unwrap();
        }
    }
    let mut used = vec![0.0; 10];
    let mut count = [0usize; 10];
    // Measure while everyone is still backlogged.
    while count.iter().all(|c| *c < 40) {
        let p = run_one(&q, &secs).await.unwrap();
        let i: usize = p[4..].parse().unwrap();
        used[i] += secs(&p);
        count[i] += 1;
    }
    (jain(&used), used)
}

#[tokio::test]
async fn under_fair_share_backlogged_participants_get_equal_gpu_time() {
    let (fair, used) = gpu_seconds_share(Mode::FairShare).await;
    let (rr, rr_used) = gpu_seconds_share(Mode::RoundRobin).await;
    println!("fair_share: Jain index {fair:.3} over GPU-seconds {used:?}");
    println!("round_robin (for comparison): Jain index {rr:.3} over GPU-seconds {rr_used:?}");
    assert!(fair >= 0.95, "fair_share Jain index {fair:.3} < 0.95");
    assert!(fair > rr, "fair_share beats round_robin on GPU time");
}

#[tokio::test]
async fn a_late_joiner_is_served_within_one_round_and_does_not_take_over() {
    for mode in [Mode::FairShare, Mode::RoundRobin] {
        let redis = RedisServer::start();
        let q = queue(&redis, test_settings()).await;
        q.set_mode(mode).await.unwrap();
        for p in 0..10 {
            for n in 0..30 {
                q.enqueue(job(&name(p), (p * 100 + n) as u64))
                    .await
                    .unwrap();
            }
        }
        // The room has been busy for a while before the late joiner arrives.
        for _ in 0..60 {
            run_one(&q, &|_| 2.0).await.unwrap();
        }
        for n in 0..20 {
            q.enqueue(job("late", 9000 + n)).await.unwrap();
        }
        let mut first = None;
        let mut late_share = 0;
        for i in 0..33 {
            if run_one(&q, &|_| 2.0).await.unwrap() == "late" {
                first.get_or_insert(i + 1);
                late_share += 1;
            }
        }
        println!("{mode}: late joiner first served after {first:?} leases, got {late_share} of the next 33 (fair: 3)");
        let first = first.expect("late joiner served");
        assert!(
            first <= 11,
            "{mode}: late joiner waited {first} leases (> one round of 11)"
        );
        assert!(
            late_share <= 4,
            "{mode}: late joiner took {late_share} of 33 leases"
        );
    }
}

#[tokio::test]
async fn weights_give_a_participant_a_larger_share_under_fair_share() {
    let redis = RedisServer::start();
    let q = queue(&redis, test_settings()).await;
    q.set_mode(Mode::FairShare).await.unwrap();
    q.set_weight("user00", 3.0).await.unwrap();
    for p in 0..2 {
        for n in 0..60 {
            q.enqueue(job(&name(p), (p * 100 + n) as u64))
                .await
                .unwrap();
        }
    }
    let mut count = [0usize; 2];
    for _ in 0..40 {
        let p = run_one(&q, &|_| 1.0).await.unwrap();
        count[p[4..].parse::<usize>().unwrap()] += 1;
    }
    println!("weights 3:1 → jobs served {count:?}");
    assert!((28..=32).contains(&count[0]), "{count:?}");
}
