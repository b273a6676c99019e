//! What the workshop made, for the instructor and for each participant, on
//! a real hub, a real Redis and the participants' real frontends (all in
//! this process): the outputs gallery and its files, the printable join
//! cards, the whole-workshop zip export and each participant's own outputs
//! zip. Only the admin login reaches the instructor's views, no path leaves
//! a participant's `output/`, one participant's zip never holds another's
//! files, and the zips are streamed rather than built in memory.

mod support;

use comfy_multi::frontend::{self, FrontendState};
use comfy_multi::queue::QueueSettings;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, SystemTime};
use support::hub::{participant_login, TestHub, ADMIN_TOKEN};
use support::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Workshop {
    hub: TestHub,
    /// The participants' editors (user01 and user02 on one address), e.g.
    /// `http://127.0.0.1:4000`.
    editors: String,
    http: reqwest::Client,
    stop: CancellationToken,
    _redis: RedisServer,
}

impl Drop for Workshop {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn workshop() -> Workshop {
    let redis = RedisServer::start();
    let hub = TestHub::spawn(&redis, QueueSettings::default()).await;
    let mut app = axum::Router::new();
    for name in ["user01", "user02"] {
        let state = FrontendState::new(
            name,
            hub.queue.clone(),
            hub.state.path().join("static"),
            hub.state.path().join("users").join(name),
            1 << 20,
        )
        .with_login(participant_login(name), b"test-session-secret", false);
        app = app.merge(frontend::routes(state));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let editors = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(s.cancelled_owned())
            .await
    });
    Workshop {
        hub,
        editors,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        stop,
        _redis: redis,
    }
}

impl Workshop {
    /// Writes `<state>/users/<participant>/<rel>`, last modified `age` ago.
    fn put(&self, participant: &str, rel: &str, bytes: &[u8], age: Duration) {
        let path = self
            .hub
            .state
            .path()
            .join("users")
            .join(participant)
            .join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    fn user_path(&self, participant: &str, rel: &str) -> std::path::PathBuf {
        self.hub
            .state
            .path()
            .join("users")
            .join(participant)
            .join(rel)
    }

    async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.hub.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
    }

    async fn gallery(&self, query: &str) -> Vec<Value> {
        let r = self.admin_get(&format!("/admin/api/gallery{query}")).await;
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap().as_array().unwrap().clone()
    }

