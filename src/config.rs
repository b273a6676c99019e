//! Configuration: defaults, then a TOML file, then `COMFY_MULTI_…`
//! environment variables (nested keys split on `__`), then command-line
//! flags — merged with figment. Unknown keys are errors that name the key.
//! Secrets are never in this struct: only the paths of files holding them
//! (`…_file` keys), read with [`read_secret`] when needed.

use crate::pool::{Burst, PoolKind, PoolState};
use crate::queue::{Mode, QueueSettings};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where `--config` points when not given, if the file exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/comfy-multi/config.toml";

/// Top-level keys; environment variables for anything else are ignored (so
/// `COMFY_MULTI_CACHE` and the like do not count as unknown config keys).
const TOP_LEVEL_KEYS: &[&str] = &[
    "state_dir",
    "public_url",
    "redis",
    "hub",
    "queue",
    "participants",
    "frontend",
    "nodes",
    "worker",
    "workers",
    "pools",
    "warmup",
    "storage",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Participants' files live in `<state_dir>/users/<name>/{input,output,temp,user}`.
    pub state_dir: PathBuf,
    /// The URL participants use (for join cards and links), e.g. `https://ws.example.org`.
    pub public_url: Option<String>,
    pub redis: RedisConfig,
    pub hub: HubConfig,
    pub queue: QueueConfig,
    pub participants: ParticipantsConfig,
    pub frontend: FrontendConfig,
    /// The instructor's node policy: which node types participants' prompts
    /// may use.
    pub nodes: NodesConfig,
    pub worker: WorkerConfig,
    /// In-process workers the hub runs against remote ComfyUIs.
    pub workers: Vec<RemoteWorkerConfig>,
    /// Worker pools by provider, each switched at runtime by the
    /// instructor (`comfy-multi admin pool …`).
    pub pools: Vec<PoolConfig>,
    /// Warm-up prompts every worker runs when it connects (and on demand),
    /// before any participant's job there.
    pub warmup: Vec<WarmupConfig>,
    /// Free-space thresholds of the storage watch.
    pub storage: StorageConfig,
}

/// When the workshop's disks count as getting full (warn: the instructor is
/// told) and as full (refuse: new submits are refused). Either the share or
/// the bytes below its threshold triggers the level.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub warn_free_percent: f64,
    pub warn_free_bytes: u64,
    pub refuse_free_percent: f64,
    pub refuse_free_bytes: u64,
    pub check_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            warn_free_percent: 10.0,
            warn_free_bytes: 5 << 30,
            refuse_free_percent: 2.0,
            refuse_free_bytes: 1 << 30,
            check_interval_ms: 5000,
        }
    }
}

/// One warm-up: a workflow in ComfyUI's API format ("Export (API)" in the
/// editor) whose loader nodes name the models to load.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupConfig {
    pub workflow: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/comfy-multi"),
            public_url: None,
            redis: RedisConfig::default(),
            hub: HubConfig::default(),
            queue: QueueConfig::default(),
            participants: ParticipantsConfig::default(),
            frontend: FrontendConfig::default(),
            nodes: NodesConfig::default(),
            worker: WorkerConfig::default(),
            workers: vec![],
            pools: vec![],
            warmup: vec![],
            storage: StorageConfig::default(),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `redis+unix:///path`. May hold a password:
    /// prefer `url_file` then.
    pub url: String,
    /// A file whose content is the URL (wins over `url`).
    pub url_file: Option<PathBuf>,
    /// Prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            url_file: None,
            key_prefix: "comfy-multi".into(),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("url_file", &self.url_file)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

impl RedisConfig {
    /// The URL to connect to (read from `url_file` when set).
    pub fn resolve_url(&self) -> Result<String, ConfigError> {
        match &self.url_file {
            Some(p) => read_secret(p),
            None => Ok(self.url.clone()),
        }
    }
}

