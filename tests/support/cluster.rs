//! A whole workshop as separate real processes: redis-server (AOF,
//! `appendfsync always`), `comfy-multi serve`, one `comfy-multi frontend`
//! per participant and one `comfy-multi worker` per ComfyUI — each of which
//! a test can SIGKILL, freeze (SIGSTOP/SIGCONT) and restart on the same
//! port and data.
//!
//! Why this exists: the fault scenarios and the load run of the reliability
//! suite must kill *processes*, as a crash would, and talk to the system only
//! the way participants do (HTTP + WebSocket to their own frontend). The
//! ComfyUIs are the caller's (`support_comfyui::ComfyUi`), passed in as URLs,
//! so this module stays independent of them.
#![allow(dead_code)]

use super::report::Jepsen;
use super::RedisServer;
use comfy_multi::auth::{Credentials, CredentialsFile};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_comfy-multi");
/// The worker token every agent of a cluster uses.
pub const WORKER_TOKEN: &str = "cluster-worker-token-0123456789";

/// A port free now for a process to listen on. Taken below the kernel's
/// ephemeral range: a port from `bind(0)` is ephemeral, and with hundreds of
/// processes opening connections one of them can take it as its local port
/// before the listener binds it (seen with 200 frontends). Never the same
/// port twice in one test binary.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = if ephemeral_low > 12_000 {
            rand::random_range(10_000..ephemeral_low)
        } else {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
}

/// One child process that can be killed and started again with the same
/// command line; its stdout/stderr are appended to `log`.
pub struct Proc {
    pub name: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Proc {
    fn new(name: &str, args: Vec<String>, envs: Vec<(String, String)>, logs: &Path) -> Proc {
        Proc {
            name: name.to_string(),
            args,
            envs,
            log: logs.join(format!("{name}.log")),
            child: None,
            starts: 0,
        }
    }

    /// Starts the process (it must not be running).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open process log");
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args)
            .env_remove("COMFY_MULTI_CONFIG")
            .env("RUST_LOG", "info")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("spawn comfy-multi"));
        self.starts += 1;
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// SIGKILL, as a crash would; waits for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the process stays, but does nothing (a hung machine).
    pub fn freeze(&self) {
        kill(self.pid().expect("running"), Signal::SIGSTOP).unwrap();
    }

    /// SIGCONT after [`Proc::freeze`].
    pub fn thaw(&self) {
        kill(self.pid().expect("running"), Signal::SIGCONT).unwrap();
    }

    /// Resident memory in KiB (from `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// The last `n` lines of its log (all runs).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, Signal::SIGCONT);
        }
        self.kill9();
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Spec {
    /// `user01`, `user02`, …
    pub participants: usize,
    /// ComfyUI URLs: one worker agent (`gpu0`, `gpu1`, …) per URL.
    pub comfyuis: Vec<String>,
    pub lease_ms: u64,
    pub max_attempts: u32,
    /// `fifo`, `round_robin` or `fair_share`.
    pub mode: String,
    pub max_pending: u32,
    /// Jobs a worker holds at once.
    pub capacity: u32,
    pub heartbeat_ms: u64,
    /// Warm-up workflows (API format) every worker runs when it connects.
    pub warmup: Vec<PathBuf>,
    pub warmup_timeout_s: u64,
    /// Put the state dir on a tmpfs of this many MiB (mounted by the test,
    /// root only; unmounted when the cluster is dropped).
    pub state_tmpfs_mib: Option<u64>,
    /// The `[storage]` config section.
    pub storage: Option<Value>,
    /// `[[pools]]` entries, as they are written in the config.
    pub pools: Vec<Value>,
    /// `hub.max_output_bytes` (the default when `None`).
    pub max_output_bytes: Option<u64>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            participants: 2,
            comfyuis: vec![],
            lease_ms: 3000,
            max_attempts: 5,
            mode: "fair_share".into(),
            max_pending: 100,
            capacity: 1,
            heartbeat_ms: 300,
            warmup: vec![],
            warmup_timeout_s: 900,
            state_tmpfs_mib: None,
            storage: None,
            pools: vec![],
            max_output_bytes: None,
        }
    }
}

