//! Model-based test: random sequences of queue operations are applied to the
//! real scripts and to a simple in-memory model; after every step the
//! queue's answers and stored state must agree with the model.

mod support;

use comfy_multi::queue::{Actor, Cancelled, Mode, Outcome, Queue, Refusal, Status};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use std::collections::HashMap;
use support::{job, test_settings, unique_prefix, RedisServer};

const MAX_ATTEMPTS: u32 = 3;
const MAX_PENDING: u32 = 4;

#[derive(Clone, Debug)]
enum Op {
    Enqueue { user: u8, prio: bool },
    Lease { worker: u8 },
    Start { job: usize },
    Heartbeat { job: usize, stale: bool },
    Complete { job: usize, stale: bool },
    Fail { job: usize },
    Expire,
    Cancel { job: usize, by_owner: bool },
    Prioritize { job: usize },
    SetMode { mode: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, prop::bool::weighted(0.15)).prop_map(|(user, prio)| Op::Enqueue { user, prio }),
        4 => (0u8..3).prop_map(|worker| Op::Lease { worker }),
        2 => any::<usize>().prop_map(|job| Op::Start { job }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(job, stale)| Op::Heartbeat { job, stale }),
        3 => (any::<usize>(), prop::bool::weighted(0.2)).prop_map(|(job, stale)| Op::Complete { job, stale }),
        1 => any::<usize>().prop_map(|job| Op::Fail { job }),
        1 => Just(Op::Expire),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(job, by_owner)| Op::Cancel { job, by_owner }),
        1 => any::<usize>().prop_map(|job| Op::Prioritize { job }),
        1 => (0u8..3).prop_map(|mode| Op::SetMode { mode }),
    ]
}

#[derive(Clone, Debug)]
struct MJob {
    id: String,
    user: String,
    status: Status,
    attempts: u32,
    token: Option<u64>,
    prio: bool,
    cancel: bool,
    number: u64,
}

#[derive(Default)]
struct Model {
    jobs: Vec<MJob>,
    mode: Option<Mode>,
}

impl Model {
    fn active(&self, user: &str) -> u32 {
        self.jobs
            .iter()
            .filter(|j| j.user == user && !j.status.is_terminal())
            .count() as u32
    }
    fn pick(&self, i: usize) -> Option<usize> {
        (!self.jobs.is_empty()).then(|| i % self.jobs.len())
    }
    fn holding(&self, i: usize) -> bool {
        matches!(self.jobs[i].status, Status::Leased | Status::Running)
    }
}