/// Replaces the password in a URL's user info with `***`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// `host:port` the hub listens on.
    pub listen: String,
    /// Worker tokens, one per line.
    pub worker_tokens_file: Option<PathBuf>,
    pub admin_password_file: Option<PathBuf>,
    pub session_secret_file: Option<PathBuf>,
    /// How often the reaper looks for expired leases.
    pub reap_interval_ms: u64,
    /// Largest output file (image, video) a worker may upload.
    pub max_output_bytes: u64,
    /// A worker's warm-up that has not ended after this long stops holding
    /// participants' jobs back (it is reported as failed).
    pub warmup_timeout_s: u64,
    /// The workshop's name, on the front door and the join cards.
    pub workshop_name: String,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8189".into(),
            worker_tokens_file: None,
            admin_password_file: None,
            session_secret_file: None,
            reap_interval_ms: 1000,
            max_output_bytes: 4 << 30,
            warmup_timeout_s: 900,
            workshop_name: "ComfyUI workshop".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Scheduling policy at start (admins can switch it at runtime).
    pub mode: Mode,
    pub max_pending_per_participant: u32,
    pub max_prompt_bytes: usize,
    /// A lease lasts this long without a heartbeat.
    pub lease_ms: u64,
    /// Attempts before a job whose worker keeps vanishing fails.
    pub max_attempts: u32,
    /// Finished jobs kept per participant.
    pub history_limit: u32,
    /// Cost estimate of a participant's job before any of theirs has run.
    pub default_job_seconds: f64,
    /// How long a disconnected worker's nodes and models still count: they
    /// stay in the editors' catalogue, and jobs only it can run are
    /// accepted and wait for it.
    pub forget_worker_after_s: u64,
    /// Model affinity at start (`comfy-multi admin affinity on|off` at
    /// runtime): warm models first, within `affinity_window` and
    /// `affinity_max_passes`.
    pub affinity: bool,
    /// Jobs (in policy order) a lease considers for a warm one.
    pub affinity_window: u32,
    /// How often one job may be passed over for another (at most).
    pub affinity_max_passes: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let d = QueueSettings::default();
        Self {
            mode: d.default_mode,
            max_pending_per_participant: d.max_pending_per_participant,
            max_prompt_bytes: d.max_prompt_bytes,
            lease_ms: d.lease_ms,
            max_attempts: d.max_attempts,
            history_limit: d.history_limit,
            default_job_seconds: d.default_job_ms as f64 / 1000.0,
            forget_worker_after_s: d.known_worker_ms / 1000,
            affinity: d.affinity,
            affinity_window: d.affinity_window,
            affinity_max_passes: d.affinity_max_passes,
        }
    }
}