/// A participant's frontend process and how to reach it.
pub struct Frontend {
    pub proc: Proc,
    /// `http://127.0.0.1:PORT/userNN` (no trailing slash).
    pub base: String,
    pub port: u16,
    pub token: String,
}

/// The running workshop.
pub struct Cluster {
    pub redis: RedisServer,
    pub hub: Proc,
    pub hub_url: String,
    pub frontends: BTreeMap<String, Frontend>,
    pub workers: Vec<Proc>,
    pub state_dir: PathBuf,
    pub http: reqwest::Client,
    /// Unmounted after every process above has been killed.
    _tmpfs: Option<Tmpfs>,
    dir: tempfile::TempDir,
}

/// A tmpfs the test mounted; unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, mib: u64) -> Tmpfs {
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a {mib} MiB tmpfs at {} (the storage tests need root): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

pub fn participant(i: usize) -> String {
    format!("user{:02}", i + 1)
}

/// What the load run needs: the editor's socket and submits that name it.
impl Cluster {
    /// The editor's socket request for `user`:
    /// `ws://…/userNN/ws?clientId=<client_id>` with the bearer token in the
    /// `Authorization` header.
    pub fn ws_request(
        &self,
        user: &str,
        client_id: &str,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let f = &self.frontends[user];
        let url = format!(
            "{}/ws?clientId={client_id}",
            f.base.replacen("http", "ws", 1)
        );
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", f.token).parse().unwrap(),
        );
        req
    }

    /// [`Cluster::submit`] with the `client_id` the editor sends (its
    /// socket's `clientId`).
    pub async fn submit_from(
        &self,
        user: &str,
        prompt: &Value,
        client_id: &str,
    ) -> Result<String, String> {
        let f = &self.frontends[user];
        submit_to(&self.http, &f.base, &f.token, client_id, prompt).await
    }

    /// Redis's `INFO memory` field `field` (e.g. `used_memory`), in bytes.
    pub fn redis_memory(&self, field: &str) -> Option<u64> {
        let mut c = redis::Client::open(self.redis.url())
            .ok()?
            .get_connection()
            .ok()?;
        let info: String = redis::cmd("INFO").arg("memory").query(&mut c).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Cluster {
    /// Starts Redis, the hub, every frontend and every worker, and waits
    /// until each frontend answers and knows the workers' node catalogue.
    pub async fn start(spec: &Spec) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("comfy-multi-cluster.")
            .tempdir()
            .unwrap();
        let logs = dir.path().join("logs");
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::create_dir_all(&state_dir).unwrap();
        let tmpfs = spec
            .state_tmpfs_mib
            .map(|mib| Tmpfs::mount(&state_dir, mib));
        let redis = RedisServer::start();
        let names: Vec<String> = (0..spec.participants).map(participant).collect();
        let creds_path = dir.path().join("participants.toml");
        let mut creds = CredentialsFile::default();
        for n in &names {
            creds.logins.insert(n.clone(), Credentials::generate());
        }
        creds
            .logins
            .insert(comfy_multi::auth::ADMIN.into(), Credentials::generate());
        creds.write(&creds_path).unwrap();
        let tokens = dir.path().join("worker-tokens");
        std::fs::write(&tokens, WORKER_TOKEN).unwrap();
        let secret = dir.path().join("session-secret");
        std::fs::write(&secret, "cluster-session-secret-0123456789abcdef").unwrap();
        let hub_port = free_port();
        let hub_url = format!("http://127.0.0.1:{hub_port}");
        let config = toml::to_string(&json!({
            "state_dir": state_dir,
            "redis": {"url": redis.url(), "key_prefix": "cluster"},
            "hub": {
                "listen": format!("127.0.0.1:{hub_port}"),
                "worker_tokens_file": tokens,
                "session_secret_file": secret,
                "reap_interval_ms": 200,
                "warmup_timeout_s": spec.warmup_timeout_s,
                "max_output_bytes": spec.max_output_bytes.unwrap_or(4 << 30),
            },
            "warmup": spec.warmup.iter().map(|w| json!({"workflow": w})).collect::<Vec<_>>(),
            "storage": spec.storage.clone().unwrap_or(json!({})),
            "pools": spec.pools.clone(),
            "queue": {
                "mode": spec.mode,
                "lease_ms": spec.lease_ms,
                "max_attempts": spec.max_attempts,
                "max_pending_per_participant": spec.max_pending,
            },
            "participants": {"names": names, "credentials_file": creds_path},
            "frontend": {"hub_url": hub_url},
            "worker": {"hub_url": hub_url, "token_file": tokens, "capacity": spec.capacity,
                       "heartbeat_ms": spec.heartbeat_ms},
        }))
        .unwrap();
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let conf = vec![(
            "COMFY_MULTI_CONFIG".to_string(),
            config_path.display().to_string(),
        )];

        let mut hub = Proc::new("hub", vec!["serve".into()], conf.clone(), &logs);
        hub.start();
        let mut frontends = BTreeMap::new();
        for n in &names {
            let port = free_port();
            let mut proc = Proc::new(
                n,
                vec![
                    "frontend".into(),
                    "--user".into(),
                    n.clone(),
                    "--listen".into(),
                    format!("127.0.0.1:{port}"),
                ],
                conf.clone(),
                &logs,
            );
            proc.start();
            frontends.insert(
                n.clone(),
                Frontend {
                    proc,
                    base: format!("http://127.0.0.1:{port}/{n}"),
                    port,
                    token: creds.get(n).unwrap().token.clone(),
                },
            );
        }
        let workers = spec
            .comfyuis
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let mut w = Proc::new(
                    &format!("gpu{i}"),
                    vec![
                        "worker".into(),
                        "--id".into(),
                        format!("gpu{i}"),
                        "--comfyui".into(),
                        url.clone(),
                    ],
                    conf.clone(),
                    &logs,
                );
                w.start();
                w
            })
            .collect();
        let cluster = Cluster {
            redis,
            hub,
            hub_url,
            frontends,
            workers,
            state_dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            _tmpfs: tmpfs,
            dir,
        };
        cluster.wait_hub().await;
        for n in &names {
            cluster.wait_frontend(n).await;
        }
        if !spec.comfyuis.is_empty() {
            cluster.wait_catalogue(&names[0]).await;
        }
        cluster
    }

    /// A queue handle on the cluster's Redis, for a test to look behind the
    /// participants' view (which worker runs a job, its attempts).
    pub async fn queue(&self) -> comfy_multi::queue::Queue {
        comfy_multi::queue::Queue::connect(
            &self.redis.url(),
            "cluster",
            comfy_multi::queue::QueueSettings::default(),
        )
        .await
        .expect("connect to the cluster's redis")
    }

    /// The instructor's admin-API token (from the cluster's logins).
    pub fn admin_token(&self) -> String {
        comfy_multi::auth::CredentialsFile::load(&self.dir().join("participants.toml"))
            .unwrap()
            .get(comfy_multi::auth::ADMIN)
            .unwrap()
            .token
            .clone()
    }

    /// `GET /admin/api{path}` as the instructor, its JSON.
    pub async fn admin_get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/admin/api{path}", self.hub_url))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `POST /admin/api{path}` as the instructor with a JSON body; the
    /// answer's status and JSON.
    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/admin/api{path}", self.hub_url))
            .bearer_auth(self.admin_token())
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }

    /// The directory holding `logs/`, `state/` and the config.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn frontend(&self, user: &str) -> &Frontend {
        &self.frontends[user]
    }

    pub fn frontend_mut(&mut self, user: &str) -> &mut Frontend {
        self.frontends.get_mut(user).unwrap()
    }

    /// Waits until the hub's `/healthz` answers 200.
    pub async fn wait_hub(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = self
                .http
                .get(format!("{}/healthz", self.hub_url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "hub did not come up:\n{}",
                self.hub.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `user`'s frontend answers an authenticated request.
    pub async fn wait_frontend(&self, user: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.get(user, "/api/system_stats").await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{user}'s frontend did not come up:\n{}",
                self.frontends[user].proc.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `user`'s node list holds the test nodes (a worker has
    /// registered its ComfyUI's catalogue with the hub).
    pub async fn wait_catalogue(&self, user: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(info) = self.get(user, "/api/object_info").await {
                if info.get("CMSleep").is_some() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no worker registered its catalogue:\n{}",
                self.workers
                    .iter()
                    .map(|w| w.log_tail(20))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET <frontend>/<path>` as `user` (bearer token); the JSON body of a
    /// 2xx, else `Err("<status> <body>")`.
    pub async fn get(&self, user: &str, path: &str) -> Result<Value, String> {
        let f = &self.frontends[user];
        let r = self
            .http
            .get(format!("{}{path}", f.base))
            .bearer_auth(&f.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let body = r.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status} {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
    }

    /// Submits `prompt` as `user` the way the editor does; the prompt id of
    /// an acknowledged submit, else `Err("<status> <body>")` (or the
    /// connection error).
    pub async fn submit(&self, user: &str, prompt: &Value) -> Result<String, String> {
        self.submit_from(user, prompt, &format!("{user}-load"))
            .await
    }

    /// `user`'s whole `/api/history` (prompt id → entry).
    pub async fn history(&self, user: &str) -> Result<serde_json::Map<String, Value>, String> {
        match self.get(user, "/api/history?max_items=1000").await? {
            Value::Object(m) => Ok(m),
            other => Err(format!("history is not an object: {other}")),
        }
    }

    /// The files in `user`'s output folder (what `/view` can show them:
    /// hidden names, such as the hub's `.upload-…` temp files, are not).
    pub fn output_files(&self, user: &str) -> Vec<PathBuf> {
        let mut out = vec![];
        let mut stack = vec![self.state_dir.join("users").join(user).join("output")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// `user`'s jobs as the editor's Job Queue panel lists them
    /// (`GET /api/jobs`: waiting, running and finished).
    pub async fn jobs(&self, user: &str) -> Result<Vec<Value>, String> {
        let v = self.get(user, "/api/jobs").await?;
        Ok(v["jobs"].as_array().cloned().unwrap_or_default())
    }

    /// Polls every participant's job list until each acknowledged submit in
    /// `acked` (participant, prompt id) is final or `timeout` passes, then
    /// counts from the participants' side: final states, jobs never final or
    /// missing (lost), a job listed twice or more output files than the
    /// jobs made (duplicated), a succeeded job whose output file is gone
    /// (lost). Each test job saves exactly one image.
    pub async fn settle(&self, acked: &[(String, String)], timeout: Duration) -> Jepsen {
        let deadline = Instant::now() + timeout;
        let users: std::collections::BTreeSet<&str> =
            acked.iter().map(|(u, _)| u.as_str()).collect();
        let mut lists: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        loop {
            for u in &users {
                if let Ok(list) = self.jobs(u).await {
                    lists.insert(u, list);
                }
            }
            let open = acked.iter().any(|(u, id)| {
                !lists
                    .get(u.as_str())
                    .is_some_and(|l| l.iter().any(|j| j["id"] == id.as_str() && is_final(j)))
            });
            if !open || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mut j = Jepsen {
            submitted: acked.len() as u64,
            ..Jepsen::default()
        };
        for (u, id) in acked {
            let list = lists.get(u.as_str()).cloned().unwrap_or_default();
            let found: Vec<&Value> = list.iter().filter(|x| x["id"] == id.as_str()).collect();
            j.duplicated += found.len().saturating_sub(1) as u64;
            match found.first().and_then(|x| x["status"].as_str()) {
                Some("completed") => {
                    let file = &found[0]["preview_output"];
                    let on_disk = file["filename"].as_str().is_some_and(|name| {
                        self.state_dir
                            .join("users")
                            .join(u)
                            .join("output")
                            .join(file["subfolder"].as_str().unwrap_or(""))
                            .join(name)
                            .is_file()
                    });
                    if on_disk {
                        j.succeeded += 1;
                    } else {
                        *j.failed
                            .entry("succeeded but its output is missing".into())
                            .or_default() += 1;
                        j.lost += 1;
                    }
                }
                Some("failed") => {
                    let reason = found[0]["execution_error"]["exception_message"]
                        .as_str()
                        .unwrap_or("no reason given")
                        .chars()
                        .take(80)
                        .collect();
                    *j.failed.entry(reason).or_default() += 1;
                }
                Some("cancelled") => j.cancelled += 1,
                _ => j.lost += 1,
            }
        }
        for u in &users {
            let made: u64 = lists
                .get(u)
                .into_iter()
                .flatten()
                .filter(|x| x["status"] == "completed")
                .map(|x| x["outputs_count"].as_u64().unwrap_or(0))
                .sum();
            let files = self.output_files(u).len() as u64;
            j.duplicated += files.saturating_sub(made);
        }
        j
    }

    /// Waits until any of `acked` not final yet becomes final and returns
    /// the time since `since` (the fault): how long recovery took. Pass only
    /// the interrupted job to time its recovery.
    pub async fn first_finish_after(
        &self,
        acked: &[(String, String)],
        since: Instant,
        timeout: Duration,
    ) -> Option<Duration> {
        let before: std::collections::BTreeSet<String> = self.final_ids(acked).await;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let now = self.final_ids(acked).await;
            if now.iter().any(|id| !before.contains(id)) {
                return Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    async fn final_ids(&self, acked: &[(String, String)]) -> std::collections::BTreeSet<String> {
        let users: std::collections::BTreeSet<&str> =
            acked.iter().map(|(u, _)| u.as_str()).collect();
        let mut out = std::collections::BTreeSet::new();
        for u in users {
            for j in self.jobs(u).await.unwrap_or_default() {
                if is_final(&j) {
                    if let Some(id) = j["id"].as_str() {
                        out.insert(id.to_string());
                    }
                }
            }
        }
        out
    }

    /// Every process's last lines, for a failure message.
    pub fn logs(&self) -> String {
        let mut s = format!("--- hub\n{}\n", self.hub.log_tail(40));
        for w in &self.workers {
            s += &format!("--- {}\n{}\n", w.name, w.log_tail(40));
        }
        for (n, f) in &self.frontends {
            s += &format!("--- {n}\n{}\n", f.proc.log_tail(15));
        }
        s
    }
}

/// [`Cluster::submit`] without borrowing the cluster (for a task that
/// outlives a borrow): `POST <base>/api/prompt` with `token`.
pub async fn submit_to(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    client_id: &str,
    prompt: &Value,
) -> Result<String, String> {
    let r = http
        .post(format!("{base}/api/prompt"))
        .bearer_auth(token)
        .json(&json!({"prompt": prompt, "client_id": client_id}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    match body["prompt_id"].as_str() {
        Some(id) if status.is_success() => Ok(id.to_string()),
        _ => Err(format!("{status} {body}")),
    }
}

/// Whether a job of `/api/jobs` has reached its final state.
pub fn is_final(job: &Value) -> bool {
    matches!(
        job["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}

/// The test workflow `EmptyImage → CMSleep(seconds) → SaveImage`, made
/// distinct by `n` (so ComfyUI's cache never skips it).
pub fn sleep_prompt(seconds: f64, n: u64) -> Value {
    let path = format!(
        "{}/tests/comfyui_nodes/workflows/sleep_save.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut p: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for node in p.as_object_mut().unwrap().values_mut() {
        match node["class_type"].as_str() {
            Some("EmptyImage") => node["inputs"]["color"] = json!(n % 0xFF_FFFF),
            Some("CMSleep") => node["inputs"]["seconds"] = json!(seconds),
            _ => {}
        }
    }
    p
}