    /// A real participant session cookie (`cm_session=…`) from their login page.
    async fn participant_cookie(&self, name: &str) -> String {
        let r = self
            .http
            .post(format!("{}/{name}/login", self.editors))
            .form(&[("password", participant_login(name).password)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let set = r.headers()["set-cookie"].to_str().unwrap();
        set.split(';').next().unwrap().to_string()
    }
}

/// Status code of a request sent byte for byte as written (no client-side
/// normalization of `..` or percent-encoding), with the admin token.
async fn raw_status(base: &str, target: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = vec![];
    tcp.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// Every file of a zip archive, by name.
fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let mut data = vec![];
        f.read_to_end(&mut data).unwrap();
        out.insert(f.name().to_string(), data);
    }
    out
}

fn tree(entries: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    entries
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect()
}

const MIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_gallery_lists_everyones_newest_outputs_first_and_serves_their_bytes() {
    let w = workshop().await;
    w.put("user01", "output/a.png", b"png of user01", 5 * MIN);
    w.put("user02", "output/sub/b.png", b"png of user02", MIN);
    w.put("user03", "output/c.mp4", b"0123456789 video", 3 * MIN);
    w.put("user03", "output/my image #1.png", b"odd name", 4 * MIN);
    // Not media, hidden, temp or not an output: never listed.
    w.put("user01", "output/notes.txt", b"text", Duration::ZERO);
    w.put("user01", "output/.upload-123", b"partial", Duration::ZERO);
    w.put("user01", "input/in.png", b"an input", Duration::ZERO);
    w.put("user01", "temp/t.png", b"a preview", Duration::ZERO);

    let items = w.gallery("").await;
    let seen: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|i| {
            (
                i["participant"].as_str().unwrap(),
                i["subfolder"].as_str().unwrap(),
                i["filename"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("user02", "sub", "b.png"),
            ("user03", "", "c.mp4"),
            ("user03", "", "my image #1.png"),
            ("user01", "", "a.png"),
        ],
        "newest first, across participants"
    );
    assert_eq!(items[0]["url"], "/admin/files/user02/sub/b.png");
    assert_eq!(items[0]["bytes"], 13);
    assert_eq!(items[1]["kind"], "video");
    let at: Vec<u64> = items.iter().map(|i| i["at_ms"].as_u64().unwrap()).collect();
    assert!(at.windows(2).all(|p| p[0] >= p[1]), "{at:?}");

    assert_eq!(w.gallery("?limit=2").await.len(), 2);
    let mine = w.gallery("?participant=user01").await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["filename"], "a.png");

    // Each listed URL serves the file's bytes.
    for (item, bytes, ct) in [
        (&items[0], &b"png of user02"[..], "image/png"),
        (&items[1], &b"0123456789 video"[..], "video/mp4"),
        (&items[2], &b"odd name"[..], "image/png"),
        (&items[3], &b"png of user01"[..], "image/png"),
    ] {
        let r = w.admin_get(item["url"].as_str().unwrap()).await;
        assert_eq!(r.status(), 200, "{item}");
        assert_eq!(r.headers()["content-type"], ct);
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(&r.bytes().await.unwrap()[..], bytes);
    }
    // Videos seek: Range requests get 206 and just the range.
    let r = w
        .http
        .get(format!("{}/admin/files/user03/c.mp4", w.hub.url))
        .bearer_auth(ADMIN_TOKEN)
        .header("range", "bytes=2-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.bytes().await.unwrap()[..], b"2345");
}

#[tokio::test]
async fn gallery_files_refuse_participants_traversal_and_anything_outside_output() {
    let w = workshop().await;
    w.put("user01", "output/a.png", b"user01's image", MIN);
    w.put("user02", "output/x.png", b"SECRET of user02", MIN);
    w.put("user01", "input/in.png", b"SECRET input", MIN);
    w.put("user01", "output/.hidden.png", b"SECRET hidden", MIN);
    std::os::unix::fs::symlink(
        w.user_path("user01", "input/in.png"),
        w.user_path("user01", "output/link.png"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        w.user_path("user01", "input"),
        w.user_path("user01", "output/inputs"),
    )
    .unwrap();

    // Participants' credentials never reach the instructor's views.
    let cookie = w.participant_cookie("user01").await;
    for path in ["/admin/api/gallery", "/admin/files/user01/a.png"] {
        let url = format!("{}{path}", w.hub.url);
        let r = w
            .http
            .get(&url)
            .bearer_auth(participant_login("user01").token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a participant token");
        let r = w
            .http
            .get(&url)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a participant cookie");
        let r = w.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} with nothing");
    }

    // The admin reaches output files, and nothing else.
    assert_eq!(
        raw_status(&w.hub.url, "/admin/files/user01/a.png").await.0,
        200
    );
    for target in [
        "/admin/files/user01/../user02/x.png",
        "/admin/files/user01/..%2fuser02%2fx.png",
        "/admin/files/user01/%2e%2e/user02/x.png",
        "/admin/files/user01/%2E%2E%2Fuser02%2Foutput%2Fx.png",
        "/admin/files/user01/..%2F..%2Fuser02%2Foutput%2Fx.png",
        "/admin/files/user01/sub/..%2f..%2f..%2fuser02/output/x.png",
        "/admin/files/..%2fuser02/output/x.png",
        "/admin/files/user01/%2fetc%2fpasswd",
        "/admin/files/user01/..%2finput%2fin.png",
        "/admin/files/user01/..%5cinput%5cin.png",
        "/admin/files/user01/..%2f..%2f..%2fparticipants.toml",
        "/admin/files/user01/.hidden.png",
        "/admin/files/user01/link.png",
        "/admin/files/user01/inputs/in.png",
        "/admin/files/user01/a.png%00.txt",
        "/admin/files/USER01/a.png",
    ] {
        let (code, text) = raw_status(&w.hub.url, target).await;
        assert!((400..500).contains(&code), "{target}: {code}\n{text}");
        assert!(
            !text.contains("SECRET") && !text.contains("pw-"),
            "{target}"
        );
    }
}

#[tokio::test]
async fn the_cards_page_shows_every_participants_address_and_password() {
    let w = workshop().await;
    let r = w
        .http
        .get(format!("{}/admin/cards", w.hub.url))
        .bearer_auth(ADMIN_TOKEN)
        .header("host", "workshop.lan:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    for p in support::hub::PARTICIPANTS {
        assert!(page.contains(&format!(">{p}<")), "{p}'s card");
        assert!(page.contains(&format!("http://workshop.lan:8080/{p}/")));
        assert!(
            page.contains(&participant_login(p).password),
            "{p}'s password"
        );
    }
    assert!(page.contains("@media print") && page.contains("size: A4"));
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    assert!(!page.contains(support::hub::ADMIN_PASSWORD));
    assert!(!page.contains("ask the instructor"));

    // Without a login: 401, for participants too.
    let url = format!("{}/admin/cards", w.hub.url);
    assert_eq!(w.http.get(&url).send().await.unwrap().status(), 401);
    let r = w
        .http
        .get(&url)
        .bearer_auth(participant_login("user01").token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A participant missing from the credentials file: ask the instructor.
    let path = w.hub.state.path().join("participants.toml");
    let mut logins = comfy_multi::auth::CredentialsFile::load(&path).unwrap();
    logins.logins.remove("user03");
    logins.write(&path).unwrap();
    let page = w.admin_get("/admin/cards").await.text().await.unwrap();
    assert!(page.contains(">user03<"));
    assert_eq!(page.matches("ask the instructor").count(), 1);
    assert!(page.contains(&participant_login("user01").password));
}

#[tokio::test]
async fn the_workshop_export_unzips_to_every_participants_outputs_inputs_and_workflows() {
    let w = workshop().await;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    w.put("user01", "output/a.png", b"a", MIN);
    w.put("user01", "output/sub/b.png", &big, MIN);
    w.put("user01", "input/in.png", b"in", MIN);
    w.put("user01", "user/workflows/w.json", b"{\"nodes\":[]}", MIN);
    w.put("user01", "user/workflows/mine/x.json", b"{}", MIN);
    w.put("user02", "output/c.mp4", b"video", MIN);
    // Not exported: previews, settings, hidden and temp files.
    w.put("user01", "temp/t.png", b"preview", MIN);
    w.put("user01", "user/comfy.settings.json", b"{}", MIN);
    w.put("user01", "output/.upload-x", b"partial", MIN);
    w.put("user02", "user/workflows/.tmp-1", b"partial", MIN);

    let r = w.admin_get("/admin/api/export.zip").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"workshop-20")
            && disposition.ends_with(".zip\""),
        "{disposition}"
    );
    let files = unzip(&r.bytes().await.unwrap());
    assert_eq!(
        files,
        tree(&[
            ("user01/output/a.png", b"a"),
            ("user01/output/sub/b.png", &big),
            ("user01/input/in.png", b"in"),
            ("user01/workflows/w.json", b"{\"nodes\":[]}"),
            ("user01/workflows/mine/x.json", b"{}"),
            ("user02/output/c.mp4", b"video"),
        ])
    );

    // Participants cannot export the workshop.
    let r = w
        .http
        .get(format!("{}/admin/api/export.zip", w.hub.url))
        .bearer_auth(participant_login("user01").token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_participants_outputs_zip_holds_only_their_own_outputs() {
    let w = workshop().await;
    w.put("user01", "output/mine.png", b"mine", MIN);
    w.put("user01", "output/video/clip.mp4", b"clip", MIN);
    w.put("user01", "input/upload.png", b"an upload", MIN);
    w.put("user02", "output/theirs.png", b"theirs", MIN);

    for path in [
        "/user01/api/comfy-multi/outputs.zip",
        "/user01/comfy-multi/outputs.zip",
    ] {
        let r = w
            .http
            .get(format!("{}{path}", w.editors))
            .bearer_auth(participant_login("user01").token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            r.headers()["content-disposition"],
            "attachment; filename=\"user01-outputs.zip\""
        );
        assert_eq!(
            unzip(&r.bytes().await.unwrap()),
            tree(&[("mine.png", b"mine"), ("video/clip.mp4", b"clip")])
        );
    }
    // The browser's session cookie works too.
    let cookie = w.participant_cookie("user01").await;
    let r = w
        .http
        .get(format!("{}/user01/api/comfy-multi/outputs.zip", w.editors))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Someone else's credentials, or none: 401.
    let url = format!("{}/user01/api/comfy-multi/outputs.zip", w.editors);
    let r = w
        .http
        .get(&url)
        .bearer_auth(participant_login("user02").token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let theirs = w.participant_cookie("user02").await;
    let r = w
        .http
        .get(&url)
        .header("cookie", &theirs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(w.http.get(&url).send().await.unwrap().status(), 401);

    // A participant without outputs gets a valid, empty archive.
    std::fs::remove_dir_all(w.user_path("user02", "output")).unwrap();
    let r = w
        .http
        .get(format!("{}/user02/api/comfy-multi/outputs.zip", w.editors))
        .bearer_auth(participant_login("user02").token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(unzip(&r.bytes().await.unwrap()).is_empty());
}

#[tokio::test]
async fn exports_are_streamed_as_they_are_written() {
    let w = workshop().await;
    const BIG: u64 = 64 << 20;
    // A sparse 64 MiB output (zeros but for a marker at the end).
    let path = w.user_path("user01", "output/big.mp4");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&path).unwrap();
        f.set_len(BIG).unwrap();
        f.seek(SeekFrom::End(-4)).unwrap();
        f.write_all(b"END!").unwrap();
    }
    w.put("user02", "output/small.png", b"small", MIN);

    let mut r = w.admin_get("/admin/api/export.zip").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("content-length").is_none(),
        "streamed: no Content-Length"
    );
    assert_eq!(r.headers()["transfer-encoding"], "chunked");
    // Chunks arrive as they are written: the first long before the whole
    // archive, and none anywhere near the whole file.
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut file = tokio::fs::File::create(out.path()).await.unwrap();
    let (mut chunks, mut largest, mut total) = (0usize, 0usize, 0u64);
    while let Some(c) = r.chunk().await.unwrap() {
        chunks += 1;
        largest = largest.max(c.len());
        total += c.len() as u64;
        file.write_all(&c).await.unwrap();
    }
    file.flush().await.unwrap();
    assert!(total > BIG);
    assert!(chunks > 100, "{chunks} chunks");
    assert!(largest <= 4 << 20, "largest chunk {largest} bytes");

    let mut zip = zip::ZipArchive::new(std::fs::File::open(out.path()).unwrap()).unwrap();
    assert_eq!(zip.len(), 2);
    let mut big = zip.by_name("user01/output/big.mp4").unwrap();
    assert_eq!(big.size(), BIG);
    // Reading to the end checks the CRC.
    let mut tail = vec![];
    std::io::copy(&mut (&mut big).take(BIG - 4), &mut std::io::sink()).unwrap();
    big.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, b"END!");
    drop(big);
    let mut small = String::new();
    zip.by_name("user02/output/small.png")
        .unwrap()
        .read_to_string(&mut small)
        .unwrap();
    assert_eq!(small, "small");
}
