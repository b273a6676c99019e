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
    /// Warm models first (within the configured bound), or plain policy order.
    Affinity {
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Run the warm-up workflows again, on one worker or on all.
    Warmup {
        #[arg(long)]
        worker: Option<String>,
    },
    /// Disk use: free space, per participant, the biggest files.
    Storage,
    /// Remove old files: temp files and previews by default; outputs only
    /// with --outputs --force (they may not have been downloaded yet).
    Prune {
        /// Temp files and previews (the default).
        #[arg(long)]
        temp: bool,
        #[arg(long)]
        outputs: bool,
        /// Files untouched for this long: 90s, 30m, 2h, 1d.
        #[arg(long, default_value = "2h", value_parser = parse_age)]
        older_than: u64,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        force: bool,
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
    /// Send a workflow (as the editor saves it) to every participant, or
    /// to those named with --to: saved in their workflows (never over
    /// theirs) and opened in a new tab in every open editor of theirs.
    PushWorkflow {
        file: PathBuf,
        /// Participants to send it to (default: everyone).
        #[arg(long, num_args = 1..)]
        to: Vec<String>,
        /// The name it is shown under (default: the file's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Every worker pool: kind, state, burst policy, workers, cost so far.
    Pools,
    /// Switch a pool: `enable`, `park` (take no new jobs), `drain` (finish
    /// what it holds, then take nothing), or `burst always|line_over:N`
    /// (only while more than N jobs wait).
    Pool {
        name: String,
        #[arg(value_parser = ["enable", "park", "drain", "burst"])]
        action: String,
        /// The burst policy, for `burst`.
        policy: Option<String>,
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

/// A worker's warm-up as one cell: `2/3 running`, `done`, `failed: …`.
fn warmup_cell(w: &Value) -> String {
    match w["state"].as_str() {
        None => "-".into(),
        Some("running") => format!("{}/{} running", s(&w["done"]), s(&w["total"])),
        Some("failed") => format!(
            "failed: {}",
            w["errors"]
                .as_array()
                .map(|e| e.iter().map(s).collect::<Vec<_>>().join("; "))
                .unwrap_or_default()
        ),
        Some(state) => state.into(),
    }
}

/// `90s`, `30m`, `2h`, `1d` (or plain seconds) as seconds.
fn parse_age(text: &str) -> Result<u64, String> {
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?}: a number and s, m, h or d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    Ok(n * mult)
}

/// A share as a whole percentage, never `-0%` (a ratio a hair below
/// zero from float arithmetic is 0).
fn percent(ratio: f64) -> String {
    format!("{:.0}%", (ratio * 100.0).round().max(0.0) + 0.0)
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
        Warmup { worker } => ("POST", "/warmup".into(), Some(json!({"worker": worker}))),
        Storage => ("GET", "/storage".into(), None),
        Prune {
            temp,
            outputs,
            older_than,
            user,
            dry_run,
            force,
        } => (
            "POST",
            "/prune".into(),
            Some(
                json!({"temp": if *temp || !*outputs { Some(true) } else { None },
                "outputs": outputs, "older_than_s": older_than, "user": user,
                "dry_run": dry_run, "force": force}),
            ),
        ),
        Affinity { state } => (
            "POST",
            "/affinity".into(),
            Some(json!({"on": state == "on"})),
        ),
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
        PushWorkflow { file, to, name } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let workflow: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let name = name.clone().unwrap_or_else(|| {
                file.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "workflow".into())
            });
            let to = (!to.is_empty()).then(|| to.clone());
            (
                "POST",
                "/push_workflow".into(),
                Some(json!({"name": name, "workflow": workflow, "to": to})),
            )
        }
        Pools => ("GET", "/pools".into(), None),
        Pool {
            name,
            action,
            policy,
        } => {
            let body = if action == "burst" {
                let Some(p) = policy else {
                    bail!("burst needs a policy: always, or line_over:N (only while more than N jobs wait)");
                };
                p.parse::<crate::pool::Burst>()
                    .map_err(anyhow::Error::msg)?;
                json!({"burst": p})
            } else {
                if policy.is_some() {
                    bail!("{action} takes no policy (did you mean `burst`?)");
                }
                json!({"state": action})
            };
            ("POST", format!("/pools/{name}"), Some(body))
        }
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
                "queue: {paused}, mode {}, model affinity {}, max {} pending per participant\n\
                 jobs: {} waiting, {} running, {} done, {} failed, {} cancelled\n\
                 workers: {}   participants: {}",
                s(&st["mode"]),
                if st["affinity"] == true { "on" } else { "off" },
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
            if let Some(level @ ("warn" | "refuse")) = v["storage"]["level"].as_str() {
                let what = if level == "refuse" {
                    "STORAGE NEARLY FULL: new jobs are refused"
                } else {
                    "storage is getting full"
                };
                out.push_str(&format!("\n{what}:"));
                for f in v["storage"]["filesystems"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "\n  {} {} MB free of {} MB",
                        s(&f["path"]),
                        f["free_bytes"].as_u64().unwrap_or(0) >> 20,
                        f["total_bytes"].as_u64().unwrap_or(0) >> 20
                    ));
                }
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
                        percent(w["busy_ratio_10m"].as_f64().unwrap_or(0.0)),
                        s(&w["gpu"]),
                        s(&w["comfyui_version"]),
                        warmup_cell(&w["warmup"]),
                        w["warm_models"]
                            .as_array()
                            .filter(|a| !a.is_empty())
                            .map_or("-".into(), |a| {
                                a.iter().map(s).collect::<Vec<_>>().join(", ")
                            }),
                    ]
                })
                .collect();
            if rows.is_empty() {
                return "no workers connected".into();
            }
            table(
                &[
                    "worker", "state", "job", "done", "busy 10m", "gpu", "comfyui", "warm-up",
                    "warm",
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
        Warmup { .. } => format!(
            "warm-up started on {} (progress: comfy-multi admin workers)",
            v["workers"]
                .as_array()
                .map(|w| w.iter().map(s).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        ),
        Affinity { state } => format!("model affinity {state}"),
        PushWorkflow { .. } => {
            let d = v["delivered"].as_array().cloned().unwrap_or_default();
            let renamed: Vec<String> = d
                .iter()
                .filter(|x| x["file"].as_str() != Some(&format!("{}.json", s(&v["name"]))))
                .map(|x| format!("{} (as {})", s(&x["participant"]), s(&x["file"])))
                .collect();
            let mut out = format!(
                "\"{}\" sent to {} participant(s): open editors show it now, the others find it in their workflows",
                s(&v["name"]),
                d.len()
            );
            if !renamed.is_empty() {
                out.push_str(&format!(
                    "\nsaved under another name where theirs had that name: {}",
                    renamed.join(", ")
                ));
            }
            out
        }
        Pools => {
            let rows: Vec<Vec<String>> = v
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|p| {
                    vec![
                        s(&p["name"]),
                        s(&p["kind"]),
                        s(&p["state"]),
                        s(&p["burst"]),
                        format!(
                            "{}/{}",
                            s(&p["connected"]),
                            p["workers"].as_array().map_or(0, Vec::len)
                        ),
                        s(&p["busy"]),
                        format!("{:.2}", p["gpu_hours"].as_f64().unwrap_or(0.0)),
                        format!("{:.2}", p["cost"].as_f64().unwrap_or(0.0)),
                    ]
                })
                .collect();
            if rows.is_empty() {
                return "no pools configured and no worker joined one".into();
            }
            table(
                &[
                    "pool",
                    "kind",
                    "state",
                    "burst",
                    "connected",
                    "busy",
                    "gpu h",
                    "cost",
                ],
                rows,
            )
        }
        Pool { name, .. } => {
            let when = match v["burst"].as_str().unwrap_or("always") {
                "always" => "whenever it has room".to_string(),
                b => format!(
                    "only while more than {} jobs wait",
                    b.trim_start_matches("line_over:")
                ),
            };
            match v["state"].as_str() {
                Some("enabled") => format!("pool {name} is enabled: it takes jobs {when}"),
                Some("parked") => format!("pool {name} is parked: it takes no new jobs"),
                Some("draining") => format!(
                    "pool {name} is draining: it finishes what it holds and takes no new jobs"
                ),
                _ => format!("pool {name}: {}", s(&v["state"])),
            }
        }
        Prune { .. } => format!(
            "{} {} file(s), {} MB ({})",
            if v["dry_run"] == true {
                "would remove"
            } else {
                "removed"
            },
            s(&v["files"]),
            v["bytes"].as_u64().unwrap_or(0) >> 20,
            v["kinds"]
                .as_array()
                .map(|k| k.iter().map(s).collect::<Vec<_>>().join(" + "))
                .unwrap_or_default()
        ),
        Storage => {
            let mut out = String::new();
            for f in v["storage"]["filesystems"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{}: {} MB free of {} MB ({})\n",
                    s(&f["path"]),
                    f["free_bytes"].as_u64().unwrap_or(0) >> 20,
                    f["total_bytes"].as_u64().unwrap_or(0) >> 20,
                    s(&f["level"])
                ));
            }
            let mb = |x: &Value| format!("{:.1}", x.as_u64().unwrap_or(0) as f64 / 1048576.0);
            let rows: Vec<Vec<String>> = v["participants"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|p| {
                    vec![
                        s(&p["name"]),
                        mb(&p["output_bytes"]),
                        mb(&p["input_bytes"]),
                        mb(&p["temp_bytes"]),
                        s(&p["output_files"]),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "participant",
                    "outputs MB",
                    "inputs MB",
                    "temp MB",
                    "output files",
                ],
                rows,
            ));
            out.push_str("\nbiggest files:\n");
            for f in v["biggest"].as_array().into_iter().flatten().take(10) {
                out.push_str(&format!("  {:>8} MB  {}\n", mb(&f["bytes"]), s(&f["path"])));
            }
            out
        }
        Cancel { job } => format!("job {} cancelled", &job[..job.len().min(8)]),
        Prioritize { job } => format!(
            "job {} moved into the priority lane: it goes next",
            &job[..job.len().min(8)]
        ),
        Move { job, direction } => format!(
            "job {} moved one place {direction}",
            &job[..job.len().min(8)]
        ),
        Mode { mode } => format!("mode is now {}", mode.replace('_', " ")),
        Pause => "paused: new jobs are refused and nothing new starts; running jobs finish".into(),
        Resume => "resumed: jobs are taken and handed out again".into(),
        Lock { user } => format!("{user} is locked: their new jobs are refused"),
        Unlock { user } => format!("{user} is unlocked: they can submit jobs again"),
        Broadcast { .. } => "message sent to every participant's editor".into(),
        Drain { worker } => {
            format!("{worker} is draining: it finishes its jobs and takes no new ones")
        }
        Undrain { worker } => format!("{worker} takes jobs again"),
        MaxPending { value, user } => match user {
            Some(u) => format!("{u} may now have {value} jobs waiting or running"),
            None => format!("everyone may now have {value} jobs waiting or running"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_worker_is_zero_percent_busy_never_minus_zero() {
        assert_eq!(percent(-1e-12), "0%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.456), "46%");
    }

    #[test]
    fn every_action_is_confirmed_in_a_sentence() {
        let ok = json!({"ok": true});
        for cmd in [
            AdminCommand::Pause,
            AdminCommand::Lock {
                user: "user03".into(),
            },
            AdminCommand::MaxPending {
                value: 3,
                user: None,
            },
            AdminCommand::Drain {
                worker: "gpu1".into(),
            },
        ] {
            let said = human(&cmd, &ok);
            assert!(!said.contains('{') && !said.starts_with("ok:"), "{said}");
        }
    }
}
