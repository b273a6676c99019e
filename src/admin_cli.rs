//! `comfy-multi admin <command>`: the instructor's terminal. Each command is
//! one call to the hub's admin API; answers print as tables (or `--json`
//! for scripts). Any failure — hub unreachable, token refused, unknown job
//! or user — prints one clear line and exits non-zero.

use crate::auth::{CredentialsFile, ADMIN};
use crate::config::Config;
use anyhow::{bail, Context};
use clap::Subcommand;
use comfy_table::{presets, Table};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Queue size, workers, mode and pause state.
    Status,
    /// The waiting and running jobs, in order.
    Queue,
    /// Every participant with their jobs and GPU time.
    Users,
    /// Every worker with its state and current job.
    Workers,
    /// Cancel a job (waiting or running).
    Cancel { job: String },
    /// Move a job into the priority lane.
    Prioritize { job: String },
    /// Move a job one place up or down.
    Move {
        job: String,
        #[arg(value_parser = ["up", "down"])]
        direction: String,
    },
    /// Switch the scheduling mode.
    Mode {
        #[arg(value_parser = ["fifo", "round_robin", "fair_share"])]
        mode: String,
    },
    /// Stop taking and handing out jobs.
    Pause,
    /// Take and hand out jobs again.
    Resume,
    /// Refuse a participant's new jobs.
    Lock { user: String },
    /// Accept a participant's jobs again.
    Unlock { user: String },
    /// Remove a participant's waiting jobs.
    Clear { user: String },
    /// Give a participant a new password and token (prints them).
    Reset { user: String },
    /// Show a message in every participant's editor.
    Broadcast {
        #[arg(required = true, num_args = 1..)]
        message: Vec<String>,
    },
    /// Let a worker finish its job and take no more.
    Drain { worker: String },
    /// Let a drained worker take jobs again.
    Undrain { worker: String },
    /// Max waiting jobs per participant (everyone, or `--user`).
    MaxPending {
        value: u32,
        #[arg(long)]
        user: Option<String>,
    },
}

/// Where the hub is and how to prove we are the instructor.
pub struct AdminTarget {
    pub hub: String,
    pub token: String,
}

/// `--token-file`: a credentials TOML (its `[admin]` token) or the token.
fn token_from_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the admin token file {}", path.display()))?;
    if let Ok(file) = CredentialsFile::parse(&text) {
        return file
            .get(ADMIN)
            .map(|c| c.token.clone())
            .with_context(|| format!("{} has no [admin] login", path.display()));
    }
    let token = text.trim();
    anyhow::ensure!(!token.is_empty(), "{} is empty", path.display());
    Ok(token.to_string())
}