impl QueueConfig {
    pub fn settings(&self) -> QueueSettings {
        QueueSettings {
            lease_ms: self.lease_ms,
            max_attempts: self.max_attempts,
            max_pending_per_participant: self.max_pending_per_participant,
            max_prompt_bytes: self.max_prompt_bytes,
            history_limit: self.history_limit,
            default_job_ms: (self.default_job_seconds * 1000.0) as u64,
            default_mode: self.mode,
            known_worker_ms: self.forget_worker_after_s.saturating_mul(1000),
            affinity: self.affinity,
            affinity_window: self.affinity_window,
            affinity_max_passes: self.affinity_max_passes,
            ..QueueSettings::default()
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParticipantsConfig {
    /// Participant names (`user01`, …).
    pub names: Vec<String>,
    /// The instructor's name; their jobs use the priority lane.
    pub instructor: Option<String>,
    /// TOML file with `[user01] password = "…" token = "…"` tables.
    pub credentials_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrontendConfig {
    /// The `comfyui-frontend-package` wheel's `static/` directory.
    pub static_dir: Option<PathBuf>,
    /// Workflows pre-loaded into every participant's workflow browser.
    pub workflows_dir: Option<PathBuf>,
    pub max_upload_bytes: u64,
    /// Where a frontend reaches the hub.
    pub hub_url: String,
    /// Editor sockets (`/ws`) one participant may hold open at once (a
    /// few browser tabs); more are answered 429 until one closes.
    pub max_sockets_per_participant: u32,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        Self {
            static_dir: None,
            workflows_dir: None,
            max_upload_bytes: 100 * 1024 * 1024,
            hub_url: "http://127.0.0.1:8189".into(),
            max_sockets_per_participant: crate::frontend::DEFAULT_MAX_SOCKETS as u32,
        }
    }
}

/// The instructor's node policy, by node type (`class_type`, exactly as in
/// ComfyUI's `object_info`, case-sensitive). A prompt using a node the
/// policy refuses is refused at `POST /prompt`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodesConfig {
    /// When non-empty, the only node types participants may use.
    pub allow: Vec<String>,
    /// Node types participants may never use (wins over `allow`), e.g.
    /// nodes that run arbitrary code or read server files.
    pub deny: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    pub id: Option<String>,
    pub comfyui_url: String,
    pub hub_url: String,
    pub token_file: Option<PathBuf>,
    /// Jobs held at once (running + prefetched).
    pub capacity: u32,
    /// How often held jobs' leases are renewed at most; the agent beats
    /// faster when the hub's lease is shorter than three of these.
    pub heartbeat_ms: u64,
    /// The pool this worker joins (`pools` on the hub; default `local`).
    pub pool: Option<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: None,
            comfyui_url: "http://127.0.0.1:8188".into(),
            hub_url: "http://127.0.0.1:8189".into(),
            token_file: None,
            capacity: 2,
            heartbeat_ms: 5000,
            pool: None,
        }
    }
}

/// One pool of workers (see [`crate::pool`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub name: String,
    #[serde(default)]
    pub kind: PoolKind,
    /// The state at first start; the instructor's switches persist after.
    #[serde(default)]
    pub state: PoolState,
    /// When it takes jobs (`always`, `line_over:N`); switchable at runtime.
    #[serde(default)]
    pub burst: Burst,
    /// What one GPU-hour costs (any currency), for the cost shown.
    #[serde(default)]
    pub price_per_gpu_hour: f64,
    /// Most jobs the pool's workers hold at once, all together (0: no
    /// limit beyond each worker's capacity), e.g. a rented endpoint's
    /// concurrency or a budget.
    #[serde(default)]
    pub max_concurrency: u32,
    /// `comfyui_url` pools: one worker per URL, ids `<name>-1`, `<name>-2`, ….
    #[serde(default)]
    pub urls: Vec<String>,
    /// `comfyui_url` pools: request headers for those URLs (a bearer token,
    /// Modal's proxy-auth key and secret), one `Name: value` per line, in a
    /// secret file.
    #[serde(default)]
    pub headers_file: Option<PathBuf>,
    /// `comfyui_url` pools: jobs each URL holds at once.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// `runpod_serverless` pools: the endpoint's id.
    #[serde(default)]
    pub endpoint_id: Option<String>,
    /// `runpod_serverless` pools: file holding the RunPod API key.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// `runpod_serverless` pools: the API's address (default
    /// `https://api.runpod.ai/v2`; a proxy's, or a test emulator's).
    #[serde(default)]
    pub api_base: Option<String>,
    /// `runpod_serverless` pools: what the endpoint's ComfyUI can run, its
    /// `GET /object_info` saved as JSON (see DEPLOY.md).
    #[serde(default)]
    pub object_info_file: Option<PathBuf>,
    /// `runpod_serverless` pools: longest a job may run there (seconds).
    #[serde(default = "default_runpod_timeout_s")]
    pub timeout_s: u64,
    /// `runpod_serverless` pools: longest a job may wait in RunPod's own
    /// queue (a cold endpoint) before it is taken back (seconds).
    #[serde(default = "default_runpod_queue_timeout_s")]
    pub queue_timeout_s: u64,
    /// `runpod_serverless` pools: how often a job's status is read (ms).
    #[serde(default = "default_runpod_poll_ms")]
    pub poll_ms: u64,
}

