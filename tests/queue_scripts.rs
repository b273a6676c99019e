//! Each queue script's success and refusal paths, against a real redis-server.

mod support;

use comfy_multi::queue::{
    Actor, Cancelled, Direction, Expiry, JobError, Mode, NewJob, Outcome, Queue, Refusal, Status,
};
use serde_json::json;
use support::{job, queue, test_settings, RedisServer};

async fn setup() -> (RedisServer, Queue) {
    let redis = RedisServer::start();
    let q = queue(&redis, test_settings()).await;
    (redis, q)
}

fn refusal<T: std::fmt::Debug>(r: Result<T, comfy_multi::queue::QueueError>) -> Refusal {
    r.expect_err("expected a refusal")
        .refusal()
        .expect("expected a refusal, not a fault")
}

/// Number of keys under this queue's prefix (to prove "nothing written").
async fn key_count(redis: &RedisServer, q: &Queue) -> usize {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", q.keys().prefix()))
        .query(&mut c)
        .unwrap();
    keys.len()
}

#[tokio::test]
async fn enqueue_stores_the_job_and_returns_increasing_numbers() {
    let (_r, q) = setup().await;
    let a = q.enqueue(job("user01", 1)).await.unwrap();
    let b = q.enqueue(job("user02", 2)).await.unwrap();
    assert!(b.number > a.number);
    let stored = q.job(&a.id).await.unwrap().expect("stored");
    assert_eq!(stored.participant, "user01");
    assert_eq!(stored.status, Status::Queued);
    assert_eq!(stored.prompt, support::prompt(1));
    assert_eq!(stored.attempts, 0);
    assert!(stored.created_ms > 1_600_000_000_000);
}

#[tokio::test]
async fn a_retried_submit_with_the_same_id_gets_the_first_job_and_queues_nothing_new() {
    let (r, q) = setup().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut j = job("user01", 1);
    j.id = Some(id.clone());
    let first = q.enqueue(j.clone()).await.unwrap();
    assert_eq!((first.id.as_str(), first.again), (id.as_str(), false));
    let keys = key_count(&r, &q).await;
    // The same participant, id and prompt again (a retry after a timeout):
    // the first job, nothing written.
    let again = q.enqueue(j.clone()).await.unwrap();
    assert_eq!(
        (again.id, again.number, again.again),
        (id.clone(), first.number, true)
    );
    assert_eq!(key_count(&r, &q).await, keys);
    assert_eq!(
        q.participant_queue("user01", 1)
            .await
            .unwrap()
            .waiting
            .len(),
        1
    );
    // The id with another prompt, or from another participant: refused.
    let mut other = job("user01", 2);
    other.id = Some(id.clone());
    assert_eq!(refusal(q.enqueue(other).await), Refusal::DuplicateId);
    let mut theirs = job("user02", 1);
    theirs.id = Some(id);
    assert_eq!(refusal(q.enqueue(theirs).await), Refusal::DuplicateId);
    // No number was spent on the retry.
    let next = q.enqueue(job("user01", 3)).await.unwrap();
    assert_eq!(next.number, first.number + 1);
}

#[tokio::test]
async fn enqueue_refuses_ids_that_are_not_canonical_uuids() {
    let (_r, q) = setup().await;
    for bad in ["x", "6F9619FF-8B86-D011-B42D-00C04FC964FF", "../etc", ""] {
        let mut j = job("user01", 1);
        j.id = Some(bad.to_string());
        assert_eq!(refusal(q.enqueue(j).await), Refusal::Invalid, "{bad}");
    }
}

#[tokio::test]
async fn enqueue_refuses_a_locked_participant_and_writes_nothing() {
    let (r, q) = setup().await;
    q.set_locked("user01", true).await.unwrap();
    let before = key_count(&r, &q).await;
    let e = q.enqueue(job("user01", 1)).await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::Locked));
    assert!(e.to_string().contains("locked"), "{e}");
    assert_eq!(key_count(&r, &q).await, before);
    q.set_locked("user01", false).await.unwrap();
    q.enqueue(job("user01", 1)).await.unwrap();
}

#[tokio::test]
async fn enqueue_refuses_while_submits_are_paused() {
    let (_r, q) = setup().await;
    assert_eq!(q.pause(Some(true), None).await.unwrap(), (true, false));
    assert_eq!(refusal(q.enqueue(job("user01", 1)).await), Refusal::Paused);
    q.pause(Some(false), None).await.unwrap();
    q.enqueue(job("user01", 1)).await.unwrap();
}

#[tokio::test]
async fn enqueue_refuses_beyond_the_max_pending_jobs() {
    let redis = RedisServer::start();
    let mut s = test_settings();
    s.max_pending_per_participant = 2;
    let q = queue(&redis, s).await;
    q.enqueue(job("user01", 1)).await.unwrap();
    q.enqueue(job("user01", 2)).await.unwrap();
    let e = q.enqueue(job("user01", 3)).await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::TooManyPending));
    assert!(e.to_string().contains("limit is 2"), "{e}");
    // Others are not affected.
    q.enqueue(job("user02", 4)).await.unwrap();
    // Running jobs count as pending; a finished one frees a place.
    let l = q.lease("w1").await.unwrap().unwrap();
    assert_eq!(
        refusal(q.enqueue(job("user01", 5)).await),
        Refusal::TooManyPending
    );
    q.finish(
        &l.job_id,
        l.token,
        Outcome::Succeeded,
        &json!({}),
        None,
        Some(0.1),
    )
    .await
    .unwrap();
    let who = l.participant.clone();
    q.enqueue(job(&who, 6)).await.unwrap();
    // Per-participant and global runtime overrides.
    q.set_max_pending(Some("user01"), Some(5)).await.unwrap();
    q.enqueue(job("user01", 7)).await.unwrap();
    q.set_max_pending(None, Some(1)).await.unwrap();
    assert_eq!(
        refusal(q.enqueue(job("user02", 8)).await),
        Refusal::TooManyPending
    );
}