impl AdminTarget {
    /// `--hub`, else the configured hub address; `--token-file`, else
    /// `COMFY_MULTI_ADMIN_TOKEN`, else the configured admin login.
    pub fn resolve(
        config: &Config,
        hub: Option<String>,
        token_file: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let hub = hub.unwrap_or_else(|| {
            let listen = config.hub.listen.replace("0.0.0.0", "127.0.0.1");
            format!("http://{listen}")
        });
        let token = if let Some(f) = token_file {
            token_from_file(&f)?
        } else if let Ok(t) = std::env::var("COMFY_MULTI_ADMIN_TOKEN") {
            t
        } else if let Some(t) = config
            .participants
            .credentials_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|text| CredentialsFile::parse(&text).ok())
            .and_then(|file| file.get(ADMIN).map(|c| c.token.clone()))
        {
            t
        } else if let Some(f) = &config.hub.admin_password_file {
            // The hub accepts the admin password as a token too.
            crate::config::read_secret(f)?
        } else {
            bail!("no admin token: pass --token-file (e.g. <state-dir>/participants.toml) or set COMFY_MULTI_ADMIN_TOKEN");
        };
        Ok(Self {
            hub: hub.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}/admin/api{path}", self.hub);
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .build()?;
        let req = match method {
            "GET" => http.get(&url),
            _ => http.post(&url).json(&body.unwrap_or(json!({}))),
        };
        let r =
            req.bearer_auth(&self.token).send().await.map_err(|e| {
                anyhow::anyhow!("cannot reach the hub at {}: {}", self.hub, root(&e))
            })?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let message = v["error"]["message"].as_str().unwrap_or("").to_string();
        match status.as_u16() {
            401 => bail!("the hub refused the admin token (401)"),
            404 => bail!(
                "not found{}",
                if message.is_empty() || message == "not found" {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ),
            _ => bail!("the hub answered {status}: {message}"),
        }
    }
}

fn root(e: &dyn std::error::Error) -> String {
    let mut e = e;
    while let Some(s) = e.source() {
        e = s;
    }
    e.to_string()
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn short(id: &Value) -> String {
    s(id).chars().take(8).collect()
}

/// Runs one command; prints its answer.
pub async fn run(target: &AdminTarget, cmd: AdminCommand, as_json: bool) -> anyhow::Result<()> {
    use AdminCommand::*;
    let (method, path, body) = match &cmd {
        Status => ("GET", "/status".to_string(), None),
        Queue => ("GET", "/queue".into(), None),
        Users => ("GET", "/users".into(), None),
        Workers => ("GET", "/workers".into(), None),
        Cancel { job } => ("POST", format!("/jobs/{job}/cancel"), None),
        Prioritize { job } => ("POST", format!("/jobs/{job}/prioritize"), None),
        Move { job, direction } => (
            "POST",
            format!("/jobs/{job}/move"),
            Some(json!({"direction": direction})),
        ),
        Mode { mode } => ("POST", "/mode".into(), Some(json!({"mode": mode}))),
        Pause => ("POST", "/pause".into(), None),
        Resume => ("POST", "/resume".into(), None),
        Lock { user } => ("POST", format!("/users/{user}/lock"), None),
        Unlock { user } => ("POST", format!("/users/{user}/unlock"), None),
        Clear { user } => ("POST", format!("/users/{user}/clear"), None),
        Reset { user } => ("POST", format!("/users/{user}/reset"), None),
        Broadcast { message } => (
            "POST",
            "/broadcast".into(),
            Some(json!({"message": message.join(" ")})),
        ),
        Drain { worker } => ("POST", format!("/workers/{worker}/drain"), None),
        Undrain { worker } => ("POST", format!("/workers/{worker}/undrain"), None),
        MaxPending { value, user } => match user {
            Some(u) => (
                "POST",
                format!("/users/{u}/max_pending"),
                Some(json!({"value": value})),
            ),
            None => ("POST", "/max_pending".into(), Some(json!({"value": value}))),
        },
    };
    let v = target.call(method, &path, body).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{}", human(&cmd, &v));
    Ok(())
}

fn human(cmd: &AdminCommand, v: &Value) -> String {
    use AdminCommand::*;
    let empty = vec![];
    let list = |k: &str| v[k].as_array().unwrap_or(&empty).clone();
    match cmd {
        Status => {
            let st = &v["settings"];
            let paused = match (st["paused_submit"] == true, st["paused_dispatch"] == true) {
                (true, true) => "paused",
                (true, false) => "not taking new jobs",
                (false, true) => "not handing out jobs",
                _ => "running",
            };
            let mut out = format!(
                "queue: {paused}, mode {}, max {} pending per participant\n\
                 jobs: {} waiting, {} running, {} done, {} failed, {} cancelled\n\
                 workers: {}   participants: {}",
                s(&st["mode"]),
                s(&st["max_pending_per_participant"]),
                s(&v["waiting"]),
                s(&v["running"]),
                s(&v["succeeded"]),
                s(&v["failed"]),
                s(&v["cancelled"]),
                s(&v["workers"]),
                s(&v["participants"]),
            );
            if let Some(m) = v["broadcast"]["message"].as_str() {
                out.push_str(&format!("\nlast broadcast: {m}"));
            }
            out
        }
        Queue => {
            let mut rows = vec![];
            for j in list("running") {
                rows.push(vec![
                    "running".into(),
                    short(&j["id"]),
                    s(&j["participant"]),
                    s(&j["name"]),
                    s(&j["worker"]),
                    s(&j["attempts"]),
                ]);
            }
            for j in list("waiting") {
                rows.push(vec![
                    format!(
                        "#{}{}",
                        s(&j["position"]),
                        if j["priority"] == true { " !" } else { "" }
                    ),
                    short(&j["id"]),
                    s(&j["participant"]),
                    s(&j["name"]),
                    format!(
                        "waiting {:.0} s",
                        j["waiting_seconds"].as_f64().unwrap_or(0.0)
                    ),
                    s(&j["attempts"]),
                ]);
            }
            if rows.is_empty() {
                return "the queue is empty".into();
            }
            table(
                &["", "job", "participant", "workflow", "where", "attempts"],
                rows,
            )
        }
        Users => table(
            &[
                "name", "online", "queued", "running", "done", "failed", "gpu s", "locked",
            ],
            v.as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|u| {
                    vec![
                        s(&u["name"]),
                        s(&u["online"]),
                        s(&u["queued"]),
                        s(&u["running"]),
                        s(&u["done"]),
                        s(&u["failed"]),
                        format!("{:.1}", u["gpu_seconds"].as_f64().unwrap_or(0.0)),
                        s(&u["locked"]),
                    ]
                })
                .collect(),
        ),
        Workers => {
            let rows: Vec<Vec<String>> = v
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|w| {
                    let job = w["jobs"][0]["id"].clone();
                    vec![
                        s(&w["id"]),
                        format!(
                            "{}{}",
                            s(&w["state"]),
                            if w["draining"] == true {
                                " (draining)"
                            } else {
                                ""
                            }
                        ),
                        if job.is_null() {
                            "-".into()
                        } else {
                            short(&job)
                        },
                        s(&w["jobs_done"]),
                        format!(
                            "{:.0}%",
                            w["busy_ratio_10m"].as_f64().unwrap_or(0.0) * 100.0
                        ),
                        s(&w["gpu"]),
                        s(&w["comfyui_version"]),
                    ]
                })
                .collect();
            if rows.is_empty() {
                return "no workers connected".into();
            }
            table(
                &[
                    "worker", "state", "job", "done", "busy 10m", "gpu", "comfyui",
                ],
                rows,
            )
        }
        Clear { user } => format!("removed {} waiting job(s) of {user}", s(&v["removed"])),
        Reset { user } => format!(
            "{user}'s new password: {}\n(token for scripts: {})",
            s(&v["password"]),
            s(&v["token"])
        ),
        Move { .. } if v["moved"] == false => "already at that end of the queue".into(),
        other => format!("ok: {}", format!("{other:?}").to_lowercase()),
    }
}