/// RunPod's serverless API.
pub const RUNPOD_API: &str = "https://api.runpod.ai/v2";

fn default_runpod_timeout_s() -> u64 {
    600
}
fn default_runpod_queue_timeout_s() -> u64 {
    300
}
fn default_runpod_poll_ms() -> u64 {
    1000
}

/// What pool `name` costs per GPU-hour (0 for a pool not in the config).
pub fn pool_price(pools: &[PoolConfig], name: &str) -> f64 {
    pools
        .iter()
        .find(|p| p.name == name)
        .map_or(0.0, |p| p.price_per_gpu_hour)
}

impl PoolConfig {
    /// The ids of the workers the hub runs for this pool: one per URL of
    /// a `comfyui_url` pool, one for a RunPod endpoint, none for agents.
    pub fn in_hub_worker_ids(&self) -> Vec<String> {
        let n = match self.kind {
            PoolKind::Agent => 0,
            PoolKind::ComfyuiUrl => self.urls.len(),
            PoolKind::RunpodServerless => 1,
        };
        (1..=n).map(|i| format!("{}-{i}", self.name)).collect()
    }

    /// A RunPod pool's settings, its API key read from its file.
    pub fn runpod_settings(
        &self,
        max_output_bytes: u64,
    ) -> Result<crate::worker::runpod::Settings, ConfigError> {
        let missing = |what: &str| {
            ConfigError::Invalid(vec![format!("pools ({:?}): {what} is required", self.name)])
        };
        let key_file = self
            .api_key_file
            .as_ref()
            .ok_or_else(|| missing("api_key_file"))?;
        Ok(crate::worker::runpod::Settings {
            api_base: self.api_base.clone().unwrap_or_else(|| RUNPOD_API.into()),
            endpoint_id: self
                .endpoint_id
                .clone()
                .ok_or_else(|| missing("endpoint_id"))?,
            api_key: read_secret(key_file)?,
            object_info_file: self
                .object_info_file
                .clone()
                .ok_or_else(|| missing("object_info_file"))?,
            timeout: std::time::Duration::from_secs(self.timeout_s),
            queue_timeout: std::time::Duration::from_secs(self.queue_timeout_s),
            poll: std::time::Duration::from_millis(self.poll_ms),
            max_output_bytes,
        })
    }

