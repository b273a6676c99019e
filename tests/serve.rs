//! `comfy-multi serve` as systemd runs it: READY=1 on a fake NOTIFY_SOCKET
//! once listening, a health endpoint backed by Redis, and STOPPING=1 plus a
//! clean exit on SIGTERM.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::RedisServer;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .expect("a notify message within the timeout");
    String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
}

/// Kills the child if the test fails before it exits by itself.
struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serve_notifies_systemd_when_ready_and_when_stopping() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    let child = Command::new(env!("CARGO_BIN_EXE_comfy-multi"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", &redis.url()])
        .env("COMFY_MULTI_CONFIG", "/dev/null")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Guard(child);
    assert_eq!(recv(&sock), "READY=1");

    // The log names the bound address; the hub answers health checks.
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("log line").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let health = http_get(&addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(recv(&sock), "STOPPING=1");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn serve_outside_systemd_runs_without_a_notify_socket() {
    let redis = RedisServer::start();
    let child = Command::new(env!("CARGO_BIN_EXE_comfy-multi"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", &redis.url()])
        .env("COMFY_MULTI_CONFIG", "/dev/null")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Guard(child);
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("log line").unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    assert!(http_get(&addr, "/healthz").starts_with("HTTP/1.1 200"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn serve_pings_the_watchdog_when_systemd_asks_for_it() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // As systemd does: WATCHDOG_PID names the service's own process.
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"export WATCHDOG_PID=$$; exec "$0" serve --listen 127.0.0.1:0 --redis "$1""#)
        .arg(env!("CARGO_BIN_EXE_comfy-multi"))
        .arg(redis.url())
        .env("COMFY_MULTI_CONFIG", "/dev/null")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _child = Guard(child);
    assert_eq!(recv(&sock), "READY=1");
    assert_eq!(recv(&sock), "WATCHDOG=1");
    assert_eq!(recv(&sock), "WATCHDOG=1");
}
