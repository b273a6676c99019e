//! Predicts the global order in which waiting jobs will be leased, from a
//! snapshot of the queue's structures, so participants and the instructor
//! see positions and ETAs that match what `lease.lua` will actually do.
//! Pure functions; no Redis here.

use super::job::Mode;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};

/// The scheduling state as read from Redis.
#[derive(Clone, Debug, Default)]
pub struct SchedState {
    pub mode: Mode,
    /// Priority lane, in order: (job id, participant).
    pub prio: Vec<(String, String)>,
    /// Every other waiting job in global arrival order: (job id, participant).
    pub queued: Vec<(String, String)>,
    /// Participants with waiting work in round-robin turn order.
    pub rr: Vec<String>,
    /// Participants with waiting work and their fair-share start tags.
    pub fs: Vec<(String, f64)>,
    /// Per-participant charge per job (estimated cost / weight), ms.
    pub charge: HashMap<String, f64>,
    /// Charge used for participants without an entry.
    pub default_charge: f64,
}

#[derive(PartialEq)]
struct Tagged(f64, usize, String);
impl Eq for Tagged {}
impl PartialOrd for Tagged {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Tagged {
    // Min-heap on (tag, then the order participants appear in the snapshot).
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .total_cmp(&self.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

/// Job ids in predicted lease order (assuming every worker can run every job).
pub fn predicted_order(s: &SchedState) -> Vec<String> {
    let mut order: Vec<String> = s.prio.iter().map(|(id, _)| id.clone()).collect();
    let mut lines: HashMap<&str, VecDeque<&str>> = HashMap::new();
    for (id, u) in &s.queued {
        lines.entry(u.as_str()).or_default().push_back(id.as_str());
    }
    match s.mode {
        Mode::Fifo => order.extend(s.queued.iter().map(|(id, _)| id.clone())),
        Mode::RoundRobin => {
            let mut ring: VecDeque<&str> = s.rr.iter().map(String::as_str).collect();
            // Participants with work but missing from the ring go last.
            for (_, u) in &s.queued {
                if !ring.contains(&u.as_str()) {
                    ring.push_back(u.as_str());
                }
            }
            while let Some(u) = ring.pop_front() {
                if let Some(line) = lines.get_mut(u) {
                    if let Some(id) = line.pop_front() {
                        order.push(id.to_string());
                        if !line.is_empty() {
                            ring.push_back(u);
                        }
                    }
                }
            }
        }
        Mode::FairShare => {
            let mut heap = BinaryHeap::new();
            let mut seen = std::collections::HashSet::new();
            for (i, (u, tag)) in s.fs.iter().enumerate() {
                seen.insert(u.as_str());
                heap.push(Tagged(*tag, i, u.clone()));
            }
            let base = s.fs.iter().map(|(_, t)| *t).fold(0.0, f64::max);
            for (i, (_, u)) in s.queued.iter().enumerate() {
                if seen.insert(u.as_str()) {
                    heap.push(Tagged(base, s.fs.len() + i, u.clone()));
                }
            }
            while let Some(Tagged(tag, i, u)) = heap.pop() {
                let Some(line) = lines.get_mut(u.as_str()) else {
                    continue;
                };
                let Some(id) = line.pop_front() else { continue };
                order.push(id.to_string());
                if !line.is_empty() {
                    let charge = s.charge.get(&u).copied().unwrap_or(s.default_charge);
                    heap.push(Tagged(tag + charge, i, u));
                }
            }
        }
    }
    order
}

/// Estimated seconds until a job at 0-based `position` among waiting jobs
/// finishes, with `workers` busy GPUs and a mean run time of `mean_secs`.
pub fn eta_seconds(position: usize, workers: usize, mean_secs: f64) -> f64 {
    let workers = workers.max(1);
    ((position / workers) as f64 + 1.0) * mean_secs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(spec: &[(&str, &str)]) -> Vec<(String, String)> {
        spec.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn fifo_order_is_arrival_order_after_the_priority_lane() {
        let s = SchedState {
            mode: Mode::Fifo,
            prio: jobs(&[("p1", "c")]),
            queued: jobs(&[("a1", "a"), ("a2", "a"), ("b1", "b")]),
            ..Default::default()
        };
        assert_eq!(predicted_order(&s), ["p1", "a1", "a2", "b1"]);
    }

    #[test]
    fn round_robin_alternates_participants_in_ring_order() {
        let s = SchedState {
            mode: Mode::RoundRobin,
            queued: jobs(&[
                ("a1", "a"),
                ("a2", "a"),
                ("a3", "a"),
                ("b1", "b"),
                ("c1", "c"),
            ]),
            rr: vec!["b".into(), "a".into(), "c".into()],
            ..Default::default()
        };
        assert_eq!(predicted_order(&s), ["b1", "a1", "c1", "a2", "a3"]);
    }

    #[test]
    fn fair_share_serves_cheap_participants_more_often() {
        let s = SchedState {
            mode: Mode::FairShare,
            queued: jobs(&[
                ("a1", "a"),
                ("a2", "a"),
                ("b1", "b"),
                ("b2", "b"),
                ("b3", "b"),
            ]),
            fs: vec![("a".into(), 0.0), ("b".into(), 0.0)],
            charge: [("a".to_string(), 3.0), ("b".to_string(), 1.0)]
                .into_iter()
                .collect(),
            default_charge: 1.0,
            ..Default::default()
        };
        // a: tags 0, 3; b: tags 0, 1, 2.
        assert_eq!(predicted_order(&s), ["a1", "b1", "b2", "b3", "a2"]);
    }

    #[test]
    fn eta_grows_with_position_and_shrinks_with_workers() {
        assert_eq!(eta_seconds(0, 1, 10.0), 10.0);
        assert_eq!(eta_seconds(3, 1, 10.0), 40.0);
        assert_eq!(eta_seconds(3, 2, 10.0), 20.0);
        assert_eq!(eta_seconds(3, 0, 10.0), 40.0);
    }
}