    fn problems(&self, i: usize, p: &mut Vec<String>) {
        let at = format!("pools[{i}] ({:?})", self.name);
        if !crate::queue::valid_name(&self.name) {
            p.push(format!(
                "{at}: name is not valid (letters, digits, - and _)"
            ));
        }
        if !(self.price_per_gpu_hour.is_finite() && self.price_per_gpu_hour >= 0.0) {
            p.push(format!("{at}: price_per_gpu_hour must be a number ≥ 0"));
        }
        let runpod_only = self.endpoint_id.is_some()
            || self.api_key_file.is_some()
            || self.api_base.is_some()
            || self.object_info_file.is_some();
        if runpod_only && self.kind != PoolKind::RunpodServerless {
            p.push(format!(
                "{at}: endpoint_id, api_key_file, api_base and object_info_file belong to kind = \"runpod_serverless\" pools"
            ));
        }
        match self.kind {
            PoolKind::Agent => {
                if !self.urls.is_empty() || self.headers_file.is_some() {
                    p.push(format!(
                        "{at}: urls and headers_file belong to kind = \"comfyui_url\" pools (agents dial the hub and name their pool in worker.pool)"
                    ));
                }
            }
            PoolKind::RunpodServerless => {
                if !self.urls.is_empty() || self.headers_file.is_some() {
                    p.push(format!(
                        "{at}: urls and headers_file belong to kind = \"comfyui_url\" pools (a RunPod pool names its endpoint_id)"
                    ));
                }
                match &self.endpoint_id {
                    None => p.push(format!("{at}: a runpod_serverless pool needs endpoint_id")),
                    Some(e) if !crate::queue::valid_name(e) => {
                        p.push(format!("{at}: endpoint_id {e:?} is not a RunPod endpoint id (lowercase letters, digits, - and _)"))
                    }
                    Some(_) => {}
                }
                if self.api_key_file.is_none() {
                    p.push(format!("{at}: a runpod_serverless pool needs api_key_file (the RunPod API key, in a secret file)"));
                }
                if self.object_info_file.is_none() {
                    p.push(format!("{at}: a runpod_serverless pool needs object_info_file (what its ComfyUI can run; see DEPLOY.md)"));
                }
                if let Some(b) = &self.api_base {
                    if !is_http_url(b) {
                        p.push(format!("{at}: api_base {b:?} is not an http(s) URL"));
                    }
                }
                if self.max_concurrency == 0 {
                    p.push(format!("{at}: a runpod_serverless pool needs max_concurrency ≥ 1 (jobs it holds at once)"));
                }
                if self.timeout_s == 0 || self.queue_timeout_s == 0 {
                    p.push(format!(
                        "{at}: timeout_s and queue_timeout_s must be at least 1"
                    ));
                }
                if !(100..=60_000).contains(&self.poll_ms) {
                    p.push(format!("{at}: poll_ms must be between 100 and 60000"));
                }
            }
            PoolKind::ComfyuiUrl => {
                if self.urls.is_empty() {
                    p.push(format!(
                        "{at}: a comfyui_url pool needs at least one URL in urls"
                    ));
                }
                for u in &self.urls {
                    if !is_http_url(u) {
                        p.push(format!("{at}: {u:?} is not an http(s) URL"));
                    }
                }
                if self.capacity == 0 {
                    p.push(format!("{at}: capacity must be at least 1"));
                }
            }
        }
    }
}

/// Reads a headers file: one `Name: value` per line (blank lines and `#`
/// comments skipped). Errors name the file and line, never a value.
pub fn read_headers(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = read_secret(path)?;
    let mut out = vec![];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| {
            ConfigError::Invalid(vec![format!(
                "{}: line {}: {why} (expected `Name: value`)",
                path.display(),
                n + 1
            )])
        };
        let (name, value) = line.split_once(':').ok_or_else(|| bad("no colon"))?;
        let (name, value) = (name.trim(), value.trim());
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(bad("not a valid header name"));
        }
        if value.is_empty() || reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(bad("empty or invalid value"));
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWorkerConfig {
    pub id: String,
    pub comfyui_url: String,
    #[serde(default = "default_capacity")]
    pub capacity: u32,
}

fn default_capacity() -> u32 {
    2
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("{0}")]
    Parse(Box<figment::Error>),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
    #[error("cannot read secret file {path}: {source}")]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret file {0} is empty")]
    EmptySecret(PathBuf),
}

