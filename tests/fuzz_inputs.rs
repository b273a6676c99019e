//! Generated hostile input (proptest) against the real servers: a
//! participant's frontend router in process (userdata names, upload names,
//! fields and broken multipart bodies, `/view` and its neighbours' query
//! parameters, arbitrary socket frames) and the hub's worker gateway
//! (registrations, mutated worker messages on a live session, extreme
//! results under a valid lease). For every generated case: no 5xx, the
//! server keeps answering, no byte of anything outside the participant's
//! own folder changes (the whole tree around the state directory is
//! compared), nothing inside it is a link or a special file, and no answer
//! shows a secret planted outside it.
//!
//! Why this exists: the hand-written cases in `frontend_bad_input.rs` cover
//! the attacks someone thought of; this covers the combinations nobody
//! did — encodings mixed with separators, odd Unicode, wrong JSON types,
//! truncated forms — with a bounded number of cases so it runs in CI.
//!
//! `PROPTEST_CASES` sets the cases per input class (default 100);
//! `FUZZ_SEED` replays a run (each test prints the seed it used).

mod support;

use comfy_multi::frontend::{run, FrontendState};
use comfy_multi::queue::QueueSettings;
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::hub::{worker_socket, TestHub, WorkerWs, ADMIN_TOKEN};
use support::report::{Record, Section};
use support::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const USER: &str = "user07";
/// How long one request or socket answer may take before it counts as no
/// answer (a liveness bound, not a timing assertion).
const ANSWER: Duration = Duration::from_secs(30);

// ------------------------------------------------------------ the runner

/// Cases per input class and the seed, from the environment.
fn fuzz_params(test: &str) -> (u32, u64) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: {cases} cases, seed {seed} (replay with FUZZ_SEED={seed})");
    (cases, seed)
}

fn runner(cases: u32, seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// What one input class counted.
#[derive(Default, Debug)]
struct Counts {
    cases: u64,
    ok: u64,
    client_errors: u64,
    server_errors: u64,
    no_answer: u64,
    escapes: u64,
    leaks: u64,
}

impl Counts {
    fn status(&mut self, status: u16) {
        match status {
            0 => self.no_answer += 1,
            100..=399 => self.ok += 1,
            400..=499 => self.client_errors += 1,
            _ => self.server_errors += 1,
        }
    }

    fn record(&self, id: &str, title: &str, setup: &str, seed: u64, passed: bool) {
        let mut r = Record::new(Section::Input, id, title)
            .setup(setup)
            .measure("cases", self.cases)
            .measure("2xx/3xx (sockets: the probe answered)", self.ok)
            .measure("4xx", self.client_errors)
            .measure("5xx", self.server_errors)
            .measure("no answer", self.no_answer)
            .measure("escapes from the participant's root", self.escapes)
            .measure("secrets from outside shown", self.leaks);
        r.seed = Some(seed);
        r.passed = passed;
        r.write();
    }
}

/// Runs `strategy` through `check`, writes the class's record, then fails
/// with the smallest failing input if there was one.
fn fuzz<S: Strategy>(
    test: &str,
    id: &str,
    title: &str,
    setup: &str,
    strategy: S,
    check: impl Fn(S::Value, &mut Counts) -> Result<(), String>,
) where
    S::Value: std::fmt::Debug,
{
    let (cases, seed) = fuzz_params(test);
    let counts = RefCell::new(Counts::default());
    let result = runner(cases, seed).run(&strategy, |input| {
        let mut c = counts.borrow_mut();
        c.cases += 1;
        check(input, &mut c).map_err(TestCaseError::fail)
    });
    let counts = counts.into_inner();
    let passed = result.is_ok()
        && counts.server_errors == 0
        && counts.no_answer == 0
        && counts.escapes == 0
        && counts.leaks == 0;
    counts.record(id, title, setup, seed, passed);
    if let Err(e) = result {
        panic!("{test} (FUZZ_SEED={seed}): {e}");
    }
    assert!(passed, "{test}: {counts:?}");
}

// ------------------------------------------------------ raw HTTP client

/// Sends exactly these bytes (no client-side normalisation of `..` or
/// percent escapes, as a URL library would do) and reads the answer:
/// (status, decoded body); status 0 when the server closed without one.
async fn raw_http(addr: &str, request: Vec<u8>) -> (u16, Vec<u8>) {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(&request).await.ok()?;
        let mut out = vec![];
        let _ = s.read_to_end(&mut out).await;
        Some(out)
    };
    let Ok(Some(out)) = tokio::time::timeout(ANSWER, exchange).await else {
        return (0, vec![]);
    };
    parse_response(&out).unwrap_or((0, out))
}

