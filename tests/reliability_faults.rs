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
use support::cluster::{is_final, participant, sleep_prompt, submit_to, Cluster, Proc, Spec};
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
        &[
            (
                "the killed worker's job finished on the other worker",
                moved,
            ),
            (
                "the killed worker's job was requeued once (attempts 1)",
                after.attempts == 1,
            ),
        ],
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

/// Polls `user`'s job list until job `id` is final there; the time since
/// `since` (the fault), or `None` after `timeout`. Unlike
/// [`Cluster::first_finish_after`] it also counts a job that finished
/// while the participant's frontend was down.
async fn finished_after(
    c: &Cluster,
    user: &str,
    id: &str,
    since: Instant,
    timeout: Duration,
) -> Option<Duration> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let jobs = c.jobs(user).await.unwrap_or_default();
        let done = jobs.iter().any(|j| j["id"] == id && is_final(j));
        if done {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Hidden upload temp files (`.upload-…`) in `user`'s folder.
fn upload_temps(c: &Cluster, user: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(c.state_dir.join("users").join(user))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".upload-"))
        .map(|e| e.path())
        .collect()
}

/// `POST <frontend>/api/upload/image` of `name` as `user`, the multipart
/// body streamed in 64 KiB chunks every 5 ms (about 12 MB/s, up to
/// `total` bytes): slow enough for a kill to land mid-body.
async fn slow_upload(c: &Cluster, user: &str, name: &str, total: usize) -> Result<String, String> {
    let f = c.frontend(user);
    let boundary = "cm-fault-boundary-7f3a";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let chunk = bytes::Bytes::from(vec![0x5a_u8; 64 * 1024]);
    let body = async_stream::stream! {
        yield Ok::<_, std::io::Error>(bytes::Bytes::from(head));
        let mut sent = 0;
        while sent < total {
            tokio::time::sleep(Duration::from_millis(5)).await;
            sent += chunk.len();
            yield Ok(chunk.clone());
        }
        yield Ok(bytes::Bytes::from(tail));
    };
    let r = c
        .http
        .post(format!("{}/api/upload/image", f.base))
        .bearer_auth(&f.token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{status} {text}"))
    }
}