impl Config {
    /// Loads and validates the configuration. `file` is `--config`; without
    /// it [`DEFAULT_CONFIG_PATH`] is used when present. `overrides` are the
    /// command-line flags, as a nested JSON object of only the flags given.
    pub fn load(file: Option<&Path>, overrides: serde_json::Value) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(p) if !p.exists() => return Err(ConfigError::Missing(p.to_path_buf())),
            Some(p) => fig = fig.merge(Toml::file_exact(p)),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                fig = fig.merge(Toml::file_exact(DEFAULT_CONFIG_PATH))
            }
            None => {}
        }
        let env = Env::prefixed("COMFY_MULTI_").split("__").filter(|k| {
            // Keys are split on `__` into `.` before this filter sees them,
            // but not yet lowercased.
            let top = k.as_str().split('.').next().unwrap_or("");
            TOP_LEVEL_KEYS.iter().any(|t| t.eq_ignore_ascii_case(top))
        });
        fig = fig.merge(env).merge(Serialized::defaults(overrides));
        let config: Config = fig.extract().map_err(|e| ConfigError::Parse(Box::new(e)))?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Everything wrong with the values (not with the syntax).
    pub fn problems(&self) -> Vec<String> {
        let mut p = vec![];
        let st = &self.storage;
        for (name, v) in [
            ("warn_free_percent", st.warn_free_percent),
            ("refuse_free_percent", st.refuse_free_percent),
        ] {
            if !(0.0..=100.0).contains(&v) {
                p.push(format!("storage.{name} must be between 0 and 100"));
            }
        }
        if st.refuse_free_percent > st.warn_free_percent {
            p.push(
                "storage.refuse_free_percent must not be above storage.warn_free_percent".into(),
            );
        }
        if st.refuse_free_bytes > st.warn_free_bytes {
            p.push("storage.refuse_free_bytes must not be above storage.warn_free_bytes".into());
        }
        for (i, w) in self.warmup.iter().enumerate() {
            if let Err(e) = crate::hub::warmup::read_workflow(&w.workflow) {
                p.push(format!("warmup[{i}].workflow: {e}"));
            }
        }
        let q = &self.queue;
        if q.max_pending_per_participant == 0 {
            p.push("queue.max_pending_per_participant must be at least 1".into());
        }
        if q.max_prompt_bytes < 1024 {
            p.push("queue.max_prompt_bytes must be at least 1024".into());
        }
        if q.affinity_window > 64 {
            p.push("queue.affinity_window must be at most 64 (jobs a lease looks at)".into());
        }
        if q.lease_ms < 1000 {
            p.push("queue.lease_ms must be at least 1000".into());
        }
        if q.max_attempts == 0 {
            p.push("queue.max_attempts must be at least 1".into());
        }
        if q.history_limit == 0 {
            p.push("queue.history_limit must be at least 1".into());
        }
        if !(q.default_job_seconds.is_finite() && q.default_job_seconds > 0.0) {
            p.push("queue.default_job_seconds must be a positive number".into());
        }
        if self.redis.key_prefix.is_empty() || self.redis.key_prefix.contains(char::is_whitespace) {
            p.push("redis.key_prefix must be non-empty without spaces".into());
        }
        if self.redis.url_file.is_none() && redis::Client::open(self.redis.url.as_str()).is_err() {
            {
                p.push(format!(
                    "redis.url {:?} is not a Redis URL",
                    redact_url(&self.redis.url)
                ));
            }
        }
        if let Err(e) = parse_listen(&self.hub.listen) {
            p.push(format!("hub.listen: {e}"));
        }
        if self.hub.reap_interval_ms == 0 {
            p.push("hub.reap_interval_ms must be at least 1".into());
        }
        let mut seen = std::collections::HashSet::new();
        for n in self
            .participants
            .names
            .iter()
            .chain(self.participants.instructor.iter())
        {
            if !crate::queue::valid_name(n) {
                p.push(format!(
                    "participant name {n:?} is not valid: use 1-64 of a-z, 0-9, _ and -"
                ));
            }
            if !seen.insert(n) {
                p.push(format!("participant name {n:?} appears twice"));
            }
        }
        for (key, url) in [
            ("frontend.hub_url", &self.frontend.hub_url),
            ("worker.hub_url", &self.worker.hub_url),
            ("worker.comfyui_url", &self.worker.comfyui_url),
        ] {
            if !is_http_url(url) {
                p.push(format!("{key} {url:?} is not an http(s) URL"));
            }
        }
        if let Some(id) = &self.worker.id {
            if !crate::queue::valid_name(id) {
                p.push(format!(
                    "worker.id {id:?} is not valid: use 1-64 of a-z, 0-9, _ and -"
                ));
            }
        }
        if self.worker.capacity == 0 {
            p.push("worker.capacity must be at least 1".into());
        }
        if self.worker.heartbeat_ms == 0 {
            p.push("worker.heartbeat_ms must be at least 1".into());
        }
        for (i, w) in self.workers.iter().enumerate() {
            if !crate::queue::valid_name(&w.id) {
                p.push(format!("workers[{i}].id {:?} is not valid", w.id));
            }
            if !is_http_url(&w.comfyui_url) {
                p.push(format!(
                    "workers[{i}].comfyui_url {:?} is not an http(s) URL",
                    w.comfyui_url
                ));
            }
            if w.capacity == 0 {
                p.push(format!("workers[{i}].capacity must be at least 1"));
            }
        }
        let mut ids: Vec<String> = self.workers.iter().map(|w| w.id.clone()).collect();
        for (i, pool) in self.pools.iter().enumerate() {
            pool.problems(i, &mut p);
            if self.pools[..i].iter().any(|o| o.name == pool.name) {
                p.push(format!(
                    "pools[{i}]: the name {:?} appears twice",
                    pool.name
                ));
            }
            ids.extend(pool.in_hub_worker_ids());
        }
        ids.sort();
        for w in ids.windows(2).filter(|w| w[0] == w[1]) {
            p.push(format!(
                "worker id {:?} is used twice (workers[] and pools' URL workers <pool>-<n>)",
                w[0]
            ));
        }
        if let Some(pool) = &self.worker.pool {
            if !crate::queue::valid_name(pool) {
                p.push(format!("worker.pool {pool:?} is not a valid name"));
            }
        }
        if self.frontend.max_sockets_per_participant == 0 {
            p.push("frontend.max_sockets_per_participant must be at least 1".into());
        }
        p.extend(self.nodes.problems());
        if let Some(u) = &self.public_url {
            if !is_http_url(u) {
                p.push(format!("public_url {u:?} is not an http(s) URL"));
            }
        }
        p
    }
}

