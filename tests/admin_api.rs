//! The instructor's admin API on a real hub and a real Redis: every action
//! does what it says (seen through the queue), reads show the workshop,
//! bad requests get clear errors, and nothing but the admin login gets in —
//! no participant credentials, no worker token, no forged cookie.

mod support;

use comfy_multi::queue::{Mode, QueueSettings};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::hub::{TestHub, ADMIN_PASSWORD, ADMIN_TOKEN, WORKER_TOKEN};
use support::report::{Record, Section};
use support::RedisServer;

struct Admin {
    hub: TestHub,
    http: reqwest::Client,
    _redis: RedisServer,
}

async fn spawn_admin() -> Admin {
    let redis = RedisServer::start();
    let hub = TestHub::spawn(&redis, QueueSettings::default()).await;
    Admin {
        hub,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _redis: redis,
    }
}

impl Admin {
    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/admin/api{path}", self.hub.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/admin/api{path}", self.hub.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn submit(&self, participant: &str, n: u64) -> String {
        self.hub
            .queue
            .enqueue(support::job(participant, n))
            .await
            .unwrap()
            .id
    }
}

#[tokio::test]
async fn the_queue_view_lists_jobs_in_order_and_job_actions_change_it() {
    let a = spawn_admin().await;
    let j1 = a.submit("user01", 1).await;
    let j2 = a.submit("user02", 2).await;
    let j3 = a.submit("user03", 3).await;
    let q = a.get("/queue").await;
    let ids: Vec<&str> = q["waiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [j1.as_str(), j2.as_str(), j3.as_str()]);
    assert_eq!(q["waiting"][0]["position"], 1);
    assert_eq!(q["waiting"][0]["participant"], "user01");
    assert!(
        q["waiting"][0].get("prompt").is_none(),
        "no prompt contents"
    );

    assert_eq!(
        a.post(&format!("/jobs/{j3}/prioritize"), json!({})).await.0,
        200
    );
    assert_eq!(
        a.post(&format!("/jobs/{j2}/move"), json!({"direction": "down"}))
            .await
            .0,
        200
    );
    assert_eq!(
        a.post(&format!("/jobs/{j1}/cancel"), json!({})).await.0,
        200
    );
    let q = a.get("/queue").await;
    let ids: Vec<&str> = q["waiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [j3.as_str(), j2.as_str()],
        "bumped first, cancelled gone"
    );
    assert_eq!(q["waiting"][0]["priority"], true);
    let job = a.hub.queue.job(&j1).await.unwrap().unwrap();
    assert_eq!(job.status.as_str(), "cancelled");

    // Unknown jobs and bad bodies: clear errors, nothing changed.
    let unknown = uuid::Uuid::new_v4();
    for path in ["cancel", "prioritize"] {
        assert_eq!(
            a.post(&format!("/jobs/{unknown}/{path}"), json!({}))
                .await
                .0,
            404
        );
    }
    let (s, body) = a
        .post(
            &format!("/jobs/{j2}/move"),
            json!({"direction": "sideways"}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("up"));
}

#[tokio::test]
async fn controls_switch_mode_pause_and_limit_the_queue() {
    let a = spawn_admin().await;
    assert_eq!(a.post("/mode", json!({"mode": "fifo"})).await.0, 200);
    assert_eq!(
        a.hub.queue.runtime_settings().await.unwrap().mode,
        Mode::Fifo
    );
    assert_eq!(a.post("/mode", json!({"mode": "fair_share"})).await.0, 200);
    assert_eq!(
        a.hub.queue.runtime_settings().await.unwrap().mode,
        Mode::FairShare
    );
    let (s, body) = a.post("/mode", json!({"mode": "lottery"})).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(
        a.hub.queue.runtime_settings().await.unwrap().mode,
        Mode::FairShare
    );

    assert_eq!(a.get("/status").await["settings"]["affinity"], true);
    assert_eq!(a.post("/affinity", json!({"on": false})).await.0, 200);
    assert_eq!(a.get("/status").await["settings"]["affinity"], false);
    assert!(!a.hub.queue.runtime_settings().await.unwrap().affinity);
    let (s, body) = a.post("/affinity", json!({"on": "maybe"})).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(a.post("/affinity", json!({"on": true})).await.0, 200);
    assert!(a.hub.queue.runtime_settings().await.unwrap().affinity);

    assert_eq!(a.post("/pause", json!({})).await.0, 200);
    let st = a.get("/status").await;
    assert_eq!(st["settings"]["paused_submit"], true);
    assert_eq!(st["settings"]["paused_dispatch"], true);
    assert!(a
        .hub
        .queue
        .enqueue(support::job("user01", 1))
        .await
        .is_err());
    assert_eq!(a.post("/resume", json!({})).await.0, 200);
    a.submit("user01", 1).await;

    assert_eq!(a.post("/max_pending", json!({"value": 2})).await.0, 200);
    a.submit("user01", 2).await;
    assert!(
        a.hub
            .queue
            .enqueue(support::job("user01", 3))
            .await
            .is_err(),
        "third pending job refused"
    );
    assert_eq!(
        a.post("/users/user01/max_pending", json!({"value": 5}))
            .await
            .0,
        200
    );
    a.submit("user01", 3).await;
}

#[tokio::test]
async fn participant_actions_lock_clear_and_are_listed() {
    let a = spawn_admin().await;
    a.submit("user02", 1).await;
    a.submit("user02", 2).await;
    let users = a.get("/users").await;
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["user01", "user02", "user03"],
        "known before they queue"
    );
    let u2 = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "user02")
        .unwrap();
    assert_eq!(u2["queued"], 2);
    assert_eq!(u2["online"], false);

    assert_eq!(a.post("/users/user02/lock", json!({})).await.0, 200);
    assert!(a
        .hub
        .queue
        .enqueue(support::job("user02", 3))
        .await
        .is_err());
    let users = a.get("/users").await;
    assert_eq!(users[1]["locked"], true);
    assert_eq!(a.post("/users/user02/unlock", json!({})).await.0, 200);
    let (s, body) = a.post("/users/user02/clear", json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(body["removed"], 2);
    assert_eq!(a.get("/queue").await["waiting"], json!([]));
    assert_eq!(a.post("/users/nobody/lock", json!({})).await.0, 404);

    // Online: an open editor socket counts.
    a.hub
        .queue
        .set_online("user03", "sid-1", std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let users = a.get("/users").await;
    assert_eq!(users[2]["online"], true);
}

#[tokio::test]
async fn a_broadcast_reaches_participants_and_shows_in_status() {
    let a = spawn_admin().await;
    let mut rx = a.hub.queue.subscribe(Some("user01")).await.unwrap();
    let (s, _) = a
        .post("/broadcast", json!({"message": "Lunch at 12"}))
        .await;
    assert_eq!(s, 200);
    let msg = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(msg.contains("Lunch at 12"));
    assert_eq!(
        a.get("/status").await["broadcast"]["message"],
        "Lunch at 12"
    );
    assert_eq!(a.post("/broadcast", json!({"message": ""})).await.0, 400);
    assert_eq!(a.post("/broadcast", json!({"text": "x"})).await.0, 400);
}

#[tokio::test]
async fn a_drained_worker_gets_no_new_jobs_until_undrained() {
    let a = spawn_admin().await;
    a.hub
        .queue
        .set_worker("gpu7", Some(&json!({"id": "gpu7", "capacity": 1, "healthy": true,
            "system_stats": {"system": {"comfyui_version": "0.3.64"},
                             "devices": [{"name": "cuda:0 NVIDIA H100", "vram_total": 85899345920u64}]}}).to_string()))
        .await
        .unwrap();
    a.submit("user01", 1).await;
    assert_eq!(a.post("/workers/gpu7/drain", json!({})).await.0, 200);
    assert!(a.hub.queue.lease("gpu7").await.unwrap().is_none());
    let w = a.get("/workers").await;
    assert_eq!(w[0]["id"], "gpu7");
    assert_eq!(w[0]["draining"], true);
    assert_eq!(w[0]["state"], "idle");
    assert_eq!(w[0]["gpu"], "cuda:0 NVIDIA H100");
    assert_eq!(w[0]["comfyui_version"], "0.3.64");
    assert_eq!(w[0]["jobs_done"], 0);
    assert_eq!(w[0]["busy_ratio_10m"], 0.0);
    assert_eq!(w[0]["warm_models"], json!([]));
    assert_eq!(a.post("/workers/gpu7/undrain", json!({})).await.0, 200);
    let mut needs = support::job("user02", 2);
    needs.requires = vec![comfy_multi::catalogue::file_tag(
        "CheckpointLoaderSimple",
        "ckpt_name",
        "sd15.safetensors",
    )];
    a.hub.queue.enqueue(needs).await.unwrap();
    assert!(a.hub.queue.lease("gpu7").await.unwrap().is_some());
    assert!(a.hub.queue.lease("gpu7").await.unwrap().is_some());
    assert_eq!(
        a.get("/workers").await[0]["warm_models"],
        json!(["sd15.safetensors (ckpt_name of CheckpointLoaderSimple)"]),
        "what its last job loaded"
    );
    assert_eq!(a.post("/workers/gpu9/drain", json!({})).await.0, 404);
}

#[tokio::test]
async fn the_event_stream_carries_queue_changes() {
    let a = spawn_admin().await;
    let mut r = a
        .http
        .get(format!("{}/admin/api/events", a.hub.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let id = a.submit("user01", 1).await;
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !seen.contains(&id) {
        let chunk = tokio::time::timeout_at(deadline.into(), r.chunk())
            .await
            .expect("event within 5 s")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("data:"));
}

#[tokio::test]
async fn the_chart_samples_are_served() {
    let a = spawn_admin().await;
    // The sampler takes its first sample as the hub starts.
    let mut v = a.get("/samples").await;
    for _ in 0..50 {
        if !v["samples"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        v = a.get("/samples").await;
    }
    assert_eq!(v["interval_s"], 15);
    assert_eq!(v["capacity"], 240);
    let first = &v["samples"][0];
    assert_eq!(first["waiting"], 0, "{v}");
    assert_eq!(first["median_wait_s"], 0.0);
    assert!(first["at_ms"].as_u64().unwrap() > 0);
}

/// Every admin route, for the "who may call it" checks.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/"),
    ("GET", "/admin/dashboard.js"),
    ("GET", "/admin/dashboard.css"),
    ("GET", "/admin/api/status"),
    ("GET", "/admin/api/queue"),
    ("GET", "/admin/api/users"),
    ("GET", "/admin/api/workers"),
    ("GET", "/admin/api/samples"),
    ("GET", "/admin/api/events"),
    (
        "POST",
        "/admin/api/jobs/00000000-0000-4000-8000-000000000000/cancel",
    ),
    (
        "POST",
        "/admin/api/jobs/00000000-0000-4000-8000-000000000000/prioritize",
    ),
    (
        "POST",
        "/admin/api/jobs/00000000-0000-4000-8000-000000000000/move",
    ),
    ("POST", "/admin/api/mode"),
    ("POST", "/admin/api/affinity"),
    ("POST", "/admin/api/warmup"),
    ("GET", "/admin/api/storage"),
    ("POST", "/admin/api/prune"),
    ("POST", "/admin/api/pause"),
    ("POST", "/admin/api/resume"),
    ("POST", "/admin/api/broadcast"),
    ("POST", "/admin/api/max_pending"),
    ("POST", "/admin/api/users/user01/lock"),
    ("POST", "/admin/api/users/user01/unlock"),
    ("POST", "/admin/api/users/user01/clear"),
    ("POST", "/admin/api/users/user01/reset"),
    ("POST", "/admin/api/users/user01/max_pending"),
    ("POST", "/admin/api/push_workflow"),
    ("GET", "/admin/api/pools"),
    ("POST", "/admin/api/pools/local"),
    ("POST", "/admin/api/workers/gpu0/drain"),
    ("POST", "/admin/api/workers/gpu0/undrain"),
    ("GET", "/admin/api/gallery"),
    ("GET", "/admin/api/export.zip"),
    ("GET", "/admin/cards"),
    ("GET", "/admin/files/user01/x.png"),
];

#[tokio::test]
async fn nothing_but_the_admin_login_reaches_any_admin_route() {
    let a = spawn_admin().await;
    // Every route in the table is a real route (admin gets no 404 on the
    // path itself; unknown targets may 404 with a JSON error).
    let route_table = include_str!("../src/hub/admin/mod.rs");
    let declared = route_table.matches(".route(").count();
    // 26 API routes + the dashboard and its two files + cards + files +
    // /admin + login + logout.
    assert_eq!(
        declared,
        ROUTES.len() - 1 + 4,
        "a new admin route needs a row here"
    );
    let participant_cookie =
        "cm_session=4102444800.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let forged_admin =
        "cm_admin=4102444800.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    // Signed with the admin's real key, but expired.
    let expired_admin = format!("cm_admin={}", admin_key().issue(std::time::Duration::ZERO));
    let user01 = support::hub::participant_login("user01");
    // A participant's cookie signed with the hub's own session secret.
    let signed_participant = format!(
        "cm_session={}",
        comfy_multi::auth::SessionKey::derive(
            b"test-session-secret",
            "participant",
            "user01",
            &user01
        )
        .issue(comfy_multi::auth::SESSION_TTL)
    );
    let credentials = [
        ("nothing", "x-none", "1".to_string()),
        (
            "worker token",
            "authorization",
            format!("Bearer {WORKER_TOKEN}"),
        ),
        (
            "participant token",
            "authorization",
            "Bearer 0123456789abcdef0123456789abcdef".into(),
        ),
        (
            "user01's real token",
            "authorization",
            format!("Bearer {}", user01.token),
        ),
        ("participant cookie", "cookie", participant_cookie.into()),
        ("user01's signed cookie", "cookie", signed_participant),
        ("forged admin cookie", "cookie", forged_admin.into()),
        ("expired admin cookie", "cookie", expired_admin),
    ];
    let mut calls = 0;
    let mut failures = vec![];
    for (method, path) in ROUTES {
        let url = format!("{}{path}", a.hub.url);
        for (what, header, value) in &credentials {
            let req = match *method {
                "GET" => a.http.get(&url),
                _ => a.http.post(&url).json(&json!({})),
            };
            let r = req.header(*header, value).send().await.unwrap();
            calls += 1;
            if r.status() != 401 {
                failures.push(format!("{method} {path} with {what}: {}", r.status()));
            }
        }
    }
    // Nothing changed.
    let paused = a.get("/status").await["settings"]["paused_submit"].clone();
    let mut r = Record::new(
        Section::Input,
        "input-auth-admin-routes",
        "Every admin route × every credential that is not the admin's",
    )
    .setup(format!(
        "{} admin routes (count checked against src/hub/admin/mod.rs) × {} credentials: none, worker token, participant tokens and cookies (one signed with the hub's secret), forged and expired admin cookies",
        ROUTES.len(),
        credentials.len()
    ))
    .measure("calls", calls)
    .measure("answered other than 401", failures.len());
    r.passed = failures.is_empty() && paused == false;
    r.write();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(paused, false);
}

/// The key the test hub signs admin cookies with.
fn admin_key() -> comfy_multi::auth::SessionKey {
    comfy_multi::auth::SessionKey::derive(
        b"test-session-secret",
        "admin",
        comfy_multi::auth::ADMIN,
        &comfy_multi::auth::Credentials {
            password: ADMIN_PASSWORD.into(),
            token: ADMIN_TOKEN.into(),
        },
    )
}

/// An admin cookie from the hub's own key opens the API while fresh and
/// not once expired (the control shows the key is the right one).
#[tokio::test]
async fn an_expired_admin_cookie_is_refused() {
    let a = spawn_admin().await;
    let status = |cookie: String| {
        let req = a
            .http
            .get(format!("{}/admin/api/status", a.hub.url))
            .header("cookie", format!("cm_admin={cookie}"));
        async move { req.send().await.unwrap().status() }
    };
    let expired = status(admin_key().issue(std::time::Duration::ZERO)).await;
    let fresh = status(admin_key().issue(comfy_multi::auth::SESSION_TTL)).await;
    let mut r = Record::new(
        Section::Input,
        "input-auth-expired-admin-session",
        "An expired but correctly signed admin session cookie",
    )
    .setup("cookie from the hub's admin session key with no time to live on /admin/api/status; the same key's normal cookie as the control")
    .measure("expired cookie", expired.as_u16())
    .measure("control cookie", fresh.as_u16());
    r.passed = expired == StatusCode::UNAUTHORIZED && fresh == StatusCode::OK;
    r.write();
    assert_eq!(expired, StatusCode::UNAUTHORIZED);
    assert_eq!(fresh, StatusCode::OK);
}

/// The admin login is rate-limited like a participant's: per client, and
/// per login whatever the client address claims to be.
#[tokio::test]
async fn admin_password_guesses_are_rate_limited() {
    let a = spawn_admin().await;
    let attempt = |password: &'static str, from: String| {
        let req = a
            .http
            .post(format!("{}/admin/login", a.hub.url))
            .header("x-real-ip", from)
            .form(&[("password", password)]);
        async move { req.send().await.unwrap() }
    };
    let mut one_client = vec![];
    for _ in 0..7 {
        one_client.push(attempt("guess", "10.9.9.9".into()).await.status());
    }
    let right_from_guesser = attempt(ADMIN_PASSWORD, "10.9.9.9".into()).await;
    let right_status = right_from_guesser.status();
    let cookie_when_limited = right_from_guesser.headers().get("set-cookie").is_some();
    let mut spread = vec![];
    for i in 0..40 {
        let r = attempt("guess", format!("10.7.0.{i}")).await;
        assert!(r.headers().get("set-cookie").is_none());
        spread.push(r.status());
    }
    let count = |v: &[StatusCode], s: StatusCode| v.iter().filter(|x| **x == s).count();
    let mut r = Record::new(
        Section::Input,
        "input-auth-admin-brute-force",
        "Password guesses on the admin login: from one client, then from 40 addresses",
    )
    .setup("7 wrong passwords from one x-real-ip then the right one from it; then 40 wrong passwords each from its own address")
    .measure("one client: 401", count(&one_client, StatusCode::UNAUTHORIZED))
    .measure("one client: 429", count(&one_client, StatusCode::TOO_MANY_REQUESTS))
    .measure("right password from the guessing client", right_status.as_u16())
    .measure("40 addresses: 429", count(&spread, StatusCode::TOO_MANY_REQUESTS));
    r.passed = one_client[..5]
        .iter()
        .all(|s| *s == StatusCode::UNAUTHORIZED)
        && right_status == StatusCode::TOO_MANY_REQUESTS
        && !cookie_when_limited
        && count(&spread, StatusCode::TOO_MANY_REQUESTS) > 0;
    r.write();
    assert!(
        one_client[..5]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{one_client:?}"
    );
    assert_eq!(right_status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!cookie_when_limited);
    assert!(
        count(&spread, StatusCode::TOO_MANY_REQUESTS) > 0,
        "no per-login cap: {spread:?}"
    );
}

#[tokio::test]
async fn the_dashboard_login_sets_an_admin_only_cookie() {
    let a = spawn_admin().await;
    let page = a
        .http
        .get(format!("{}/admin/", a.hub.url))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/admin/login");
    let wrong = a
        .http
        .post(format!("{}/admin/login", a.hub.url))
        .form(&[("password", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let ok = a
        .http
        .post(format!("{}/admin/login", a.hub.url))
        .form(&[("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    let set = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("Path=/admin/") && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let r = a
        .http
        .get(format!("{}/admin/api/status", a.hub.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = a
        .http
        .get(format!("{}/admin/", a.hub.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("comfy-multi"));
}

#[tokio::test]
async fn a_reset_login_replaces_the_old_password_token_and_sessions() {
    let a = spawn_admin().await;
    let old = comfy_multi::auth::Credentials::generate();
    let state = comfy_multi::frontend::FrontendState::new(
        "user01",
        a.hub.queue.clone(),
        a.hub.state.path().join("static"),
        a.hub.state.path().join("users").join("user01"),
        1 << 20,
    )
    .with_login(old.clone(), b"secret", false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fe = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(comfy_multi::frontend::run(
        listener,
        state,
        tokio_util::sync::CancellationToken::new(),
    ));
    let login = |password: String| {
        let (http, fe) = (a.http.clone(), fe.clone());
        async move {
            http.post(format!("{fe}/user01/login"))
                .form(&[("password", password)])
                .send()
                .await
                .unwrap()
        }
    };
    let r = login(old.password.clone()).await;
    assert_eq!(r.status(), 303);
    let old_cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    let (s, body) = a.post("/users/user01/reset", json!({})).await;
    assert_eq!(s, 200);
    let new_password = body["password"].as_str().unwrap().to_string();
    let new_token = body["token"].as_str().unwrap().to_string();
    assert_ne!(new_password, old.password);
    assert_eq!(a.post("/users/nobody/reset", json!({})).await.0, 404);

    // The frontend takes the new login within its recheck interval.
    let settings = format!("{fe}/user01/api/settings");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = a
            .http
            .get(&settings)
            .bearer_auth(&new_token)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "new token not taken");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let r = a
        .http
        .get(&settings)
        .bearer_auth(&old.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "old token");
    let r = a
        .http
        .get(&settings)
        .header("cookie", &old_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "old session");
    assert_eq!(login(old.password.clone()).await.status(), 401);
    assert_eq!(login(new_password.clone()).await.status(), 303);
    // The join cards show the new password.
    let cards = a
        .http
        .get(format!("{}/admin/cards", a.hub.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cards.contains(&new_password));
}

/// Writes `bytes` bytes at `path` (under `users/`), last modified `age` ago.
fn file_aged(root: &std::path::Path, path: &str, bytes: usize, age: std::time::Duration) {
    let p = root.join("users").join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, vec![1u8; bytes]).unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(std::time::SystemTime::now() - age).unwrap();
}

#[tokio::test]
async fn the_instructor_sees_what_uses_the_disk_and_prunes_old_temp_files_but_outputs_only_with_force(
) {
    let a = spawn_admin().await;
    let root = a.hub.state.path().to_path_buf();
    let hour = std::time::Duration::from_secs(3600);
    file_aged(&root, "user01/output/big.png", 300_000, 3 * hour);
    file_aged(&root, "user01/temp/preview_old.png", 50_000, 3 * hour);
    file_aged(
        &root,
        "user01/temp/preview_new.png",
        40_000,
        std::time::Duration::ZERO,
    );
    file_aged(&root, "user02/temp/sub/old.webp", 10_000, 5 * hour);
    file_aged(&root, "user02/input/photo.jpg", 20_000, 5 * hour);

    let r = a.get("/storage").await;
    let u1 = r["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "user01")
        .unwrap();
    assert_eq!(u1["output_bytes"], 300_000);
    assert_eq!(u1["temp_bytes"], 90_000);
    assert_eq!(r["biggest"][0]["path"], "user01/output/big.png");

    // A dry run removes nothing; then old temp files go, new ones stay.
    let (st, v) = a.post("/prune", json!({"dry_run": true})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["files"].as_u64(), v["bytes"].as_u64()),
        (Some(2), Some(60_000))
    );
    assert!(root.join("users/user01/temp/preview_old.png").exists());
    let (_, v) = a.post("/prune", json!({})).await;
    assert_eq!(v["files"], 2);
    assert!(!root.join("users/user01/temp/preview_old.png").exists());
    assert!(!root.join("users/user02/temp/sub/old.webp").exists());
    assert!(
        root.join("users/user01/temp/preview_new.png").exists(),
        "too new"
    );
    assert!(
        root.join("users/user02/input/photo.jpg").exists(),
        "inputs are never pruned"
    );

    // Outputs: refused without force, removed with it (one participant).
    let (st, v) = a.post("/prune", json!({"outputs": true})).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("force"));
    assert!(root.join("users/user01/output/big.png").exists());
    let (st, v) = a
        .post(
            "/prune",
            json!({"outputs": true, "force": true, "user": "user01", "older_than_s": 60}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["kinds"], json!(["output"]));
    assert!(!root.join("users/user01/output/big.png").exists());
    let (st, _) = a.post("/prune", json!({"user": "../etc"})).await;
    assert_eq!(st, 400, "no path games");
}

fn pool(name: &str, toml: &str) -> comfy_multi::config::PoolConfig {
    toml::from_str(&format!("name = {name:?}\n{toml}")).unwrap()
}

#[tokio::test]
async fn the_instructor_switches_pools_and_the_switch_outlives_a_hub_restart() {
    let redis = RedisServer::start();
    let pools = vec![
        pool("local", ""),
        pool(
            "modal",
            "kind = \"comfyui_url\"\nurls = [\"https://a.example\"]\nburst = \"line_over:10\"\nprice_per_gpu_hour = 2.5\nstate = \"parked\"",
        ),
    ];
    let mut hub = TestHub::spawn_with_pools(&redis, QueueSettings::default(), pools).await;
    let http = reqwest::Client::new();
    let base = hub.url.clone();
    let get = |path: &'static str| {
        let (http, url) = (http.clone(), base.clone());
        async move {
            let r = http
                .get(format!("{url}/admin/api{path}"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let post = |path: &str, body: Value| {
        let (http, url) = (http.clone(), format!("{base}/admin/api{path}"));
        async move {
            let r = http
                .post(url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let p = get("/pools").await;
    assert_eq!(p[1]["name"], "modal");
    assert_eq!(p[1]["kind"], "comfyui_url");
    assert_eq!(p[1]["state"], "parked");
    assert_eq!(p[1]["burst"], "line_over:10");
    assert_eq!(
        p[1]["workers"],
        json!([{"id": "modal-1", "state": "starting"}]),
        "a URL worker not connected yet is starting"
    );

    // modal-1 ran 36 s of jobs while enabled: 0.01 GPU h at 2.5 = 0.025.
    let q = &hub.queue;
    q.set_worker_pool("modal-1", "modal").await.unwrap();
    let (status, v) = post(
        "/pools/modal",
        json!({"state": "enable", "burst": "always"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["state"].as_str(), v["burst"].as_str()),
        (Some("enabled"), Some("always"))
    );
    q.enqueue(support::job("user01", 1)).await.unwrap();
    let l = q.lease("modal-1").await.unwrap().expect("enabled");
    support::complete(q, &l, 36.0).await;
    let (status, _) = post("/pools/modal", json!({"state": "drain"})).await;
    assert_eq!(status, 200);
    let p = get("/pools").await;
    assert_eq!(p[1]["state"], "drained", "draining with nothing held");
    assert!((p[1]["cost"].as_f64().unwrap() - 0.025).abs() < 1e-9, "{p}");
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("pool_cost{pool=\"modal\"} 0.025"),
        "{metrics}"
    );

    // Mistakes are named; nothing changes.
    for (body, needle) in [
        (json!({"state": "asleep"}), "unknown pool state"),
        (json!({"burst": "sometimes"}), "line_over:N"),
        (json!({}), "nothing to change"),
    ] {
        let (status, v) = post("/pools/modal", body).await;
        assert_eq!(status, 400);
        assert!(v.to_string().contains(needle), "{v}");
    }
    let (status, v) = post("/pools/nope", json!({"state": "park"})).await;
    assert_eq!(status, 404);
    assert!(v.to_string().contains("no pool named"), "{v}");

    // A restart (the config still says parked) keeps the instructor's switch.
    hub.stop();
    hub.start_again().await;
    let p = get("/pools").await;
    assert_eq!(p[1]["state"], "drained");
    assert_eq!(p[1]["burst"], "always");
}

#[tokio::test]
async fn a_pushed_workflow_reaches_everyone_and_overwrites_nobodys_own() {
    let a = spawn_admin().await;
    let workflow = json!({"nodes": [{"id": 1, "type": "EmptyImage"}], "links": []});
    // user02 already has a workflow of that name: theirs stays.
    let user02 = a.hub.state.path().join("users/user02/user/workflows");
    std::fs::create_dir_all(&user02).unwrap();
    std::fs::write(
        user02.join("Lesson 2.json"),
        "{\"nodes\": [], \"mine\": true}",
    )
    .unwrap();
    let mut rx = a.hub.queue.subscribe(Some("user01")).await.unwrap();

    let (status, v) = a
        .post(
            "/push_workflow",
            json!({"name": "Lesson 2", "workflow": workflow}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let delivered: Vec<(String, String)> = v["delivered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["participant"].as_str().unwrap().into(),
                d["file"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        delivered,
        [
            ("user01".to_string(), "Lesson 2.json".to_string()),
            ("user02".into(), "Lesson 2 (2).json".into()),
            ("user03".into(), "Lesson 2.json".into()),
        ]
    );
    let read = |u: &str, f: &str| -> Value {
        let p = a
            .hub
            .state
            .path()
            .join(format!("users/{u}/user/workflows/{f}"));
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    assert_eq!(
        read("user02", "Lesson 2.json")["mine"],
        true,
        "theirs untouched"
    );
    assert_eq!(read("user02", "Lesson 2 (2).json"), workflow);
    assert_eq!(
        read("user03", "Lesson 2.json"),
        workflow,
        "offline: it waits in their folder"
    );
    let event = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        event.contains("workflow_pushed") && event.contains("Lesson 2.json"),
        "{event}"
    );

    // To chosen participants only.
    let (status, v) = a
        .post(
            "/push_workflow",
            json!({"name": "Solo", "workflow": workflow, "to": ["user03"]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["delivered"].as_array().unwrap().len(), 1);
    assert!(!a
        .hub
        .state
        .path()
        .join("users/user01/user/workflows/Solo.json")
        .exists());

    // Mistakes are named, and nothing is written.
    let api_format = json!({"3": {"class_type": "KSampler", "inputs": {}}});
    for (body, want, needle) in [
        (
            json!({"name": "X", "workflow": api_format}),
            400,
            "API-format",
        ),
        (
            json!({"name": "X", "workflow": [1]}),
            400,
            "not a ComfyUI workflow",
        ),
        (
            json!({"name": "../x", "workflow": workflow}),
            400,
            "no slashes",
        ),
        (
            json!({"name": "X", "workflow": workflow, "to": ["user09"]}),
            400,
            "user09",
        ),
    ] {
        let (status, v) = a.post("/push_workflow", body).await;
        assert_eq!(status.as_u16(), want, "{v}");
        assert!(v.to_string().contains(needle), "{needle}: {v}");
    }
    let huge = json!({"name": "Huge", "workflow": {"nodes": [], "pad": "x".repeat(9 << 20)}});
    assert_eq!(a.post("/push_workflow", huge).await.0, 413);
    for u in ["user01", "user02", "user03"] {
        let dir = a.hub.state.path().join(format!("users/{u}/user/workflows"));
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().into_string().unwrap();
            assert!(
                name.starts_with("Lesson 2") || name == "Solo.json",
                "{u}: {name} should not exist"
            );
        }
    }
}
