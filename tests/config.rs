//! Configuration layering (defaults → file → env → flags), unknown keys,
//! bad values, secret files — and `comfy-multi check-config` on top of it.
#![allow(clippy::result_large_err)] // figment::Jail closures return figment::Error

use comfy_multi::config::{read_secret, Config, ConfigError};
use comfy_multi::queue::Mode;
use figment::Jail;
use serde_json::json;
use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_comfy-multi"))
}

fn load(jail: &Jail, file: &str, flags: serde_json::Value) -> Result<Config, ConfigError> {
    Config::load(Some(&jail.directory().join(file)), flags)
}

#[test]
fn file_then_environment_then_flags_each_override_the_one_before() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            r#"
                state_dir = "/srv/ws"
                [queue]
                mode = "round_robin"
                max_pending_per_participant = 3
                [hub]
                listen = "127.0.0.1:9000"
            "#,
        )?;
        let c = load(jail, "c.toml", json!({})).unwrap();
        assert_eq!(c.state_dir, Path::new("/srv/ws"));
        assert_eq!(c.queue.mode, Mode::RoundRobin);
        assert_eq!(c.queue.max_pending_per_participant, 3);
        assert_eq!(c.queue.max_attempts, 3, "defaults fill the rest");

        jail.set_env("COMFY_MULTI_QUEUE__MODE", "fifo");
        jail.set_env("COMFY_MULTI_HUB__LISTEN", "127.0.0.1:9001");
        // Variables outside the config's sections are not config keys.
        jail.set_env("COMFY_MULTI_CACHE", "/tmp/cache");
        let c = load(jail, "c.toml", json!({})).unwrap();
        assert_eq!(c.queue.mode, Mode::Fifo);
        assert_eq!(c.hub.listen, "127.0.0.1:9001");

        let c = load(jail, "c.toml", json!({"hub": {"listen": "127.0.0.1:9002"}})).unwrap();
        assert_eq!(c.hub.listen, "127.0.0.1:9002");
        Ok(())
    });
}

#[test]
fn an_unknown_key_is_an_error_that_names_it() {
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", "[queue]\nmax_pendign = 3\n")?;
        let e = load(jail, "c.toml", json!({})).unwrap_err().to_string();
        assert!(e.contains("max_pendign"), "{e}");
        jail.create_file("d.toml", "colour = 1\n")?;
        let e = load(jail, "d.toml", json!({})).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        jail.create_file("ok.toml", "")?;
        jail.set_env("COMFY_MULTI_QUEUE__MODEE", "fifo");
        let e = load(jail, "ok.toml", json!({})).unwrap_err().to_string();
        assert!(e.contains("modee"), "{e}");
        Ok(())
    });
}

#[test]
fn bad_values_are_reported_all_at_once() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            r#"
                [queue]
                lease_ms = 10
                max_attempts = 0
                affinity_window = 1000
                [hub]
                listen = "everywhere"
                [participants]
                names = ["user01", "User 2", "user01"]
            "#,
        )?;
        let e = load(jail, "c.toml", json!({})).unwrap_err().to_string();
        for needle in [
            "lease_ms",
            "max_attempts",
            "queue.affinity_window must be at most 64",
            "hub.listen",
            "\"User 2\"",
            "appears twice",
        ] {
            assert!(e.contains(needle), "{needle} missing in: {e}");
        }
        jail.create_file("m.toml", "[queue]\nmode = \"fastest\"\n")?;
        let e = load(jail, "m.toml", json!({})).unwrap_err().to_string();
        assert!(e.contains("fastest") || e.contains("mode"), "{e}");
        Ok(())
    });
}

