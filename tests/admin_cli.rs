//! `comfy-multi admin …` as the instructor types it: the real binary against
//! a running hub. Every command works and changes what it says, `--json`
//! parses, and failures (hub unreachable, bad token, unknown job or user)
//! print one clear line and exit non-zero.

mod support;

use comfy_multi::queue::{Mode, QueueSettings};
use serde_json::Value;
use std::process::{Command, Output};
use support::hub::{TestHub, ADMIN_TOKEN};
use support::RedisServer;

struct Cli {
    hub: TestHub,
    token_file: tempfile::NamedTempFile,
    _redis: RedisServer,
}

async fn spawn_cli() -> Cli {
    let redis = RedisServer::start();
    let hub = TestHub::spawn(&redis, QueueSettings::default()).await;
    let token_file = tempfile::NamedTempFile::new().unwrap();
    // The file `comfy-multi up` writes: the CLI takes its [admin] token.
    std::fs::write(
        token_file.path(),
        format!(
            "[admin]\npassword = \"x\"\ntoken = \"{ADMIN_TOKEN}\"\n\n\
             [user01]\npassword = \"y\"\ntoken = \"0123456789abcdef0123\"\n"
        ),
    )
    .unwrap();
    Cli {
        hub,
        token_file,
        _redis: redis,
    }
}

