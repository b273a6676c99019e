//! `comfy-multi up`: the whole workshop on one machine for a try-out — a
//! private redis-server (AOF on, in the state dir) unless `--redis` is
//! given, the hub, every participant's editor under `/userNN/` and one
//! in-process worker agent per `--comfyui`, all on one port. Logins live in
//! `<state-dir>/participants.toml`; running it again on the same state dir
//! keeps jobs, outputs and logins.

use crate::auth::{CredentialsFile, ADMIN};
use crate::config::Config;
use crate::{frontend, hub, queue, shutdown, worker};
use anyhow::Context;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What `up` was asked for.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub comfyui: Vec<String>,
    pub participants: u32,
    pub host: String,
    pub port: u16,
    pub state_dir: PathBuf,
    pub redis: Option<String>,
}

/// `user01`, `user02`, … (three digits from 100 participants on).
pub fn participant_names(count: u32) -> Vec<String> {
    let width = if count >= 100 { 3 } else { 2 };
    (1..=count).map(|i| format!("user{i:0width$}")).collect()
}

/// A redis-server owned by this process (it dies with us).
struct PrivateRedis {
    child: tokio::process::Child,
}

impl PrivateRedis {
    /// Starts redis-server on a unix socket in `<state>/redis/`.
    async fn start(state_dir: &Path) -> anyhow::Result<(Self, String)> {
        let dir = state_dir.join("redis");
        std::fs::create_dir_all(&dir)?;
        let sock = dir.join("redis.sock");
        anyhow::ensure!(
            sock.as_os_str().len() < 100,
            "the state dir path is too long for Redis's unix socket; use a shorter --state-dir or pass --redis"
        );
        let _ = std::fs::remove_file(&sock);
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args(["--port", "0", "--unixsocket"])
            .arg(&sock)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(&dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--maxmemory-policy",
                "noeviction",
                "--save",
                "",
                // After a short AOF write (a full disk), load what is whole
                // instead of refusing to start (Redis's default, said here).
                "--aof-load-truncated",
                "yes",
                "--daemonize",
                "no",
                "--logfile",
            ])
            .arg(dir.join("redis.log"));
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to
        // SIGTERM the child when this process dies (even by SIGKILL).
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (install it, e.g. `apt install redis-server`, or pass --redis URL)")?;
        let mut redis = Self { child };
        let url = format!("redis+unix://{}", sock.display());
        for _ in 0..200 {
            if let Some(status) = redis.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                anyhow::bail!("redis-server exited ({status}): {}", tail.join(" / "));
            }
            if sock.exists() {
                return Ok((redis, url));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("redis-server did not open {} within 10 s", sock.display())
    }

    /// Keeps Redis running until `shutdown`: when it exits (a full disk
    /// makes Redis with `appendfsync always` exit on a short AOF write), it
    /// is started again on the same data dir, with backoff, and the reason
    /// is logged. The hub, frontends and agents reconnect by themselves.
    fn supervise(
        mut self,
        state_dir: PathBuf,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let status = tokio::select! {
                    s = self.child.wait() => s,
                    _ = shutdown.cancelled() => {
                        self.stop().await;
                        return;
                    }
                };
                let log =
                    std::fs::read_to_string(state_dir.join("redis/redis.log")).unwrap_or_default();
                let last: Vec<&str> = log.lines().rev().take(3).collect();
                tracing::error!(
                    status = ?status.ok(),
                    "the private redis-server exited; restarting it on the same data ({})",
                    last.join(" / ")
                );
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    match PrivateRedis::start(&state_dir).await {
                        Ok((r, _)) => {
                            tracing::info!("the private redis-server is back");
                            self = r;
                            backoff = Duration::from_millis(500);
                            break;
                        }
                        Err(e) => {
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                            tracing::error!(
                                "restarting redis-server failed: {e:#}; next try in {backoff:?}"
                            );
                        }
                    }
                }
            }
        })
    }

    /// SIGTERM (Redis flushes and exits) and wait.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// The secret that signs session cookies, made once per state dir.
fn session_secret(state_dir: &Path) -> anyhow::Result<String> {
    let path = state_dir.join("session-secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_string());
        }
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{secret}")?;
    f.sync_all()?;
    Ok(secret)
}

/// Only one `up` per state dir (two would share one Redis AOF).
fn lock_state_dir(state_dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::File::create(state_dir.join(".lock"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another `comfy-multi up` is running on {}",
            state_dir.display()
        )
    })
}

/// Runs everything until SIGTERM/Ctrl-C.
pub async fn up(config: Config, opts: UpOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        !opts.comfyui.is_empty(),
        "give at least one --comfyui URL (scripts/comfyui/install.sh installs a CPU ComfyUI)"
    );
    anyhow::ensure!(
        (1..=500).contains(&opts.participants),
        "--participants must be 1 to 500"
    );
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("creating {}", opts.state_dir.display()))?;
    let state_dir = opts.state_dir.canonicalize()?;
    let _lock = lock_state_dir(&state_dir)?;
    let static_dir = frontend::find_static_dir(config.frontend.static_dir.as_deref())?;
    let shutdown = shutdown::on_signal();

    let redis_stop = CancellationToken::new();
    let (redis, redis_url) = match &opts.redis {
        Some(u) => (None, u.clone()),
        None => {
            let (r, u) = PrivateRedis::start(&state_dir).await?;
            (Some(r.supervise(state_dir.clone(), redis_stop.clone())), u)
        }
    };
    let result = run(
        &config,
        &opts,
        &state_dir,
        &static_dir,
        &redis_url,
        shutdown,
    )
    .await;
    // Redis goes last: everything above has flushed its writes.
    redis_stop.cancel();
    if let Some(r) = redis {
        let _ = r.await;
    }
    result
}

