//! Worker pools: named groups of workers by provider (the host's GPUs,
//! a rented machine running an agent, a ComfyUI at a URL, a RunPod
//! serverless endpoint), each with a
//! state the instructor switches at runtime and a burst policy saying when
//! it takes jobs. The words of that vocabulary live here, shared by the
//! config, the queue (which enforces them in `lease.lua`), the admin API
//! and the CLI.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The pool an agent joins when its config names none.
pub const DEFAULT_POOL: &str = "local";

/// What kind of workers a pool holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// Workers that dial the hub (`comfy-multi worker`, here or on a
    /// rented machine).
    #[default]
    Agent,
    /// ComfyUIs reachable at URLs, driven from inside the hub.
    ComfyuiUrl,
    /// A RunPod serverless endpoint (worker-comfyui), driven from inside
    /// the hub by one worker holding up to `max_concurrency` jobs.
    RunpodServerless,
}

impl PoolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolKind::Agent => "agent",
            PoolKind::ComfyuiUrl => "comfyui_url",
            PoolKind::RunpodServerless => "runpod_serverless",
        }
    }
}

/// The instructor's switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolState {
    /// Takes jobs as its burst policy says.
    #[default]
    Enabled,
    /// Takes no new jobs; what it holds finishes.
    Parked,
    /// Takes no new jobs, finishing what it holds, on the way to being
    /// shut down (shown as drained once it holds nothing).
    Draining,
}

impl PoolState {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Enabled => "enabled",
            PoolState::Parked => "parked",
            PoolState::Draining => "draining",
        }
    }
}

impl FromStr for PoolState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enabled" | "enable" => Ok(PoolState::Enabled),
            "parked" | "park" => Ok(PoolState::Parked),
            "draining" | "drain" => Ok(PoolState::Draining),
            other => Err(format!(
                "unknown pool state {other:?} (enabled, parked or draining)"
            )),
        }
    }
}

/// When an enabled pool takes jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Burst {
    /// Whenever it has room.
    #[default]
    Always,
    /// Only while more than this many jobs wait in line.
    LineOver(u32),
}

impl fmt::Display for Burst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Burst::Always => f.write_str("always"),
            Burst::LineOver(n) => write!(f, "line_over:{n}"),
        }
    }
}

impl FromStr for Burst {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("unknown burst policy {s:?} (always, or line_over:N — only while more than N jobs wait)")
        };
        if s == "always" {
            return Ok(Burst::Always);
        }
        let n = s.strip_prefix("line_over:").ok_or_else(bad)?;
        n.parse::<u32>().map(Burst::LineOver).map_err(|_| bad())
    }
}

impl Serialize for Burst {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Burst {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_policies_read_back_as_they_are_written() {
        for b in [Burst::Always, Burst::LineOver(0), Burst::LineOver(25)] {
            assert_eq!(b.to_string().parse::<Burst>(), Ok(b));
        }
        for bad in ["", "sometimes", "line_over:", "line_over:-1", "line_over:x"] {
            let e = bad.parse::<Burst>().unwrap_err();
            assert!(e.contains("line_over:N"), "{bad}: {e}");
        }
    }

    #[test]
    fn states_accept_the_verbs_the_cli_uses() {
        assert_eq!("park".parse(), Ok(PoolState::Parked));
        assert_eq!("drain".parse(), Ok(PoolState::Draining));
        assert_eq!("enable".parse(), Ok(PoolState::Enabled));
        assert!("off".parse::<PoolState>().is_err());
    }
}