impl NodesConfig {
    /// Empty or padded names, and names in both lists (which would read as
    /// allowed but be refused).
    fn problems(&self) -> Vec<String> {
        let mut p = vec![];
        for (key, list) in [("nodes.allow", &self.allow), ("nodes.deny", &self.deny)] {
            for n in list {
                if n.trim().is_empty() || n.trim() != n {
                    p.push(format!(
                        "{key} entry {n:?} is not a node type (a class_type such as \"SaveImage\", without spaces around it)"
                    ));
                }
            }
        }
        for n in &self.deny {
            if self.allow.contains(n) {
                p.push(format!(
                    "node type {n:?} is in both nodes.allow and nodes.deny: remove it from one"
                ));
            }
        }
        p
    }
}

fn is_http_url(u: &str) -> bool {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/'))
}

/// Where a server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

/// Parses `host:port` or `unix:/path`.
pub fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.starts_with('/') {
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        return Err(format!("{s:?}: a unix socket path must be absolute"));
    }
    s.parse()
        .map(ListenAddr::Tcp)
        .map_err(|_| format!("{s:?} is neither host:port (e.g. 127.0.0.1:8189) nor unix:/path"))
}

impl Config {
    /// The secret that signs session cookies (`hub.session_secret_file`);
    /// empty when none is set (logins' own secrets still key the cookies).
    pub fn session_secret(&self) -> Result<String, ConfigError> {
        match &self.hub.session_secret_file {
            Some(f) => read_secret(f),
            None => Ok(String::new()),
        }
    }

    /// Whether cookies must be `Secure`: the public URL is https.
    pub fn cookies_secure(&self) -> bool {
        self.public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
    }
}

/// Reads a secret from a file (trailing newline trimmed). The error names
/// the file, never its content.
pub fn read_secret(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Secret {
        path: path.to_path_buf(),
        source,
    })?;
    let text = text.trim_end_matches(['\n', '\r']).to_string();
    if text.is_empty() {
        return Err(ConfigError::EmptySecret(path.to_path_buf()));
    }
    Ok(text)
}
