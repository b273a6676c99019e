//! The isolation matrix: participant B (user08), logged in with their own
//! cookie and with their own token, calls every per-participant endpoint of
//! the frontend with participant A's (user07) identifiers — job ids, file
//! names, traversals into A's folder, A's userdata and settings — and gets
//! nothing: no 2xx that shows or changes A's data, and A's jobs, files,
//! userdata and settings are byte-for-byte the same after every call. A's
//! credentials on B's routes (and B's on A's) answer 401, and B's socket
//! hears nothing of A's jobs while A's socket does.
//!
//! Why this exists: every participant's server shares one Redis queue and
//! one state directory, so a single handler that forgets to scope by
//! participant would leak one person's work to another. The matrix is a
//! table (one line per call), and `every_route_in_the_table_has_a_matrix_row`
//! parses the route table in `src/frontend/mod.rs`, so a new endpoint cannot
//! skip the check.

mod support;

use comfy_multi::auth::Credentials;
use comfy_multi::frontend::FrontendState;
use comfy_multi::queue::{JobError, Outcome, Queue};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::report::{Record, Section};
use support::RedisServer;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const A: &str = "user07";
const B: &str = "user08";

// ------------------------------------------------------------ the site

struct Site {
    _redis: RedisServer,
    queue: Queue,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`, serving `/user07/…` and `/user08/…`.
    base: String,
    /// A's and B's logins.
    creds: [Credentials; 2],
}

impl Site {
    fn user_dir(&self, user: &str) -> PathBuf {
        self.dir.path().join("users").join(user)
    }
}

/// user07 and user08 on one address with logins (as `comfy-multi up`
/// assembles them), the recorded node catalogue stored.
async fn spawn_site() -> Site {
    let redis = RedisServer::start();
    let queue = support::queue(&redis, support::test_settings()).await;
    support::store_catalogue(&queue).await;
    let dir = tempfile::tempdir().unwrap();
    let static_dir = dir.path().join("static");
    std::fs::create_dir_all(static_dir.join("assets")).unwrap();
    std::fs::write(static_dir.join("index.html"), "<html>editor</html>").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let creds = [Credentials::generate(), Credentials::generate()];
    let mut app = axum::Router::new();
    for (u, c) in [(A, &creds[0]), (B, &creds[1])] {
        let s = FrontendState::new(
            u,
            queue.clone(),
            static_dir.clone(),
            dir.path().join("users").join(u),
            1 << 20,
        )
        .with_login(c.clone(), b"session-secret", false);
        app = app.merge(comfy_multi::frontend::routes(s));
    }
    let app = app.merge(comfy_multi::frontend::assets(&static_dir));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Site {
        _redis: redis,
        queue,
        dir,
        base,
        creds,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in with the password; the session cookie (`cm_session=…`).
async fn login(site: &Site, user: &str, password: &str) -> String {
    let r = http()
        .post(format!("{}/{user}/login", site.base))
        .header("x-real-ip", format!("10.0.0.{}", &user[4..]))
        .form(&[("password", password)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "login of {user}");
    let set = r.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

/// How a request proves who sends it.
#[derive(Clone, Debug)]
enum Auth {
    Cookie(String),
    Token(String),
}

impl Auth {
    fn apply(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::Cookie(c) => r.header("cookie", c),
            Auth::Token(t) => r.bearer_auth(t),
        }
    }

    fn ws_request(&self, url: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let mut req = url.into_client_request().unwrap();
        let (k, v) = match self {
            Auth::Cookie(c) => ("cookie", c.clone()),
            Auth::Token(t) => ("authorization", format!("Bearer {t}")),
        };
        req.headers_mut().insert(k, v.parse().unwrap());
        req
    }

    fn kind(&self) -> &'static str {
        match self {
            Auth::Cookie(_) => "cookie",
            Auth::Token(_) => "token",
        }
    }
}

// ------------------------------------------------------- A's belongings

/// What A owns: ids and names B must never reach, plus the markers inside
/// A's files and jobs that must never show up in an answer to B.
struct Owned {
    done: String,
    failed: String,
    running: String,
    queued: String,
    /// A's `user_dir`, for absolute-path attempts.
    a_dir: String,
    a_password: String,
}

impl Owned {
    fn ids(&self) -> [&str; 4] {
        [&self.done, &self.failed, &self.running, &self.queued]
    }
}

const UPLOAD: &str = "a-secret-cat.png";
const OUTPUT: &str = "a-secret-out_00001_.png";
const TEMP: &str = "a-secret-temp.png";
const PROMPT_MARKER: &str = "a-private-prefix";
const WORKFLOW_MARKER: &str = "A-WORKFLOW-CONTENT";
const SETTING_KEY: &str = "A.Secret.Setting";
const SETTING_MARKER: &str = "A-SETTING-VALUE";

/// A small PNG carrying `text` in a tEXt chunk (so its bytes hold `text`).
fn png(seed: u8, text: &str) -> Vec<u8> {
    let mut out = vec![];
    let mut enc = png::Encoder::new(&mut out, 2, 2);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.add_text_chunk("comment".into(), text.into()).unwrap();
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&[seed; 16]).unwrap();
    w.finish().unwrap();
    out
}

fn a_prompt(n: u64) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": n}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": PROMPT_MARKER}}
    })
}

/// A queues four prompts (one finishes with an output file, one fails, one
/// runs, one waits), uploads an image, has a temp file, saves a workflow
/// and a setting — all through A's own server with A's token.
async fn populate_a(site: &Site) -> Owned {
    let c = http();
    let a = Auth::Token(site.creds[0].token.clone());
    let base = format!("{}/{A}", site.base);
    let mut ids = vec![];
    for n in 0..4 {
        let r = a
            .apply(c.post(format!("{base}/prompt")))
            .json(&json!({"prompt": a_prompt(n), "extra_data": {"extra_pnginfo": {"workflow": {"id": "a-wf"}}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        ids.push(v["prompt_id"].as_str().unwrap().to_string());
    }
    let q = &site.queue;
    let out_dir = site.user_dir(A).join("output");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join(OUTPUT), png(1, "A-OUTPUT-CONTENT")).unwrap();
    let temp_dir = site.user_dir(A).join("temp");
    std::fs::create_dir_all(&temp_dir).unwrap();
    std::fs::write(temp_dir.join(TEMP), png(2, "A-TEMP-CONTENT")).unwrap();

    let l = q.lease("gpu0").await.unwrap().unwrap();
    q.start(&l.job_id, l.token).await.unwrap();
    let outputs =
        json!({"2": {"images": [{"filename": OUTPUT, "subfolder": "", "type": "output"}]}});
    q.finish(
        &l.job_id,
        l.token,
        Outcome::Succeeded,
        &outputs,
        None,
        Some(1.0),
    )
    .await
    .unwrap();
    let done = l.job_id;
    let l = q.lease("gpu0").await.unwrap().unwrap();
    q.start(&l.job_id, l.token).await.unwrap();
    let err = JobError {
        kind: "A-ERROR-KIND".into(),
        message: "A-ERROR-MESSAGE".into(),
        details: json!({}),
    };
    q.finish(
        &l.job_id,
        l.token,
        Outcome::Failed,
        &json!({}),
        Some(&err),
        None,
    )
    .await
    .unwrap();
    let failed = l.job_id;
    let l = q.lease("gpu0").await.unwrap().unwrap();
    q.start(&l.job_id, l.token).await.unwrap();
    let running = l.job_id;
    let queued = ids
        .iter()
        .find(|i| ![&done, &failed, &running].contains(i))
        .unwrap()
        .clone();

    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(png(3, "A-UPLOAD-CONTENT")).file_name(UPLOAD),
    );
    let r = a
        .apply(c.post(format!("{base}/upload/image")))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = a
        .apply(c.post(format!("{base}/userdata/workflows%2Fmine.json")))
        .body(json!({"marker": WORKFLOW_MARKER}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = a
        .apply(c.post(format!("{base}/settings")))
        .json(&json!({SETTING_KEY: SETTING_MARKER}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    Owned {
        done,
        failed,
        running,
        queued,
        a_dir: site.user_dir(A).display().to_string(),
        a_password: site.creds[0].password.clone(),
    }
}

/// Strings that would show A's data in an answer: A's job ids, names and
/// the markers inside A's prompts, files, userdata and settings.
fn secrets(o: &Owned) -> Vec<String> {
    let mut s: Vec<String> = o.ids().iter().map(|i| i.to_string()).collect();
    s.extend(
        [
            UPLOAD,
            OUTPUT,
            TEMP,
            "mine.json",
            PROMPT_MARKER,
            WORKFLOW_MARKER,
            SETTING_MARKER,
            "A-OUTPUT-CONTENT",
            "A-TEMP-CONTENT",
            "A-UPLOAD-CONTENT",
            "A-ERROR-MESSAGE",
            "a-wf",
        ]
        .map(String::from),
    );
    s
}

/// A's jobs as stored and every file under A's folder, byte for byte.
#[derive(Debug, PartialEq)]
struct AState {
    jobs: Vec<String>,
    waiting: Vec<String>,
    running: Vec<String>,
    history: Vec<String>,
    files: BTreeMap<String, Vec<u8>>,
}

fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

async fn a_state(site: &Site, o: &Owned) -> AState {
    let q = &site.queue;
    let mut jobs = vec![];
    for id in o.ids() {
        let j = q.job_of(A, id).await.unwrap();
        jobs.push(format!("{j:?}"));
    }
    let pq = q.participant_queue(A, 1).await.unwrap();
    AState {
        jobs,
        waiting: pq.waiting.iter().map(|w| w.job_id.clone()).collect(),
        running: pq.running.iter().map(|j| j.id.clone()).collect(),
        history: q
            .history(A, 0, 1000)
            .await
            .unwrap()
            .iter()
            .map(|j| format!("{}:{:?}", j.id, j.status))
            .collect(),
        files: files_under(&site.user_dir(A)),
    }
}

// ------------------------------------------------------------ the matrix

/// A request body.
#[derive(Clone, Debug)]
enum Body {
    Empty,
    Json(Value),
    Form(Vec<(String, String)>),
    /// Multipart: text fields, and the `image` file (name, bytes) if any.
    Multipart(Vec<(String, String)>, Option<(String, Vec<u8>)>),
}

/// What a row may answer B.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// A 4xx: the call is about A's data and must be refused.
    Refused,
    /// Any non-5xx; a 2xx only if it shows none of A's data (lists, B's own
    /// settings, no-op deletes).
    Harmless,
}

/// One call of the matrix.
#[derive(Clone, Debug)]
struct Row {
    /// The route pattern as written in `src/frontend/mod.rs`.
    route: &'static str,
    method: Method,
    /// Path and query under the participant's base (`/…`).
    path: String,
    body: Body,
    expect: Expect,
    /// The exact JSON a 2xx must answer, when known.
    body_is: Option<Value>,
    /// Not behind the login guard (`/login`, `/logout`).
    public: bool,
}

fn row(route: &'static str, method: Method, path: impl Into<String>) -> Row {
    Row {
        route,
        method,
        path: path.into(),
        body: Body::Empty,
        expect: Expect::Harmless,
        body_is: None,
        public: false,
    }
}

fn get(route: &'static str, path: impl Into<String>) -> Row {
    row(route, Method::GET, path)
}

fn post(route: &'static str, path: impl Into<String>) -> Row {
    row(route, Method::POST, path)
}

fn delete(route: &'static str, path: impl Into<String>) -> Row {
    row(route, Method::DELETE, path)
}

impl Row {
    fn json(mut self, v: Value) -> Self {
        self.body = Body::Json(v);
        self
    }
    fn form(mut self, fields: &[(&str, &str)]) -> Self {
        self.body = Body::Form(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }
    fn multipart(mut self, fields: &[(&str, &str)], file: Option<(&str, Vec<u8>)>) -> Self {
        self.body = Body::Multipart(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            file.map(|(n, b)| (n.to_string(), b)),
        );
        self
    }
    fn refused(mut self) -> Self {
        self.expect = Expect::Refused;
        self
    }
    fn body_is(mut self, v: Value) -> Self {
        self.body_is = Some(v);
        self
    }
    fn public(mut self) -> Self {
        self.public = true;
        self
    }

    /// Everything B sends (an answer may echo it back without leaking).
    fn request_text(&self) -> String {
        let body = match &self.body {
            Body::Empty => String::new(),
            Body::Json(v) => v.to_string(),
            Body::Form(f) => format!("{f:?}"),
            Body::Multipart(f, file) => format!("{f:?} {:?}", file.as_ref().map(|x| &x.0)),
        };
        let decoded = self.path.replace("%2F", "/").replace("%2f", "/");
        format!("{} {decoded} {body}", self.path)
    }
}

/// Every call B makes with A's identifiers. One line per call: a new
/// route needs a line here (see `every_route_in_the_table_has_a_matrix_row`).
fn matrix(o: &Owned) -> Vec<Row> {
    let ids = o.ids();
    let all_ids = json!(ids);
    let a_dir = &o.a_dir;
    let mask = || Some(("mask.png", png(9, "b-mask")));
    let b_png = || Some(("b-own.png", png(8, "b-own")));
    let mut rows = vec![
        // The boot endpoints: B's own answers, nothing of A's.
        get("/features", "/features"),
        get("/system_stats", "/system_stats"),
        get("/users", "/users"),
        get("/extensions", "/extensions"),
        get("/comfy-multi/status", "/comfy-multi/status"),
        // B's own outputs only: none of A's file names or bytes in the zip.
        get("/comfy-multi/outputs.zip", "/comfy-multi/outputs.zip"),
        get("/i18n", "/i18n"),
        get("/object_info", "/object_info"),
        get("/embeddings", "/embeddings"),
        get("/global_subgraphs", "/global_subgraphs"),
        get("/workflow_templates", "/workflow_templates"),
        get("/experiment/models", "/experiment/models"),
        get("/models", "/models"),
        get("/models/{folder}", "/models/checkpoints"),
        get("/models/{folder}", "/models/..%2F..%2Fuser07%2Finput").refused(),
        post("/free", "/free").json(json!({"unload_models": true})),
        get("/internal/folder_paths", "/internal/folder_paths"),
        get("/user.css", "/user.css"),
        // B's outputs page: B's files only, none of A's names.
        get("/outputs", "/outputs"),
        get("SCRIPT_PATH", "/extensions/comfy-multi/comfy-multi.js"),
        get("INDEX", "/"),
        get("/ws", "/ws?clientId=a-socket"),
        // Settings: B's own file; A's key reads as unset.
        get("/settings", "/settings"),
        post("/settings", "/settings").json(json!({"Comfy.B.Own": 1})),
        get("/settings/{id}", format!("/settings/{SETTING_KEY}")).body_is(Value::Null),
        get(
            "/settings/{id}",
            "/settings/..%2F..%2Fuser07%2Fuser%2Fcomfy.settings.json",
        )
        .body_is(Value::Null),
        post("/settings/{id}", "/settings/Comfy.B.Other").json(json!("b")),
        // Userdata: A's file by name, by encoded traversal, by absolute path.
        get("/userdata", "/userdata?dir=workflows&recurse=true&full_info=true"),
        get("/userdata", "/userdata?dir=..%2Fuser07%2Fuser%2Fworkflows").refused(),
        get("/userdata", "/userdata?dir=..%2F..%2Fuser07%2Fuser").refused(),
        get("/userdata/{*file}", "/userdata/workflows%2Fmine.json").refused(),
        get(
            "/userdata/{*file}",
            "/userdata/..%2Fuser07%2Fuser%2Fworkflows%2Fmine.json",
        )
        .refused(),
        get(
            "/userdata/{*file}",
            "/userdata/..%2F..%2Fuser07%2Fuser%2Fworkflows%2Fmine.json",
        )
        .refused(),
        get(
            "/userdata/{*file}",
            "/userdata/%2E%2E%2F..%2Fuser07%2Fuser%2Fworkflows%2Fmine.json",
        )
        .refused(),
        get(
            "/userdata/{*file}",
            format!("/userdata/{a_dir}/user/workflows/mine.json"),
        )
        .refused(),
        get("/userdata/{*file}", "/userdata/comfy.settings.json"),
        post("/userdata/{*file}", "/userdata/workflows%2Fb-own.json").json(json!({"b": 1})),
        post(
            "/userdata/{*file}",
            "/userdata/..%2Fuser07%2Fuser%2Fworkflows%2Fmine.json",
        )
        .json(json!({"overwritten": true}))
        .refused(),
        post(
            "/userdata/{*file}",
            "/userdata/..%2F..%2Fuser07%2Fuser%2Fworkflows%2Fmine.json?overwrite=true",
        )
        .json(json!({"overwritten": true}))
        .refused(),
        delete("/userdata/{*file}", "/userdata/workflows%2Fmine.json").refused(),
        delete(
            "/userdata/{*file}",
            "/userdata/..%2Fuser07%2Fuser%2Fworkflows%2Fmine.json",
        )
        .refused(),
        delete(
            "/userdata/{*file}",
            "/userdata/..%2F..%2Fuser07%2Fuser%2Fcomfy.settings.json",
        )
        .refused(),
        // Moves (the editor's rename): B's own file, then from and onto A's.
        post(
            "/userdata/{*file}",
            "/userdata/workflows%2Fb-own.json/move/workflows%2Fb-renamed.json",
        ),
        post(
            "/userdata/{*file}",
            "/userdata/workflows%2Fb-renamed.json/move/workflows%2Fb-own.json",
        ),
        post(
            "/userdata/{*file}",
            "/userdata/workflows%2Fmine.json/move/workflows%2Fstolen.json",
        )
        .refused(),
        post(
            "/userdata/{*file}",
            "/userdata/..%2Fuser07%2Fuser%2Fworkflows%2Fmine.json/move/workflows%2Fstolen.json",
        )
        .refused(),
        post(
            "/userdata/{*file}",
            "/userdata/workflows%2Fb-own.json/move/..%2F..%2Fuser07%2Fuser%2Fworkflows%2Fmine.json?overwrite=true",
        )
        .refused(),
        // Jobs: A's ids are unknown to B.
        get("/api/jobs", "/api/jobs"),
        get(
            "/api/jobs",
            "/api/jobs?status=pending,in_progress,completed,failed,cancelled&limit=100",
        ),
        get("/api/jobs", "/api/jobs?workflow_id=a-wf"),
        post("/api/jobs/cancel", "/api/jobs/cancel")
            .json(json!({"job_ids": all_ids}))
            .body_is(json!({"cancelled": false})),
        get("/prompt", "/prompt").body_is(json!({"exec_info": {"queue_remaining": 0}})),
        get("/queue", "/queue").body_is(json!({"queue_running": [], "queue_pending": []})),
        post("/queue", "/queue").json(json!({"delete": all_ids})),
        post("/queue", "/queue").json(json!({"clear": true})),
        post("/interrupt", "/interrupt").json(json!({"prompt_id": o.running})),
        post("/interrupt", "/interrupt"),
        get("/history", "/history").body_is(json!({})),
        get("/history", "/history?max_items=1000&offset=0").body_is(json!({})),
        post("/history", "/history").json(json!({"delete": all_ids})),
        post("/history", "/history").json(json!({"clear": true})),
        // Files: /view of A's names, traversals, subfolder and type tricks.
        get("/view", format!("/view?filename={OUTPUT}")).refused(),
        get("/view", format!("/view?filename={OUTPUT}&type=output")).refused(),
        get("/view", format!("/view?filename={UPLOAD}&type=input")).refused(),
        get("/view", format!("/view?filename={TEMP}&type=temp")).refused(),
        get("/view", format!("/view?filename={UPLOAD}%20%5Binput%5D")).refused(),
        get("/view", format!("/view?filename=../user07/output/{OUTPUT}")).refused(),
        get("/view", format!("/view?filename=..%2Fuser07%2Foutput%2F{OUTPUT}")).refused(),
        get("/view", format!("/view?filename=..%2F..%2Fuser07%2Finput%2F{UPLOAD}&type=input")).refused(),
        get("/view", format!("/view?filename=..%5Cuser07%5Coutput%5C{OUTPUT}")).refused(),
        get("/view", format!("/view?filename={a_dir}/output/{OUTPUT}")).refused(),
        get("/view", format!("/view?filename=x/../../user07/output/{OUTPUT}")).refused(),
        get("/view", format!("/view?filename={OUTPUT}&subfolder=../user07/output")).refused(),
        get("/view", format!("/view?filename={OUTPUT}&subfolder=..%2F..%2Fuser07%2Foutput")).refused(),
        get("/view", format!("/view?filename={OUTPUT}&subfolder=sub/../../../user07/output")).refused(),
        get("/view", format!("/view?filename={OUTPUT}&subfolder=%2E%2E/%2E%2E/user07/output")).refused(),
        get("/view", format!("/view?filename={OUTPUT}&subfolder={a_dir}/output")).refused(),
        get("/view", format!("/view?filename={OUTPUT}&subfolder=..%5C..%5Cuser07%5Coutput")).refused(),
        get("/view", format!("/view?filename={OUTPUT}&subfolder=....//user07/output")).refused(),
        get("/view", format!("/view?filename={UPLOAD}&type=../user07/input")).refused(),
        get("/view", format!("/view?filename={UPLOAD}&type=..%2F..%2Fuser07%2Finput")).refused(),
        get("/view", format!("/view?filename={UPLOAD}%00.png&type=input")).refused(),
        get("/view_metadata/{folder}", "/view_metadata/checkpoints?filename=x.safetensors").refused(),
        get("/view_metadata/{folder}", format!("/view_metadata/..%2F..%2Fuser07%2Finput?filename={UPLOAD}")).refused(),
        get("/internal/files/{kind}", "/internal/files/input").body_is(json!([])),
        get("/internal/files/{kind}", "/internal/files/output").body_is(json!([])),
        get("/internal/files/{kind}", "/internal/files/temp").body_is(json!([])),
        get("/internal/files/{kind}", "/internal/files/..%2F..%2Fuser07%2Foutput").refused(),
        // Uploads aimed into A's folders.
        post("/upload/image", "/upload/image")
            .multipart(&[("type", "input")], Some((&format!("../user07/input/{UPLOAD}"), png(7, "b"))))
            .refused(),
        post("/upload/image", "/upload/image")
            .multipart(&[("subfolder", "../user07/input"), ("overwrite", "true")], b_png())
            .refused(),
        post("/upload/image", "/upload/image")
            .multipart(&[("subfolder", "../../user07/input"), ("overwrite", "true")], b_png())
            .refused(),
        post("/upload/image", "/upload/image")
            .multipart(&[("subfolder", &format!("{a_dir}/input")), ("overwrite", "true")], b_png())
            .refused(),
        post("/upload/image", "/upload/image")
            .multipart(&[("type", "../user07/input"), ("overwrite", "true")], b_png())
            .refused(),
        // Masks over A's images.
        post("/upload/mask", "/upload/mask")
            .multipart(&[("original_ref", &json!({"filename": UPLOAD, "type": "input"}).to_string())], mask())
            .refused(),
        post("/upload/mask", "/upload/mask")
            .multipart(&[("original_ref", &json!({"filename": OUTPUT}).to_string())], mask())
            .refused(),
        post("/upload/mask", "/upload/mask")
            .multipart(&[("original_ref", &json!({"filename": format!("{UPLOAD} [input]")}).to_string())], mask())
            .refused(),
        post("/upload/mask", "/upload/mask")
            .multipart(&[("original_ref", &json!({"filename": format!("../user07/input/{UPLOAD}"), "type": "input"}).to_string())], mask())
            .refused(),
        post("/upload/mask", "/upload/mask")
            .multipart(&[("original_ref", &json!({"filename": UPLOAD, "subfolder": "../../user07/input", "type": "input"}).to_string())], mask())
            .refused(),
        post("/upload/mask", "/upload/mask")
            .multipart(&[("original_ref", &json!({"filename": format!("{a_dir}/input/{UPLOAD}"), "type": "input"}).to_string())], mask())
            .refused(),
        post("/upload/mask", "/upload/mask")
            .multipart(&[("original_ref", &json!({"filename": UPLOAD, "type": "../user07/input"}).to_string())], mask())
            .refused(),
        // Logging in to B's server with A's password.
        post("/login", "/login").form(&[("password", &o.a_password)]).refused().public(),
        get("/login", "/login").public(),
        post("/logout", "/logout").public(),
    ];
    for id in ids {
        rows.push(get("/api/jobs/{id}", format!("/api/jobs/{id}")).refused());
        rows.push(post("/api/jobs/{id}/cancel", format!("/api/jobs/{id}/cancel")).refused());
        rows.push(get("/history/{id}", format!("/history/{id}")).body_is(json!({})));
        rows.push(
            post("/api/jobs/cancel", "/api/jobs/cancel")
                .json(json!({"job_ids": [id]}))
                .body_is(json!({"cancelled": false})),
        );
        rows.push(post("/queue", "/queue").json(json!({"delete": [id]})));
        rows.push(post("/history", "/history").json(json!({"delete": [id]})));
        rows.push(post("/interrupt", "/interrupt").json(json!({"prompt_id": id})));
        // B cannot take over A's id with a prompt of its own.
        rows.push(
            post("/prompt", "/prompt")
                .json(json!({"prompt": a_prompt(99), "prompt_id": id}))
                .refused(),
        );
    }
    rows
}

// ------------------------------------------------- the route table parse

/// The frontend's route table, as its source writes it.
const ROUTE_TABLE: &str = include_str!("../src/frontend/mod.rs");

/// Routes registered with an expression rather than a literal, and the
/// name their matrix rows use.
const NON_LITERAL: &[(&str, &str)] = &[
    ("extension::SCRIPT_PATH", "SCRIPT_PATH"),
    ("&format!(\"{prefix}/\")", "INDEX"),
];

/// Every `.route(PATH, …)` of `src/frontend/mod.rs`: (name, mounted under
/// `/api` too — the routes of `api()`).
fn route_table() -> Vec<(String, bool)> {
    let api_start = ROUTE_TABLE.find("fn api(").expect("fn api(…) in mod.rs");
    let api_end = api_start + ROUTE_TABLE[api_start..].find("\n}\n").unwrap();
    let mut out = vec![];
    for (at, _) in ROUTE_TABLE.match_indices(".route(") {
        let rest = ROUTE_TABLE[at + ".route(".len()..].trim_start();
        let name = if let Some(lit) = rest.strip_prefix('"') {
            lit[..lit.find('"').unwrap()].to_string()
        } else {
            let expr = rest[..rest.find(',').unwrap()].trim();
            match NON_LITERAL.iter().find(|(e, _)| *e == expr) {
                Some((_, name)) => name.to_string(),
                None => panic!(
                    "route {expr:?} in src/frontend/mod.rs is not a literal: add it to NON_LITERAL and give it matrix rows"
                ),
            }
        };
        out.push((name, at > api_start && at < api_end));
    }
    out
}

fn dummy_owned() -> Owned {
    let id = || uuid::Uuid::new_v4().to_string();
    Owned {
        done: id(),
        failed: id(),
        running: id(),
        queued: id(),
        a_dir: "/state/users/user07".into(),
        a_password: "pw".into(),
    }
}

#[test]
fn every_route_in_the_table_has_a_matrix_row() {
    let table = route_table();
    assert!(table.len() > 30, "the parse found only {table:?}");
    let rows = matrix(&dummy_owned());
    let missing: Vec<&String> = table
        .iter()
        .map(|(r, _)| r)
        .filter(|r| !rows.iter().any(|row| row.route == r.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without an isolation row in tests/frontend_isolation.rs: {missing:?}"
    );
    let unknown: Vec<&str> = rows
        .iter()
        .map(|r| r.route)
        .filter(|r| !table.iter().any(|(t, _)| t == r))
        .collect();
    assert!(
        unknown.is_empty(),
        "rows for routes not in the table: {unknown:?}"
    );
}

// --------------------------------------------------------- running rows

/// `/api` too for the routes of `api()`, as the server mounts them.
fn prefixes(table: &[(String, bool)], route: &str) -> Vec<&'static str> {
    if table.iter().any(|(r, api)| r == route && *api) {
        vec!["", "/api"]
    } else {
        vec![""]
    }
}

async fn send(site: &Site, user: &str, prefix: &str, row: &Row, auth: &Auth) -> (u16, Vec<u8>) {
    let url = format!("{}/{user}{prefix}{}", site.base, row.path);
    let mut r = auth.apply(http().request(row.method.clone(), &url));
    r = match &row.body {
        Body::Empty => r,
        Body::Json(v) => r.json(v),
        Body::Form(f) => r.form(f),
        Body::Multipart(fields, file) => {
            let mut form = reqwest::multipart::Form::new();
            for (k, v) in fields {
                form = form.text(k.clone(), v.clone());
            }
            if let Some((name, bytes)) = file {
                form = form.part(
                    "image",
                    reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone()),
                );
            }
            r.multipart(form)
        }
    };
    let res = r.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.bytes().await.unwrap().to_vec())
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// B's cookie and B's token run every row on B's server with A's
/// identifiers; each answer is checked, and A's data after each call.
#[tokio::test]
async fn participant_b_reaches_none_of_participant_as_data_through_any_route() {
    let site = spawn_site().await;
    let owned = populate_a(&site).await;
    let before = a_state(&site, &owned).await;
    assert_eq!(before.running, std::slice::from_ref(&owned.running));
    assert_eq!(before.waiting, std::slice::from_ref(&owned.queued));
    let b_cookie = login(&site, B, &site.creds[1].password).await;
    let secrets = secrets(&owned);
    let table = route_table();
    let rows = matrix(&owned);
    let mut calls = 0;
    let mut failures = vec![];
    for auth in [
        Auth::Cookie(b_cookie),
        Auth::Token(site.creds[1].token.clone()),
    ] {
        for row in &rows {
            for prefix in prefixes(&table, row.route) {
                let (status, body) = send(&site, B, prefix, row, &auth).await;
                calls += 1;
                let what = format!("{} {B}{prefix}{} ({})", row.method, row.path, auth.kind());
                let text = String::from_utf8_lossy(&body);
                let ok = (200..300).contains(&status);
                if status >= 500 {
                    failures.push(format!("{what}: {status} {text}"));
                }
                if row.expect == Expect::Refused && !(400..500).contains(&status) {
                    failures.push(format!("{what}: expected a 4xx, got {status} {text}"));
                }
                if ok {
                    if let Some(want) = &row.body_is {
                        let got: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        if &got != want {
                            failures.push(format!("{what}: answered {got}, expected {want}"));
                        }
                    }
                }
                let sent = row.request_text();
                for s in &secrets {
                    if contains(&body, s) && !sent.contains(s.as_str()) {
                        failures.push(format!("{what}: the answer ({status}) shows A's {s:?}"));
                    }
                }
                let now = a_state(&site, &owned).await;
                if now != before {
                    failures.push(format!("{what}: A's data changed: {now:?}"));
                    panic!("{failures:#?}");
                }
            }
        }
    }
    let successes = failures.len();
    let mut r = Record::new(
        Section::Input,
        "input-isolation-matrix",
        "Participant B calls every route of their own server with participant A's identifiers",
    )
    .setup(format!(
        "{} rows (every route of src/frontend/mod.rs, parsed) × /X and /api/X × B's cookie and B's token; A's jobs, files, userdata and settings compared after every call",
        rows.len()
    ))
    .measure("calls", calls)
    .measure("failures (A's data shown or changed, 5xx, refusals missing)", successes);
    r.passed = failures.is_empty() && calls >= 300;
    r.write();
    assert!(
        failures.is_empty(),
        "{} of {calls} calls: {failures:#?}",
        failures.len()
    );
    assert!(calls >= 300, "only {calls} calls");
    // Nothing of A's landed in B's folder either.
    for (name, bytes) in files_under(&site.user_dir(B)) {
        for s in &secrets {
            assert!(!contains(&bytes, s), "B's {name} holds A's {s:?}");
        }
    }
    // A still sees everything.
    let a = Auth::Token(site.creds[0].token.clone());
    let r = a
        .apply(http().get(format!("{}/{A}/view?filename={OUTPUT}", site.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = a
        .apply(http().get(format!("{}/{A}/api/jobs/{}", site.base, owned.done)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Every guarded row with A's credentials on B's server, and with B's on
/// A's server: 401, whatever the route.
#[tokio::test]
async fn one_participants_cookie_or_token_opens_no_route_of_another() {
    let site = spawn_site().await;
    let owned = populate_a(&site).await;
    let before = a_state(&site, &owned).await;
    let a_cookie = login(&site, A, &site.creds[0].password).await;
    let b_cookie = login(&site, B, &site.creds[1].password).await;
    let table = route_table();
    let rows = matrix(&owned);
    let mut calls = 0;
    let mut failures = vec![];
    let attempts = [
        (A, Auth::Cookie(b_cookie)),
        (A, Auth::Token(site.creds[1].token.clone())),
        (B, Auth::Cookie(a_cookie)),
        (B, Auth::Token(site.creds[0].token.clone())),
    ];
    for (server, auth) in &attempts {
        for row in rows.iter().filter(|r| !r.public) {
            for prefix in prefixes(&table, row.route) {
                let (status, body) = send(&site, server, prefix, row, auth).await;
                calls += 1;
                if status != 401 {
                    failures.push(format!(
                        "{} {server}{prefix}{} ({} of the other): {status} {}",
                        row.method,
                        row.path,
                        auth.kind(),
                        String::from_utf8_lossy(&body)
                    ));
                }
            }
        }
        // The socket too.
        let ws = format!("{}/{server}/ws?clientId=x", site.base.replace("http", "ws"));
        assert!(
            tokio_tungstenite::connect_async(auth.ws_request(&ws))
                .await
                .is_err(),
            "{server}'s socket with the other's {}",
            auth.kind()
        );
    }
    // Each password logs in to its own server only.
    for (server, password) in [(A, &site.creds[1].password), (B, &site.creds[0].password)] {
        let r = http()
            .post(format!("{}/{server}/login", site.base))
            .header("x-real-ip", "10.1.1.1")
            .form(&[("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "the other's password on {server}");
        assert!(r.headers().get("set-cookie").is_none());
    }
    let unchanged = a_state(&site, &owned).await == before;
    let mut r = Record::new(
        Section::Input,
        "input-isolation-cross-credentials",
        "One participant's cookie or token on every guarded route of another's server",
    )
    .setup("A's cookie and token on B's server and B's on A's: every guarded matrix row under /X and /api/X, the socket, and each password on the other's login")
    .measure("cross-credential calls", calls)
    .measure("answered other than 401", failures.len());
    r.passed = failures.is_empty() && unchanged;
    r.write();
    assert!(
        failures.is_empty(),
        "{} of {calls} calls: {failures:#?}",
        failures.len()
    );
    assert!(unchanged, "A's data changed");
}

/// The hub's credentials — the worker token, the admin token, an admin
/// session cookie signed with the same session secret — open no guarded
/// route of a participant's server, the socket included. (The frontends
/// know no worker or admin token; this keeps it so.)
#[tokio::test]
async fn worker_and_admin_credentials_open_no_participant_route() {
    use support::hub::{ADMIN_PASSWORD, ADMIN_TOKEN, WORKER_TOKEN};
    let site = spawn_site().await;
    let owned = populate_a(&site).await;
    let admin = Credentials {
        password: ADMIN_PASSWORD.into(),
        token: ADMIN_TOKEN.into(),
    };
    let admin_session = comfy_multi::auth::SessionKey::derive(
        b"session-secret",
        "admin",
        comfy_multi::auth::ADMIN,
        &admin,
    )
    .issue(comfy_multi::auth::SESSION_TTL);
    let table = route_table();
    let rows = matrix(&owned);
    let attempts = [
        Auth::Token(WORKER_TOKEN.into()),
        Auth::Token(ADMIN_TOKEN.into()),
        Auth::Token(ADMIN_PASSWORD.into()),
        Auth::Cookie(format!("cm_admin={admin_session}")),
        // The admin's session value under the participant's cookie name.
        Auth::Cookie(format!("cm_session={admin_session}")),
    ];
    let mut calls = 0;
    let mut failures = vec![];
    for auth in &attempts {
        for row in rows.iter().filter(|r| !r.public) {
            for prefix in prefixes(&table, row.route) {
                let (status, _) = send(&site, A, prefix, row, auth).await;
                calls += 1;
                if status != 401 {
                    failures.push(format!(
                        "{} {A}{prefix}{} with {auth:?}: {status}",
                        row.method, row.path
                    ));
                }
            }
        }
        let ws = format!("{}/{A}/ws?clientId=x", site.base.replace("http", "ws"));
        calls += 1;
        if tokio_tungstenite::connect_async(auth.ws_request(&ws))
            .await
            .is_ok()
        {
            failures.push(format!("{A}'s socket with {auth:?}"));
        }
    }
    let mut r = Record::new(
        Section::Input,
        "input-auth-hub-credentials-on-participant-routes",
        "Worker token, admin token and admin session cookie on every guarded participant route",
    )
    .setup("every guarded matrix row under /X and /api/X, and the socket, with the worker token, the admin token and password as bearer, and an admin session cookie signed with the participants' session secret (under both cookie names)")
    .measure("calls", calls)
    .measure("answered other than 401", failures.len());
    r.passed = failures.is_empty();
    r.write();
    assert!(failures.is_empty(), "{failures:#?}");
}

// ----------------------------------------------------------- the socket

/// Reads text frames until `stop` says so or `wait` passes; every frame
/// (binary ones as `<binary N>`).
async fn read_until<S>(ws: &mut S, wait: Duration, stop: impl Fn(&Value) -> bool) -> Vec<String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut seen = vec![];
    let _ = tokio::time::timeout(wait, async {
        while let Some(Ok(m)) = ws.next().await {
            let text = match m {
                Message::Text(t) => t.to_string(),
                Message::Binary(b) => {
                    format!("<binary {}> {}", b.len(), String::from_utf8_lossy(&b))
                }
                _ => continue,
            };
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            seen.push(text);
            if stop(&v) {
                return;
            }
        }
    })
    .await;
    seen
}

#[tokio::test]
async fn participant_bs_socket_hears_nothing_of_participant_as_jobs() {
    let site = spawn_site().await;
    let b_cookie = login(&site, B, &site.creds[1].password).await;
    let a = Auth::Token(site.creds[0].token.clone());
    let ws = |user: &str| {
        format!(
            "{}/{user}/ws?clientId={user}-x",
            site.base.replace("http", "ws")
        )
    };
    let (mut a_ws, _) = tokio_tungstenite::connect_async(a.ws_request(&ws(A)))
        .await
        .unwrap();
    let mut b_sockets = vec![];
    for auth in [
        Auth::Cookie(b_cookie),
        Auth::Token(site.creds[1].token.clone()),
    ] {
        let (mut s, _) = tokio_tungstenite::connect_async(auth.ws_request(&ws(B)))
            .await
            .unwrap();
        // The preview format with metadata, as the editor negotiates it.
        s.send(Message::Text(
            json!({"type": "feature_flags", "data": {"supports_preview_metadata": true}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        let hello = read_until(&mut s, Duration::from_secs(5), |v| {
            v["type"] == "feature_flags"
        })
        .await;
        assert!(hello[0].contains("\"status\""), "{hello:?}");
        b_sockets.push(s);
    }
    let first = read_until(&mut a_ws, Duration::from_secs(5), |v| v["type"] == "status").await;
    assert_eq!(first.len(), 1);

    // A queues two prompts: one runs with events and a preview and
    // succeeds; the other fails.
    let c = http();
    let mut ids = vec![];
    for n in 0..2 {
        let r: Value = a
            .apply(c.post(format!("{}/{A}/prompt", site.base)))
            .json(&json!({"prompt": a_prompt(n)}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(r["prompt_id"].as_str().unwrap().to_string());
    }
    let q = &site.queue;
    for (i, outcome) in [Outcome::Succeeded, Outcome::Failed]
        .into_iter()
        .enumerate()
    {
        let l = q.lease("gpu0").await.unwrap().unwrap();
        q.start(&l.job_id, l.token).await.unwrap();
        let ev = json!({"type": "job_event", "job": l.job_id, "event":
            {"type": "execution_start", "data": {"prompt_id": l.job_id, "timestamp": 1}}});
        q.publish_event(A, &ev.to_string()).await.unwrap();
        let preview = json!({"type": "job_preview", "job": l.job_id, "mime": "image/png",
            "data_b64": "iVBORw0K", "metadata": {"node_id": "2"}});
        q.publish_event(A, &preview.to_string()).await.unwrap();
        let outputs = json!({"2": {"images": [{"filename": format!("{PROMPT_MARKER}_{i}.png"), "subfolder": "", "type": "output"}]}});
        let err = JobError {
            kind: "x".into(),
            message: "A-ERROR-MESSAGE".into(),
            details: json!({}),
        };
        q.finish(
            &l.job_id,
            l.token,
            outcome,
            &outputs,
            Some(&err).filter(|_| outcome == Outcome::Failed),
            None,
        )
        .await
        .unwrap();
    }
    // A's socket hears both jobs to their end markers.
    let last = ids[1].clone();
    let heard = read_until(&mut a_ws, Duration::from_secs(10), |v| {
        v["type"] == "executing"
            && v["data"]["node"].is_null()
            && v["data"]["prompt_id"] == last.as_str()
    })
    .await;
    for id in &ids {
        assert!(
            heard.iter().any(|m| m.contains(id.as_str())),
            "A's socket missed {id}: {heard:?}"
        );
    }
    assert!(
        heard.iter().any(|m| m.starts_with("<binary")),
        "A's preview: {heard:?}"
    );
    assert!(
        heard.iter().any(|m| m.contains("execution_error")),
        "{heard:?}"
    );
    // B's sockets hear nothing at all (not even a status change).
    for (i, s) in b_sockets.iter_mut().enumerate() {
        let got = read_until(s, Duration::from_millis(800), |_| false).await;
        assert!(got.is_empty(), "B's socket {i} heard {got:?}");
    }
}
