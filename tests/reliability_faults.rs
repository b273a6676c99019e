//! Fault scenarios of the reliability suite: a workshop of real processes
//! (redis-server with AOF, `comfy-multi serve`, a `comfy-multi frontend` per
//! participant, `comfy-multi worker` agents on real CPU ComfyUIs) with jobs
//! of controlled duration in flight, one process killed or frozen, and the
//! outcome counted the Jepsen way from the participants' side: submitted,
//! succeeded, failed, cancelled, **lost** and **duplicated** (both must be
//! 0), and the time to recover.
//!
//! Why this exists: a workshop has one shot. Each scenario writes a report
//! record (`tests/support/report.rs`) before it asserts, and
//! `scripts/reliability.sh` renders `docs/RELIABILITY.md` from them. A
//! scenario's seed (printed; `COMFY_MULTI_SEED` replays it) picks the victim
//! and the moment.

mod support;
mod support_comfyui;

use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use support::cluster::{participant, sleep_prompt, Cluster, Spec};
use support::report::{Jepsen, Record, Section};
use support_comfyui::ComfyUi;

/// Scenarios time leases against real processes on a small machine: one
/// at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn seed() -> u64 {
    let seed = std::env::var("COMFY_MULTI_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed: {seed} (COMFY_MULTI_SEED={seed} replays it)");
    seed
}

/// Every participant submits `per_user` sleep jobs of `seconds` through
/// their own frontend; returns the acknowledged (participant, prompt id).
async fn submit_all(
    c: &Cluster,
    users: usize,
    per_user: usize,
    seconds: f64,
    n0: u64,
) -> Vec<(String, String)> {
    let mut acked = vec![];
    for k in 0..per_user {
        for i in 0..users {
            let u = participant(i);
            let n = n0 + (k * users + i) as u64;
            let id = c
                .submit(&u, &sleep_prompt(seconds, n))
                .await
                .unwrap_or_else(|e| panic!("{u}'s submit was refused: {e}"));
            acked.push((u, id));
        }
    }
    acked
}

/// Writes the record, then asserts the two numbers that must be zero, that
/// everything submitted succeeded, and the scenario's own `checks`
/// (description, held).
fn report_and_check(mut record: Record, jepsen: Jepsen, checks: &[(&str, bool)], c: &Cluster) {
    record.passed = jepsen.lost == 0
        && jepsen.duplicated == 0
        && jepsen.succeeded == jepsen.submitted
        && jepsen.recovery_ms.is_some()
        && checks.iter().all(|(_, ok)| *ok);
    println!("{}: {jepsen:?}", record.id);
    record.jepsen = Some(jepsen.clone());
    record.write();
    assert_eq!(jepsen.lost, 0, "lost jobs: {jepsen:?}\n{}", c.logs());
    assert_eq!(jepsen.duplicated, 0, "duplicated: {jepsen:?}\n{}", c.logs());
    assert_eq!(
        jepsen.succeeded,
        jepsen.submitted,
        "not every job succeeded: {jepsen:?}\n{}",
        c.logs()
    );
    assert!(
        jepsen.recovery_ms.is_some(),
        "nothing finished after the fault"
    );
    for (what, ok) in checks {
        assert!(ok, "{what}\n{}", c.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_loses_nothing_and_its_job_finishes_on_the_other_worker() {
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let comfys = [ComfyUi::start(), ComfyUi::start()];
    let spec = Spec {
        participants: 3,
        comfyuis: comfys.iter().map(|c| c.url.clone()).collect(),
        ..Spec::default()
    };
    let mut c = Cluster::start(&spec).await;
    let acked = submit_all(&c, 3, 3, 1.5, seed % 1000 * 100).await;
    let q = c.queue().await;
    // Wait until some jobs run, plus a seeded moment into them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let mut running = vec![];
        for (_, id) in &acked {
            if let Some(j) = q.job(id).await.unwrap() {
                if j.status == comfy_multi::queue::Status::Running {
                    running.push(j);
                }
            }
        }
        if !running.is_empty() {
            break running;
        }
        assert!(Instant::now() < deadline, "no job started\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
    let victim_job = &running[rng.random_range(0..running.len())];
    let victim = victim_job
        .worker
        .clone()
        .expect("a running job has a worker");
    let index: usize = victim.trim_start_matches("gpu").parse().unwrap();
    let t0 = Instant::now();
    c.workers[index].kill9();
    // Recovered when the killed worker's own job has finished.
    let victim_entry = [(victim_job.participant.clone(), victim_job.id.clone())];
    let recovery = c
        .first_finish_after(&victim_entry, t0, Duration::from_secs(60))
        .await;
    let mut jepsen = c.settle(&acked, Duration::from_secs(180)).await;
    jepsen.recovery_ms = recovery.map(|d| d.as_millis() as u64);
    let after = q.job(&victim_job.id).await.unwrap().unwrap();
    let record = Record::new(
        Section::Fault,
        "fault-1-worker-sigkill",
        "SIGKILL a worker agent mid-job (two workers)",
    )
    .setup(format!(
        "3 participants × 3 jobs of 1.5 s via their frontends; 2 worker agents on 2 CPU ComfyUIs; lease {} ms; {victim} killed while running job {}",
        spec.lease_ms, victim_job.id
    ))
    .measure("victim job finished on", after.worker.clone().unwrap_or_default());
    let record = Record {
        seed: Some(seed),
        ..record
    };
    let moved = after.worker.as_deref() != Some(victim.as_str());
    report_and_check(
        record,
        jepsen,
        &[(
            "the killed worker's job finished on the other worker",
            moved,
        )],
        &c,
    );
}
