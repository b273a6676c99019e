//! Test harness: a real `redis-server` per test (free port, temp dir, AOF
//! with `appendfsync always`), and a queue on a unique key prefix.
#![allow(dead_code)]

pub mod auth_proxy;
pub mod cluster;
pub mod hub;
pub mod report;
pub mod runpod_emulator;

use comfy_multi::queue::{Queue, QueueSettings};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private redis-server; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir,
        };
        s.spawn();
        s
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--maxmemory-policy", "noeviction"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run `apt-get install -y redis-server`");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).unwrap();
        loop {
            if let Ok(mut c) = client.get_connection() {
                // Wait until the AOF is loaded (LOADING errors until then).
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn aof_dir(&self) -> PathBuf {
        self.dir.path().join("appendonlydir")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A unique key prefix, so tests sharing a server never see each other.
pub fn unique_prefix() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

/// A queue on a fresh prefix of `redis`.
pub async fn queue(redis: &RedisServer, settings: QueueSettings) -> Queue {
    Queue::connect(&redis.url(), &unique_prefix(), settings)
        .await
        .expect("connect to test redis")
}

/// Settings for fast tests: short leases, a small history.
pub fn test_settings() -> QueueSettings {
    QueueSettings {
        lease_ms: 60_000,
        max_attempts: 3,
        max_pending_per_participant: 1_000_000,
        max_prompt_bytes: 64 * 1024,
        history_limit: 1000,
        default_job_ms: 1000,
        ..QueueSettings::default()
    }
}

/// A small prompt that differs per `n`.
pub fn prompt(n: u64) -> serde_json::Value {
    serde_json::json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": n}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}}
    })
}

/// A job for `participant`.
pub fn job(participant: &str, n: u64) -> comfy_multi::queue::NewJob {
    comfy_multi::queue::NewJob {
        participant: participant.to_string(),
        prompt: prompt(n),
        ..Default::default()
    }
}

/// Stores the recorded ComfyUI 0.3.64 node catalogue as connected worker
/// `gpu0`'s, as the hub does when a worker registers.
pub async fn store_catalogue(queue: &Queue) {
    let info = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/comfyui-0.3.64/object_info.json"
    ))
    .unwrap();
    queue.put_object_info("d1", &info).await.unwrap();
    let worker = serde_json::json!({"id": "gpu0", "object_info_digest": "d1",
        "system_stats": {"system": {"os": "posix", "comfyui_version": "0.3.64"}, "devices": [{"name": "cpu"}]}});
    queue
        .set_worker("gpu0", Some(&worker.to_string()))
        .await
        .unwrap();
}

/// Starts and finishes a leased job as succeeded, charging `gpu_seconds`.
pub async fn complete(q: &Queue, l: &comfy_multi::queue::Lease, gpu_seconds: f64) {
    q.start(&l.job_id, l.token).await.unwrap();
    q.finish(
        &l.job_id,
        l.token,
        comfy_multi::queue::Outcome::Succeeded,
        &serde_json::json!({}),
        None,
        Some(gpu_seconds),
    )
    .await
    .unwrap();
}
