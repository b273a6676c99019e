//! The command line: one binary, one subcommand per process kind. Each
//! subcommand loads the configuration (file → env → these flags), then runs
//! until SIGTERM/Ctrl-C.

use crate::config::{parse_listen, Config, ListenAddr};
use crate::{hub, queue, shutdown, systemd};
use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "comfy-multi",
    version,
    about = "Run a hands-on ComfyUI workshop on shared GPUs"
)]
pub struct Cli {
    /// Config file (TOML). Default: /etc/comfy-multi/config.toml when present.
    #[arg(long, global = true, env = "COMFY_MULTI_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The hub: worker gateway, file store, lease reaper, admin API, metrics.
    Serve {
        /// host:port to listen on (overrides hub.listen).
        #[arg(long)]
        listen: Option<String>,
        /// Redis URL (overrides redis.url).
        #[arg(long)]
        redis: Option<String>,
    },
    /// One participant's ComfyUI-compatible server.
    Frontend {
        #[arg(long)]
        user: String,
        /// host:port or unix:/path.
        #[arg(long)]
        listen: Option<String>,
    },
    /// The agent that drives one real ComfyUI.
    Worker {
        #[arg(long)]
        comfyui: Option<String>,
        #[arg(long)]
        hub: Option<String>,
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        capacity: Option<u32>,
        /// The pool this worker joins (default `local`), e.g. `verda`.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Instructor commands against the hub's admin API.
    Admin {
        /// The hub's URL (default: from hub.listen).
        #[arg(long, env = "COMFY_MULTI_HUB")]
        hub: Option<String>,
        /// The admin token, or a credentials file with an [admin] login
        /// (e.g. <state-dir>/participants.toml of `comfy-multi up`).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Print the API's JSON answer instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: crate::admin_cli::AdminCommand,
    },
    /// Everything on one machine for a try-out: Redis, hub, every
    /// participant's editor and a worker per ComfyUI, on one port.
    Up {
        /// A ComfyUI to run jobs on (repeat for several).
        #[arg(long = "comfyui", value_name = "URL")]
        comfyui: Vec<String>,
        /// How many participants (user01, user02, …).
        #[arg(long, default_value_t = 3)]
        participants: u32,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Address to listen on (0.0.0.0 for the room's network).
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Where the queue, files and logins live.
        #[arg(long, default_value = "comfy-multi-state")]
        state_dir: PathBuf,
        /// Use this Redis instead of starting a private one.
        #[arg(long)]
        redis: Option<String>,
    },
    /// Validate the configuration and print what is wrong (exit 1).
    CheckConfig,
}

/// Builds the nested overrides object from flags that were given.
fn overrides(pairs: &[(&str, &str, Option<Value>)]) -> Value {
    let mut root = Map::new();
    for (section, key, value) in pairs {
        if let Some(v) = value {
            let entry = root
                .entry(section.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                m.insert(key.to_string(), v.clone());
            }
        }
    }
    Value::Object(root)
}

fn flag<T: serde::Serialize>(v: &Option<T>) -> Option<Value> {
    v.as_ref().map(|x| json!(x))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init();
    let over = match &cli.command {
        Command::Serve { listen, redis } => overrides(&[
            ("hub", "listen", flag(listen)),
            ("redis", "url", flag(redis)),
        ]),
        Command::Worker {
            comfyui,
            hub,
            token_file,
            id,
            capacity,
            pool,
        } => overrides(&[
            ("worker", "comfyui_url", flag(comfyui)),
            ("worker", "hub_url", flag(hub)),
            ("worker", "token_file", flag(token_file)),
            ("worker", "id", flag(id)),
            ("worker", "capacity", flag(capacity)),
            ("worker", "pool", flag(pool)),
        ]),
        _ => json!({}),
    };
    let config = match Config::load(cli.config.as_deref(), over) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("comfy-multi: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::CheckConfig => {
            println!("configuration ok");
            ExitCode::SUCCESS
        }
        Command::Serve { .. } => run_async(serve(config)),
        Command::Frontend { user, listen } => run_async(frontend(config, user, listen)),
        Command::Worker { .. } => run_async(worker(config)),
        Command::Admin {
            hub,
            token_file,
            json,
            command,
        } => {
            // A terminal tool: one line on failure, no log formatting.
            let result = tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    rt.block_on(async move {
                        let target =
                            crate::admin_cli::AdminTarget::resolve(&config, hub, token_file)?;
                        crate::admin_cli::run(&target, command, json).await
                    })
                });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("comfy-multi admin: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Up {
            comfyui,
            participants,
            port,
            host,
            state_dir,
            redis,
        } => run_async(crate::up::up(
            config,
            crate::up::UpOptions {
                comfyui,
                participants,
                host,
                port,
                state_dir,
                redis,
            },
        )),
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("comfy-multi: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("comfy-multi: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let token = shutdown::on_signal();
    let addr = match parse_listen(&config.hub.listen).map_err(anyhow::Error::msg)? {
        ListenAddr::Tcp(a) => a,
        ListenAddr::Unix(p) => anyhow::bail!("the hub listens on TCP only, not {}", p.display()),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    serve_on(config, listener, token).await
}

/// The hub (`serve`) on an already-bound `listener` until `token` fires:
/// Redis, in-hub workers and pools, admin, the gateway.
pub async fn serve_on(
    config: Config,
    listener: tokio::net::TcpListener,
    token: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let url = config.redis.resolve_url()?;
    let queue = queue::Queue::connect(&url, &config.redis.key_prefix, config.queue.settings())
        .await
        .with_context(|| format!("connecting to Redis at {}", crate::config::redact_url(&url)))?;
    let worker_tokens = match &config.hub.worker_tokens_file {
        Some(f) => crate::config::read_secret(f)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        None => {
            tracing::warn!("hub.worker_tokens_file is not set: no worker can connect");
            vec![]
        }
    };
    // In-process workers drive remote ComfyUIs through this hub's own
    // gateway, with a token that lives only in this process.
    let mut worker_tokens = worker_tokens;
    let internal_token = uuid::Uuid::new_v4().simple().to_string();
    let starting = crate::worker::Starting::default();
    let in_hub = in_hub_workers(
        &config,
        &format!("http://{}", listener.local_addr()?),
        &starting,
    )?;
    if !in_hub.is_empty() {
        worker_tokens.push(internal_token.clone());
    }
    for mut w in in_hub {
        w.config_mut().token = internal_token.clone();
        let t = token.clone();
        tokio::spawn(async move {
            if let Err(e) = w.run(t).await {
                tracing::error!("in-process worker: {e:#}");
            }
        });
    }
    let admin = admin_login(&config)?;
    if admin.is_none() {
        tracing::warn!("no admin login configured (participants.credentials_file [admin] or hub.admin_password_file): the admin API is closed");
    }
    let mut participants = config.participants.names.clone();
    participants.extend(config.participants.instructor.iter().cloned());
    let warmups = hub::from_config(&config, &queue, &config.state_dir, &token).await?;
    let state = hub::HubState {
        metrics: Default::default(),
        admin,
        participants: std::sync::Arc::new(participants),
        credentials_file: config.participants.credentials_file.clone(),
        public_url: config.public_url.clone(),
        queue,
        reap_interval: Duration::from_millis(config.hub.reap_interval_ms),
        state_dir: config.state_dir.clone(),
        worker_tokens: std::sync::Arc::new(worker_tokens),
        max_output_bytes: config.hub.max_output_bytes,
        shutdown: token.clone(),
        work_available: Default::default(),
        samples: Default::default(),
        warmups,
        pools: std::sync::Arc::new(config.pools.clone()),
        door: std::sync::Arc::new(hub::door::Door::new(&config.hub.workshop_name)),
        starting,
    };
    tracing::info!(addr = %listener.local_addr()?, "hub listening");
    systemd::ready();
    let q = state.queue.clone();
    systemd::spawn_watchdog(token.clone(), move || {
        let q = q.clone();
        async move { q.ping().await }
    });
    let result = hub::run(listener, state, token).await;
    systemd::stopping();
    result
}

/// The instructor's login: `[admin]` of the credentials file, else the
/// password in `hub.admin_password_file` (which then also serves as the
/// CLI's token). Cookies are signed with `hub.session_secret_file`.
fn admin_login(config: &Config) -> anyhow::Result<Option<std::sync::Arc<hub::admin::AdminAuth>>> {
    let from_file = match &config.participants.credentials_file {
        Some(f) if f.exists() => crate::auth::CredentialsFile::load(f)?
            .get(crate::auth::ADMIN)
            .cloned(),
        _ => None,
    };
    let creds = match (from_file, &config.hub.admin_password_file) {
        (Some(c), _) => c,
        (None, Some(f)) => {
            let password = crate::config::read_secret(f)?;
            crate::auth::Credentials {
                token: password.clone(),
                password,
            }
        }
        (None, None) => return Ok(None),
    };
    let secret = config.session_secret()?;
    let secure = config.cookies_secure();
    Ok(Some(std::sync::Arc::new(hub::admin::AdminAuth::new(
        creds,
        secret.as_bytes(),
        secure,
    ))))
}

/// The workers the hub runs itself: `[[workers]]` (pool `local`), one per
/// URL of each `comfyui_url` pool (with that pool's headers) and one per
/// `runpod_serverless` pool (holding up to its `max_concurrency` jobs).
fn in_hub_workers(
    config: &Config,
    hub_url: &str,
    starting: &crate::worker::Starting,
) -> anyhow::Result<Vec<crate::worker::InHub>> {
    use crate::pool::PoolKind;
    use crate::worker::InHub;
    let heartbeat = Duration::from_millis(config.worker.heartbeat_ms);
    let agent =
        |id: &str, url: &str, capacity: u32, pool: &str, headers| crate::worker::AgentConfig {
            id: id.to_string(),
            comfyui_url: url.to_string(),
            hub_url: hub_url.to_string(),
            token: String::new(),
            capacity,
            heartbeat,
            pool: pool.to_string(),
            headers,
            starting: Some(starting.clone()),
        };
    let mut out: Vec<_> = config
        .workers
        .iter()
        .map(|w| {
            InHub::ComfyUi(agent(
                &w.id,
                &w.comfyui_url,
                w.capacity,
                crate::pool::DEFAULT_POOL,
                vec![],
            ))
        })
        .collect();
    for p in &config.pools {
        let ids = p.in_hub_worker_ids();
        match p.kind {
            PoolKind::Agent => {}
            PoolKind::ComfyuiUrl => {
                let headers = match &p.headers_file {
                    Some(f) => crate::config::read_headers(f)?,
                    None => vec![],
                };
                for (id, url) in ids.iter().zip(&p.urls) {
                    out.push(InHub::ComfyUi(agent(
                        id,
                        url,
                        p.capacity,
                        &p.name,
                        headers.clone(),
                    )));
                }
            }
            PoolKind::RunpodServerless => {
                let settings = p.runpod_settings(config.hub.max_output_bytes)?;
                let address = format!("runpod:{}", settings.endpoint_id);
                out.push(InHub::RunPod(
                    agent(&ids[0], &address, p.max_concurrency, &p.name, vec![]),
                    settings,
                ));
            }
        }
    }
    Ok(out)
}

async fn worker(config: Config) -> anyhow::Result<()> {
    let token = shutdown::on_signal();
    let w = &config.worker;
    let token_file = w.token_file.as_ref().context(
        "worker.token_file (--token-file) is required: the hub only accepts known workers",
    )?;
    let cfg = crate::worker::AgentConfig {
        id: w.id.clone().unwrap_or_else(default_worker_id),
        comfyui_url: w.comfyui_url.clone(),
        hub_url: w.hub_url.clone(),
        token: crate::config::read_secret(token_file)?,
        capacity: w.capacity,
        heartbeat: Duration::from_millis(w.heartbeat_ms),
        pool: w
            .pool
            .clone()
            .unwrap_or_else(|| crate::pool::DEFAULT_POOL.into()),
        headers: vec![],
        starting: None,
    };
    systemd::ready();
    let result = crate::worker::run_agent(cfg, token).await;
    systemd::stopping();
    result
}

/// `worker-<hostname>`, reduced to the characters worker ids allow.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let clean: String = host
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    if clean.is_empty() {
        "worker".into()
    } else {
        format!("worker-{clean}")
    }
}

async fn frontend(config: Config, user: String, listen: Option<String>) -> anyhow::Result<()> {
    if !crate::queue::valid_name(&user) {
        anyhow::bail!("--user {user:?} is not a valid participant name (a-z, 0-9, _ and -)");
    }
    let static_dir = crate::frontend::find_static_dir(config.frontend.static_dir.as_deref())?;
    let token = shutdown::on_signal();
    let url = config.redis.resolve_url()?;
    let queue = queue::Queue::connect(&url, &config.redis.key_prefix, config.queue.settings())
        .await
        .with_context(|| format!("connecting to Redis at {}", crate::config::redact_url(&url)))?;
    let listen = listen.unwrap_or_else(|| "127.0.0.1:0".into());
    let creds_file = config
        .participants
        .credentials_file
        .as_ref()
        .context("participants.credentials_file is required: every participant logs in")?;
    let creds = crate::auth::CredentialsFile::load(creds_file)?
        .get(&user)
        .cloned()
        .with_context(|| format!("{} has no [{user}] login", creds_file.display()))?;
    let session_secret = config.session_secret()?;
    let secure = config.cookies_secure();
    let user_dir = config.state_dir.join("users").join(&user);
    let workflows = crate::frontend::find_workflows_dir(config.frontend.workflows_dir.as_deref());
    crate::frontend::seed_participant(workflows.as_deref(), &user, &user_dir).await;
    crate::frontend::remove_upload_leftovers(&user, &user_dir);
    let state = crate::frontend::FrontendState::new(
        &user,
        queue,
        static_dir,
        user_dir,
        config.frontend.max_upload_bytes,
    )
    .configured(&config)
    .with_login(creds, session_secret.as_bytes(), secure);
    let result = match parse_listen(&listen).map_err(anyhow::Error::msg)? {
        ListenAddr::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, participant = %user, "frontend listening");
            systemd::ready();
            crate::frontend::run(listener, state, token).await
        }
        ListenAddr::Unix(path) => {
            // A socket left by an earlier run would make bind fail.
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path)
                .with_context(|| format!("binding {}", path.display()))?;
            tracing::info!(socket = %path.display(), participant = %user, "frontend listening");
            systemd::ready();
            crate::frontend::run(listener, state, token).await
        }
    };
    systemd::stopping();
    result
}
