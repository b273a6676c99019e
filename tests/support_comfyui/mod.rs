//! Test harness: a real CPU ComfyUI (the one `scripts/comfyui/install.sh`
//! installs), started by `scripts/comfyui/start.sh` on a free port with a
//! throw-away base directory and the project's test nodes.
//!
//! Why this exists: the worker's ComfyUI client and the agent must be tested
//! against the genuine server, not a mock. Everything here is blocking
//! (std only), so it is safe to call from any test, sync or async, whatever
//! its runtime. [`ComfyUi::start`] gives a private instance killed on drop;
//! [`ComfyUi::shared`] gives one instance per test binary, killed when the
//! binary exits (and, if the binary is killed, by the parent-death signal).
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// A cold start on a busy 2-core machine takes ~10 s; leave plenty.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const URL_LINE: &str = "comfyui-url: ";

/// A running ComfyUI; its whole process group is killed on drop.
pub struct ComfyUi {
    /// e.g. `http://127.0.0.1:40123` (no trailing slash).
    pub url: String,
    /// ComfyUI's working dir: `input/`, `output/`, `temp/`, `comfyui.log`.
    pub base_dir: PathBuf,
    child: Mutex<Option<Child>>,
    dir: Mutex<Option<tempfile::TempDir>>,
}

impl ComfyUi {
    /// Starts a private ComfyUI and waits until `GET /system_stats` is 200.
    /// Installs it first if needed; panics with the log if it does not come up.
    pub fn start() -> Self {
        ensure_installed();
        let dir = tempfile::Builder::new()
            .prefix("comfy-multi-comfyui.")
            .tempdir()
            .expect("temp dir for ComfyUI");
        let base_dir = dir.path().to_path_buf();
        let child = spawn_start_sh(&base_dir, 0);
        let comfy = ComfyUi {
            url: String::new(),
            base_dir,
            child: Mutex::new(Some(child)),
            dir: Mutex::new(Some(dir)),
        };
        comfy.wait_ready()
    }

    /// One ComfyUI for every test of this binary, started on first use.
    pub fn shared() -> &'static ComfyUi {
        static SHARED: OnceLock<ComfyUi> = OnceLock::new();
        SHARED.get_or_init(|| {
            extern "C" fn kill_shared() {
                if let Some(c) = SHARED.get() {
                    c.kill();
                }
            }
            // SAFETY: registers a plain function; it only signals, waits
            // and removes a directory.
            unsafe { nix::libc::atexit(kill_shared) };
            ComfyUi::start()
        })
    }

    /// ComfyUI's stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.base_dir.join("comfyui.log")).unwrap_or_default()
    }

    /// Kills ComfyUI (SIGKILL to its process group) as a crash would, keeping
    /// its base dir so [`ComfyUi::restart`] can bring it back.
    pub fn crash(&self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts ComfyUI again on the same port and base dir; waits until ready.
    pub fn restart(self) -> Self {
        self.crash();
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in url");
        *self.child.lock().unwrap() = Some(spawn_start_sh(&self.base_dir, port));
        let deadline = Instant::now() + READY_TIMEOUT;
        while http_status(&self.url, "/system_stats") != Some(200) {
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "restarted ComfyUI did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self
    }

    /// Kills the whole process group now (SIGKILL) and removes the base dir.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.lock().ok().and_then(|mut d| d.take()) {
            let _ = dir.close();
        }
    }

    fn wait_ready(mut self) -> Self {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            self.check_alive();
            if self.url.is_empty() {
                self.url = url_from_log(&self.log()).unwrap_or_default();
            } else if http_status(&self.url, "/system_stats") == Some(200) {
                return self;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.fail("did not answer GET /system_stats in time")
    }

    fn check_alive(&self) {
        let exited = self
            .child
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            self.fail(&format!("exited early ({status})"));
        }
    }

    fn fail(&self, what: &str) -> ! {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        self.kill();
        panic!("test ComfyUI {what}; its log ends with:\n{tail}");
    }
}

impl Drop for ComfyUi {
    fn drop(&mut self) {
        self.kill();
    }
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `install.sh` once per process when `install.sh --check` fails.
fn ensure_installed() {
    static CHECKED: Mutex<bool> = Mutex::new(false);
    let mut checked = CHECKED.lock().unwrap_or_else(|p| p.into_inner());
    if *checked {
        return;
    }
    let script = repo_root().join("scripts/comfyui/install.sh");
    let ok = |args: &[&str]| {
        Command::new(&script)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&["--check"]) {
        eprintln!("test ComfyUI not installed; running scripts/comfyui/install.sh (~2 min, ~4 GB)");
        assert!(
            ok(&[]),
            "scripts/comfyui/install.sh failed; run it by hand (see scripts/comfyui/README.md)"
        );
    }
    *checked = true;
}

/// Spawns `start.sh` in its own process group, output to `comfyui.log`.
/// The spawn happens on one long-lived thread because the parent-death
/// signal fires when the spawning *thread* ends, not the process.
fn spawn_start_sh(base_dir: &Path, port: u16) -> Child {
    let log = File::create(base_dir.join("comfyui.log")).expect("ComfyUI log file");
    let mut cmd = Command::new(repo_root().join("scripts/comfyui/start.sh"));
    cmd.args(["--port", &port.to_string(), "--base-dir"])
        .arg(base_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            Ok(())
        });
    }
    spawner_call(cmd).expect("spawn scripts/comfyui/start.sh")
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner_call(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::spawn(move || {
            // Never ends: the sender lives in a static.
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .unwrap()
        .send((cmd, reply_tx))
        .expect("spawner thread alive");
    reply_rx.recv().expect("spawner thread replies")
}

fn url_from_log(log: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.strip_prefix(URL_LINE))
        .map(|u| u.trim().to_string())
}

/// A blocking `GET path` on `url`'s host; the status code, if any.
fn http_status(url: &str, path: &str) -> Option<u16> {
    let host = url.strip_prefix("http://")?.trim_end_matches('/');
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A generated model file (`scripts/comfyui/make_models.py`: seeded random
/// weights in a layout ComfyUI loads; `kind` is `upscale` or `checkpoint`),
/// made once and kept in `~/.cache/comfy-multi/models` (never in the repo).
pub fn generated_model(kind: &str, seed: u64) -> PathBuf {
    ensure_installed();
    let cache = std::env::var_os("COMFY_MULTI_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/comfy-multi")
        });
    let python = std::env::var_os("COMFY_MULTI_COMFYUI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("comfyui-venv"))
        .join("bin/python");
    let out = Command::new(python)
        .arg(repo_root().join("scripts/comfyui/make_models.py"))
        .args([kind, "--seed", &seed.to_string(), "--cache-dir"])
        .arg(cache.join("models"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run make_models.py");
    assert!(out.status.success(), "make_models.py {kind} {seed} failed");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "make_models.py printed {path:?}");
    path
}

impl ComfyUi {
    /// Puts `file` into this ComfyUI's model folder `folder` (e.g.
    /// `checkpoints`, `upscale_models`) as `name` (a hard link where the
    /// file system allows, else a copy).
    pub fn add_model(&self, folder: &str, name: &str, file: &Path) {
        let dir = self.base_dir.join("models").join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join(name);
        if std::fs::hard_link(file, &dest).is_err() {
            std::fs::copy(file, &dest).expect("copy the model file");
        }
    }

    /// Removes model `name` from folder `folder`.
    pub fn remove_model(&self, folder: &str, name: &str) {
        std::fs::remove_file(self.base_dir.join("models").join(folder).join(name))
            .expect("remove the model file");
    }
}