#[tokio::test]
async fn enqueue_refuses_a_prompt_over_the_size_limit() {
    let (r, q) = setup().await;
    let before = key_count(&r, &q).await;
    let big = NewJob {
        participant: "user01".into(),
        prompt: json!({"1": {"class_type": "X", "inputs": {"t": "a".repeat(70_000)}}}),
        ..Default::default()
    };
    let e = q.enqueue(big).await.unwrap_err();
    assert_eq!(e.refusal(), Some(Refusal::PromptTooLarge));
    assert!(e.to_string().contains("limit is 65536"), "{e}");
    assert_eq!(key_count(&r, &q).await, before);
}

#[tokio::test]
async fn enqueue_refuses_invalid_participant_names() {
    let (_r, q) = setup().await;
    for bad in ["", "User01", "a b", "a:b", "../x", "@admin"] {
        assert_eq!(
            refusal(q.enqueue(job(bad, 1)).await),
            Refusal::Invalid,
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn lease_on_an_empty_queue_returns_none() {
    let (_r, q) = setup().await;
    assert_eq!(q.lease("w1").await.unwrap(), None);
}

#[tokio::test]
async fn lease_hands_out_a_job_with_a_fresh_fencing_token() {
    let (_r, q) = setup().await;
    let a = q.enqueue(job("user01", 1)).await.unwrap();
    let b = q.enqueue(job("user01", 2)).await.unwrap();
    let la = q.lease("w1").await.unwrap().unwrap();
    let lb = q.lease("w2").await.unwrap().unwrap();
    assert_eq!(
        (la.job_id.as_str(), lb.job_id.as_str()),
        (a.id.as_str(), b.id.as_str())
    );
    assert_ne!(la.token, lb.token);
    assert_eq!(la.prompt, support::prompt(1));
    let stored = q.job(&a.id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Leased);
    assert_eq!(stored.worker.as_deref(), Some("w1"));
    assert_eq!(q.lease("w3").await.unwrap(), None);
}

#[tokio::test]
async fn start_heartbeat_and_finish_work_only_with_the_current_token() {
    let (_r, q) = setup().await;
    let id = q.enqueue(job("user01", 1)).await.unwrap().id;
    let l = q.lease("w1").await.unwrap().unwrap();
    let wrong = l.token + 1000;
    assert_eq!(refusal(q.start(&id, wrong).await), Refusal::StaleToken);
    assert_eq!(refusal(q.heartbeat(&id, wrong).await), Refusal::StaleToken);
    assert_eq!(
        refusal(
            q.finish(&id, wrong, Outcome::Succeeded, &json!({}), None, None)
                .await
        ),
        Refusal::StaleToken
    );
    assert_eq!(q.job(&id).await.unwrap().unwrap().status, Status::Leased);
    assert!(!q.start(&id, l.token).await.unwrap());
    let running = q.job(&id).await.unwrap().unwrap();
    assert_eq!(running.status, Status::Running);
    assert!(running.started_ms.is_some());
    assert!(!q.heartbeat(&id, l.token).await.unwrap());
    let outputs =
        json!({"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}});
    q.finish(&id, l.token, Outcome::Succeeded, &outputs, None, Some(2.5))
        .await
        .unwrap();
    let done = q.job(&id).await.unwrap().unwrap();
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(done.outputs, Some(outputs));
    assert_eq!(done.gpu_seconds, Some(2.5));
    assert!(done.finished_ms.is_some());
    // A second report of the same job is refused.
    assert_eq!(
        refusal(
            q.finish(&id, l.token, Outcome::Failed, &json!({}), None, None)
                .await
        ),
        Refusal::AlreadyFinished
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(refusal(q.heartbeat(&unknown, 1).await), Refusal::NotFound);
}

/// Found by `fuzz_inputs`: a worker reporting 4.8e216 or -0.0 GPU seconds
/// made finish.lua's HINCRBY fail ("not an integer": Lua writes the first
/// as 4.8e+219, and Redis takes "-0" for no integer), so the result was
/// never recorded and the worker was told to send it again forever.
#[tokio::test]
async fn an_absurd_gpu_time_is_recorded_as_at_most_a_day() {
    let (_r, q) = setup().await;
    let cases = [
        (1, 4.8e216),
        (2, 1e20),
        (3, f64::MAX),
        (4, f64::INFINITY),
        (5, -0.0),
        (6, -1e300),
    ];
    for (n, secs) in cases {
        let id = q.enqueue(job("user01", n)).await.unwrap().id;
        let l = q.lease("w1").await.unwrap().unwrap();
        q.finish(
            &id,
            l.token,
            Outcome::Succeeded,
            &json!({}),
            None,
            Some(secs),
        )
        .await
        .unwrap_or_else(|e| panic!("{secs}: {e}"));
        let done = q.job(&id).await.unwrap().unwrap();
        assert_eq!(done.status, Status::Succeeded, "{secs}");
        let recorded = done.gpu_seconds.unwrap_or(0.0);
        assert!(recorded <= 86_400.0, "{secs}: recorded {recorded}");
    }
    // Infinity counts as unknown, the huge ones as a day each, the
    // negative ones as nothing.
    let p = &q.participants().await.unwrap()[0];
    assert_eq!(p.gpu_seconds, 3.0 * 86_400.0);
    assert_eq!(p.succeeded, 6);
    // The participant's fair-share tag stays a number: a next job leases.
    q.set_mode(Mode::FairShare).await.unwrap();
    q.enqueue(job("user01", 7)).await.unwrap();
    assert!(q.lease("w1").await.unwrap().is_some());
}

#[tokio::test]
async fn a_failed_job_keeps_comfyuis_error_and_enters_history() {
    let (_r, q) = setup().await;
    let id = q.enqueue(job("user01", 1)).await.unwrap().id;
    let l = q.lease("w1").await.unwrap().unwrap();
    let err = JobError {
        kind: "execution_error".into(),
        message: "CUDA out of memory".into(),
        details: json!({"node_id": "3", "node_type": "KSampler"}),
    };
    q.finish(
        &id,
        l.token,
        Outcome::Failed,
        &json!({}),
        Some(&err),
        Some(1.0),
    )
    .await
    .unwrap();
    let hist = q.history("user01", 0, 10).await.unwrap();
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0].status, Status::Failed);
    assert_eq!(hist[0].error.as_ref(), Some(&err));
    assert_eq!(q.participants().await.unwrap()[0].failed, 1);
}

#[tokio::test]
async fn history_is_newest_first_paginated_and_capped() {
    let redis = RedisServer::start();
    let mut s = test_settings();
    s.history_limit = 3;
    let q = queue(&redis, s).await;
    let mut ids = vec![];
    for n in 0..5 {
        let id = q.enqueue(job("user01", n)).await.unwrap().id;
        let l = q.lease("w1").await.unwrap().unwrap();
        q.finish(
            &l.job_id,
            l.token,
            Outcome::Succeeded,
            &json!({}),
            None,
            Some(0.1),
        )
        .await
        .unwrap();
        ids.push(id);
    }
    let page: Vec<String> = q
        .history("user01", 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(page, vec![ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    let second: Vec<String> = q
        .history("user01", 1, 1)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(second, vec![ids[3].clone()]);
    // Entries beyond the cap are deleted with their job.
    assert_eq!(q.job(&ids[0]).await.unwrap(), None);
}

#[tokio::test]
async fn an_expired_lease_goes_back_to_the_front_of_its_participants_line() {
    let (_r, q) = setup().await;
    q.set_mode(Mode::Fifo).await.unwrap();
    let first = q.enqueue(job("user01", 1)).await.unwrap().id;
    let second = q.enqueue(job("user01", 2)).await.unwrap().id;
    let l = q.lease("w1").await.unwrap().unwrap();
    assert_eq!(l.job_id, first);
    // Not expired yet: nothing happens.
    assert!(q.requeue_expired().await.unwrap().is_empty());
    let reaped = q.requeue_expired_after(120_000).await.unwrap();
    assert_eq!(reaped, vec![(first.clone(), Expiry::Requeued)]);
    let j = q.job(&first).await.unwrap().unwrap();
    assert_eq!((j.status, j.attempts), (Status::Queued, 1));
    // The old token is now refused.
    assert_eq!(
        refusal(q.heartbeat(&first, l.token).await),
        Refusal::StaleToken
    );
    let again = q.lease("w2").await.unwrap().unwrap();
    assert_eq!(again.job_id, first, "requeued job runs before {second}");
    assert_eq!(again.attempts, 1);
    assert_ne!(again.token, l.token);
}

#[tokio::test]
async fn a_job_whose_worker_keeps_vanishing_fails_with_a_reason() {
    let (_r, q) = setup().await;
    let id = q.enqueue(job("user01", 1)).await.unwrap().id;
    for attempt in 1..=3 {
        q.lease("w1").await.unwrap().unwrap();
        let expected = if attempt < 3 {
            Expiry::Requeued
        } else {
            Expiry::Failed
        };
        assert_eq!(
            q.requeue_expired_after(120_000).await.unwrap(),
            vec![(id.clone(), expected)]
        );
    }
    let j = q.job(&id).await.unwrap().unwrap();
    assert_eq!(j.status, Status::Failed);
    let e = j.error.unwrap();
    assert_eq!(e.kind, "lease_expired");
    assert!(
        e.message.contains("stopped responding") && e.message.contains("3 attempts"),
        "{}",
        e.message
    );
    assert_eq!(q.lease("w1").await.unwrap(), None);
}

#[tokio::test]
async fn cancelling_a_waiting_job_removes_it_at_once() {
    let (_r, q) = setup().await;
    let id = q.enqueue(job("user01", 1)).await.unwrap().id;
    let owner = Actor::Participant("user01".into());
    assert_eq!(q.cancel(&id, &owner).await.unwrap(), Cancelled::Removed);
    assert_eq!(q.job(&id).await.unwrap().unwrap().status, Status::Cancelled);
    assert_eq!(q.lease("w1").await.unwrap(), None);
    assert_eq!(
        refusal(q.cancel(&id, &owner).await),
        Refusal::AlreadyFinished
    );
}

#[tokio::test]
async fn cancelling_a_running_job_flags_it_for_its_worker() {
    let (_r, q) = setup().await;
    let id = q.enqueue(job("user01", 1)).await.unwrap().id;
    let l = q.lease("w1").await.unwrap().unwrap();
    q.start(&id, l.token).await.unwrap();
    assert_eq!(
        q.cancel(&id, &Actor::Admin).await.unwrap(),
        Cancelled::Flagged
    );
    assert!(
        q.heartbeat(&id, l.token).await.unwrap(),
        "worker sees the cancel flag"
    );
    q.finish(
        &id,
        l.token,
        Outcome::Cancelled,
        &json!({}),
        None,
        Some(0.2),
    )
    .await
    .unwrap();
    assert_eq!(q.job(&id).await.unwrap().unwrap().status, Status::Cancelled);
}

#[tokio::test]
async fn a_cancelled_job_whose_lease_expires_ends_cancelled_not_requeued() {
    let (_r, q) = setup().await;
    let id = q.enqueue(job("user01", 1)).await.unwrap().id;
    q.lease("w1").await.unwrap().unwrap();
    q.cancel(&id, &Actor::Participant("user01".into()))
        .await
        .unwrap();
    assert_eq!(
        q.requeue_expired_after(120_000).await.unwrap(),
        vec![(id.clone(), Expiry::Cancelled)]
    );
    assert_eq!(q.job(&id).await.unwrap().unwrap().status, Status::Cancelled);
}

#[tokio::test]
async fn another_participant_cannot_cancel_and_is_told_not_found() {
    let (_r, q) = setup().await;
    let id = q.enqueue(job("user01", 1)).await.unwrap().id;
    let other = Actor::Participant("user02".into());
    assert_eq!(refusal(q.cancel(&id, &other).await), Refusal::NotFound);
    assert_eq!(q.job(&id).await.unwrap().unwrap().status, Status::Queued);
    assert_eq!(q.job_of("user02", &id).await.unwrap(), None);
    assert!(q.job_of("user01", &id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_prioritized_job_is_the_next_one_leased() {
    let (_r, q) = setup().await;
    for mode in [Mode::Fifo, Mode::RoundRobin, Mode::FairShare] {
        q.set_mode(mode).await.unwrap();
        for n in 0..5 {
            q.enqueue(job("user01", n)).await.unwrap();
        }
        let late = q.enqueue(job("user02", 99)).await.unwrap().id;
        q.prioritize(&late).await.unwrap();
        assert_eq!(q.lease("w1").await.unwrap().unwrap().job_id, late, "{mode}");
        assert_eq!(refusal(q.prioritize(&late).await), Refusal::NotQueued);
        q.clear_queue("user01").await.unwrap();
    }
}

#[tokio::test]
async fn the_instructors_jobs_use_the_priority_lane() {
    let (_r, q) = setup().await;
    q.enqueue(job("user01", 1)).await.unwrap();
    let mut j = job("instructor", 2);
    j.priority = true;
    let id = q.enqueue(j).await.unwrap().id;
    assert_eq!(q.lease("w1").await.unwrap().unwrap().job_id, id);
}

#[tokio::test]
async fn moving_a_job_swaps_it_with_its_neighbour() {
    let (_r, q) = setup().await;
    q.set_mode(Mode::Fifo).await.unwrap();
    let a = q.enqueue(job("user01", 1)).await.unwrap().id;
    let b = q.enqueue(job("user02", 2)).await.unwrap().id;
    let c = q.enqueue(job("user01", 3)).await.unwrap().id;
    assert!(!q.move_job(&a, Direction::Up).await.unwrap());
    assert!(q.move_job(&c, Direction::Up).await.unwrap());
    let order: Vec<String> = q
        .snapshot(1)
        .await
        .unwrap()
        .waiting
        .into_iter()
        .map(|w| w.job_id)
        .collect();
    assert_eq!(order, vec![a.clone(), c.clone(), b.clone()]);
    assert!(q.move_job(&a, Direction::Down).await.unwrap());
    let order: Vec<String> = q
        .snapshot(1)
        .await
        .unwrap()
        .waiting
        .into_iter()
        .map(|w| w.job_id)
        .collect();
    assert_eq!(order, vec![c.clone(), a.clone(), b.clone()]);
    assert_eq!(q.lease("w").await.unwrap().unwrap().job_id, c);
    assert_eq!(
        refusal(q.move_job(&c, Direction::Up).await),
        Refusal::NotQueued
    );
}

#[tokio::test]
async fn paused_dispatch_hands_out_nothing_until_resumed() {
    let (_r, q) = setup().await;
    q.enqueue(job("user01", 1)).await.unwrap();
    q.pause(None, Some(true)).await.unwrap();
    assert_eq!(q.lease("w1").await.unwrap(), None);
    assert!(q.runtime_settings().await.unwrap().paused_dispatch);
    q.pause(None, Some(false)).await.unwrap();
    assert!(q.lease("w1").await.unwrap().is_some());
}

#[tokio::test]
async fn the_mode_switch_is_stored_and_read_back() {
    let (_r, q) = setup().await;
    assert_eq!(q.runtime_settings().await.unwrap().mode, Mode::FairShare);
    q.set_mode(Mode::RoundRobin).await.unwrap();
    assert_eq!(q.runtime_settings().await.unwrap().mode, Mode::RoundRobin);
}

#[tokio::test]
async fn clearing_a_queue_cancels_only_that_participants_waiting_jobs() {
    let (_r, q) = setup().await;
    q.set_mode(Mode::Fifo).await.unwrap();
    let running = q.enqueue(job("user01", 0)).await.unwrap().id;
    q.lease("w1").await.unwrap().unwrap();
    for n in 1..4 {
        q.enqueue(job("user01", n)).await.unwrap();
    }
    let other = q.enqueue(job("user02", 9)).await.unwrap().id;
    assert_eq!(q.clear_queue("user01").await.unwrap(), 3);
    assert_eq!(
        q.job(&running).await.unwrap().unwrap().status,
        Status::Leased
    );
    assert_eq!(q.lease("w2").await.unwrap().unwrap().job_id, other);
    assert_eq!(q.participants().await.unwrap()[0].cancelled, 3);
}

#[tokio::test]
async fn deleting_history_entries_removes_only_the_owners_finished_jobs() {
    let (_r, q) = setup().await;
    let mut ids = vec![];
    for n in 0..3 {
        ids.push(q.enqueue(job("user01", n)).await.unwrap().id);
        let l = q.lease("w").await.unwrap().unwrap();
        q.finish(
            &l.job_id,
            l.token,
            Outcome::Succeeded,
            &json!({}),
            None,
            None,
        )
        .await
        .unwrap();
    }
    assert_eq!(q.delete_history("user02", &ids[..1]).await.unwrap(), 0);
    assert_eq!(q.delete_history("user01", &ids[..1]).await.unwrap(), 1);
    assert_eq!(q.job(&ids[0]).await.unwrap(), None);
    assert_eq!(q.history("user01", 0, 10).await.unwrap().len(), 2);
    assert_eq!(q.delete_history("user01", &[]).await.unwrap(), 2);
    assert!(q.history("user01", 0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_job_only_goes_to_a_worker_with_the_capabilities_it_needs() {
    let (_r, q) = setup().await;
    q.register_caps("small", &["node:EmptyImage".into()])
        .await
        .unwrap();
    q.register_caps(
        "big",
        &[
            "node:EmptyImage".into(),
            "model:checkpoints/flux.safetensors".into(),
        ],
    )
    .await
    .unwrap();
    let mut needs_flux = job("user01", 1);
    needs_flux.requires = vec![
        "node:EmptyImage".into(),
        "model:checkpoints/flux.safetensors".into(),
    ];
    let flux = q.enqueue(needs_flux).await.unwrap().id;
    let mut simple = job("user02", 2);
    simple.requires = vec!["node:EmptyImage".into()];
    let plain = q.enqueue(simple).await.unwrap().id;
    assert_eq!(q.lease("small").await.unwrap().unwrap().job_id, plain);
    assert_eq!(q.lease("small").await.unwrap(), None);
    assert_eq!(q.lease("big").await.unwrap().unwrap().job_id, flux);
}

#[tokio::test]
async fn every_change_is_published_to_the_owner_and_the_admin_only() {
    let (_r, q) = setup().await;
    let mut mine = q.subscribe(Some("user01")).await.unwrap();
    let mut theirs = q.subscribe(Some("user02")).await.unwrap();
    let mut admin = q.subscribe(None).await.unwrap();
    let id = q.enqueue(job("user01", 1)).await.unwrap().id;
    let l = q.lease("w1").await.unwrap().unwrap();
    q.start(&id, l.token).await.unwrap();
    q.finish(&id, l.token, Outcome::Succeeded, &json!({}), None, None)
        .await
        .unwrap();
    let mut seen = vec![];
    for _ in 0..4 {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), mine.recv())
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&msg).unwrap();
        assert_eq!(v["job"], id.as_str());
        seen.push(v["status"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ["queued", "leased", "running", "succeeded"]);
    let a = tokio::time::timeout(std::time::Duration::from_secs(5), admin.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(a.contains(&id));
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), theirs.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_participant_sees_their_jobs_with_global_positions_and_etas() {
    let (_r, q) = setup().await;
    q.set_mode(Mode::Fifo).await.unwrap();
    q.enqueue(job("user02", 1)).await.unwrap();
    let mine = q.enqueue(job("user01", 2)).await.unwrap().id;
    q.enqueue(job("user02", 3)).await.unwrap();
    let view = q.participant_queue("user01", 1).await.unwrap();
    assert_eq!(view.waiting.len(), 1);
    assert_eq!(view.waiting[0].job_id, mine);
    assert_eq!(view.waiting[0].position, 1);
    // default 1 s per job, one worker: done after 2 jobs.
    assert_eq!(view.waiting[0].eta_seconds, 2.0);
    assert!(view.running.is_empty());
    q.lease("w").await.unwrap();
    q.lease("w").await.unwrap();
    let view = q.participant_queue("user01", 1).await.unwrap();
    assert!(view.waiting.is_empty());
    assert_eq!(view.running.len(), 1);
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.leased_or_running, c.enqueued), (1, 2, 3));
    assert_eq!(c.waiting_by_participant.get("user02"), Some(&1));
}

/// The count the editor socket's `status` shows agrees with the full view
/// (waiting + running) through a job's whole life, a requeue and a cancel.
#[tokio::test]
async fn the_pending_count_matches_the_participants_waiting_and_running_jobs() {
    let (_r, q) = setup().await;
    q.set_mode(Mode::Fifo).await.unwrap();
    async fn agree(q: &Queue) -> u64 {
        let view = q.participant_queue("user01", 1).await.unwrap();
        let n = q.pending_count("user01").await.unwrap();
        assert_eq!(n as usize, view.waiting.len() + view.running.len());
        n
    }
    assert_eq!(agree(&q).await, 0);
    let a = q.enqueue(job("user01", 1)).await.unwrap().id;
    let b = q.enqueue(job("user01", 2)).await.unwrap().id;
    q.enqueue(job("user02", 3)).await.unwrap();
    assert_eq!(agree(&q).await, 2);
    let lease = q.lease("w").await.unwrap().unwrap();
    assert_eq!(lease.job_id, a);
    q.start(&a, lease.token).await.unwrap();
    assert_eq!(agree(&q).await, 2);
    q.release(&a, lease.token, "test").await.unwrap();
    assert_eq!(agree(&q).await, 2);
    let lease = q.lease("w").await.unwrap().unwrap();
    q.finish(
        &a,
        lease.token,
        Outcome::Succeeded,
        &json!({}),
        None,
        Some(0.1),
    )
    .await
    .unwrap();
    assert_eq!(agree(&q).await, 1);
    q.cancel(&b, &Actor::Participant("user01".into()))
        .await
        .unwrap();
    assert_eq!(agree(&q).await, 0);
    assert_eq!(q.pending_count("user02").await.unwrap(), 1);
}

#[tokio::test]
async fn a_released_job_is_retried_at_once_and_the_old_token_is_dead() {
    let (_r, q) = setup().await;
    let id = q.enqueue(job("user01", 1)).await.unwrap().id;
    let l = q.lease("w1").await.unwrap().unwrap();
    q.start(&id, l.token).await.unwrap();
    assert_eq!(
        refusal(q.release(&id, l.token + 1, "x").await),
        Refusal::StaleToken
    );
    assert_eq!(
        q.release(&id, l.token, "ComfyUI went down").await.unwrap(),
        Expiry::Requeued
    );
    let j = q.job(&id).await.unwrap().unwrap();
    assert_eq!((j.status, j.attempts), (Status::Queued, 1));
    assert_eq!(
        refusal(
            q.finish(&id, l.token, Outcome::Succeeded, &json!({}), None, None)
                .await
        ),
        Refusal::StaleToken
    );
    // After the attempt limit, the reason is kept.
    for _ in 0..2 {
        let l = q.lease("w1").await.unwrap().unwrap();
        q.release(&id, l.token, "ComfyUI went down").await.unwrap();
    }
    let j = q.job(&id).await.unwrap().unwrap();
    assert_eq!(j.status, Status::Failed);
    assert!(j.error.unwrap().message.contains("ComfyUI went down"));
}

#[tokio::test]
async fn a_broadcast_reaches_every_participant_and_is_kept_as_the_latest() {
    let (redis, q) = setup().await;
    let mut a = q.subscribe(Some("user01")).await.unwrap();
    let mut b = q.subscribe(Some("user02")).await.unwrap();
    assert_eq!(q.last_broadcast().await.unwrap(), None);
    let before = key_count(&redis, &q).await;
    assert!(q.broadcast("   ").await.is_err());
    assert!(q.broadcast(&"x".repeat(501)).await.is_err());
    assert_eq!(
        key_count(&redis, &q).await,
        before,
        "refused: nothing written"
    );
    let sent = q.broadcast("Break until 11:00 ☕").await.unwrap();
    for rx in [&mut a, &mut b] {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&msg).unwrap();
        assert_eq!(v["broadcast"]["message"], "Break until 11:00 ☕");
        assert_eq!(v["broadcast"]["id"], sent.id.as_str());
    }
    assert_eq!(q.last_broadcast().await.unwrap(), Some(sent));
}

/// Bytes Redis has sent to its clients so far (`INFO stats`).
fn redis_bytes_out(redis: &RedisServer) -> u64 {
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_net_output_bytes in INFO stats")
}

#[tokio::test]
async fn placing_a_participant_in_line_does_not_read_the_waiting_jobs_prompts() {
    // Every open editor polls its place in line; with a long line of big
    // workflows, reading each waiting job's prompt would move megabytes
    // per poll.
    let redis = RedisServer::start();
    let q = queue(&redis, test_settings()).await;
    let filler = "x".repeat(30_000);
    for n in 0..100u64 {
        let mut j = job(&format!("user{:02}", n % 10 + 1), n);
        j.prompt["1"]["inputs"]["note"] = json!(filler);
        q.enqueue(j).await.unwrap();
    }
    let before = redis_bytes_out(&redis);
    let mine = q.participant_queue("user03", 2).await.unwrap();
    let sent = redis_bytes_out(&redis) - before;
    assert_eq!(mine.waiting.len(), 10);
    assert!(
        mine.waiting
            .windows(2)
            .all(|w| w[0].position < w[1].position),
        "{mine:?}"
    );
    assert!(
        sent < 300_000,
        "placing user03 read {sent} bytes: the 3 MB of prompts came along"
    );
}

fn needing(participant: &str, n: u64, tags: &[&str]) -> NewJob {
    let mut j = job(participant, n);
    j.requires = tags.iter().map(|t| t.to_string()).collect();
    j
}

#[tokio::test]
async fn a_job_needing_a_model_no_worker_has_is_refused_by_name_and_nothing_is_written() {
    let (redis, q) = setup().await;
    let flux =
        comfy_multi::catalogue::file_tag("UNETLoader", "unet_name", "flux1-schnell.safetensors");
    q.register_caps("gpu0", &["node:UNETLoader".into(), "node:SaveImage".into()])
        .await
        .unwrap();
    let before = key_count(&redis, &q).await;
    let err = q
        .enqueue(needing("user01", 1, &["node:UNETLoader", &flux]))
        .await
        .expect_err("no worker has the file");
    assert_eq!(err.refusal(), Some(Refusal::NotOnAnyWorker));
    assert_eq!(
        err.to_string(),
        "flux1-schnell.safetensors (unet_name of UNETLoader) is on no worker"
    );
    assert_eq!(key_count(&redis, &q).await, before, "nothing written");

    // The file arrives on the worker (its catalogue refreshed): accepted.
    q.register_caps("gpu0", &["node:UNETLoader".into(), flux.clone()])
        .await
        .unwrap();
    q.enqueue(needing("user01", 1, &["node:UNETLoader", &flux]))
        .await
        .expect("accepted once a worker has it");
}

#[tokio::test]
async fn a_job_needing_files_that_no_single_worker_has_together_is_refused() {
    let (_r, q) = setup().await;
    q.register_caps("a", &["file:L\tm\tx.safetensors".into()])
        .await
        .unwrap();
    q.register_caps("b", &["file:L\tm\ty.safetensors".into()])
        .await
        .unwrap();
    let err = q
        .enqueue(needing(
            "user01",
            1,
            &["file:L\tm\tx.safetensors", "file:L\tm\ty.safetensors"],
        ))
        .await
        .expect_err("no worker has both");
    assert_eq!(err.refusal(), Some(Refusal::NotOnAnyWorker));
    assert!(err.to_string().contains("no single worker"), "{err}");
}

#[tokio::test]
async fn a_disconnected_worker_counts_until_it_is_forgotten() {
    let redis = RedisServer::start();
    let settings = comfy_multi::queue::QueueSettings {
        known_worker_ms: 300,
        ..test_settings()
    };
    let q = queue(&redis, settings).await;
    q.register_caps("rented", &["node:Only".into()])
        .await
        .unwrap();
    q.register_caps("local", &["node:Other".into()])
        .await
        .unwrap();
    q.worker_seen("rented").await.unwrap();
    // Only the disconnected worker can run it: accepted, it waits.
    let waiting = q
        .enqueue(needing("user01", 1, &["node:Only"]))
        .await
        .unwrap()
        .id;
    assert_eq!(
        q.lease("local").await.unwrap(),
        None,
        "never to a worker that lacks a node"
    );
    let known: Vec<String> = q
        .known_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(known, ["local", "rented"]);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    q.register_caps("local", &["node:Other".into()])
        .await
        .unwrap();
    let known: Vec<String> = q
        .known_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(known, ["local"], "forgotten after known_worker_ms");
    assert_eq!(
        refusal(q.enqueue(needing("user01", 2, &["node:Only"])).await),
        Refusal::NotOnAnyWorker
    );
    // The rented worker comes back: it gets the job that waited for it.
    q.register_caps("rented", &["node:Only".into()])
        .await
        .unwrap();
    assert_eq!(q.lease("rented").await.unwrap().unwrap().job_id, waiting);
}

#[tokio::test]
async fn a_job_at_the_head_of_the_line_that_this_worker_cannot_run_does_not_block_it() {
    for mode in [Mode::Fifo, Mode::RoundRobin, Mode::FairShare] {
        let (_r, q) = setup().await;
        q.set_mode(mode).await.unwrap();
        q.register_caps("a", &["node:EmptyImage".into()])
            .await
            .unwrap();
        q.register_caps("b", &["node:EmptyImage".into(), "node:Flux".into()])
            .await
            .unwrap();
        let flux = q
            .enqueue(needing("user01", 1, &["node:EmptyImage", "node:Flux"]))
            .await
            .unwrap()
            .id;
        let mut plain = Vec::new();
        for (i, u) in ["user01", "user02", "user03"].iter().enumerate() {
            plain.push(
                q.enqueue(needing(u, 10 + i as u64, &["node:EmptyImage"]))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let mut got = Vec::new();
        while let Some(l) = q.lease("a").await.unwrap() {
            got.push(l.job_id);
        }
        got.sort();
        plain.sort();
        assert_eq!(
            got, plain,
            "{mode:?}: worker a runs every job it can, never the flux one"
        );
        assert_eq!(
            q.lease("b").await.unwrap().unwrap().job_id,
            flux,
            "{mode:?}"
        );
    }
}

/// A queue whose model affinity looks `window` jobs ahead and passes one
/// job over at most `passes` times.
async fn affinity_queue(
    redis: &RedisServer,
    on: bool,
    window: u32,
    passes: u32,
    mode: Mode,
) -> Queue {
    let settings = comfy_multi::queue::QueueSettings {
        affinity: on,
        affinity_window: window,
        affinity_max_passes: passes,
        default_mode: mode,
        ..test_settings()
    };
    queue(redis, settings).await
}

fn model(m: &str) -> String {
    comfy_multi::catalogue::file_tag("CheckpointLoaderSimple", "ckpt_name", m)
}

/// Leases the next job for `worker` and finishes it at once.
async fn run_next(q: &Queue, worker: &str) -> Option<String> {
    let l = q.lease(worker).await.unwrap()?;
    support::complete(q, &l, 1.0).await;
    Some(l.job_id)
}

#[tokio::test]
async fn a_warm_job_goes_first_but_no_job_is_passed_over_more_than_the_window() {
    let redis = RedisServer::start();
    let q = affinity_queue(&redis, true, 3, 3, Mode::Fifo).await;
    q.register_caps("w", &[model("x"), model("y")])
        .await
        .unwrap();
    let warmup = q
        .enqueue(needing("user01", 0, &[&model("y")]))
        .await
        .unwrap()
        .id;
    assert_eq!(run_next(&q, "w").await.unwrap(), warmup);
    assert_eq!(q.warm_models("w").await.unwrap(), [model("y")]);

    let a = q
        .enqueue(needing("user01", 1, &[&model("x")]))
        .await
        .unwrap()
        .id;
    let b = q
        .enqueue(needing("user02", 2, &[&model("x")]))
        .await
        .unwrap()
        .id;
    let mut ys = Vec::new();
    for n in 3..8 {
        ys.push(
            q.enqueue(needing("user03", n, &[&model("y")]))
                .await
                .unwrap()
                .id,
        );
    }
    // y is warm: y jobs overtake a and b, three times at most.
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(run_next(&q, "w").await.unwrap());
    }
    assert_eq!(
        order,
        [ys[0].clone(), ys[1].clone(), ys[2].clone(), a.clone()]
    );
    // Now x is warm: b goes before the remaining y jobs.
    assert_eq!(run_next(&q, "w").await.unwrap(), b);
    assert_eq!(run_next(&q, "w").await.unwrap(), ys[3]);
}

#[tokio::test]
async fn a_job_whose_model_is_warm_on_another_connected_worker_is_left_to_it() {
    let redis = RedisServer::start();
    let q = affinity_queue(&redis, true, 8, 4, Mode::Fifo).await;
    for w in ["a", "b"] {
        q.register_caps(w, &[model("x"), model("y"), model("z")])
            .await
            .unwrap();
        q.set_worker(w, Some("{}")).await.unwrap();
    }
    // b ran a y job; a holds z.
    q.report_warm("b", 0, &[model("y")]).await.unwrap();
    q.report_warm("a", 0, &[model("z")]).await.unwrap();
    let y = q
        .enqueue(needing("user01", 0, &[&model("y")]))
        .await
        .unwrap()
        .id;
    let x = q
        .enqueue(needing("user02", 1, &[&model("x")]))
        .await
        .unwrap()
        .id;
    // Nothing is warm on a: it takes x and leaves y to b, which holds it.
    assert_eq!(q.lease("a").await.unwrap().unwrap().job_id, x);
    assert_eq!(q.lease("b").await.unwrap().unwrap().job_id, y);

    // Once b is gone, its warm models no longer hold anything back.
    let y2 = q
        .enqueue(needing("user01", 2, &[&model("y")]))
        .await
        .unwrap()
        .id;
    let x2 = q
        .enqueue(needing("user02", 3, &[&model("x")]))
        .await
        .unwrap()
        .id;
    q.set_worker("b", None).await.unwrap();
    q.report_warm("a", 99, &[model("z")]).await.unwrap();
    assert_eq!(q.lease("a").await.unwrap().unwrap().job_id, y2);
    assert_eq!(q.lease("a").await.unwrap().unwrap().job_id, x2);
}

#[tokio::test]
async fn what_an_agent_reports_loaded_replaces_the_prediction_unless_a_later_lease_made_one() {
    let redis = RedisServer::start();
    let q = affinity_queue(&redis, true, 3, 3, Mode::Fifo).await;
    q.register_caps("w", &[model("x"), model("y")])
        .await
        .unwrap();
    let first = q
        .enqueue(needing("user01", 0, &[&model("x")]))
        .await
        .unwrap()
        .id;
    q.enqueue(needing("user01", 1, &[&model("y")]))
        .await
        .unwrap();
    let l1 = q.lease("w").await.unwrap().unwrap();
    assert_eq!(l1.job_id, first);
    assert_eq!(q.warm_models("w").await.unwrap(), [model("x")], "predicted");
    let l2 = q.lease("w").await.unwrap().unwrap();
    assert_eq!(q.warm_models("w").await.unwrap(), [model("y")]);
    // The first job's report arrives after the second lease: it is older
    // than the prediction and changes nothing.
    assert!(!q.report_warm("w", l1.token, &[model("x")]).await.unwrap());
    assert_eq!(q.warm_models("w").await.unwrap(), [model("y")]);
    // The second job ended, and its loader never ran (it failed first).
    assert!(q.report_warm("w", l2.token, &[]).await.unwrap());
    assert!(q.warm_models("w").await.unwrap().is_empty());
    // A warm-up afterwards (same as_of) is taken as it is.
    assert!(q.report_warm("w", l2.token, &[model("x")]).await.unwrap());
    assert_eq!(q.warm_models("w").await.unwrap(), [model("x")]);
}

#[tokio::test]
async fn with_affinity_off_the_policy_order_is_kept_exactly() {
    let redis = RedisServer::start();
    let q = affinity_queue(&redis, true, 3, 3, Mode::Fifo).await;
    q.set_affinity(false).await.unwrap();
    assert!(!q.runtime_settings().await.unwrap().affinity, "persisted");
    q.register_caps("w", &[model("x"), model("y")])
        .await
        .unwrap();
    q.enqueue(needing("user01", 0, &[&model("y")]))
        .await
        .unwrap();
    run_next(&q, "w").await.unwrap();
    let mut ids = Vec::new();
    for (n, m) in ["x", "y", "x", "y"].iter().enumerate() {
        ids.push(
            q.enqueue(needing("user01", 1 + n as u64, &[&model(m)]))
                .await
                .unwrap()
                .id,
        );
    }
    let mut got = Vec::new();
    while let Some(id) = run_next(&q, "w").await {
        got.push(id);
    }
    assert_eq!(got, ids);
}

/// Model loads (a job whose files were not the worker's last job's) when
/// two workers drain the same job list: 12 participants, each alternating
/// among three models.
async fn loads(on: bool, mode: Mode) -> (u32, u64) {
    let redis = RedisServer::start();
    let q = affinity_queue(&redis, on, 8, 4, mode).await;
    let models = ["a", "b", "c"];
    let caps: Vec<String> = models.iter().map(|m| model(m)).collect();
    for w in ["w0", "w1"] {
        q.register_caps(w, &caps).await.unwrap();
    }
    let mut n = 0;
    for round in 0..4 {
        for p in 0..12 {
            let m = models[(p + round) % 3];
            n += 1;
            q.enqueue(needing(&format!("user{p:02}"), n, &[&model(m)]))
                .await
                .unwrap();
        }
    }
    let mut last: [Option<String>; 2] = [None, None];
    let mut loads = 0;
    let mut max_passes = 0;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    loop {
        let mut any = false;
        for (i, w) in ["w0", "w1"].iter().enumerate() {
            let Some(l) = q.lease(w).await.unwrap() else {
                continue;
            };
            any = true;
            let requires: String = redis::cmd("HGET")
                .arg(q.keys().job(&l.job_id))
                .arg("requires")
                .query(&mut c)
                .unwrap();
            let passes: Option<u64> = redis::cmd("HGET")
                .arg(q.keys().job(&l.job_id))
                .arg("passes")
                .query(&mut c)
                .unwrap();
            max_passes = max_passes.max(passes.unwrap_or(0));
            if last[i].as_ref() != Some(&requires) {
                loads += 1;
                last[i] = Some(requires);
            }
            support::complete(&q, &l, 1.0).await;
        }
        if !any {
            break;
        }
    }
    (loads, max_passes)
}

#[tokio::test]
async fn affinity_saves_model_loads_on_the_same_job_list_within_its_bound() {
    for mode in [Mode::Fifo, Mode::RoundRobin, Mode::FairShare] {
        let (off, off_passes) = loads(false, mode).await;
        let (on, on_passes) = loads(true, mode).await;
        eprintln!("{mode:?}: {on} loads with affinity (max passes {on_passes}), {off} without");
        assert_eq!(
            off_passes, 0,
            "{mode:?}: nobody is passed over with affinity off"
        );
        assert!(
            on_passes <= 4,
            "{mode:?}: a job was passed over {on_passes} times"
        );
        assert!(
            on * 2 <= off,
            "{mode:?}: {on} loads with affinity, {off} without"
        );
    }
}

#[tokio::test]
async fn a_parked_or_draining_pool_gets_no_jobs_and_what_it_ran_is_counted() {
    use comfy_multi::pool::{Burst, PoolState};
    let (_redis, q) = setup().await;
    q.set_worker_pool("rented-1", "rented").await.unwrap();
    q.init_pool("rented", PoolState::Parked, Burst::Always, 0)
        .await
        .unwrap();
    let id = q.enqueue(job("user01", 1)).await.unwrap().id;
    assert!(q.lease("rented-1").await.unwrap().is_none(), "parked");
    // The config's state at the next start does not undo a runtime switch.
    q.set_pool("rented", Some(PoolState::Enabled), None)
        .await
        .unwrap();
    q.init_pool("rented", PoolState::Parked, Burst::Always, 0)
        .await
        .unwrap();
    let l = q.lease("rented-1").await.unwrap().expect("enabled again");
    assert_eq!(l.job_id, id);
    support::complete(&q, &l, 90.0).await;
    q.enqueue(job("user01", 2)).await.unwrap();
    q.set_pool("rented", Some(PoolState::Draining), None)
        .await
        .unwrap();
    assert!(q.lease("rented-1").await.unwrap().is_none(), "draining");
    // A worker in another pool (or none) is not affected.
    assert!(q.lease("gpu0").await.unwrap().is_some());
    let pools = q.pools(&["local".to_string()]).await.unwrap();
    let rented = pools.iter().find(|p| p.name == "rented").unwrap();
    assert_eq!(rented.state, PoolState::Draining);
    assert_eq!(rented.gpu_ms, 90_000, "the GPU time its worker ran");
    assert_eq!(rented.workers, ["rented-1"]);
    assert!(pools
        .iter()
        .any(|p| p.name == "local" && p.workers.is_empty()));
}

#[tokio::test]
async fn a_burst_pool_takes_jobs_only_while_the_line_is_longer_than_its_threshold() {
    use comfy_multi::pool::{Burst, PoolState};
    let (_redis, q) = setup().await;
    q.set_worker_pool("cloud-1", "cloud").await.unwrap();
    q.init_pool("cloud", PoolState::Enabled, Burst::LineOver(3), 0)
        .await
        .unwrap();
    for n in 0..4 {
        q.enqueue(job(&format!("user0{n}"), n)).await.unwrap();
    }
    // 4 waiting > 3: the burst pool helps, until the line is down to 3.
    assert!(q.lease("cloud-1").await.unwrap().is_some());
    assert!(q.lease("cloud-1").await.unwrap().is_none(), "3 waiting");
    assert!(q.lease("gpu0").await.unwrap().is_some(), "local GPUs go on");
    q.set_pool("cloud", None, Some(Burst::Always))
        .await
        .unwrap();
    assert!(q.lease("cloud-1").await.unwrap().is_some());
}

#[tokio::test]
async fn a_pool_never_holds_more_jobs_than_its_max_concurrency() {
    use comfy_multi::pool::{Burst, PoolState};
    let (_redis, q) = setup().await;
    for w in ["rp-1", "rp-2", "rp-3"] {
        q.set_worker_pool(w, "runpod").await.unwrap();
    }
    q.init_pool("runpod", PoolState::Enabled, Burst::Always, 2)
        .await
        .unwrap();
    for n in 0..5 {
        q.enqueue(job(&format!("user0{n}"), n)).await.unwrap();
    }
    let a = q.lease("rp-1").await.unwrap().unwrap();
    q.lease("rp-2").await.unwrap().unwrap();
    assert!(
        q.lease("rp-3").await.unwrap().is_none(),
        "2 held: the limit"
    );
    assert!(
        q.lease("gpu0").await.unwrap().is_some(),
        "other pools go on"
    );
    support::complete(&q, &a, 1.0).await;
    assert!(q.lease("rp-3").await.unwrap().is_some(), "room again");
    // The config's limit is written at every start (0: none).
    q.init_pool("runpod", PoolState::Enabled, Burst::Always, 0)
        .await
        .unwrap();
    assert!(q.lease("rp-1").await.unwrap().is_some());
}