impl Cli {
    /// Runs `comfy-multi admin ARGS` off the async runtime.
    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_comfy-multi"));
        cmd.args(["admin", "--hub", &self.hub.url, "--token-file"])
            .arg(self.token_file.path())
            .args(args)
            .env("COMFY_MULTI_CONFIG", "/dev/null");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all).await).expect("--json prints JSON")
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_command_prints_a_table_and_parses_as_json() {
    let c = spawn_cli().await;
    let id = c
        .hub
        .queue
        .enqueue(support::job("user02", 1))
        .await
        .unwrap()
        .id;
    let status = c.ok(&["status"]).await;
    assert!(status.contains("1 waiting"), "{status}");
    let queue = c.ok(&["queue"]).await;
    assert!(
        queue.contains(&id[..8]) && queue.contains("user02"),
        "{queue}"
    );
    let users = c.ok(&["users"]).await;
    assert!(
        users.contains("user01") && users.contains("user03"),
        "{users}"
    );
    assert!(c.ok(&["workers"]).await.contains("no workers"));
    assert_eq!(c.json(&["status"]).await["waiting"], 1);
    assert_eq!(c.json(&["queue"]).await["waiting"][0]["id"], id.as_str());
    assert_eq!(c.json(&["users"]).await.as_array().unwrap().len(), 3);
    assert!(c.json(&["workers"]).await.as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_command_changes_the_workshop() {
    let c = spawn_cli().await;
    let q = &c.hub.queue;
    let a = q.enqueue(support::job("user01", 1)).await.unwrap().id;
    let b = q.enqueue(support::job("user02", 2)).await.unwrap().id;

    c.ok(&["prioritize", &b]).await;
    assert!(q.job(&b).await.unwrap().unwrap().priority);
    c.ok(&["move", &a, "up"]).await;
    c.ok(&["cancel", &a]).await;
    assert_eq!(
        q.job(&a).await.unwrap().unwrap().status.as_str(),
        "cancelled"
    );
    assert_eq!(
        c.ok(&["mode", "round_robin"]).await.trim(),
        "mode is now round robin"
    );
    c.ok(&["mode", "fifo"]).await;
    assert_eq!(q.runtime_settings().await.unwrap().mode, Mode::Fifo);
    c.ok(&["pause"]).await;
    assert!(q.runtime_settings().await.unwrap().paused_dispatch);
    c.ok(&["resume"]).await;
    assert!(!q.runtime_settings().await.unwrap().paused_dispatch);
    c.ok(&["lock", "user03"]).await;
    assert!(q.enqueue(support::job("user03", 3)).await.is_err());
    c.ok(&["unlock", "user03"]).await;
    q.enqueue(support::job("user03", 3)).await.unwrap();
    assert!(c.ok(&["clear", "user03"]).await.contains("removed 1"));
    let reset = c.ok(&["reset", "user03"]).await;
    let (password, _) = q.login("user03").await.unwrap().expect("a new login");
    assert!(reset.contains(&password), "{reset}");
    let mut rx = q.subscribe(Some("user01")).await.unwrap();
    c.ok(&["broadcast", "Back", "in", "5", "minutes"]).await;
    let msg = rx.recv().await.unwrap();
    assert!(msg.contains("Back in 5 minutes"), "{msg}");
    c.ok(&["max-pending", "7"]).await;
    assert_eq!(
        q.runtime_settings()
            .await
            .unwrap()
            .max_pending_per_participant,
        7
    );
    assert_eq!(
        c.ok(&["max-pending", "2", "--user", "user01"]).await.trim(),
        "user01 may now have 2 jobs waiting or running",
        "a sentence, not Rust debug syntax"
    );
    q.set_worker("gpu3", Some(r#"{"id":"gpu3","capacity":1,"healthy":true}"#))
        .await
        .unwrap();
    c.ok(&["drain", "gpu3"]).await;
    assert_eq!(q.draining().await.unwrap(), ["gpu3"]);
    assert!(c.ok(&["workers"]).await.contains("draining"));
    c.ok(&["undrain", "gpu3"]).await;
    assert!(q.draining().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_print_one_clear_line_and_exit_non_zero() {
    let c = spawn_cli().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let out = c.run(&["cancel", &unknown]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    let out = c.run(&["lock", "nobody"]).await;
    assert!(!out.status.success());
    let out = c.run(&["mode", "lottery"]).await;
    assert!(!out.status.success(), "clap refuses an unknown mode");

    // A wrong token.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "not-the-admin-token\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_comfy-multi"));
    cmd.args(["admin", "--hub", &c.hub.url, "--token-file"])
        .arg(bad.path())
        .arg("status")
        .env("COMFY_MULTI_CONFIG", "/dev/null");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refused the admin token"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("not-the-admin-token"),
        "no secret echoed"
    );

    // No hub there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_comfy-multi"));
    cmd.args([
        "admin",
        "--hub",
        &format!("http://127.0.0.1:{port}"),
        "--token-file",
    ])
    .arg(c.token_file.path())
    .arg("status")
    .env("COMFY_MULTI_CONFIG", "/dev/null");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach the hub"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_listed_and_switched_in_plain_words() {
    let c = spawn_cli().await;
    let q = &c.hub.queue;
    assert!(c.ok(&["pools"]).await.contains("no pools"));
    q.set_worker_pool("verda-2", "verda").await.unwrap();
    let table = c.ok(&["pools"]).await;
    assert!(
        table.contains("verda") && table.contains("enabled") && table.contains("always"),
        "{table}"
    );
    let said = c.ok(&["pool", "verda", "burst", "line_over:12"]).await;
    assert_eq!(
        said.trim(),
        "pool verda is enabled: it takes jobs only while more than 12 jobs wait"
    );
    let said = c.ok(&["pool", "verda", "park"]).await;
    assert_eq!(said.trim(), "pool verda is parked: it takes no new jobs");
    let pools = c.json(&["pools"]).await;
    assert_eq!(pools[0]["state"], "parked");
    assert_eq!(pools[0]["burst"], "line_over:12");
    assert_eq!(pools[0]["workers"][0]["id"], "verda-2");

    for (args, needle) in [
        (&["pool", "verda", "burst"][..], "burst needs a policy"),
        (&["pool", "verda", "burst", "sometimes"], "line_over:N"),
        (&["pool", "verda", "park", "now"], "takes no policy"),
        (&["pool", "nowhere", "drain"], "no pool named \"nowhere\""),
    ] {
        let out = c.run(args).await;
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}
