//! Reliability records: every fault scenario, load run and hostile-input
//! class writes one JSON record of what it did and what it counted, and
//! `reliability-report` renders `docs/RELIABILITY.md` from those records —
//! so the published report is regenerated from a run, never typed by hand.
//!
//! A record is written only when `COMFY_MULTI_REPORT_DIR` is set (as
//! `scripts/reliability.sh` and `scripts/test.sh` do); elsewhere
//! [`Record::write`] does nothing. Tests write the record *before* they
//! assert, so a failing run is reported as failing, not left out.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which table of the report a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    /// A process killed or frozen with jobs in flight.
    Fault,
    /// Many simulated participants at once.
    Load,
    /// Hostile or malformed input (fuzz, limits, auth, node policy).
    Input,
}

/// Jepsen-style counts of one fault scenario, from the participants' side:
/// what they were told was accepted, and what they can see at the end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Jepsen {
    /// Submits acknowledged with a prompt id.
    pub submitted: u64,
    pub succeeded: u64,
    /// Failed jobs, by reason (e.g. `"lease expired 5 times"`).
    pub failed: BTreeMap<String, u64>,
    pub cancelled: u64,
    /// Acknowledged submits that never reached a final state, or vanished
    /// from the participant's history. Must be 0.
    pub lost: u64,
    /// Results visible to the participant more than once (a job listed
    /// twice, or more output files than the job made). Must be 0.
    pub duplicated: u64,
    /// From the fault to the first job finishing after it, in milliseconds.
    pub recovery_ms: Option<u64>,
}

impl Jepsen {
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// One row of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub section: Section,
    /// Stable file name and anchor, e.g. `fault-1-worker-sigkill`.
    pub id: String,
    /// One line: what was done (e.g. "SIGKILL a worker agent mid-job").
    pub title: String,
    /// How: the processes, job sizes and timing involved.
    pub setup: String,
    /// The seed that chose the victim and timing, to replay a run.
    pub seed: Option<u64>,
    /// Fault scenarios only.
    pub jepsen: Option<Jepsen>,
    /// Anything else counted or measured, in display order:
    /// `("cases", "4096")`, `("successes", "0")`, `("submit p99", "8 ms")`.
    pub measures: Vec<(String, String)>,
    /// Whether every expectation held.
    pub passed: bool,
}

impl Record {
    pub fn new(section: Section, id: &str, title: &str) -> Record {
        Record {
            section,
            id: id.to_string(),
            title: title.to_string(),
            setup: String::new(),
            seed: None,
            jepsen: None,
            measures: Vec::new(),
            passed: false,
        }
    }

    pub fn setup(mut self, setup: impl Into<String>) -> Record {
        self.setup = setup.into();
        self
    }

    pub fn measure(mut self, name: &str, value: impl ToString) -> Record {
        self.measures.push((name.to_string(), value.to_string()));
        self
    }

    /// Writes `$COMFY_MULTI_REPORT_DIR/<id>.json` when that variable is
    /// set; panics if it is set but cannot be written (a silent gap in the
    /// report would look like a pass).
    pub fn write(&self) {
        let Some(dir) = std::env::var_os("COMFY_MULTI_REPORT_DIR") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("create the report dir");
        let path = dir.join(format!("{}.json", self.id));
        let text = serde_json::to_string_pretty(self).expect("a record serialises");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}