fn parse_response(out: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&out[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = &out[end + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    if !chunked {
        return Some((status, body.to_vec()));
    }
    let mut rest = body;
    let mut decoded = vec![];
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        decoded.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    Some((status, decoded))
}

fn request(method: &str, target: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {target} HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// Percent-encodes what a request line cannot carry, keeping `keep` (and
/// every `%`, so generated escapes like `%2e%2e` reach the server as such).
fn encode(s: &str, keep: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~%".contains(&b) || keep.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// For a path: `/` and sub-delimiters stay.
fn enc_path(s: &str) -> String {
    encode(s, "/!$'()*,;:@")
}

/// For a query value: `&`, `=`, `+` and `#` are escaped.
fn enc_query(s: &str) -> String {
    encode(s, "/!$'()*,;:@")
}

// ------------------------------------------------------------ generators

/// Stands for an absolute path to the other participant's folder.
const ABS: &str = "@ABS@";

/// One piece of a generated name.
fn piece() -> impl Strategy<Value = String> {
    let fixed: Vec<&'static str> = vec![
        "..",
        ".",
        "",
        "%2e%2e",
        "%2E%2e",
        ".%2e",
        "%252e%252e",
        "%2F",
        "%2f",
        "%5C",
        "%00",
        "\0",
        "\\",
        "/",
        "//",
        "~",
        " ",
        "user08",
        "users",
        "user",
        "input",
        "output",
        "workflows",
        "comfy.settings.json",
        "mine.png",
        ".hidden",
        "x.json",
        "etc/passwd",
        "é",
        "日本語",
        "\u{202e}gnp.exe",
        "\u{fffd}",
        "%ff%fe",
        "%",
        "%%",
        "%zz",
        "?",
        "#",
        "&",
        "=",
        ";",
        ":",
        "CON",
        "nul",
        "x.png\0.txt",
        "\r\n",
        ABS,
    ];
    prop_oneof![
        4 => proptest::sample::select(fixed).prop_map(str::to_string),
        2 => "[a-z0-9._-]{1,12}",
        1 => any::<String>().prop_map(|s| s.chars().take(24).collect()),
        1 => (1usize..600).prop_map(|n| "a".repeat(n)),
    ]
}

/// A name made of pieces and separators, sometimes absolute.
fn name() -> impl Strategy<Value = String> {
    let sep = proptest::sample::select(vec!["/", "/", "%2F", "%2f", "", "\\", "%5c"]);
    (
        proptest::collection::vec((piece(), sep), 1..6),
        any::<bool>(),
    )
        .prop_map(|(parts, absolute)| {
            let mut s = if absolute {
                "/".to_string()
            } else {
                String::new()
            };
            for (i, (p, sep)) in parts.iter().enumerate() {
                if i > 0 {
                    s.push_str(sep);
                }
                s.push_str(p);
            }
            s
        })
}

/// Arbitrary JSON, a few levels deep, with the keys the servers look for.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
        name().prop_map(Value::from),
    ];
    let key = prop_oneof![
        proptest::sample::select(vec![
            "type",
            "data",
            "supports_preview_metadata",
            "prompt_id",
            "node",
            "filename",
            "subfolder",
            "job",
            "token",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,8}",
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

// ------------------------------------------------------ the participant

struct Site {
    _redis: RedisServer,
    /// Everything the test owns; the state directory is two levels down,
    /// so a traversal a few levels up still lands inside the snapshot.
    root: tempfile::TempDir,
    state: PathBuf,
    addr: String,
    http: reqwest::Client,
    /// Planted outside the participant's folder; no answer may show it.
    secret: String,
}

impl Site {
    fn own_dir(&self) -> PathBuf {
        self.state.join("users").join(USER)
    }

    fn other_dir(&self) -> PathBuf {
        self.state.join("users").join("user08")
    }

    fn materialize(&self, s: &str) -> String {
        s.replace(ABS, &self.other_dir().display().to_string())
    }

    fn own_prefix(&self) -> String {
        let rel = self.own_dir();
        let rel = rel.strip_prefix(self.root.path()).unwrap();
        format!("{}/", rel.display())
    }
}

fn png(seed: u8) -> Vec<u8> {
    let mut out = vec![];
    let mut enc = png::Encoder::new(&mut out, 4, 4);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&[seed; 64]).unwrap();
    w.finish().unwrap();
    out
}

/// user07's server (no login: the guard is tested elsewhere) with an
/// upload and a workflow of its own, and secrets planted around it: in
/// user08's folder, in the state directory and above it.
async fn site() -> Site {
    let redis = RedisServer::start();
    let queue = support::queue(&redis, support::test_settings()).await;
    support::store_catalogue(&queue).await;
    let root = tempfile::tempdir().unwrap();
    let state = root.path().join("outer").join("srv").join("state");
    let static_dir = state.join("static");
    std::fs::create_dir_all(static_dir.join("assets")).unwrap();
    std::fs::write(static_dir.join("index.html"), "<html>editor</html>").unwrap();
    let secret = format!("FUZZ-SECRET-{}", uuid::Uuid::new_v4().simple());
    let other = state.join("users").join("user08");
    for (path, bytes) in [
        (other.join("input/theirs.png"), secret.clone().into_bytes()),
        (other.join("output/out.png"), secret.clone().into_bytes()),
        (
            other.join("user/comfy.settings.json"),
            format!("{{\"s\": \"{secret}\"}}").into_bytes(),
        ),
        (
            other.join("user/workflows/w.json"),
            format!("{{\"s\": \"{secret}\"}}").into_bytes(),
        ),
        (state.join("secret.txt"), secret.clone().into_bytes()),
        (state.join("participants.toml"), secret.clone().into_bytes()),
        (root.path().join("secret.txt"), secret.clone().into_bytes()),
        (
            root.path().join("outer/secret.json"),
            secret.clone().into_bytes(),
        ),
    ] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fs = FrontendState::new(
        USER,
        queue,
        static_dir,
        state.join("users").join(USER),
        1 << 20,
    );
    tokio::spawn(run(listener, fs, CancellationToken::new()));
    let s = Site {
        _redis: redis,
        root,
        state,
        addr,
        http: reqwest::Client::new(),
        secret,
    };
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(png(2)).file_name("mine.png"),
    );
    let r = s
        .http
        .post(format!("http://{}/{USER}/upload/image", s.addr))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .post(format!(
            "http://{}/{USER}/userdata/workflows%2Fmine.json",
            s.addr
        ))
        .body("{\"nodes\": []}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s
}

/// Every path under `root` with its bytes (folders as `None`), except
/// below `skip`.
fn snapshot(root: &Path, skip: &str) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                if format!("{rel}/").starts_with(skip) {
                    continue;
                }
                stack.push(e.path());
                out.insert(format!("{rel}/"), None);
            } else if t.is_symlink() {
                out.insert(format!("{rel} -> link"), None);
            } else {
                out.insert(rel, std::fs::read(e.path()).ok());
            }
        }
    }
    out
}