async fn run(
    config: &Config,
    opts: &UpOptions,
    state_dir: &Path,
    static_dir: &Path,
    redis_url: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let queue = queue::Queue::connect(redis_url, &config.redis.key_prefix, config.queue.settings())
        .await
        .with_context(|| {
            format!(
                "connecting to Redis at {}",
                crate::config::redact_url(redis_url)
            )
        })?;
    let names = participant_names(opts.participants);
    let mut logins = names.clone();
    logins.push(ADMIN.into());
    let creds_path = state_dir.join("participants.toml");
    let creds = CredentialsFile::ensure(&creds_path, &logins)?;
    let secret = session_secret(state_dir)?;

    let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
        .await
        .with_context(|| format!("binding {}:{}", opts.host, opts.port))?;
    let port = listener.local_addr()?.port();
    let shown_host = match opts.host.as_str() {
        "0.0.0.0" | "::" => "127.0.0.1",
        h => h,
    };
    let base = format!("http://{shown_host}:{port}");

    let internal_token = uuid::Uuid::new_v4().simple().to_string();
    let admin = creds
        .get(ADMIN)
        .cloned()
        .context("the admin login went missing")?;
    let hub_state = hub::HubState {
        metrics: Default::default(),
        admin: Some(Arc::new(hub::admin::AdminAuth::new(
            admin,
            secret.as_bytes(),
            false,
        ))),
        participants: Arc::new(names.clone()),
        credentials_file: Some(creds_path.clone()),
        public_url: None,
        queue: queue.clone(),
        reap_interval: Duration::from_millis(config.hub.reap_interval_ms),
        state_dir: state_dir.to_path_buf(),
        worker_tokens: Arc::new(vec![internal_token.clone()]),
        max_output_bytes: config.hub.max_output_bytes,
        shutdown: shutdown.clone(),
        work_available: Default::default(),
        samples: Default::default(),
        warmups: hub::from_config(config, &queue, state_dir, &shutdown).await?,
        pools: std::sync::Arc::new(config.pools.clone()),
        door: std::sync::Arc::new(hub::door::Door::new(&config.hub.workshop_name)),
        starting: Default::default(),
    };
    let background = hub::spawn_background(&hub_state, &shutdown);
    let mut app = hub::router(hub_state);
    let workflows = frontend::find_workflows_dir(config.frontend.workflows_dir.as_deref());
    for name in &names {
        let user_dir = state_dir.join("users").join(name);
        frontend::seed_participant(workflows.as_deref(), name, &user_dir).await;
        frontend::remove_upload_leftovers(name, &user_dir);
        let login = creds
            .get(name)
            .cloned()
            .context("a participant's login went missing")?;
        let state = frontend::FrontendState::new(
            name,
            queue.clone(),
            static_dir.to_path_buf(),
            user_dir,
            config.frontend.max_upload_bytes,
        )
        .configured(config)
        .with_login(login, secret.as_bytes(), false);
        app = app.merge(frontend::routes(state));
    }
    app = app.merge(frontend::assets(static_dir));

    for (i, url) in opts.comfyui.iter().enumerate() {
        let cfg = worker::AgentConfig {
            id: format!("local{i}"),
            comfyui_url: url.clone(),
            hub_url: base.clone(),
            token: internal_token.clone(),
            capacity: config.worker.capacity,
            heartbeat: Duration::from_millis(config.worker.heartbeat_ms),
            pool: crate::pool::DEFAULT_POOL.into(),
            headers: vec![],
            starting: None,
        };
        let stop = shutdown.clone();
        let url = url.clone();
        tokio::spawn(async move {
            if let Err(e) = worker::run_agent(cfg, stop).await {
                tracing::error!(comfyui = %url, "worker: {e:#}");
            }
        });
    }

    println!(
        "comfy-multi is up on {base}/ — participants open that address and log in with their name and password ({} participants, {} worker(s))",
        names.len(),
        opts.comfyui.len()
    );
    for name in &names {
        if let Some(c) = creds.get(name) {
            println!("  {name:<8} {base}/{name}/   password: {}", c.password);
        }
    }
    if let Some(c) = creds.get(ADMIN) {
        println!("  {:<8} {base}/admin/   password: {}", ADMIN, c.password);
    }
    println!(
        "Logins (and tokens for scripts) are stored in {}",
        creds_path.display()
    );
    println!(
        "Instructor CLI: comfy-multi admin --hub {base} --token-file {} status",
        creds_path.display()
    );
    println!(
        "State (queue, uploads, outputs) is in {}: running `comfy-multi up` again with it keeps everything. Ctrl-C stops.",
        state_dir.display()
    );
    crate::systemd::ready();
    let result = hub::serve_tcp(listener, app, shutdown.clone()).await;
    shutdown.cancel();
    let _ = background.await;
    result
}