#[test]
fn the_node_policy_and_socket_limit_are_read_and_their_mistakes_are_named() {
    Jail::expect_with(|jail| {
        // Nothing configured: every node allowed, 32 sockets per participant.
        jail.create_file("empty.toml", "")?;
        let c = load(jail, "empty.toml", json!({})).unwrap();
        assert!(c.nodes.allow.is_empty() && c.nodes.deny.is_empty());
        assert_eq!(c.frontend.max_sockets_per_participant, 32);

        jail.create_file(
            "c.toml",
            r#"
                [nodes]
                deny = ["LoadImageOutput", "RunPythonCode"]
                allow = []
                [frontend]
                max_sockets_per_participant = 8
            "#,
        )?;
        let c = load(jail, "c.toml", json!({})).unwrap();
        assert_eq!(c.nodes.deny, ["LoadImageOutput", "RunPythonCode"]);
        assert_eq!(c.frontend.max_sockets_per_participant, 8);
        jail.set_env(
            "COMFY_MULTI_NODES__ALLOW",
            "[\"EmptyImage\", \"SaveImage\"]",
        );
        let c = load(jail, "c.toml", json!({})).unwrap();
        assert_eq!(c.nodes.allow, ["EmptyImage", "SaveImage"]);
        jail.clear_env();

        // A name in both lists, a blank or padded name, a zero limit.
        jail.create_file(
            "bad.toml",
            r#"
                [nodes]
                allow = ["SaveImage", " EmptyImage"]
                deny = ["SaveImage", ""]
                [frontend]
                max_sockets_per_participant = 0
            "#,
        )?;
        let e = load(jail, "bad.toml", json!({})).unwrap_err().to_string();
        for needle in [
            "\"SaveImage\" is in both nodes.allow and nodes.deny",
            "nodes.allow entry \" EmptyImage\" is not a node type",
            "nodes.deny entry \"\" is not a node type",
            "frontend.max_sockets_per_participant must be at least 1",
        ] {
            assert!(e.contains(needle), "{needle} missing in: {e}");
        }
        // A misspelt key in the section is named, not ignored.
        jail.create_file("typo.toml", "[nodes]\ndenied = [\"X\"]\n")?;
        let e = load(jail, "typo.toml", json!({})).unwrap_err().to_string();
        assert!(e.contains("denied"), "{e}");
        Ok(())
    });
}

#[test]
fn a_missing_config_file_is_an_error() {
    let e = Config::load(Some(Path::new("/nonexistent/c.toml")), json!({})).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/c.toml"));
}

#[test]
fn secrets_are_read_from_files_and_errors_never_show_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("secret");
    std::fs::write(&p, "s3cret-value\n").unwrap();
    assert_eq!(read_secret(&p).unwrap(), "s3cret-value");
    std::fs::write(&p, "\n").unwrap();
    assert!(read_secret(&p).unwrap_err().to_string().contains("empty"));
    let e = read_secret(&dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"));
    // The Redis URL's password is redacted in debug output.
    let mut c = Config::default();
    c.redis.url = "redis://:hunter2@127.0.0.1:6379".into();
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(
        &f,
        "[participants]\nnames = [\"user01\", \"user02\"]\ninstructor = \"instructor\"\n[queue]\nmode = \"fair_share\"\n",
    )
    .unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_config_prints_what_is_wrong_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "[queue]\nmax_attempts = 0\nbogus = true\n").unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn a_redis_password_never_appears_in_error_output() {
    let out = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            "redis://:hunter2@127.0.0.1:1",
        ])
        .env("COMFY_MULTI_CONFIG", "/dev/null")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("***"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn a_missing_or_editor_format_warmup_workflow_is_named_by_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("editor.json");
    std::fs::write(&editor, r#"{"nodes": [], "links": [], "version": 0.4}"#).unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, r#"{"1": {"class_type": "KSampler"}}"#).unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}"#,
    )
    .unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(
        &f,
        format!(
            "[[warmup]]\nworkflow = {:?}\n[[warmup]]\nworkflow = {:?}\n[[warmup]]\nworkflow = {:?}\n[[warmup]]\nworkflow = {:?}\n",
            dir.path().join("missing.json"),
            editor,
            broken,
            good
        ),
    )
    .unwrap();
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warmup[0].workflow: cannot read"), "{err}");
    assert!(
        err.contains("warmup[1].workflow") && err.contains("Export (API)"),
        "{err}"
    );
    assert!(
        err.contains("warmup[2].workflow") && err.contains("no class_type/inputs"),
        "{err}"
    );
    assert!(!err.contains("warmup[3]"), "the good one is fine: {err}");
}

