//! A real hub on a free port (in this process), on a fresh queue prefix and
//! a temp state dir, with one worker token; stopped when dropped. Optionally
//! with more routes on the same address (participants' editors, as
//! `comfy-multi up` serves them next to the hub).

use super::{unique_prefix, RedisServer};
use comfy_multi::hub::{self, HubState};
use comfy_multi::queue::{Queue, QueueSettings};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const WORKER_TOKEN: &str = "test-worker-token-0123456789";
pub const ADMIN_PASSWORD: &str = "admin-pass-2345";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";
/// Participants the hub knows before they queue anything.
pub const PARTICIPANTS: [&str; 3] = ["user01", "user02", "user03"];

/// A participant's login in the hub's credentials file
/// (`<state>/participants.toml`, which also holds the admin's).
pub fn participant_login(name: &str) -> comfy_multi::auth::Credentials {
    comfy_multi::auth::Credentials {
        password: format!("pw-{name}-2345"),
        token: format!("token-{name}-0123456789abcdef"),
    }
}

pub struct TestHub {
    pub url: String,
    pub queue: Queue,
    pub state: tempfile::TempDir,
    pub shutdown: CancellationToken,
    /// Served on the hub's address too.
    extra: Option<axum::Router>,
    /// The configured worker pools (set before serving: see `spawn_with_pools`).
    pools: Vec<comfy_multi::config::PoolConfig>,
}

impl TestHub {
    pub async fn spawn(redis: &RedisServer, settings: QueueSettings) -> TestHub {
        Self::spawn_with(redis, settings, |_, _| None).await
    }

    /// A hub that also serves `participant`'s real editor (the pinned
    /// ComfyUI web app) on its address, as `comfy-multi up` does, with
    /// `login` and the given session secret.
    pub async fn spawn_with_editor(
        redis: &RedisServer,
        participant: &str,
        login: comfy_multi::auth::Credentials,
    ) -> TestHub {
        Self::spawn_with_editor_and_pools(redis, participant, login, vec![]).await
    }

    /// [`TestHub::spawn_with_editor`] with these worker pools configured.
    pub async fn spawn_with_editor_and_pools(
        redis: &RedisServer,
        participant: &str,
        login: comfy_multi::auth::Credentials,
        pools: Vec<comfy_multi::config::PoolConfig>,
    ) -> TestHub {
        let static_dir = comfy_multi::frontend::find_static_dir(None)
            .expect("the ComfyUI web app (run scripts/frontend/install.sh)");
        let editor = |queue: &Queue, state_dir: &Path| {
            let state = comfy_multi::frontend::FrontendState::new(
                participant,
                queue.clone(),
                static_dir.clone(),
                state_dir.join("users").join(participant),
                64 << 20,
            )
            .with_login(login, b"a-session-secret-for-the-test", false);
            Some(
                comfy_multi::frontend::routes(state)
                    .merge(comfy_multi::frontend::assets(&static_dir)),
            )
        };
        Self::spawn_inner(redis, QueueSettings::default(), editor, pools).await
    }

    /// A hub with these worker pools configured (their initial state
    /// written to the queue as `serve` does).
    pub async fn spawn_with_pools(
        redis: &RedisServer,
        settings: QueueSettings,
        pools: Vec<comfy_multi::config::PoolConfig>,
    ) -> TestHub {
        Self::spawn_inner(redis, settings, |_, _| None, pools).await
    }

    /// A hub that also serves `extra(queue, state_dir)` on its address.
    pub async fn spawn_with(
        redis: &RedisServer,
        settings: QueueSettings,
        extra: impl FnOnce(&Queue, &Path) -> Option<axum::Router>,
    ) -> TestHub {
        Self::spawn_inner(redis, settings, extra, vec![]).await
    }

