//! Bad input on a participant's server: traversal attempts on every
//! endpoint that takes a path or a name, bodies over each limit, malformed
//! and deeply nested JSON, broken multipart forms and an oversized socket
//! message. Each gets a clear 4xx (ComfyUI's error shape on `/prompt`),
//! nothing is written — the whole state directory and the participant's
//! jobs are the same before and after — and the server keeps serving.
//!
//! Why this exists: these endpoints take names, paths and bodies from the
//! browser of anyone at the workshop; a refusal that still writes a file, a
//! limit that is missing, or a panic on odd input would be found there
//! first.

mod support;

use comfy_multi::frontend::{run, FrontendState};
use comfy_multi::queue::Queue;
use futures_util::{SinkExt, StreamExt};
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::report::{Record, Section};
use support::RedisServer;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const USER: &str = "user07";
const UPLOAD_LIMIT: u64 = 1 << 20;

struct Setup {
    _redis: RedisServer,
    queue: Queue,
    state: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    addr: String,
    /// `http://127.0.0.1:PORT/user07`
    base: String,
    http: reqwest::Client,
}

impl Setup {
    fn user_dir(&self, user: &str) -> PathBuf {
        self.state.path().join("users").join(user)
    }
}

/// user07's server (settings of `support::test_settings`: prompts up to
/// 64 KiB), with an upload, a saved workflow and a setting, and
/// another participant's files next to them to aim at.
async fn setup() -> Setup {
    let redis = RedisServer::start();
    let queue = support::queue(&redis, support::test_settings()).await;
    support::store_catalogue(&queue).await;
    let state = tempfile::tempdir().unwrap();
    let static_dir = state.path().join("static");
    std::fs::create_dir_all(static_dir.join("assets")).unwrap();
    std::fs::write(static_dir.join("index.html"), "<html>editor</html>").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let fs = FrontendState::new(
        USER,
        queue.clone(),
        static_dir,
        state.path().join("users").join(USER),
        UPLOAD_LIMIT,
    );
    tokio::spawn(run(listener, fs, CancellationToken::new()));
    let t = Setup {
        _redis: redis,
        queue,
        base: format!("{addr}/{USER}"),
        addr,
        state,
        http: reqwest::Client::new(),
    };
    let other = t.user_dir("user08");
    std::fs::create_dir_all(other.join("input")).unwrap();
    std::fs::create_dir_all(other.join("user")).unwrap();
    std::fs::write(other.join("input/theirs.png"), png(4, 4, 1)).unwrap();
    std::fs::write(other.join("user/comfy.settings.json"), "{}").unwrap();
    let r = t
        .http
        .post(format!("{}/upload/image", t.base))
        .multipart(image_form("mine.png", png(4, 4, 2), &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = t
        .http
        .post(format!("{}/userdata/workflows%2Fmine.json", t.base))
        .body("{\"nodes\": []}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = t
        .http
        .post(format!("{}/settings", t.base))
        .json(&json!({"Comfy.Mine": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A job already waiting, so "nothing changed" covers the queue too.
    let r = t
        .http
        .post(format!("{}/prompt", t.base))
        .json(&json!({"prompt": support::prompt(1)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    t
}

fn png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let mut out = vec![];
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().unwrap();
    writer
        .write_image_data(&vec![seed; (w * h * 4) as usize])
        .unwrap();
    writer.finish().unwrap();
    out
}

fn image_form(name: &str, bytes: Vec<u8>, fields: &[(&str, &str)]) -> Form {
    let mut f = Form::new().part("image", Part::bytes(bytes).file_name(name.to_string()));
    for (k, v) in fields {
        f = f.text(k.to_string(), v.to_string());
    }
    f
}

/// Everything the server stores: each path under the state directory
/// (folders too, hidden temp files too) with its bytes, and the
/// participant's jobs.
#[derive(Debug, PartialEq)]
struct Stored {
    files: BTreeMap<String, Option<Vec<u8>>>,
    jobs: Vec<String>,
}

fn listing(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
                out.insert(format!("{rel}/"), None);
            } else {
                out.insert(rel, std::fs::read(e.path()).ok());
            }
        }
    }
    out
}

async fn stored(t: &Setup) -> Stored {
    let q = t.queue.participant_queue(USER, 1).await.unwrap();
    let mut jobs: Vec<String> = q.waiting.iter().map(|w| w.job_id.clone()).collect();
    jobs.extend(q.running.iter().map(|j| j.id.clone()));
    jobs.extend(
        t.queue
            .history(USER, 0, 1000)
            .await
            .unwrap()
            .iter()
            .map(|j| format!("{}:{:?}", j.id, j.status)),
    );
    Stored {
        files: listing(t.state.path()),
        jobs,
    }
}

/// The server still answers: the queue, the catalogue, a file.
async fn still_serves(t: &Setup) {
    serves(t).await.unwrap();
}

/// Whether the server still answers: the queue, the catalogue, a file.
async fn serves(t: &Setup) -> Result<(), String> {
    for p in [
        "/prompt",
        "/object_info",
        "/view?filename=mine.png&type=input",
    ] {
        let r = t.http.get(format!("{}{p}", t.base)).send().await;
        match r {
            Ok(r) if r.status() == 200 => {}
            Ok(r) => return Err(format!("{p} after bad input: {}", r.status())),
            Err(e) => return Err(format!("{p} after bad input: {e}")),
        }
    }
    Ok(())
}

/// A request: method, path under the participant's base (or, starting
/// with `//`, under the address), and its body.
enum Req {
    /// Method, path, body and its Content-Type.
    Raw(Method, String, Vec<u8>, Option<String>),
    Multipart(String, Form),
}

fn raw(method: Method, path: impl Into<String>, body: impl Into<Vec<u8>>) -> Req {
    Req::Raw(method, path.into(), body.into(), None)
}

fn get(path: impl Into<String>) -> Req {
    raw(Method::GET, path, vec![])
}

fn post(path: impl Into<String>, body: impl Into<Vec<u8>>) -> Req {
    raw(Method::POST, path, body)
}

fn upload(path: &str, form: Form) -> Req {
    Req::Multipart(path.into(), form)
}

impl Req {
    fn describe(&self) -> String {
        match self {
            Req::Raw(m, p, b, ct) => format!("{m} {p} ({} bytes of {ct:?})", b.len()),
            Req::Multipart(p, _) => format!("POST {p} (multipart)"),
        }
    }
}

async fn send(t: &Setup, req: Req) -> (u16, String) {
    let url = |p: &str| match p.strip_prefix("//") {
        Some(rest) => format!("{}/{rest}", t.addr),
        None => format!("{}{p}", t.base),
    };
    let r = match req {
        Req::Raw(m, p, b, ct) => {
            let mut r = t.http.request(m, url(&p)).body(b);
            if let Some(ct) = ct {
                r = r.header("content-type", ct);
            }
            r.send().await
        }
        Req::Multipart(p, f) => t.http.post(url(&p)).multipart(f).send().await,
    }
    .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Sends each request; each must be a 4xx with a body saying why, store
/// nothing, and leave the server serving. Writes the report record `id`
/// (`title` says what the requests are) before asserting.
async fn all_refused(t: &Setup, id: &str, title: &str, reqs: Vec<Req>) {
    let before = stored(t).await;
    let cases = reqs.len();
    let mut sent = 0;
    let mut failures = vec![];
    let mut wrote = None;
    for req in reqs {
        let what = req.describe();
        let (status, body) = send(t, req).await;
        sent += 1;
        // A bare 404 (a static file that is not there) says enough.
        if !(400..500).contains(&status) || (body.trim().is_empty() && status != 404) {
            failures.push(format!("{what}: {status} {body:.300}"));
        }
        let now = stored(t).await;
        if now != before {
            let changed: Vec<&String> = now
                .files
                .keys()
                .chain(before.files.keys())
                .filter(|k| now.files.get(*k) != before.files.get(*k))
                .collect();
            wrote = Some(format!(
                "{what} ({status}) stored something: {changed:?} jobs {:?}",
                now.jobs
            ));
            break;
        }
    }
    let serving = serves(t).await;
    let mut r = Record::new(Section::Input, id, title)
        .setup("one participant's in-process frontend with an upload, a workflow, a setting and a waiting job, another participant's files beside it; the whole state dir and the participant's jobs compared after every request")
        .measure("cases", cases)
        .measure("clear 4xx", sent - failures.len())
        .measure("not a clear 4xx", failures.len())
        .measure("requests that stored something", usize::from(wrote.is_some()))
        .measure("still serving after", if serving.is_ok() { "yes" } else { "no" });
    r.passed = failures.is_empty() && wrote.is_none() && serving.is_ok();
    r.write();
    if let Some(w) = wrote {
        panic!("{w}");
    }
    assert!(failures.is_empty(), "not a clear 4xx: {failures:#?}");
    serving.unwrap();
}

/// ComfyUI's answer to a refused prompt.
fn assert_comfyui_error(status: u16, body: &str, want_status: u16) {
    assert_eq!(status, want_status, "{body:.300}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:.300}"));
    let e = &v["error"];
    for k in ["type", "message", "details"] {
        assert!(e[k].is_string(), "error.{k} in {v}");
    }
    assert!(e["extra_info"].is_object(), "{v}");
    assert!(
        v["node_errors"].is_object() || v["node_errors"].is_array(),
        "{v}"
    );
}

// ------------------------------------------------------------ traversal

#[tokio::test]
async fn traversal_on_every_path_taking_endpoint_is_a_4xx_that_writes_nothing() {
    let t = setup().await;
    let abs = t.user_dir("user08").join("input").display().to_string();
    let mut reqs =
        vec![
        get("/view?filename=../user08/input/theirs.png&type=input"),
        get("/view?filename=..%2F..%2Fusers%2Fuser08%2Finput%2Ftheirs.png"),
        get("/view?filename=theirs.png&type=input&subfolder=../../user08/input"),
        get("/view?filename=passwd&subfolder=..%2F..%2F..%2F..%2F..%2F..%2Fetc"),
        get("/view?filename=passwd&subfolder=/etc"),
        get("/view?filename=/etc/passwd"),
        get(format!("/view?filename={abs}/theirs.png")),
        get("/view?filename=theirs.png&type=../../user08/input"),
        get("/view?filename=mine.png%00.txt&type=input"),
        get("/view?filename=..%5C..%5Cuser08%5Cinput%5Ctheirs.png"),
        get("/view?filename=mine.png&type=input&subfolder=.hidden"),
        get("/view_metadata/..%2F..%2Fetc?filename=passwd"),
        get("/models/..%2F..%2Fetc"),
        get("/internal/files/..%2F..%2Fuser08%2Finput"),
        get("/internal/files/%2Fetc"),
        get("/userdata/..%2F..%2Fuser08%2Fuser%2Fcomfy.settings.json"),
        get("/userdata/%2Fetc%2Fpasswd"),
        get("/userdata/workflows%2F..%2F..%2F..%2Fuser08%2Fuser%2Fcomfy.settings.json"),
        get("/userdata/.hidden"),
        get("/userdata?dir=..%2F..%2Fuser08"),
        get("/userdata?dir=%2Fetc"),
        get("/api/jobs/..%2F..%2Fx"),
        // The app's own files: nothing outside the static folder.
        get("/..%2F..%2Fusers%2Fuser07%2Fuser%2Fcomfy.settings.json"),
        get("/assets/..%2F..%2Fusers%2Fuser08%2Finput%2Ftheirs.png"),
        get("//assets/..%2F..%2Fusers%2Fuser08%2Finput%2Ftheirs.png"),
        get("//assets/%2E%2E%2F%2E%2E%2Fusers%2Fuser08%2Finput%2Ftheirs.png"),
        post("/userdata/..%2F..%2Fuser08%2Fuser%2Fx.json", "{}"),
        post("/userdata/..%2Fx.json", "{}"),
        post("/userdata/%2Ftmp%2Fx.json", "{}"),
        post("/userdata/workflows%2F.x.json", "{}"),
        post("/userdata/workflows%2Fmine.json/move/..%2F..%2Fuser08%2Fx.json", ""),
        post("/userdata/workflows%2Fmine.json/move/%2Ftmp%2Fx.json", ""),
        post(
            "/userdata/..%2F..%2Fuser08%2Fuser%2Fcomfy.settings.json/move/workflows%2Fstolen.json",
            "",
        ),
        raw(
            Method::DELETE,
            "/userdata/..%2F..%2Fuser08%2Fuser%2Fcomfy.settings.json",
            vec![],
        ),
        raw(Method::DELETE, "/userdata/..%2Fuser%2Fcomfy.settings.json", vec![]),
        post("/api/jobs/..%2F..%2Fx/cancel", ""),
        post(
            "/prompt",
            json!({"prompt": support::prompt(2), "prompt_id": "../../x"}).to_string(),
        ),
    ];
    for (name, fields) in [
        ("../x.png", vec![]),
        ("..", vec![]),
        ("/tmp/x.png", vec![]),
        ("..\\..\\x.png", vec![]),
        ("x.png", vec![("subfolder", "../../user08/input")]),
        ("x.png", vec![("subfolder", "/tmp")]),
        ("x.png", vec![("subfolder", abs.as_str())]),
        ("x.png", vec![("subfolder", "a/../../..")]),
        ("x.png", vec![("subfolder", ".hidden")]),
        ("x.png", vec![("type", "../user08/input")]),
        ("x.png", vec![("type", "/tmp")]),
    ] {
        reqs.push(upload(
            "/upload/image",
            image_form(name, png(4, 4, 3), &fields),
        ));
    }
    for original in [
        json!({"filename": "../user08/input/theirs.png", "type": "input"}),
        json!({"filename": "theirs.png", "subfolder": "../../user08/input", "type": "input"}),
        json!({"filename": format!("{abs}/theirs.png"), "type": "input"}),
        json!({"filename": "theirs.png", "type": "../../user08/input"}),
        json!({"filename": "mine.png", "subfolder": "/", "type": "input"}),
    ] {
        let f = image_form(
            "mask.png",
            png(4, 4, 9),
            &[("original_ref", &original.to_string())],
        );
        reqs.push(upload("/upload/mask", f));
    }
    let f = image_form(
        "../mask.png",
        png(4, 4, 9),
        &[(
            "original_ref",
            &json!({"filename": "mine.png", "type": "input"}).to_string(),
        )],
    );
    reqs.push(upload("/upload/mask", f));
    all_refused(
        &t,
        "input-bad-traversal",
        "Traversal attempts on every endpoint that takes a path or a name",
        reqs,
    )
    .await;

    // A history lookup answers `{}` for an unknown id, as ComfyUI does.
    let (status, body) = send(&t, get("/history/..%2F..%2Fx")).await;
    assert_eq!((status, body.as_str()), (200, "{}"));
    // A setting's id is a key in the settings file, never a path.
    let before = listing(t.state.path());
    let (status, _) = send(&t, post("/settings/..%2F..%2F..%2Fx", "1")).await;
    assert_eq!(status, 200);
    let after = listing(t.state.path());
    let changed: Vec<&String> = after
        .keys()
        .filter(|k| after.get(*k) != before.get(*k))
        .collect();
    assert_eq!(changed, ["users/user07/user/comfy.settings.json"]);
    let v: Value = t
        .http
        .get(format!("{}/settings", t.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["../../../x"], 1);
}

/// Found by `fuzz_inputs`: saving user data onto a folder's name, or
/// under a file's name as if it were a folder, was a 500 that left a
/// `.tmp-…` file behind. ComfyUI answers these with a 500 too; here they
/// are a 409, as the same names are for a move.
#[tokio::test]
async fn saving_userdata_onto_a_folder_is_a_409_that_leaves_no_temp_file() {
    let t = setup().await;
    let reqs = vec![
        post("/userdata/workflows", "{}"),
        post("/userdata/workflows?overwrite=true", "{}"),
        post("/api/userdata/workflows?overwrite=%ff", "{}"),
        post("/userdata/workflows%2Fmine.json%2Fx.json", "{}"),
        post(
            "/userdata/workflows%2Fmine.json%2Fa%2Fb.json?overwrite=true",
            "{}",
        ),
    ];
    let before = stored(&t).await;
    for r in &reqs {
        if let Req::Raw(_, path, _, _) = r {
            let (status, body) = send(&t, post(path.clone(), "{}")).await;
            assert_eq!(status, 409, "{path}: {body}");
        }
    }
    assert_eq!(stored(&t).await, before, "a temp file or folder was left");
    all_refused(
        &t,
        "input-bad-userdata-folders",
        "User data saved onto a folder, or under a file as if it were a folder",
        reqs,
    )
    .await;
}

// ------------------------------------------------------------- oversize

#[tokio::test]
async fn bodies_over_each_limit_are_a_413_that_writes_nothing() {
    let t = setup().await;
    let before = stored(&t).await;
    // A prompt over `queue.max_prompt_bytes` (64 KiB here): ComfyUI's shape.
    let mut big = support::prompt(3);
    big["2"]["inputs"]["filename_prefix"] = json!("x".repeat(70 * 1024));
    let (status, body) = send(&t, post("/prompt", json!({"prompt": big}).to_string())).await;
    assert_comfyui_error(status, &body, 413);
    // A body far past any prompt: refused before it is read, same shape.
    let huge = json!({"prompt": support::prompt(3), "extra_data": {"pad": "x".repeat(24 << 20)}});
    let (status, body) = send(&t, post("/prompt", huge.to_string())).await;
    assert_comfyui_error(status, &body, 413);
    assert!(body.contains("limit"), "{body}");
    assert_eq!(stored(&t).await, before);

    let mb = |n: usize| vec![b'x'; n << 20];
    let mut reqs = vec![
        // A saved workflow over the userdata limit.
        post("/userdata/workflows%2Fbig.json", mb(9)),
        post("/userdata/workflows%2Fmine.json?overwrite=true", mb(9)),
        // Settings over theirs.
        post(
            "/settings",
            json!({"Comfy.Big": "x".repeat(3 << 20)}).to_string(),
        ),
        post(
            "/settings/Comfy.Big",
            json!("x".repeat(3 << 20)).to_string(),
        ),
        // Small JSON endpoints.
        post("/queue", mb(3)),
        post("/history", mb(3)),
        post("/api/jobs/cancel", mb(3)),
        post("/interrupt", mb(3)),
    ];
    reqs.push(upload(
        "/upload/image",
        image_form("big.png", vec![0; UPLOAD_LIMIT as usize + 1], &[]),
    ));
    reqs.push(upload(
        "/upload/mask",
        image_form(
            "big.png",
            vec![0; UPLOAD_LIMIT as usize + 1],
            &[(
                "original_ref",
                r#"{"filename": "mine.png", "type": "input"}"#,
            )],
        ),
    ));
    all_refused(
        &t,
        "input-bad-oversize",
        "Bodies over each limit: userdata, settings, small JSON endpoints, uploads",
        reqs,
    )
    .await;
    for (path, body) in [
        ("/userdata/workflows%2Fbig.json", mb(9)),
        ("/settings", mb(3)),
    ] {
        let (status, text) = send(&t, post(path, body)).await;
        assert_eq!(status, 413);
        assert!(text.contains("limit"), "{path}: {text}");
    }

    // Settings cannot grow past their limit a key at a time either.
    let half = || "x".repeat(1200 << 10);
    let (status, _) = send(
        &t,
        post("/settings", json!({"Comfy.A": half()}).to_string()),
    )
    .await;
    assert_eq!(status, 200);
    let before = stored(&t).await;
    let (status, text) = send(
        &t,
        post("/settings", json!({"Comfy.B": half()}).to_string()),
    )
    .await;
    assert_eq!(status, 413, "{text}");
    let (status, _) = send(&t, post("/settings/Comfy.C", json!(half()).to_string())).await;
    assert_eq!(status, 413);
    assert_eq!(stored(&t).await, before);
    // Replacing a big value with a small one is still fine.
    let (status, _) = send(&t, post("/settings/Comfy.A", "1")).await;
    assert_eq!(status, 200);
    still_serves(&t).await;
}

#[tokio::test]
async fn a_socket_message_over_one_mib_closes_that_socket_only() {
    let t = setup().await;
    let url = format!("{}/ws?clientId=big", t.base.replacen("http", "ws", 1));
    let (mut big, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut other, _) = tokio_tungstenite::connect_async(&url.replace("big", "other"))
        .await
        .unwrap();
    for ws in [&mut big, &mut other] {
        let hello = ws.next().await.unwrap().unwrap();
        assert!(hello.to_text().unwrap().contains("status"));
    }
    // 100k nested brackets are ignored, not fatal.
    other
        .send(Message::Text("[".repeat(100_000).into()))
        .await
        .unwrap();
    let _ = big
        .send(Message::Text("x".repeat((1 << 20) + 1).into()))
        .await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match big.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the oversized socket stayed open");
    // The other socket still talks.
    other
        .send(Message::Text(
            json!({"type": "feature_flags", "data": {}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), other.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        reply.to_text().unwrap().contains("feature_flags"),
        "{reply:?}"
    );
    still_serves(&t).await;
}

// ------------------------------------------------------------ malformed

/// The POSTs that take JSON (`/free` takes none: it ignores its body).
const JSON_POSTS: &[&str] = &[
    "/prompt",
    "/queue",
    "/history",
    "/settings",
    "/settings/Comfy.X",
    "/api/jobs/cancel",
    "/interrupt",
    "/api/prompt",
    "/api/settings",
];

#[tokio::test]
async fn malformed_json_on_every_json_taking_post_is_a_400() {
    let t = setup().await;
    let bad: [&[u8]; 7] = [
        b"{",
        b"not json",
        b"[1, 2",
        b"{\"prompt\": }",
        b"{\"a\": 1} trailing",
        b"\xff\xfe{}",
        b"{'single': 'quotes'}",
    ];
    let mut reqs = vec![];
    for path in JSON_POSTS {
        for body in bad {
            reqs.push(post(*path, body.to_vec()));
        }
    }
    // No body at all, where one is required (`/interrupt` without a body
    // stops the participant's running job, as in ComfyUI).
    for path in JSON_POSTS.iter().filter(|p| !p.ends_with("interrupt")) {
        reqs.push(post(*path, vec![]));
    }
    // Well-formed JSON of the wrong shape.
    for (path, body) in [
        ("/settings", json!([])),
        ("/settings", json!("x")),
        ("/api/jobs/cancel", json!({"job_ids": "x"})),
        ("/api/jobs/cancel", json!({"job_ids": [1]})),
        ("/api/jobs/cancel", json!({"job_ids": ["../x"]})),
        ("/prompt", json!({"prompt": "x"})),
        ("/prompt", json!({"prompt": {"1": {}}})),
        (
            "/prompt",
            json!({"prompt": {"1": {"class_type": "NoSuchNode"}}}),
        ),
        ("/prompt", json!({"prompt": {}})),
        (
            "/prompt",
            json!({"prompt": support::prompt(4), "prompt_id": "nope"}),
        ),
        ("/prompt", json!([])),
    ] {
        reqs.push(post(path, body.to_string()));
    }
    reqs.push(upload(
        "/upload/mask",
        image_form("m.png", png(4, 4, 5), &[("original_ref", "{")]),
    ));
    all_refused(
        &t,
        "input-bad-malformed-json",
        "Malformed JSON and JSON of the wrong shape on every JSON-taking POST",
        reqs,
    )
    .await;
    for body in bad {
        let (status, text) = send(&t, post("/prompt", body.to_vec())).await;
        assert_comfyui_error(status, &text, 400);
    }
    // Checked against the workers' catalogue: an unknown node type, and a
    // prompt without an output node.
    for (prompt, kind) in [
        (json!({}), "prompt_no_outputs"),
        (
            json!({"1": {"class_type": "EmptyImage", "inputs": {}}}),
            "prompt_no_outputs",
        ),
        (
            json!({"1": {"class_type": "NoSuchNode", "inputs": {}}}),
            // Current ComfyUI's answer (the editor then looks for the node).
            "missing_node_type",
        ),
    ] {
        let (status, text) = send(&t, post("/prompt", json!({"prompt": prompt}).to_string())).await;
        assert_comfyui_error(status, &text, 400);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["type"], kind, "{v}");
    }
}

#[tokio::test]
async fn deeply_nested_json_is_a_400_not_a_crash() {
    let t = setup().await;
    let brackets = "[".repeat(100_000);
    let objects = "{\"a\":".repeat(100_000);
    let in_prompt = format!(
        "{{\"prompt\": {{\"1\": {{\"class_type\": \"SaveImage\", \"inputs\": {{\"x\": {}}}}}}}}}",
        "[".repeat(100_000)
    );
    let (status, body) = send(&t, post("/prompt", brackets.clone())).await;
    assert_comfyui_error(status, &body, 400);
    let (status, body) = send(&t, post("/prompt", in_prompt.clone())).await;
    assert_comfyui_error(status, &body, 400);
    let mut reqs = vec![];
    for path in JSON_POSTS {
        for body in [&brackets, &objects, &in_prompt] {
            reqs.push(post(*path, body.clone()));
        }
    }
    reqs.push(upload(
        "/upload/mask",
        image_form(
            "m.png",
            png(4, 4, 5),
            &[("original_ref", &objects[..15_000])],
        ),
    ));
    all_refused(
        &t,
        "input-bad-nested-json",
        "100,000-deep JSON nesting on every JSON-taking POST",
        reqs,
    )
    .await;
    // Nesting within serde's limit is just data: stored or refused, never a 5xx.
    let mut p = support::prompt(5);
    p["1"]["inputs"]["color"] =
        serde_json::from_str(&format!("{}{}", "[".repeat(100), "]".repeat(100))).unwrap();
    let (status, _) = send(&t, post("/prompt", json!({"prompt": p}).to_string())).await;
    assert!(status < 500, "{status}");
    still_serves(&t).await;
}

// ------------------------------------------------------------ multipart

#[tokio::test]
async fn a_broken_upload_form_is_a_400_that_leaves_no_temp_file() {
    let t = setup().await;
    let b = "XBOUNDARYX";
    let part = |name: &str, filename: Option<&str>, data: &str| {
        let file = filename
            .map(|f| format!("; filename=\"{f}\""))
            .unwrap_or_default();
        format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n{data}\r\n")
    };
    let typed = |ct: &str, body: String| {
        raw(Method::POST, "/upload/image", body.into_bytes()).with_type(ct)
    };
    let mp = format!("multipart/form-data; boundary={b}");
    let image = part("image", Some("ok.png"), &"x".repeat(4096));
    let mut reqs = vec![
        typed("application/json", "{\"image\": \"x\"}".into()),
        typed("multipart/form-data", image.clone()),
        typed(&mp, "garbage without boundaries".into()),
        // A complete image part, then a truncated form.
        typed(&mp, format!("{image}--{b}\r\nContent-Disposition: form-da")),
        typed(
            &mp,
            format!("{image}--{b}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ninp"),
        ),
        // No closing boundary at all.
        typed(&mp, image.clone()),
        // Text fields only; an image without a file name.
        typed(&mp, format!("{}--{b}--\r\n", part("type", None, "input"))),
        typed(&mp, format!("{}--{b}--\r\n", part("image", None, "xxxx"))),
        typed(
            &mp,
            format!("{}--{b}--\r\n", part("image", Some(""), "xxxx")),
        ),
        // Too many fields; a text field too long.
        typed(
            &mp,
            format!(
                "{image}{}--{b}--\r\n",
                (0..40)
                    .map(|i| part(&format!("f{i}"), None, "v"))
                    .collect::<String>()
            ),
        ),
        typed(
            &mp,
            format!(
                "{image}{}--{b}--\r\n",
                part("subfolder", None, &"a".repeat(20_000))
            ),
        ),
        raw(Method::POST, "/upload/image", vec![]),
    ];
    // Masks: not an image, a different size, no original.
    let orig = json!({"filename": "mine.png", "type": "input"}).to_string();
    reqs.push(upload(
        "/upload/mask",
        image_form(
            "m.png",
            b"not an image".to_vec(),
            &[("original_ref", &orig)],
        ),
    ));
    reqs.push(upload(
        "/upload/mask",
        image_form("m.png", png(8, 8, 5), &[("original_ref", &orig)]),
    ));
    reqs.push(upload(
        "/upload/mask",
        image_form("m.png", png(4, 4, 5), &[]),
    ));
    reqs.push(upload(
        "/upload/mask",
        image_form(
            "m.png",
            png(4, 4, 5),
            &[(
                "original_ref",
                r#"{"filename": "absent.png", "type": "input"}"#,
            )],
        ),
    ));
    let mask_typed =
        |body: String| raw(Method::POST, "/upload/mask", body.into_bytes()).with_type(&mp);
    reqs.push(mask_typed(format!("{image}--{b}\r\nContent-Dispo")));
    all_refused(
        &t,
        "input-bad-multipart",
        "Broken upload forms and bad masks",
        reqs,
    )
    .await;
}

impl Req {
    /// The same request with this Content-Type.
    fn with_type(self, ct: &str) -> Req {
        match self {
            Req::Raw(m, p, b, _) => Req::Raw(m, p, b, Some(ct.to_string())),
            other => other,
        }
    }
}