#[test]
fn pool_mistakes_are_named_by_check_config() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "p.toml",
            r#"
                [[workers]]
                id = "modal-1"
                comfyui_url = "http://10.0.0.9:8188"
                [[pools]]
                name = "modal"
                kind = "comfyui_url"
                urls = ["https://a.modal.run", "ftp://b"]
                [[pools]]
                name = "modal"
                urls = ["https://c.example"]
                price_per_gpu_hour = -1.0
                [[pools]]
                name = "empty"
                kind = "comfyui_url"
            "#,
        )?;
        let e = load(jail, "p.toml", json!({})).unwrap_err().to_string();
        for needle in [
            "\"ftp://b\" is not an http(s) URL",
            "the name \"modal\" appears twice",
            "urls and headers_file belong to kind = \"comfyui_url\" pools",
            "price_per_gpu_hour must be a number ≥ 0",
            "needs at least one URL",
            "worker id \"modal-1\" is used twice",
        ] {
            assert!(e.contains(needle), "{needle} missing in: {e}");
        }
        jail.create_file("b.toml", "[[pools]]\nname = \"x\"\nburst = \"sometimes\"\n")?;
        let e = load(jail, "b.toml", json!({})).unwrap_err().to_string();
        assert!(e.contains("line_over:N"), "{e}");
        Ok(())
    });
}

#[test]
fn runpod_pool_mistakes_are_named_by_check_config() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "r.toml",
            r#"
                [[pools]]
                name = "runpod"
                kind = "runpod_serverless"
                api_base = "runpod.io"
                poll_ms = 5
                urls = ["https://x.example"]
                [[pools]]
                name = "rp2"
                kind = "runpod_serverless"
                endpoint_id = "Bad Id!"
                api_key_file = "/run/keys/runpod"
                object_info_file = "/etc/comfy-multi/object_info.json"
                max_concurrency = 2
                [[pools]]
                name = "local2"
                endpoint_id = "abc"
            "#,
        )?;
        let e = load(jail, "r.toml", json!({})).unwrap_err().to_string();
        for needle in [
            "pools[0] (\"runpod\"): a runpod_serverless pool needs endpoint_id",
            "needs api_key_file",
            "needs object_info_file",
            "needs max_concurrency ≥ 1",
            "api_base \"runpod.io\" is not an http(s) URL",
            "poll_ms must be between 100 and 60000",
            "a RunPod pool names its endpoint_id",
            "endpoint_id \"Bad Id!\" is not a RunPod endpoint id",
            "pools[2] (\"local2\"): endpoint_id, api_key_file, api_base and object_info_file belong to kind = \"runpod_serverless\" pools",
        ] {
            assert!(e.contains(needle), "{needle} missing in: {e}");
        }
        jail.create_file("k.toml", "[[pools]]\nname = \"x\"\nkind = \"modal\"\n")?;
        let e = load(jail, "k.toml", json!({})).unwrap_err().to_string();
        assert!(e.contains("runpod_serverless"), "the kinds are listed: {e}");
        Ok(())
    });
}

#[test]
fn a_pool_headers_file_is_read_and_its_mistakes_never_show_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    std::fs::write(
        &good,
        "# Modal proxy auth\nModal-Key: wk-abc\n\nModal-Secret: ws-very-secret\n",
    )
    .unwrap();
    assert_eq!(
        comfy_multi::config::read_headers(&good).unwrap(),
        [
            ("Modal-Key".to_string(), "wk-abc".to_string()),
            ("Modal-Secret".to_string(), "ws-very-secret".to_string())
        ]
    );
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "Modal-Key: wk-abc\nws-very-secret-without-a-name\n").unwrap();
    let e = comfy_multi::config::read_headers(&bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("no colon"), "{e}");
    assert!(!e.contains("very-secret") && !e.contains("wk-abc"), "{e}");
}
