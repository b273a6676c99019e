//! Shared by the benchmark binaries: a private redis-server in a temp dir,
//! and CPU ComfyUIs started by `scripts/comfyui/start.sh`.
#![allow(dead_code)]

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository (for scripts and test workflows).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A private redis-server and its data directory, removed on drop.
pub struct OwnRedis(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts redis-server on a free port with AOF and the given `appendfsync`.
pub fn start_redis(fsync: &str) -> (String, OwnRedis) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir.path())
        .args(["--appendonly", "yes", "--appendfsync", fsync])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server not found: apt-get install -y redis-server");
    let own = OwnRedis(child, dir);
    let url = format!("redis://127.0.0.1:{port}");
    let client = redis::Client::open(url.as_str()).unwrap();
    for _ in 0..500 {
        if let Ok(mut c) = client.get_connection() {
            if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                return (url, own);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("redis-server did not start");
}

/// Installs the CPU ComfyUI (`scripts/comfyui/install.sh`) unless it is.
pub fn ensure_comfyui() {
    let install = repo().join("scripts/comfyui/install.sh");
    let ok = Command::new(&install)
        .arg("--check")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("installing the CPU ComfyUI (scripts/comfyui/install.sh, ~2 min)");
        assert!(
            Command::new(&install).status().is_ok_and(|s| s.success()),
            "scripts/comfyui/install.sh failed"
        );
    }
}

/// A CPU ComfyUI from `start.sh`; its process group is killed on drop.
pub struct Comfy {
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Comfy {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Comfy {
    /// Spawns `start.sh` with the given `(name, file)` checkpoints
    /// hard-linked into its `models/checkpoints/`. Call from the main
    /// thread: the parent-death signal follows the spawning thread.
    pub fn spawn(models: &[(String, PathBuf)]) -> Comfy {
        let dir = tempfile::Builder::new()
            .prefix("bench-comfyui.")
            .tempdir()
            .unwrap();
        let ckpts = dir.path().join("models/checkpoints");
        std::fs::create_dir_all(&ckpts).unwrap();
        for (name, file) in models {
            if std::fs::hard_link(file, ckpts.join(name)).is_err() {
                std::fs::copy(file, ckpts.join(name)).expect("copy a checkpoint");
            }
        }
        let log = std::fs::File::create(dir.path().join("comfyui.log")).unwrap();
        let mut cmd = Command::new(repo().join("scripts/comfyui/start.sh"));
        cmd.args(["--port", "0", "--base-dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn scripts/comfyui/start.sh");
        Comfy {
            url: String::new(),
            child,
            dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("comfyui.log")).unwrap_or_default()
    }

    /// Waits until `GET /system_stats` answers 200.
    pub async fn ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ComfyUI exited ({status}):\n{}", tail(&self.log(), 30));
            }
            if self.url.is_empty() {
                if let Some(u) = self
                    .log()
                    .lines()
                    .find_map(|l| l.strip_prefix("comfyui-url: "))
                {
                    self.url = u.trim().to_string();
                }
            } else if http
                .get(format!("{}/system_stats", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ComfyUI did not come up:\n{}",
                tail(&self.log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