/// A small complete upload of `name` as `user`; the stored name.
async fn upload(c: &Cluster, user: &str, name: &str, data: Vec<u8>) -> Result<String, String> {
    let f = c.frontend(user);
    let part = reqwest::multipart::Part::bytes(data)
        .file_name(name.to_string())
        .mime_str("image/png")
        .unwrap();
    let form = reqwest::multipart::Form::new().part("image", part);
    let r = c
        .http
        .post(format!("{}/api/upload/image", f.base))
        .bearer_auth(&f.token)
        .multipart(form)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    match v["name"].as_str() {
        Some(n) if status.is_success() => Ok(n.to_string()),
        _ => Err(format!("{status} {v}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_killed_mid_upload_and_mid_job_comes_back_with_the_job_and_its_output_and_no_partial_upload(
) {
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let comfys = start_comfyuis(1);
    let spec = Spec {
        participants: 2,
        comfyuis: urls(&comfys),
        ..Spec::default()
    };
    let mut c = Cluster::start(&spec).await;
    let victim = participant(rng.random_range(0..2));
    let n0 = seed % 1000 * 100;
    let mut acked = submit_all(&c, 2, 1, 3.0, n0).await;
    for k in 0..2 {
        let id = c
            .submit(&victim, &sleep_prompt(3.0, n0 + 10 + k))
            .await
            .unwrap();
        acked.push((victim.clone(), id));
    }
    let q = c.queue().await;
    let mine: Vec<(String, String)> = acked
        .iter()
        .filter(|(u, _)| *u == victim)
        .cloned()
        .collect();
    let job = wait_running(&c, &q, &mine, 1).await.remove(0);
    // A 200 MiB upload in flight: kill once the frontend is writing it.
    let name = format!("fault3-{seed}.png");
    let (upload_result, (t0, temp_seen, down)) =
        tokio::join!(slow_upload(&c, &victim, &name, 200 << 20), async {
            let deadline = Instant::now() + Duration::from_secs(30);
            let writing = loop {
                let bytes: u64 = upload_temps(&c, &victim)
                    .iter()
                    .filter_map(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum();
                if bytes > 0 || Instant::now() > deadline {
                    break bytes > 0;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..500))).await;
            let pid = c.frontend(&victim).proc.pid().unwrap();
            let t0 = Instant::now();
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
            (
                t0,
                writing,
                Duration::from_millis(rng.random_range(300..1500)),
            )
        });
    // Reap the killed process, stay down a moment, start it on its port.
    c.frontend_mut(&victim).proc.kill9();
    let status_at_kill = q.job(&job.id).await.unwrap().unwrap().status;
    tokio::time::sleep(down.saturating_sub(t0.elapsed())).await;
    let down = t0.elapsed();
    c.frontend_mut(&victim).proc.start();
    c.wait_frontend(&victim).await;
    let answering = t0.elapsed();
    let recovery = finished_after(&c, &victim, &job.id, t0, Duration::from_secs(60)).await;
    // The job and its output, seen through the restarted frontend.
    let listed = c.jobs(&victim).await.unwrap();
    let entry = listed.iter().find(|j| j["id"] == job.id.as_str()).cloned();
    let out = entry
        .as_ref()
        .map(|e| e["preview_output"].clone())
        .unwrap_or_default();
    let on_disk = c
        .state_dir
        .join("users")
        .join(&victim)
        .join("output")
        .join(out["subfolder"].as_str().unwrap_or(""))
        .join(out["filename"].as_str().unwrap_or("-"));
    let f = c.frontend(&victim);
    let viewed = c
        .http
        .get(format!("{}/api/view", f.base))
        .query(&[
            ("filename", out["filename"].as_str().unwrap_or("")),
            ("subfolder", out["subfolder"].as_str().unwrap_or("")),
            ("type", "output"),
        ])
        .bearer_auth(&f.token)
        .send()
        .await
        .unwrap();
    let view_status = viewed.status();
    let view_bytes = viewed.bytes().await.unwrap_or_default();
    let output_served = view_status.is_success()
        && !view_bytes.is_empty()
        && std::fs::read(&on_disk).is_ok_and(|d| d == view_bytes);
    // The interrupted upload: not in the file list, not among the uploads
    // LoadImage offers, not on disk; its name is free for a retry.
    let listed_inputs = c.get(&victim, "/internal/files/input").await.unwrap();
    let catalogue = c
        .get(&victim, "/api/object_info")
        .await
        .unwrap()
        .to_string();
    let partial_visible = listed_inputs.as_array().is_none_or(|a| !a.is_empty())
        || catalogue.contains(&name)
        || c.state_dir
            .join("users")
            .join(&victim)
            .join("input")
            .join(&name)
            .exists();
    let temps_left = upload_temps(&c, &victim).len();
    let retried = upload(&c, &victim, &name, b"\x89PNG\r\n\x1a\nretry".to_vec()).await;
    println!("upload during the kill: {upload_result:?}; retry: {retried:?}; temp files left: {temps_left}");
    let mut jepsen = c.settle(&acked, Duration::from_secs(120)).await;
    jepsen.recovery_ms = recovery.map(|d| d.as_millis() as u64);
    let record = Record::new(
        Section::Fault,
        "fault-3-frontend-sigkill",
        "SIGKILL a participant's frontend during an upload and a running job, restart it on the same port",
    )
    .setup(format!(
        "2 participants via their frontends, 4 jobs of 3 s on 1 worker agent (1 CPU ComfyUI); {victim}'s frontend killed while its job {} was {:?} and a 200 MiB upload was streaming in; down {}; recovery = from the kill to the restarted frontend listing that job as finished",
        job.id,
        status_at_kill,
        ms(down)
    ))
    .measure("frontend down", ms(down))
    .measure("answering again after the kill", ms(answering))
    .measure("upload temp files left after the restart", temps_left);
    let record = Record {
        seed: Some(seed),
        ..record
    };
    report_and_check(
        record,
        jepsen,
        &[
            (
                "the kill landed while the frontend was writing the upload",
                temp_seen && upload_result.is_err(),
            ),
            (
                "the restarted frontend lists the job and serves its output with /api/view",
                entry.is_some() && output_served,
            ),
            (
                "the interrupted upload left no file visible (file list, LoadImage list, input folder)",
                !partial_visible,
            ),
            (
                "the restarted frontend removed the interrupted upload's temp file",
                temps_left == 0,
            ),
            (
                "the upload's name is free for a retry",
                retried.as_deref() == Ok(name.as_str()),
            ),
        ],
        &c,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_on_its_data_keeps_every_acknowledged_submit_and_every_process_reconnects(
) {
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let comfys = start_comfyuis(1);
    let spec = Spec {
        participants: 2,
        comfyuis: urls(&comfys),
        ..Spec::default()
    };
    let mut c = Cluster::start(&spec).await;
    let n0 = seed % 1000 * 100;
    let mut acked = submit_all(&c, 2, 2, 1.5, n0).await;
    let q = c.queue().await;
    let job = wait_running(&c, &q, &acked, 1).await.remove(0);
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
    let outage = Duration::from_millis(rng.random_range(1500..3500));
    let t0 = Instant::now();
    c.redis.kill9();
    // Participants keep submitting through the outage (each submit in its
    // own task, as impatient participants would): each answer must be an
    // acknowledgement (kept) or a clear error (not acknowledged).
    let mut attempts = vec![];
    let mut n = n0 + 50;
    while t0.elapsed() < outage {
        for i in 0..2 {
            let u = participant(i);
            let f = c.frontend(&u);
            let (http, base, token) = (c.http.clone(), f.base.clone(), f.token.clone());
            n += 1;
            let prompt = sleep_prompt(1.0, n);
            attempts.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = submit_to(&http, &base, &token, &format!("{u}-load"), &prompt).await;
                (u, r, t.elapsed())
            }));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let down = t0.elapsed();
    tokio::task::block_in_place(|| c.redis.restart());
    let back = Instant::now();
    let attempted = attempts.len();
    let mut refused_clearly = 0;
    let mut unclear = vec![];
    let mut slowest = Duration::ZERO;
    for a in attempts {
        let (u, r, took) = a.await.unwrap();
        slowest = slowest.max(took);
        match r {
            Ok(id) => acked.push((u, id)),
            Err(e) if e.starts_with("503") && e.contains("unavailable") => refused_clearly += 1,
            Err(e) => unclear.push(e),
        }
    }
    let acked_during = acked.len() - 4;
    // The test's own look behind the scenes reconnects too (its first call
    // after the outage reports the broken connection).
    while !q.ping().await {
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "redis is not back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Everyone reconnects by themselves: a submit through each frontend is
    // acknowledged again (a participant retries as the error told them).
    let mut refused_after = 0;
    let mut resumed = Duration::ZERO;
    for i in 0..2 {
        let u = participant(i);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            n += 1;
            match c.submit(&u, &sleep_prompt(1.0, n)).await {
                Ok(id) => {
                    acked.push((u, id));
                    break;
                }
                Err(e) => {
                    refused_after += 1;
                    assert!(
                        Instant::now() < deadline,
                        "{u} cannot submit after the restart: {e}\n{}",
                        c.logs()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        resumed = resumed.max(back.elapsed());
    }
    let interrupted = [(job.participant.clone(), job.id.clone())];
    let recovery = finished_after(&c, &job.participant, &job.id, t0, Duration::from_secs(60)).await;
    let mut jepsen = c.settle(&acked, Duration::from_secs(120)).await;
    jepsen.recovery_ms = recovery.map(|d| d.as_millis() as u64);
    let none_restarted = c.hub.is_running()
        && c.workers.iter_mut().all(|w| w.is_running())
        && c.frontends.values_mut().all(|f| f.proc.is_running());
    let after = q.job(&interrupted[0].1).await.unwrap().unwrap();
    println!(
        "outage submits: {attempted} attempted, {acked_during} acknowledged, {refused_clearly} refused with 503, unclear: {unclear:?}; interrupted job attempts {}",
        after.attempts
    );
    let record = Record::new(
        Section::Fault,
        "fault-4-redis-sigkill",
        "SIGKILL redis-server and restart it on its data dir (AOF, appendfsync always)",
    )
    .setup(format!(
        "2 participants via their frontends, 4 jobs of 1.5 s on 1 worker agent (1 CPU ComfyUI), submits every 200 ms through the outage; killed while job {} ran; redis down {}; recovery = from the kill to that job finishing",
        job.id,
        ms(down)
    ))
    .measure("redis down", ms(down))
    .measure("submits during the outage", attempted)
    .measure("… acknowledged (answered once redis was back)", acked_during)
    .measure("… refused with 503 \"the queue is unavailable\"", refused_clearly)
    .measure("slowest answer to an outage submit", ms(slowest))
    .measure("submits refused after the restart, before reconnecting", refused_after)
    .measure("every frontend acknowledging again, after the restart", ms(resumed))
    .measure("interrupted job attempts", after.attempts);
    let record = Record {
        seed: Some(seed),
        ..record
    };
    report_and_check(
        record,
        jepsen,
        &[
            (
                "every submit during the outage got an answer: acknowledged or a clear 503",
                unclear.is_empty() && attempted > 0,
            ),
            (
                "hub, frontends and workers reconnected without a restart",
                none_restarted,
            ),
        ],
        &c,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comfyui_killed_mid_job_gets_no_work_while_down_and_the_job_is_retried_once_it_is_back() {
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut comfys = start_comfyuis(1);
    let spec = Spec {
        participants: 2,
        comfyuis: urls(&comfys),
        ..Spec::default()
    };
    let c = Cluster::start(&spec).await;
    let n0 = seed % 1000 * 100;
    let acked = submit_all(&c, 2, 2, 2.0, n0).await;
    let q = c.queue().await;
    let job = wait_running(&c, &q, &acked, 1).await.remove(0);
    tokio::time::sleep(Duration::from_millis(rng.random_range(200..1200))).await;
    let comfy = comfys.pop().unwrap();
    let t0 = Instant::now();
    comfy.crash();
    // The worker hands the job back at once (it does not sit out its lease).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (handed_back, back_attempts) = loop {
        let j = q.job(&job.id).await.unwrap().unwrap();
        if j.status == Status::Queued {
            break (t0.elapsed(), j.attempts);
        }
        assert!(
            Instant::now() < deadline,
            "job not handed back: {j:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // While ComfyUI is down, the worker gets no work to burn attempts on.
    let down_for = Duration::from_millis(rng.random_range(3000..5000));
    tokio::time::sleep(down_for.saturating_sub(t0.elapsed())).await;
    let mut waiting_while_down = true;
    let mut most_attempts = 0;
    for (_, id) in &acked {
        let j = q.job(id).await.unwrap().unwrap();
        if !j.status.is_terminal() {
            waiting_while_down &= j.status == Status::Queued;
            most_attempts = most_attempts.max(j.attempts);
        }
    }
    let down = t0.elapsed();
    let comfy = tokio::task::block_in_place(|| comfy.restart());
    let back = t0.elapsed();
    let recovery = finished_after(&c, &job.participant, &job.id, t0, Duration::from_secs(90)).await;
    let jepsen = c.settle(&acked, Duration::from_secs(120)).await;
    let jepsen = Jepsen {
        recovery_ms: recovery.map(|d| d.as_millis() as u64),
        ..jepsen
    };
    let after = q.job(&job.id).await.unwrap().unwrap();
    let record = Record::new(
        Section::Fault,
        "fault-5-comfyui-kill",
        "Kill ComfyUI (its process group, SIGKILL) mid-job and bring it back on the same port",
    )
    .setup(format!(
        "2 participants via their frontends, 4 jobs of 2 s on 1 worker agent (1 CPU ComfyUI); ComfyUI killed while job {} ran; down {}; recovery = from the kill to that job finishing (includes ComfyUI's restart)",
        job.id,
        ms(down)
    ))
    .measure("job handed back after", ms(handed_back))
    .measure("ComfyUI down", ms(down))
    .measure("ComfyUI answering again after the kill", ms(back))
    .measure("most attempts of a waiting job while down", most_attempts)
    .measure("interrupted job attempts", after.attempts);
    let record = Record {
        seed: Some(seed),
        ..record
    };
    report_and_check(
        record,
        jepsen,
        &[
            (
                "the job came back to the queue with one attempt spent",
                back_attempts == 1,
            ),
            (
                "while ComfyUI was down every unfinished job waited in the queue, at most 2 attempts spent",
                waiting_while_down && most_attempts <= 2,
            ),
            (
                "the interrupted job was retried (attempts ≥ 1) and finished",
                after.attempts >= 1 && after.status == Status::Succeeded,
            ),
        ],
        &c,
    );
    drop(comfy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_past_its_lease_has_its_late_result_refused_and_keeps_serving_after_it_wakes(
) {
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let comfys = start_comfyuis(2);
    let spec = Spec {
        participants: 2,
        comfyuis: urls(&comfys),
        ..Spec::default()
    };
    let c = Cluster::start(&spec).await;
    let n0 = seed % 1000 * 100;
    let mut acked = submit_all(&c, 2, 2, 2.0, n0).await;
    let q = c.queue().await;
    let running = wait_running(&c, &q, &acked, 1).await;
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..1000))).await;
    let job = &running[rng.random_range(0..running.len())];
    let victim = job.worker.clone().expect("a running job has a worker");
    let index: usize = victim.trim_start_matches("gpu").parse().unwrap();
    let t0 = Instant::now();
    c.workers[index].freeze();
    // Its lease runs out; the job runs again on the other worker.
    let entry = [(job.participant.clone(), job.id.clone())];
    let recovery = c
        .first_finish_after(&entry, t0, Duration::from_secs(60))
        .await;
    let done = q.job(&job.id).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
    let frozen = t0.elapsed();
    // Its ComfyUI finished the first run meanwhile: on waking, the worker
    // reports for a lease that has passed on, and is told so.
    c.workers[index].thaw();
    let refused = wait_log(
        &c.workers[index],
        &["lease passed on", &job.id],
        1,
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = q.job(&job.id).await.unwrap().unwrap();
    let first = c.settle(&acked, Duration::from_secs(120)).await;
    // Both workers free: two jobs at once need both, the woken one too.
    let more = submit_all(&c, 2, 1, 1.5, n0 + 50).await;
    acked.extend(more.iter().cloned());
    let mut jepsen = c.settle(&acked, Duration::from_secs(120)).await;
    jepsen.recovery_ms = recovery.map(|d| d.as_millis() as u64);
    let mut woken_served = false;
    for (_, id) in &more {
        let j = q.job(id).await.unwrap().unwrap();
        woken_served |= j.worker.as_deref() == Some(victim.as_str());
    }
    let files = c.output_files(&job.participant).len();
    let record = Record::new(
        Section::Fault,
        "fault-6-worker-sigstop",
        "SIGSTOP a worker agent mid-job past its lease, then SIGCONT it",
    )
    .setup(format!(
        "2 participants via their frontends, 4 jobs of 2 s on 2 worker agents (2 CPU ComfyUIs), 2 more after the wake-up; lease {} ms; {victim} frozen {} while running job {}; recovery = from the freeze to that job finishing on the other worker",
        spec.lease_ms,
        ms(frozen),
        job.id
    ))
    .measure("frozen for", ms(frozen))
    .measure("job re-ran on", done.worker.clone().unwrap_or_default())
    .measure(
        "late report refused, after the wake-up",
        refused.map_or("never".into(), ms),
    );
    let record = Record {
        seed: Some(seed),
        ..record
    };
    println!("first settle before the extra jobs: {first:?}");
    report_and_check(
        record,
        jepsen,
        &[
            (
                "the job re-ran on the other worker",
                done.status == Status::Succeeded && done.worker.as_deref() != Some(victim.as_str()),
            ),
            (
                "the woken worker's late report was refused",
                refused.is_some(),
            ),
            (
                "the re-run's result stands (same worker and outputs as the job record showed)",
                after.status == Status::Succeeded
                    && after.worker == done.worker
                    && after.outputs == done.outputs,
            ),
            (
                "the participant has exactly one output file per job",
                files == acked.iter().filter(|(u, _)| *u == job.participant).count(),
            ),
            (
                "the woken worker ran one of the next two jobs",
                woken_served,
            ),
        ],
        &c,
    );
}

/// `CMNoise(size) → SaveImage`: one PNG of random pixels (~3 bytes a pixel,
/// PNG cannot compress it), distinct per `n`.
fn noise_prompt(size: u32, n: u64) -> serde_json::Value {
    serde_json::json!({
        "1": {"class_type": "CMNoise", "inputs": {"width": size, "height": size, "seed": n}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "noise"}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filled_by_outputs_refuses_new_jobs_clearly_loses_nothing_and_heals_when_space_is_freed(
) {
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let comfys = start_comfyuis(1);
    const MIB: u64 = 1 << 20;
    let spec = Spec {
        participants: 3,
        comfyuis: urls(&comfys),
        state_tmpfs_mib: Some(64),
        storage: Some(serde_json::json!({
            "warn_free_percent": 0.0, "refuse_free_percent": 0.0,
            "warn_free_bytes": 28 * MIB, "refuse_free_bytes": 16 * MIB,
            "check_interval_ms": 100,
        })),
        ..Spec::default()
    };
    let mut c = Cluster::start(&spec).await;
    // Other data on the same disk (what the instructor will delete).
    let ballast = c.state_dir.join("ballast.bin");
    std::fs::write(&ballast, vec![7u8; 24 * MIB as usize]).unwrap();

    // Participants make ~1.5 MB images until the workshop says "full".
    let mut acked = vec![];
    let mut n = seed % 1000 * 100;
    let refusal = 'fill: loop {
        for i in 0..3 {
            let u = participant(i);
            n += 1;
            match c.submit(&u, &noise_prompt(700, n)).await {
                Ok(id) => {
                    let done = c
                        .settle(&[(u.clone(), id.clone())], Duration::from_secs(60))
                        .await;
                    assert_eq!(done.succeeded, 1, "{done:?}\n{}", c.logs());
                    acked.push((u, id));
                }
                Err(e) => break 'fill e,
            }
            assert!(
                acked.len() < 60,
                "the disk never counted as full\n{}",
                c.logs()
            );
        }
    };
    let free_when_refused = nix::sys::statvfs::statvfs(&c.state_dir).unwrap();
    let free_mib = free_when_refused.blocks_available() as u64
        * free_when_refused.fragment_size() as u64
        / MIB;
    assert!(refusal.starts_with("507"), "{refusal}");
    assert!(
        refusal.contains("the workshop's storage is nearly full; your instructor has been told"),
        "{refusal}"
    );
    // Nothing exited: the hub, every frontend, the worker and Redis answer.
    let alive = c.hub.is_running()
        && c.frontends.values_mut().all(|f| f.proc.is_running())
        && c.workers.iter_mut().all(|w| w.is_running());
    let q = c.queue().await;
    let redis_ok = q.ping().await;

    // The instructor frees space; submits are taken again with no manual step.
    std::fs::remove_file(&ballast).unwrap();
    let t0 = Instant::now();
    let id = loop {
        n += 1;
        match c.submit("user01", &noise_prompt(700, n)).await {
            Ok(id) => break id,
            Err(e) => assert!(e.starts_with("507"), "{e}"),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "never accepted again\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    acked.push(("user01".into(), id.clone()));
    let recovery = c
        .first_finish_after(&[("user01".into(), id)], t0, Duration::from_secs(60))
        .await;
    let mut jepsen = c.settle(&acked, Duration::from_secs(120)).await;
    jepsen.recovery_ms = recovery.map(|d| d.as_millis() as u64);
    let record = Record::new(
        Section::Fault,
        "fault-7-disk-full",
        "the state dir's disk fills with participants' outputs, then space is freed",
    )
    .setup(
        "state dir on a 64 MiB tmpfs with 24 MiB of other data; 3 participants make ~1.5 MB noise images one after another; storage watch refuses below 16 MiB free; then the other data is deleted",
    )
    .measure("free when refused (MiB)", free_mib)
    .measure("participant saw", refusal.chars().take(160).collect::<String>())
    .measure("jobs before the refusal", acked.len() - 1);
    let record = Record {
        seed: Some(seed),
        ..record
    };
    report_and_check(
        record,
        jepsen,
        &[
            ("no process exited while the disk was full", alive),
            ("Redis kept answering", redis_ok),
        ],
        &c,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rented_serverless_pool_that_forgets_hangs_and_errors_loses_and_duplicates_nothing() {
    use std::sync::atomic::Ordering;
    let _serial = SERIAL.lock().await;
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let comfys = start_comfyuis(2);
    let key = "rpa_reliability_key";
    let emu = support::runpod_emulator::start(
        &[comfys[1].url.clone(), comfys[1].url.clone()],
        key,
        "ep-reliability",
        Duration::ZERO,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let info: serde_json::Value = reqwest::get(format!("{}/object_info", comfys[1].url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    std::fs::write(dir.path().join("object_info.json"), info.to_string()).unwrap();
    std::fs::write(dir.path().join("key"), key).unwrap();
    let spec = Spec {
        participants: 3,
        comfyuis: vec![comfys[0].url.clone()],
        max_attempts: 4,
        pools: vec![serde_json::json!({
            "name": "runpod", "kind": "runpod_serverless", "endpoint_id": "ep-reliability",
            "api_base": emu.api_base, "api_key_file": dir.path().join("key"),
            "object_info_file": dir.path().join("object_info.json"),
            "max_concurrency": 2, "poll_ms": 200, "timeout_s": 3,
        })],
        ..Spec::default()
    };
    let c = Cluster::start(&spec).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c
        .queue()
        .await
        .workers()
        .await
        .unwrap()
        .contains_key("runpod-1")
    {
        assert!(
            Instant::now() < deadline,
            "the RunPod pool never joined\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let n0 = seed % 1000 * 100;
    let acked = submit_all(&c, 3, 4, 1.5, n0).await;
    // Once RunPod runs something: it forgets one job, one never completes,
    // and its API fails a burst of requests and garbles a few statuses.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !emu.states().contains_key("IN_PROGRESS") {
        assert!(
            Instant::now() < deadline,
            "RunPod never ran a job\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..1000))).await;
    let t0 = Instant::now();
    emu.faults.vanish.store(1, Ordering::SeqCst);
    emu.faults.hang.store(1, Ordering::SeqCst);
    emu.faults
        .unavailable
        .store(rng.random_range(3..8), Ordering::SeqCst);
    emu.faults
        .garbage_status
        .store(rng.random_range(1..4), Ordering::SeqCst);
    let jepsen = c.settle(&acked, Duration::from_secs(240)).await;
    let cleared = t0.elapsed();
    let q = c.queue().await;
    let (mut on_pool, mut retried) = (0, 0);
    for (_, id) in &acked {
        let j = q.job(id).await.unwrap().unwrap();
        on_pool += usize::from(j.worker.as_deref() == Some("runpod-1"));
        retried += usize::from(j.attempts > 0);
    }
    let faults_used = emu.faults.vanish.load(Ordering::SeqCst) == 0
        && emu.faults.hang.load(Ordering::SeqCst) == 0;
    let jepsen = Jepsen {
        recovery_ms: Some(cleared.as_millis() as u64),
        ..jepsen
    };
    let record = Record::new(
        Section::Fault,
        "fault-9-provider",
        "A rented RunPod serverless pool (contract emulator on a real ComfyUI) forgets a job, hangs another, fails and garbles API answers",
    )
    .setup(
        "3 participants via their frontends, 12 jobs of 1.5 s; 1 local worker agent + a runpod_serverless pool (2 emulated GPUs, max_concurrency 2, timeout 3 s); faults injected once RunPod runs a job; recovery = from the faults to every job final",
    )
    .measure("jobs run on the pool", on_pool)
    .measure("jobs retried", retried)
    .measure("RunPod /run calls", emu.stats.runs.load(Ordering::Relaxed))
    .measure("line cleared after the faults", ms(cleared));
    let record = Record {
        seed: Some(seed),
        ..record
    };
    report_and_check(
        record,
        jepsen,
        &[
            (
                "both job faults happened (a forgotten and a hung job)",
                faults_used,
            ),
            ("the pool ran jobs", on_pool >= 1),
            (
                "the forgotten and the hung job were each retried",
                retried >= 2,
            ),
        ],
        &c,
    );
}