    async fn spawn_inner(
        redis: &RedisServer,
        settings: QueueSettings,
        extra: impl FnOnce(&Queue, &Path) -> Option<axum::Router>,
        pools: Vec<comfy_multi::config::PoolConfig>,
    ) -> TestHub {
        let queue = Queue::connect(&redis.url(), &unique_prefix(), settings)
            .await
            .unwrap();
        let state = tempfile::tempdir().unwrap();
        let mut logins = comfy_multi::auth::CredentialsFile::default();
        for p in PARTICIPANTS {
            logins.logins.insert(p.to_string(), participant_login(p));
        }
        logins.logins.insert(
            comfy_multi::auth::ADMIN.to_string(),
            comfy_multi::auth::Credentials {
                password: ADMIN_PASSWORD.into(),
                token: ADMIN_TOKEN.into(),
            },
        );
        logins
            .write(&state.path().join("participants.toml"))
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let extra = extra(&queue, state.path());
        for p in &pools {
            queue
                .init_pool(&p.name, p.state, p.burst, p.max_concurrency)
                .await
                .unwrap();
        }
        let hub = TestHub {
            url,
            queue,
            state,
            shutdown,
            extra,
            pools,
        };
        hub.serve(listener);
        hub
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let s = HubState {
            metrics: Default::default(),
            admin: Some(Arc::new(hub::admin::AdminAuth::new(
                comfy_multi::auth::Credentials {
                    password: ADMIN_PASSWORD.into(),
                    token: ADMIN_TOKEN.into(),
                },
                b"test-session-secret",
                false,
            ))),
            participants: Arc::new(PARTICIPANTS.iter().map(|p| p.to_string()).collect()),
            credentials_file: Some(self.state.path().join("participants.toml")),
            public_url: None,
            queue: self.queue.clone(),
            reap_interval: Duration::from_millis(200),
            state_dir: self.state.path().to_path_buf(),
            worker_tokens: Arc::new(vec![WORKER_TOKEN.to_string()]),
            max_output_bytes: 64 << 20,
            shutdown: self.shutdown.clone(),
            work_available: Default::default(),
            samples: Default::default(),
            warmups: Default::default(),
            pools: Arc::new(self.pools.clone()),
            door: Arc::new(hub::door::Door::new("Test workshop")),
            starting: Default::default(),
        };
        let shutdown = self.shutdown.clone();
        match &self.extra {
            None => {
                tokio::spawn(hub::run(listener, s, shutdown));
            }
            Some(extra) => {
                // `hub::run` with more routes: the same background tasks.
                let app = hub::router(s.clone()).merge(extra.clone());
                tokio::spawn(async move {
                    let background = hub::spawn_background(&s, &shutdown);
                    let r = hub::serve_tcp(listener, app, shutdown.clone()).await;
                    shutdown.cancel();
                    let _ = background.await;
                    r
                });
            }
        }
    }

    /// Stops the hub (its worker sockets drop).
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Starts it again on the same address, queue and state dir.
    pub async fn start_again(&mut self) {
        let addr = self.url.trim_start_matches("http://").to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(&addr).await {
                Ok(l) => break l,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        };
        self.shutdown = CancellationToken::new();
        // As `serve` does at every start: the config's pool states where
        // nobody switched them at runtime.
        for p in &self.pools {
            self.queue
                .init_pool(&p.name, p.state, p.burst, p.max_concurrency)
                .await
                .unwrap();
        }
        self.serve(listener);
    }

    /// A participant's folder of one kind (`input`, `output`, `temp`).
    pub fn dir(&self, participant: &str, kind: &str) -> PathBuf {
        self.state.path().join("users").join(participant).join(kind)
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A worker's WebSocket to a test hub.
pub type WorkerWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/worker/v1/connect` on `hub` with the worker token.
pub async fn worker_socket(hub: &TestHub) -> WorkerWs {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/worker/v1/connect", hub.url.replace("http", "ws"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {WORKER_TOKEN}").parse().unwrap(),
    );
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The next hub message that `want` accepts within `within`; `None` when
/// the socket closed or the time ran out first.
pub async fn next_hub_msg(
    ws: &mut WorkerWs,
    within: Duration,
    want: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    use futures_util::StreamExt;
    tokio::time::timeout(within, async {
        while let Some(Ok(m)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                if want(&v) {
                    return Some(v);
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}