/// Everything under the participant's own folder is a plain file or
/// folder whose real path is inside it (no links, no devices, no fifos),
/// and no temp file of a write was left behind.
fn own_dir_problems(dir: &Path) -> Vec<String> {
    let Ok(real_root) = dir.canonicalize() else {
        return vec![];
    };
    let mut problems = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                problems.push(format!("{} was left behind", e.path().display()));
            }
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let t = meta.file_type();
            if t.is_dir() {
                stack.push(e.path());
            } else if !t.is_file() {
                problems.push(format!("{} is a {t:?}", e.path().display()));
                continue;
            }
            match e.path().canonicalize() {
                Ok(real) if real.starts_with(&real_root) => {}
                other => problems.push(format!("{} resolves to {other:?}", e.path().display())),
            }
        }
    }
    problems
}

/// Checks one answer and the file tree after it.
fn judge(
    site: &Site,
    before: &BTreeMap<String, Option<Vec<u8>>>,
    c: &mut Counts,
    what: &str,
    status: u16,
    body: &[u8],
) -> Result<(), String> {
    c.status(status);
    if status == 0 || status >= 500 {
        return Err(format!(
            "{what}: {status} {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    if body
        .windows(site.secret.len())
        .any(|w| w == site.secret.as_bytes())
    {
        c.leaks += 1;
        return Err(format!(
            "{what}: the answer ({status}) shows a secret from outside"
        ));
    }
    let after = snapshot(site.root.path(), &site.own_prefix());
    if &after != before {
        c.escapes += 1;
        let changed: Vec<&String> = after
            .keys()
            .chain(before.keys())
            .filter(|k| after.get(*k) != before.get(*k))
            .collect();
        return Err(format!(
            "{what} ({status}) changed outside the participant's folder: {changed:?}"
        ));
    }
    let problems = own_dir_problems(&site.own_dir());
    if !problems.is_empty() {
        c.escapes += 1;
        return Err(format!("{what} ({status}): {problems:?}"));
    }
    Ok(())
}

/// A normal request still succeeds.
async fn still_serves(site: &Site) -> Result<(), String> {
    for p in [
        "/prompt",
        "/view?filename=mine.png&type=input",
        "/userdata?dir=workflows",
    ] {
        let r = site
            .http
            .get(format!("http://{}/{USER}{p}", site.addr))
            .send()
            .await
            .map_err(|e| format!("{p}: {e}"))?;
        if r.status() != 200 {
            return Err(format!("{p} answered {} after the fuzz", r.status()));
        }
    }
    Ok(())
}

// ------------------------------------------------------------ userdata

#[derive(Debug, Clone)]
enum UserdataOp {
    Get,
    Post { body: Vec<u8>, query: &'static str },
    Delete,
    Move { to: String, query: &'static str },
    List { query: &'static str },
}

fn userdata_case() -> impl Strategy<Value = (String, bool, UserdataOp)> {
    let query = proptest::sample::select(vec![
        "",
        "?overwrite=true",
        "?overwrite=false&full_info=true",
        "?overwrite=%ff",
        "?recurse=true&split=false",
        "?full_info=true&recurse=true",
        "?overwrite",
    ]);
    let body = prop_oneof![
        Just(b"{\"nodes\": []}".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..200),
        arb_json().prop_map(|v| v.to_string().into_bytes()),
    ];
    let op = prop_oneof![
        2 => Just(UserdataOp::Get),
        2 => (body, query.clone()).prop_map(|(body, query)| UserdataOp::Post { body, query }),
        1 => Just(UserdataOp::Delete),
        1 => (name(), query.clone()).prop_map(|(to, query)| UserdataOp::Move { to, query }),
        1 => query.prop_map(|query| UserdataOp::List { query }),
    ];
    (name(), any::<bool>(), op)
}

#[test]
fn fuzz_userdata_names() {
    let rt = rt();
    let site = rt.block_on(site());
    let before = snapshot(site.root.path(), &site.own_prefix());
    fuzz(
        "fuzz_userdata_names",
        "input-fuzz-userdata",
        "Generated userdata names: traversal in every encoding, separators, NUL, Unicode, absolute and very long names",
        "GET, POST (random bodies), DELETE, move and list on /userdata/{file} and /api/userdata/{file} of one participant's in-process frontend; raw HTTP so no client normalises the path; secrets planted in another participant's folder and up to three levels above the state dir",
        userdata_case(),
        |(name, api, op), c| {
            let name = site.materialize(&name);
            let base = format!("/{USER}{}/userdata", if api { "/api" } else { "" });
            let (method, target, body) = match &op {
                UserdataOp::Get => ("GET", format!("{base}/{}", enc_path(&name)), vec![]),
                UserdataOp::Post { body, query } => (
                    "POST",
                    format!("{base}/{}{query}", enc_path(&name)),
                    body.clone(),
                ),
                UserdataOp::Delete => ("DELETE", format!("{base}/{}", enc_path(&name)), vec![]),
                UserdataOp::Move { to, query } => (
                    "POST",
                    format!(
                        "{base}/{}/move/{}{query}",
                        enc_path(&name),
                        enc_path(&site.materialize(to))
                    ),
                    vec![],
                ),
                UserdataOp::List { query } => {
                    let q = query.trim_start_matches('?');
                    (
                        "GET",
                        format!("{base}?dir={}&{q}", enc_query(&name)),
                        vec![],
                    )
                }
            };
            let (status, answer) = rt.block_on(raw_http(
                &site.addr,
                request(method, &target, &[], &body),
            ));
            judge(&site, &before, c, &format!("{method} {target}"), status, &answer)
        },
    );
    rt.block_on(still_serves(&site)).unwrap();
}

// ------------------------------------------------------------- uploads

#[derive(Debug, Clone)]
enum Breakage {
    None,
    /// Cut the body after this share (per mille) of it.
    Truncate(u16),
    NoClosingBoundary,
    BoundaryMismatch,
    NoBoundaryParam,
    NotMultipart,
    GarbageFirst(Vec<u8>),
}

#[derive(Debug, Clone)]
struct UploadCase {
    mask: bool,
    api: bool,
    /// The image part's `filename` (raw bytes of the part header: quotes,
    /// CR/LF and all).
    filename: Option<String>,
    fields: Vec<(String, String)>,
    content: Vec<u8>,
    breakage: Breakage,
}

fn upload_case() -> impl Strategy<Value = UploadCase> {
    let field_name = prop_oneof![
        3 => proptest::sample::select(vec!["subfolder", "type", "overwrite", "original_ref", "image"])
            .prop_map(str::to_string),
        1 => "[a-z_\"\\\\ ]{0,8}",
    ];
    let original_ref = (name(), name(), name())
        .prop_map(|(f, s, t)| json!({"filename": f, "subfolder": s, "type": t}).to_string());
    let field_value = prop_oneof![
        3 => name(),
        1 => proptest::sample::select(vec!["input", "output", "temp", "true", "false", "1", ""])
            .prop_map(str::to_string),
        1 => original_ref,
        1 => Just(json!({"filename": "mine.png", "type": "input"}).to_string()),
        1 => arb_json().prop_map(|v| v.to_string()),
    ];
    let breakage = prop_oneof![
        4 => Just(Breakage::None),
        2 => (0u16..1000).prop_map(Breakage::Truncate),
        1 => Just(Breakage::NoClosingBoundary),
        1 => Just(Breakage::BoundaryMismatch),
        1 => Just(Breakage::NoBoundaryParam),
        1 => Just(Breakage::NotMultipart),
        1 => proptest::collection::vec(any::<u8>(), 1..64).prop_map(Breakage::GarbageFirst),
    ];
    let content = prop_oneof![
        3 => (0u8..255).prop_map(png),
        1 => proptest::collection::vec(any::<u8>(), 0..300),
    ];
    (
        any::<bool>(),
        any::<bool>(),
        proptest::option::weighted(0.9, name()),
        proptest::collection::vec((field_name, field_value), 0..5),
        content,
        breakage,
    )
        .prop_map(
            |(mask, api, filename, fields, content, breakage)| UploadCase {
                mask,
                api,
                filename,
                fields,
                content,
                breakage,
            },
        )
}

impl UploadCase {
    /// (Content-Type, body)
    fn build(&self, site: &Site) -> (String, Vec<u8>) {
        let b = "fuzzBOUNDARYq7";
        let mut body = vec![];
        if let Breakage::GarbageFirst(g) = &self.breakage {
            body.extend_from_slice(g);
        }
        let mut part = |header: String, data: &[u8]| {
            body.extend_from_slice(format!("--{b}\r\n{header}\r\n\r\n").as_bytes());
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        };
        let file = self
            .filename
            .as_ref()
            .map(|f| format!("; filename=\"{}\"", site.materialize(f)))
            .unwrap_or_default();
        part(
            format!(
                "Content-Disposition: form-data; name=\"image\"{file}\r\nContent-Type: image/png"
            ),
            &self.content,
        );
        for (k, v) in &self.fields {
            part(
                format!("Content-Disposition: form-data; name=\"{k}\""),
                site.materialize(v).as_bytes(),
            );
        }
        if !matches!(self.breakage, Breakage::NoClosingBoundary) {
            body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
        }
        if let Breakage::Truncate(per_mille) = self.breakage {
            body.truncate(body.len() * per_mille as usize / 1000);
        }
        let ct = match self.breakage {
            Breakage::BoundaryMismatch => "multipart/form-data; boundary=otherBOUNDARY".to_string(),
            Breakage::NoBoundaryParam => "multipart/form-data".to_string(),
            Breakage::NotMultipart => "application/x-www-form-urlencoded".to_string(),
            _ => format!("multipart/form-data; boundary={b}"),
        };
        (ct, body)
    }
}

#[test]
fn fuzz_upload_names_and_forms() {
    let rt = rt();
    let site = rt.block_on(site());
    let before = snapshot(site.root.path(), &site.own_prefix());
    fuzz(
        "fuzz_upload_names_and_forms",
        "input-fuzz-uploads",
        "Generated uploads: file names, subfolder/type/overwrite/original_ref fields, broken multipart bodies",
        "POST /upload/image and /upload/mask (and under /api) with hand-built multipart bodies: generated file names (raw in the part header), 0-4 generated fields, PNG or random content, truncated/unterminated/mismatched/garbage-prefixed forms; writes inside the participant's own folder are allowed, anywhere else are an escape",
        upload_case(),
        |case, c| {
            let (ct, body) = case.build(&site);
            let target = format!(
                "/{USER}{}/upload/{}",
                if case.api { "/api" } else { "" },
                if case.mask { "mask" } else { "image" }
            );
            let (status, answer) = rt.block_on(raw_http(
                &site.addr,
                request("POST", &target, &[("content-type", ct)], &body),
            ));
            judge(&site, &before, c, &format!("POST {target}"), status, &answer)
        },
    );
    rt.block_on(still_serves(&site)).unwrap();
}

// ------------------------------------------------------------ /view

fn view_case() -> impl Strategy<Value = (String, Vec<(String, String)>, Option<String>)> {
    let endpoint = prop_oneof![
        4 => proptest::sample::select(vec!["/view", "/api/view"]).prop_map(str::to_string),
        1 => piece().prop_map(|p| format!("/view_metadata/{}", enc_path(&p))),
        1 => piece().prop_map(|p| format!("/internal/files/{}", enc_path(&p))),
        1 => piece().prop_map(|p| format!("/models/{}", enc_path(&p))),
    ];
    let key = prop_oneof![
        4 => proptest::sample::select(vec![
            "filename", "subfolder", "type", "preview", "channel", "format", "rand",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_]{0,8}",
    ];
    let value = prop_oneof![
        3 => name(),
        2 => proptest::sample::select(vec![
            "mine.png", "input", "output", "temp", "webp;90", "jpeg;50", "png", "webp;-1",
            "webp;99999999999999999999", "rgba", "rgb", "a", "", "0.1",
        ])
        .prop_map(str::to_string),
    ];
    let range = proptest::option::weighted(
        0.3,
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("bytes={a}-{b}")),
            any::<u64>().prop_map(|a| format!("bytes=-{a}")),
            "[ -~]{0,30}",
        ],
    );
    (
        endpoint,
        proptest::collection::vec((key, value), 0..6),
        range,
    )
}

#[test]
fn fuzz_view_parameters() {
    let rt = rt();
    let site = rt.block_on(site());
    let before = snapshot(site.root.path(), &site.own_prefix());
    fuzz(
        "fuzz_view_parameters",
        "input-fuzz-view",
        "Generated /view parameters: filename, subfolder, type, preview, channel, format, Range",
        "GET /view, /api/view, /view_metadata/{folder}, /internal/files/{kind} and /models/{folder} with 0-5 generated query parameters (duplicates allowed) and sometimes a generated Range header; the participant's own upload mine.png is among the names, secrets are planted outside its folder",
        view_case(),
        |(endpoint, params, range), c| {
            let query: Vec<String> = params
                .iter()
                .map(|(k, v)| format!("{}={}", enc_query(k), enc_query(&site.materialize(v))))
                .collect();
            let target = format!("/{USER}{endpoint}?{}", query.join("&"));
            let headers: Vec<(&str, String)> = range.into_iter().map(|r| ("range", r)).collect();
            let (status, answer) =
                rt.block_on(raw_http(&site.addr, request("GET", &target, &headers, &[])));
            judge(&site, &before, c, &format!("GET {target}"), status, &answer)
        },
    );
    rt.block_on(still_serves(&site)).unwrap();
}

// ------------------------------------------------- the participant's socket

#[derive(Debug, Clone)]
enum Frame {
    Text(String),
    Json(Value),
    Flags(Value),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        any::<String>().prop_map(Frame::Text),
        arb_json().prop_map(Frame::Json),
        arb_json().prop_map(Frame::Flags),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Frame::Binary),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(Frame::Ping),
    ]
}

/// Reads until a `feature_flags` answer; whether one came.
async fn answers_flags<S>(ws: &mut S) -> bool
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(ANSWER, async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                if v["type"] == "feature_flags" {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

#[test]
fn fuzz_participant_socket_frames() {
    let rt = rt();
    let site = rt.block_on(site());
    let before = snapshot(site.root.path(), &site.own_prefix());
    fuzz(
        "fuzz_participant_socket_frames",
        "input-fuzz-socket",
        "Generated frames on the participant's /ws: text, JSON of any shape, feature_flags with odd data, binary, ping",
        "one socket per case with a generated clientId, 0-7 generated frames, then a feature_flags probe that must be answered on the same socket",
        (
            proptest::option::of(name()),
            proptest::collection::vec(frame(), 0..8),
        ),
        |(client_id, frames), c| {
            rt.block_on(async {
                let mut url = format!("ws://{}/{USER}/ws", site.addr);
                if let Some(id) = &client_id {
                    url.push_str(&format!("?clientId={}", enc_query(id)));
                }
                let what = format!("{url} with {} frames", frames.len());
                let req = url
                    .as_str()
                    .into_client_request()
                    .map_err(|e| format!("{url}: {e}"))?;
                let (mut ws, _) = match tokio_tungstenite::connect_async(req).await {
                    Ok(ok) => ok,
                    Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                        let status = r.status().as_u16();
                        return judge(&site, &before, c, &what, status, &[]);
                    }
                    Err(e) => return Err(format!("{what}: {e}")),
                };
                for f in frames {
                    let m = match f {
                        Frame::Text(t) => Message::Text(t.into()),
                        Frame::Json(v) => Message::Text(v.to_string().into()),
                        Frame::Flags(data) => Message::Text(
                            json!({"type": "feature_flags", "data": data}).to_string().into(),
                        ),
                        Frame::Binary(b) => Message::Binary(b.into()),
                        Frame::Ping(b) => Message::Ping(b.into()),
                    };
                    ws.send(m).await.map_err(|e| format!("{what}: send: {e}"))?;
                }
                ws.send(Message::Text(
                    json!({"type": "feature_flags", "data": {}}).to_string().into(),
                ))
                .await
                .map_err(|e| format!("{what}: probe: {e}"))?;
                let alive = answers_flags(&mut ws).await;
                let _ = ws.close(None).await;
                if !alive {
                    c.no_answer += 1;
                    return Err(format!("{what}: the socket stopped answering"));
                }
                judge(&site, &before, c, &what, 101, &[])
            })
        },
    );
    rt.block_on(still_serves(&site)).unwrap();
}

// ------------------------------------------------------- the worker side

fn register(worker: &str, capacity: u32) -> Message {
    Message::Text(
        json!({"type": "register", "worker": worker, "capacity": capacity,
            "comfyui_url": "http://127.0.0.1:1", "object_info_digest": "d1"})
        .to_string()
        .into(),
    )
}

/// The next hub message that `want` accepts, within the answer bound.
async fn next_hub_msg(ws: &mut WorkerWs, want: impl Fn(&Value) -> bool) -> Option<Value> {
    support::hub::next_hub_msg(ws, ANSWER, want).await
}

/// A worker-side value, some made concrete with the live lease at send
/// time: `@JOB@` → its job id, `@TOK+n@` → its token + n (never the token
/// itself).
fn worker_value(field: &'static str) -> BoxedStrategy<Value> {
    let junk = arb_json().boxed();
    let good = match field {
        "job" | "digest" => prop_oneof![
            3 => Just(json!("@JOB@")),
            2 => Just(()).prop_map(|_| json!(uuid::Uuid::new_v4().to_string())),
            1 => name().prop_map(Value::from),
        ]
        .boxed(),
        "token" => prop_oneof![
            3 => (1u64..1000).prop_map(|n| json!(format!("@TOK+{n}@"))),
            1 => proptest::sample::select(vec![
                json!(0), json!(u64::MAX), json!(-1), json!(1e300), json!(1.5), json!("5"),
                json!(i64::MIN),
            ]),
        ]
        .boxed(),
        "outcome" => proptest::sample::select(vec![
            json!("succeeded"),
            json!("failed"),
            json!("cancelled"),
            json!("exploded"),
        ])
        .boxed(),
        "gpu_seconds" | "capacity" => prop_oneof![
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            Just(json!(1e308)),
        ]
        .boxed(),
        "healthy" => any::<bool>().prop_map(Value::from).boxed(),
        "error" => (name(), "\\PC{0,40}", arb_json())
            .prop_map(|(k, m, d)| json!({"type": k, "message": m, "details": d}))
            .boxed(),
        "holding" => proptest::collection::vec(
            (worker_value("job"), worker_value("token"))
                .prop_map(|(job, token)| json!({"job": job, "token": token})),
            0..3,
        )
        .prop_map(Value::Array)
        .boxed(),
        "worker" => prop_oneof![
            Just(json!("fuzz-w")),
            "[a-z0-9_-]{1,20}".prop_map(Value::from),
            name().prop_map(Value::from),
        ]
        .boxed(),
        _ => junk.clone(),
    };
    prop_oneof![4 => good, 1 => junk].boxed()
}

/// A worker message of a known (or unknown) type with generated fields,
/// some missing or of the wrong type.
fn worker_message() -> impl Strategy<Value = Value> {
    let shapes: Vec<(&'static str, Vec<&'static str>)> = vec![
        (
            "register",
            vec![
                "worker",
                "capacity",
                "comfyui_url",
                "object_info_digest",
                "system_stats",
                "holding",
            ],
        ),
        ("object_info", vec!["digest", "data"]),
        ("started", vec!["job", "token"]),
        ("heartbeat", vec!["job", "token"]),
        ("event", vec!["job", "token", "event"]),
        (
            "preview",
            vec!["job", "token", "mime", "data_b64", "metadata"],
        ),
        (
            "finished",
            vec!["job", "token", "outcome", "outputs", "error", "gpu_seconds"],
        ),
        ("release", vec!["job", "token", "reason"]),
        ("health", vec!["healthy", "message"]),
        ("no_such_type", vec!["job", "token"]),
    ];
    proptest::sample::select(shapes).prop_flat_map(|(kind, fields)| {
        let per_field: Vec<BoxedStrategy<Option<Value>>> = fields
            .iter()
            .map(|f| proptest::option::weighted(0.9, worker_value(f)).boxed())
            .collect();
        (Just(kind), Just(fields), per_field).prop_map(|(kind, fields, values)| {
            let mut m = serde_json::Map::new();
            m.insert("type".into(), json!(kind));
            for (f, v) in fields.iter().zip(values) {
                if let Some(v) = v {
                    m.insert(f.to_string(), v);
                }
            }
            Value::Object(m)
        })
    })
}

#[derive(Debug, Clone)]
enum WorkerFrame {
    Shaped(Value),
    Json(Value),
    Text(String),
    Binary(Vec<u8>),
}

fn worker_frame() -> impl Strategy<Value = WorkerFrame> {
    prop_oneof![
        6 => worker_message().prop_map(WorkerFrame::Shaped),
        1 => arb_json().prop_map(WorkerFrame::Json),
        1 => any::<String>().prop_map(WorkerFrame::Text),
        1 => proptest::collection::vec(any::<u8>(), 0..100).prop_map(WorkerFrame::Binary),
    ]
}

/// Replaces the placeholders with the live lease (`@TOK+n@` wraps, so a
/// huge token stays a number that is not the lease's).
fn concrete(v: &Value, job: &str, token: u64) -> Value {
    match v {
        Value::String(s) if s == "@JOB@" => json!(job),
        Value::String(s) if s.starts_with("@TOK+") => {
            let n: u64 = s[5..s.len() - 1].parse().unwrap_or(1);
            json!(token.wrapping_add(n))
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| concrete(x, job, token)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), concrete(x, job, token)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Everything in the hub's state dir.
fn hub_files(hub: &TestHub) -> BTreeMap<String, Option<Vec<u8>>> {
    snapshot(hub.state.path(), "\0")
}

/// What the fuzz may not change about the live lease.
fn lease_view(j: &comfy_multi::queue::Job) -> String {
    format!(
        "{:?} token={:?} attempts={} outputs={:?} error={:?} worker={:?}",
        j.status, j.lease_token, j.attempts, j.outputs, j.error, j.worker
    )
}

async fn hub_answers(hub: &TestHub) -> Result<(), String> {
    let http = reqwest::Client::new();
    for (path, token) in [
        ("/healthz", None),
        ("/metrics", None),
        ("/admin/api/queue", Some(ADMIN_TOKEN)),
        ("/admin/api/users", Some(ADMIN_TOKEN)),
        ("/admin/api/workers", Some(ADMIN_TOKEN)),
    ] {
        let mut r = http.get(format!("{}{path}", hub.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.map_err(|e| format!("{path}: {e}"))?;
        if r.status() != 200 {
            return Err(format!(
                "{path} answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ));
        }
    }
    Ok(())
}

fn long_leases() -> QueueSettings {
    QueueSettings {
        lease_ms: 3_600_000,
        ..support::test_settings()
    }
}

#[test]
fn fuzz_worker_messages_on_a_live_session() {
    let rt = rt();
    let redis = RedisServer::start();
    let hub = rt.block_on(TestHub::spawn(&redis, long_leases()));
    let (mut ws, job, token) = rt.block_on(async {
        let id = hub
            .queue
            .enqueue(support::job("user01", 1))
            .await
            .unwrap()
            .id;
        let mut ws = worker_socket(&hub).await;
        ws.send(register("fuzz-w", 1)).await.unwrap();
        let lease = next_hub_msg(&mut ws, |v| v["type"] == "job").await.unwrap();
        assert_eq!(lease["lease"]["job_id"], id.as_str());
        let token = lease["lease"]["token"].as_u64().unwrap();
        (ws, id, token)
    });
    let files = hub_files(&hub);
    let job_before =
        rt.block_on(async { lease_view(&hub.queue.job(&job).await.unwrap().unwrap()) });
    let ws = RefCell::new(&mut ws);
    fuzz(
        "fuzz_worker_messages_on_a_live_session",
        "input-fuzz-worker-session",
        "Generated worker messages on a registered session holding a live lease: valid shapes with wrong types, missing fields, unknown job ids, stale and huge tokens, unknown types, junk",
        "one worker socket (capacity 1) holding one lease; 1-6 generated frames per case quoting the lease's job id with any token but its own, random ids and traversal names; then a probe (`started` for an unknown job must be answered `stale` on the same socket), the lease unchanged in the queue, the hub's state dir unchanged and /healthz, /metrics and the admin reads answering 200",
        proptest::collection::vec(worker_frame(), 1..7),
        |frames, c| {
            let mut ws = ws.borrow_mut();
            rt.block_on(async {
                let what = format!("{} frames", frames.len());
                for f in &frames {
                    let m = match f {
                        WorkerFrame::Shaped(v) => Message::Text(concrete(v, &job, token).to_string().into()),
                        WorkerFrame::Json(v) => Message::Text(v.to_string().into()),
                        WorkerFrame::Text(t) => Message::Text(t.clone().into()),
                        WorkerFrame::Binary(b) => Message::Binary(b.clone().into()),
                    };
                    ws.send(m).await.map_err(|e| format!("{what}: send: {e}"))?;
                }
                let probe = uuid::Uuid::new_v4().to_string();
                ws.send(Message::Text(
                    json!({"type": "started", "job": probe, "token": 1}).to_string().into(),
                ))
                .await
                .map_err(|e| format!("{what}: probe: {e}"))?;
                let answer = next_hub_msg(&mut ws, |v| v["job"] == probe.as_str()).await;
                if answer.as_ref().map(|v| v["type"].clone()) != Some(json!("stale")) {
                    c.no_answer += 1;
                    return Err(format!("{what}: the session stopped answering ({answer:?})"));
                }
                let now = lease_view(&hub.queue.job(&job).await.unwrap().unwrap());
                if now != job_before {
                    c.escapes += 1;
                    return Err(format!("{what}: the lease changed: {job_before} → {now}"));
                }
                if hub_files(&hub) != files {
                    c.escapes += 1;
                    return Err(format!("{what}: the hub's files changed"));
                }
                hub_answers(&hub).await.inspect_err(|_| c.server_errors += 1)?;
                c.ok += 1;
                Ok(())
            })
        },
    );
}

#[test]
fn fuzz_worker_registrations() {
    let rt = rt();
    let redis = RedisServer::start();
    let hub = rt.block_on(TestHub::spawn(&redis, long_leases()));
    let files = hub_files(&hub);
    let first = prop_oneof![
        4 => worker_message().prop_map(|mut v| {
            v["type"] = json!("register");
            WorkerFrame::Shaped(v)
        }),
        1 => worker_frame(),
    ];
    fuzz(
        "fuzz_worker_registrations",
        "input-fuzz-worker-register",
        "Generated first messages on a new worker socket: registrations with wrong types, odd worker ids, huge capacities, held jobs that do not exist; junk instead of a registration",
        "a new worker socket per case (valid worker token), one generated first frame; the hub answers `registered` or `error` (or waits for a register), then a normal worker still registers and the hub's reads answer 200",
        first,
        |frame, c| {
            rt.block_on(async {
                let mut ws = worker_socket(&hub).await;
                let m = match &frame {
                    WorkerFrame::Shaped(v) => Message::Text(
                        concrete(v, &uuid::Uuid::new_v4().to_string(), 7).to_string().into(),
                    ),
                    WorkerFrame::Json(v) => Message::Text(v.to_string().into()),
                    WorkerFrame::Text(t) => Message::Text(t.clone().into()),
                    WorkerFrame::Binary(b) => Message::Binary(b.clone().into()),
                };
                let _ = ws.send(m).await;
                let _ = ws.close(None).await;
                drop(ws);
                // A well-behaved worker is still welcome.
                let mut ok = worker_socket(&hub).await;
                ok.send(register("probe-w", 1)).await.map_err(|e| e.to_string())?;
                let reg = next_hub_msg(&mut ok, |v| v["type"] == "registered").await;
                let _ = ok.close(None).await;
                if reg.is_none() {
                    c.no_answer += 1;
                    return Err(format!("{frame:?}: a normal worker got no `registered` after it"));
                }
                if hub_files(&hub) != files {
                    c.escapes += 1;
                    return Err(format!("{frame:?}: the hub's files changed"));
                }
                hub_answers(&hub).await.inspect_err(|_| c.server_errors += 1)?;
                c.ok += 1;
                Ok(())
            })
        },
    );
}

#[test]
fn fuzz_worker_results_under_a_valid_lease() {
    let rt = rt();
    let redis = RedisServer::start();
    let hub = rt.block_on(TestHub::spawn(&redis, long_leases()));
    let mut ws = rt.block_on(async {
        let mut ws = worker_socket(&hub).await;
        ws.send(register("fin-w", 10_000)).await.unwrap();
        next_hub_msg(&mut ws, |v| v["type"] == "registered")
            .await
            .unwrap();
        ws
    });
    let ws = RefCell::new(&mut ws);
    let result = (
        proptest::sample::select(vec!["succeeded", "failed", "cancelled"]),
        arb_json(),
        proptest::option::of(
            (name(), "\\PC{0,40}", arb_json())
                .prop_map(|(k, m, d)| json!({"type": k, "message": m, "details": d})),
        ),
        proptest::option::of(prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            proptest::sample::select(vec![
                1e308,
                -1e308,
                1e15,
                1e20,
                f64::MIN_POSITIVE,
                -0.0,
                0.0
            ]),
        ]),
        any::<bool>(),
    );
    fuzz(
        "fuzz_worker_results_under_a_valid_lease",
        "input-fuzz-worker-results",
        "Generated results under a valid lease: any outcome, outputs of any shape, odd error texts, GPU seconds from -1e308 to 1e308",
        "per case one new job leased to one worker socket, optionally `started`, then `finished` with the lease's own token and generated fields; it must be acknowledged (`ack`), the job must read back finished with that outcome, and the participant's history, /metrics and the admin reads must answer 200",
        result,
        |(outcome, outputs, error, gpu_seconds, start), c| {
            let mut ws = ws.borrow_mut();
            rt.block_on(async {
                let id = hub.queue.enqueue(support::job("user01", 2)).await.unwrap().id;
                let lease = next_hub_msg(&mut ws, |v| v["type"] == "job" && v["lease"]["job_id"] == id.as_str())
                    .await
                    .ok_or("no lease for the new job")?;
                let token = lease["lease"]["token"].as_u64().unwrap();
                if start {
                    ws.send(Message::Text(json!({"type": "started", "job": id, "token": token}).to_string().into()))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                let msg = json!({"type": "finished", "job": id, "token": token, "outcome": outcome,
                    "outputs": outputs, "error": error, "gpu_seconds": gpu_seconds});
                ws.send(Message::Text(msg.to_string().into())).await.map_err(|e| e.to_string())?;
                let answer = next_hub_msg(&mut ws, |v| v["job"] == id.as_str() || v["type"] == "error").await;
                if answer.as_ref().map(|v| v["type"].clone()) != Some(json!("ack")) {
                    c.server_errors += 1;
                    return Err(format!("{msg}: answered {answer:?}"));
                }
                let j = hub.queue.job(&id).await.map_err(|e| format!("{msg}: reading the job: {e}"))?;
                let status = j.map(|j| format!("{:?}", j.status).to_lowercase());
                if status.as_deref() != Some(outcome) {
                    return Err(format!("{msg}: the job reads back as {status:?}"));
                }
                hub.queue
                    .history("user01", 0, 5)
                    .await
                    .map_err(|e| format!("{msg}: history: {e}"))?;
                hub_answers(&hub).await.inspect_err(|_| c.server_errors += 1)?;
                c.ok += 1;
                Ok(())
            })
        },
    );
}