async fn apply(q: &Queue, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::Enqueue { user, prio } => {
            let user = format!("user{user}");
            let mut j = job(&user, m.jobs.len() as u64);
            j.priority = *prio;
            let r = q.enqueue(j).await;
            if m.active(&user) >= MAX_PENDING {
                prop_assert_eq!(r.unwrap_err().refusal(), Some(Refusal::TooManyPending));
            } else {
                let e = r.unwrap();
                m.jobs.push(MJob {
                    id: e.id,
                    user,
                    status: Status::Queued,
                    attempts: 0,
                    token: None,
                    prio: *prio,
                    cancel: false,
                    number: e.number,
                });
            }
        }
        Op::Lease { worker } => {
            let r = q.lease(&format!("w{worker}")).await.unwrap();
            let waiting: Vec<usize> = (0..m.jobs.len())
                .filter(|&i| m.jobs[i].status == Status::Queued)
                .collect();
            match r {
                None => prop_assert!(
                    waiting.is_empty(),
                    "lease found nothing with {} waiting",
                    waiting.len()
                ),
                Some(l) => {
                    let i = m
                        .jobs
                        .iter()
                        .position(|j| j.id == l.job_id)
                        .expect("known job");
                    prop_assert_eq!(
                        m.jobs[i].status,
                        Status::Queued,
                        "leased a job that was not waiting"
                    );
                    let prio_waiting = waiting.iter().any(|&w| m.jobs[w].prio);
                    prop_assert!(
                        !prio_waiting || m.jobs[i].prio,
                        "the priority lane goes first"
                    );
                    let untouched = waiting.iter().all(|&w| m.jobs[w].attempts == 0);
                    if !prio_waiting && m.mode == Some(Mode::Fifo) && untouched {
                        let first = waiting.iter().map(|&w| m.jobs[w].number).min().unwrap();
                        prop_assert_eq!(m.jobs[i].number, first, "fifo leases the oldest job");
                    }
                    let older_token = m.jobs.iter().filter_map(|j| j.token).max().unwrap_or(0);
                    prop_assert!(l.token > older_token, "fencing tokens increase");
                    prop_assert_eq!(l.attempts, m.jobs[i].attempts);
                    m.jobs[i].status = Status::Leased;
                    m.jobs[i].token = Some(l.token);
                }
            }
        }
        Op::Start { job } => {
            let Some(i) = m.pick(*job) else { return Ok(()) };
            let token = m.jobs[i].token.unwrap_or(0);
            let r = q.start(&m.jobs[i].id, token).await;
            if m.holding(i) {
                prop_assert_eq!(r.unwrap(), m.jobs[i].cancel);
                m.jobs[i].status = Status::Running;
            } else {
                prop_assert!(r.is_err());
            }
        }
        Op::Heartbeat { job, stale } => {
            let Some(i) = m.pick(*job) else { return Ok(()) };
            let token = m.jobs[i].token.unwrap_or(0) + u64::from(*stale);
            let r = q.heartbeat(&m.jobs[i].id, token).await;
            if m.holding(i) && !stale {
                prop_assert_eq!(r.unwrap(), m.jobs[i].cancel);
            } else {
                prop_assert!(r.is_err(), "heartbeat with a dead lease was accepted");
            }
        }
        Op::Complete { .. } | Op::Fail { .. } => {
            let (job, stale, outcome) = match op {
                Op::Complete { job, stale } => (job, *stale, Outcome::Succeeded),
                Op::Fail { job } => (job, false, Outcome::Failed),
                _ => unreachable!(),
            };
            let Some(i) = m.pick(*job) else { return Ok(()) };
            let token = m.jobs[i].token.unwrap_or(0) + u64::from(stale);
            let r = q
                .finish(&m.jobs[i].id, token, outcome, &json!({}), None, Some(0.5))
                .await;
            if m.holding(i) && !stale {
                r.unwrap();
                m.jobs[i].status = if outcome == Outcome::Succeeded {
                    Status::Succeeded
                } else {
                    Status::Failed
                };
            } else {
                let refusal = r.unwrap_err().refusal();
                prop_assert!(matches!(
                    refusal,
                    Some(Refusal::StaleToken | Refusal::AlreadyFinished)
                ));
            }
        }
        Op::Expire => {
            let reaped = q.requeue_expired_after(3_600_000).await.unwrap();
            let held: Vec<usize> = (0..m.jobs.len()).filter(|&i| m.holding(i)).collect();
            prop_assert_eq!(reaped.len(), held.len());
            for i in held {
                let j = &mut m.jobs[i];
                j.attempts += 1;
                j.status = if j.cancel {
                    Status::Cancelled
                } else if j.attempts >= MAX_ATTEMPTS {
                    Status::Failed
                } else {
                    Status::Queued
                };
            }
        }
        Op::Cancel { job, by_owner } => {
            let Some(i) = m.pick(*job) else { return Ok(()) };
            let actor = if *by_owner {
                Actor::Participant(m.jobs[i].user.clone())
            } else {
                Actor::Participant("intruder".into())
            };
            let r = q.cancel(&m.jobs[i].id, &actor).await;
            if !by_owner {
                prop_assert_eq!(r.unwrap_err().refusal(), Some(Refusal::NotFound));
            } else {
                match m.jobs[i].status {
                    Status::Queued => {
                        prop_assert_eq!(r.unwrap(), Cancelled::Removed);
                        m.jobs[i].status = Status::Cancelled;
                    }
                    Status::Leased | Status::Running => {
                        prop_assert_eq!(r.unwrap(), Cancelled::Flagged);
                        m.jobs[i].cancel = true;
                    }
                    _ => prop_assert_eq!(r.unwrap_err().refusal(), Some(Refusal::AlreadyFinished)),
                }
            }
        }
        Op::Prioritize { job } => {
            let Some(i) = m.pick(*job) else { return Ok(()) };
            let r = q.prioritize(&m.jobs[i].id).await;
            if m.jobs[i].status == Status::Queued {
                r.unwrap();
                m.jobs[i].prio = true;
            } else {
                prop_assert_eq!(r.unwrap_err().refusal(), Some(Refusal::NotQueued));
            }
        }
        Op::SetMode { mode } => {
            let mode = [Mode::Fifo, Mode::RoundRobin, Mode::FairShare][*mode as usize];
            q.set_mode(mode).await.unwrap();
            m.mode = Some(mode);
        }
    }
    Ok(())
}

/// The stored state agrees with the model.
async fn check(q: &Queue, m: &Model) -> Result<(), TestCaseError> {
    for j in &m.jobs {
        let stored = q.job(&j.id).await.unwrap().expect("job kept");
        prop_assert_eq!(stored.status, j.status, "status of job {}", j.number);
        prop_assert_eq!(stored.attempts, j.attempts, "attempts of job {}", j.number);
    }
    let c = q.counts().await.unwrap();
    let waiting = m.jobs.iter().filter(|j| j.status == Status::Queued).count() as u64;
    let held = m
        .jobs
        .iter()
        .filter(|j| matches!(j.status, Status::Leased | Status::Running))
        .count() as u64;
    prop_assert_eq!((c.waiting, c.leased_or_running), (waiting, held));
    let snap = q.snapshot(1).await.unwrap();
    prop_assert_eq!(snap.waiting.len() as u64, waiting);
    let mut active: HashMap<String, u64> = HashMap::new();
    for j in m.jobs.iter().filter(|j| !j.status.is_terminal()) {
        *active.entry(j.user.clone()).or_default() += 1;
    }
    for p in q.participants().await.unwrap() {
        prop_assert_eq!(
            p.active,
            active.get(&p.name).copied().unwrap_or(0),
            "active jobs of {}",
            p.name
        );
        let finished = m
            .jobs
            .iter()
            .filter(|j| j.user == p.name && j.status.is_terminal())
            .count();
        prop_assert_eq!(q.history(&p.name, 0, 1000).await.unwrap().len(), finished);
    }
    Ok(())
}

#[test]
fn random_operation_sequences_agree_with_the_model() {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cases = std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(op(), 1..80), |ops| {
            rt.block_on(async {
                let mut settings = test_settings();
                settings.max_attempts = MAX_ATTEMPTS;
                settings.max_pending_per_participant = MAX_PENDING;
                let q = Queue::connect(&redis.url(), &unique_prefix(), settings)
                    .await
                    .unwrap();
                let mut m = Model::default();
                for op in &ops {
                    apply(&q, &mut m, op).await?;
                    check(&q, &m).await?;
                }
                Ok(())
            })
        })
        .unwrap();
}
