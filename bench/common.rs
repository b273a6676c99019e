//! Shared by the benchmark binaries: a private redis-server in a temp dir.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
