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

use comfy_multi::queue::{Job, Queue, Status};
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use support::cluster::{participant, sleep_prompt, Cluster, Proc, Spec};
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

/// Starts `n` private ComfyUIs side by side (each takes ~10 s to start).
fn start_comfyuis(n: usize) -> Vec<ComfyUi> {
    std::thread::scope(|s| {
        let starting: Vec<_> = (0..n).map(|_| s.spawn(ComfyUi::start)).collect();
        starting.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn urls(comfys: &[ComfyUi]) -> Vec<String> {
    comfys.iter().map(|c| c.url.clone()).collect()
}

/// Waits until at least `at_least` of `acked` run (as the queue sees it)
/// and returns the running ones.
async fn wait_running(
    c: &Cluster,
    q: &Queue,
    acked: &[(String, String)],
    at_least: usize,
) -> Vec<Job> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut running = vec![];
        for (_, id) in acked {
            if let Some(j) = q.job(id).await.unwrap() {
                if j.status == Status::Running {
                    running.push(j);
                }
            }
        }
        if running.len() >= at_least {
            return running;
        }
        assert!(
            Instant::now() < deadline,
            "{at_least} jobs did not start\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many lines of `proc`'s log (all its runs) contain every one of
/// `needles`.
fn log_lines(proc: &Proc, needles: &[&str]) -> usize {
    proc.log_tail(usize::MAX)
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// Waits until `proc`'s log has at least `n` lines with every one of
/// `needles`; the time it took, or `None` after `timeout`.
async fn wait_log(proc: &Proc, needles: &[&str], n: usize, timeout: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if log_lines(proc, needles) >= n {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
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
    println!("{}: {jepsen:?}\n  {:?}", record.id, record.measures);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_killed_mid_run_and_restarted_loses_nothing_while_workers_reconnect_and_frontends_keep_working(
) {
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let comfys = start_comfyuis(2);
    // Leases outlive the outage, so running jobs should ride it out.
    let spec = Spec {
        participants: 3,
        comfyuis: urls(&comfys),
        lease_ms: 6000,
        ..Spec::default()
    };
    let mut c = Cluster::start(&spec).await;
    let n0 = seed % 1000 * 100;
    // Two jobs longer than a lease keep both workers busy; short ones wait.
    let mut acked = submit_all(&c, 2, 1, 8.0, n0).await;
    let q = c.queue().await;
    let running = wait_running(&c, &q, &acked, 2).await;
    acked.extend(submit_all(&c, 3, 1, 1.0, n0 + 10).await);
    tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
    let outage = Duration::from_millis(rng.random_range(1000..2000));
    let t0 = Instant::now();
    c.hub.kill9();
    // The participants carry on: job lists and submits need no hub.
    let mut lists_ok = 0;
    let mut submits_ok = 0;
    for i in 0..3 {
        let u = participant(i);
        lists_ok += usize::from(c.jobs(&u).await.is_ok());
        match c.submit(&u, &sleep_prompt(1.0, n0 + 20 + i as u64)).await {
            Ok(id) => {
                submits_ok += 1;
                acked.push((u, id));
            }
            Err(e) => println!("{u}'s submit during the hub outage: {e}"),
        }
    }
    tokio::time::sleep(outage.saturating_sub(t0.elapsed())).await;
    let down = t0.elapsed();
    c.hub.start();
    let back = Instant::now();
    c.wait_hub().await;
    // Each worker says hello again (2 connects before the kill, 2 after).
    let reconnected = wait_log(&c.hub, &["worker connected"], 4, Duration::from_secs(60))
        .await
        .map(|_| back.elapsed());
    let interrupted: Vec<(String, String)> = running
        .iter()
        .map(|j| (j.participant.clone(), j.id.clone()))
        .collect();
    let recovery = c
        .first_finish_after(&interrupted, t0, Duration::from_secs(60))
        .await;
    let mut jepsen = c.settle(&acked, Duration::from_secs(120)).await;
    jepsen.recovery_ms = recovery.map(|d| d.as_millis() as u64);
    let mut rode_out = true;
    for j in &running {
        let after = q.job(&j.id).await.unwrap().unwrap();
        println!(
            "interrupted job {} on {:?}: finished on {:?}, attempts {}",
            j.id, j.worker, after.worker, after.attempts
        );
        rode_out &= after.worker == j.worker && after.attempts == 0;
    }
    let record = Record::new(
        Section::Fault,
        "fault-2-hub-sigkill",
        "SIGKILL the hub mid-run and restart it on the same port",
    )
    .setup(format!(
        "3 participants via their frontends: 2 jobs of 8 s running on 2 worker agents (2 CPU ComfyUIs), 3 jobs of 1 s waiting, 3 more submitted during the outage; lease {} ms; hub down {}; recovery = from the kill to the first of the running jobs finishing",
        spec.lease_ms,
        ms(down)
    ))
    .measure("hub down", ms(down))
    .measure(
        "both workers reconnected, after the restart",
        reconnected.map_or("never".into(), ms),
    )
    .measure("submits acknowledged during the outage", format!("{submits_ok}/3"))
    .measure("job lists answered during the outage", format!("{lists_ok}/3"));
    let record = Record {
        seed: Some(seed),
        ..record
    };
    report_and_check(
        record,
        jepsen,
        &[
            (
                "every frontend listed jobs and acknowledged a submit while the hub was down",
                lists_ok == 3 && submits_ok == 3,
            ),
            (
                "both workers reconnected to the restarted hub by themselves",
                reconnected.is_some(),
            ),
            (
                "the jobs running at the kill finished on their worker without a rerun (their leases rode out the outage)",
                rode_out,
            ),
        ],
        &c,
    );
}
