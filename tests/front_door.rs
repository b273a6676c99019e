//! The workshop's front door at `/`, on a real hub and Redis with user01's
//! real editor on the same address (as `comfy-multi up` and nginx serve
//! them): the right name and password lead into that participant's editor;
//! a wrong password and an unknown name get the same answer; a password the
//! instructor reset replaces the old one at the door too. The same path in
//! headless Chromium (tests/browser/front_door.mjs) ends in a booted editor.

mod support;

use reqwest::redirect::Policy;
use reqwest::StatusCode;
use std::path::Path;
use support::hub::{participant_login, TestHub, ADMIN_TOKEN};
use support::RedisServer;

/// A hub that also serves user01's editor, with the login the door checks.
async fn workshop(redis: &RedisServer) -> TestHub {
    TestHub::spawn_with_editor(redis, "user01", participant_login("user01")).await
}

/// The instructor resets `name`'s login (admin API); the new password.
async fn reset_password(hub: &TestHub, name: &str) -> String {
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/admin/api/users/{name}/reset", hub.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["password"].as_str().unwrap().to_string()
}

async fn knock(hub: &TestHub, name: &str, password: &str) -> (StatusCode, String, String) {
    let r = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/", hub.url))
        .form(&[("name", name), ("password", password)])
        .send()
        .await
        .unwrap();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status(), location, r.text().await.unwrap())
}

#[tokio::test]
async fn the_front_door_leads_the_right_name_and_password_into_that_editor_and_names_nobody() {
    let redis = RedisServer::start();
    let hub = workshop(&redis).await;
    let door = reqwest::get(format!("{}/", hub.url)).await.unwrap();
    assert_eq!(door.status(), 200);
    let html = door.text().await.unwrap();
    assert!(html.contains("Test workshop") && html.contains(r#"id="name""#));

    let pw = participant_login("user01").password;
    let (status, _, wrong) = knock(&hub, "user01", "not-it").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(wrong.contains("Wrong name or password."));
    let (status, _, unknown) = knock(&hub, "user99", &pw).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        unknown.replace("user99", "user01"),
        wrong,
        "an unknown name and a wrong password look the same"
    );
    let (status, _, _) = knock(&hub, "user02", &pw).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "another participant's password"
    );

    // Typed from the card, any case: on to user01's own login, which sets
    // the session and opens the editor.
    let (status, location, _) = knock(&hub, " User01 ", &pw).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(location, "/user01/login");
    // What the browser does next: posts the same form there, gets the
    // session cookie and the editor.
    let plain = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let r = plain
        .post(format!("{}{location}", hub.url))
        .form(&[("name", "user01"), ("password", pw.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/user01/");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let api = plain
        .get(format!("{}/user01/api/queue", hub.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200, "logged in to user01's API");
    let other = plain
        .get(format!("{}/user02/api/queue", hub.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_ne!(other.status(), 200, "and to nobody else's");

    // The instructor resets user01's password: the door follows.
    let new_pw = &reset_password(&hub, "user01").await;
    assert_eq!(knock(&hub, "user01", &pw).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        knock(&hub, "user01", new_pw).await.0,
        StatusCode::TEMPORARY_REDIRECT
    );
}

#[tokio::test]
async fn guessing_at_the_front_door_is_rate_limited() {
    let redis = RedisServer::start();
    let hub = workshop(&redis).await;
    let mut limited = false;
    for i in 0..40 {
        let (status, _, body) = knock(&hub, "user01", &format!("guess-{i}")).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(body.contains("Too many attempts"), "{body}");
            limited = true;
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert!(limited, "40 guesses and never slowed down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_front_door_opens_the_participants_editor() {
    let install = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser/install.sh"
    ))
    .output()
    .unwrap();
    assert!(install.status.success());
    let redis = RedisServer::start();
    let hub = workshop(&redis).await;
    support::store_catalogue(&hub.queue).await;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/front-door");
    let _ = std::fs::remove_dir_all(&out);
    let status = tokio::process::Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/front_door.mjs"
        ))
        .args(["--base", &hub.url, "--name", "user01"])
        .args(["--password", &participant_login("user01").password])
        .args(["--workshop", "Test workshop"])
        .arg("--out")
        .arg(&out)
        .status()
        .await
        .unwrap();
    let report = std::fs::read_to_string(out.join("report.json")).unwrap_or_default();
    assert!(status.success(), "front_door.mjs: {report}");
}

#[tokio::test]
async fn a_participants_outputs_page_shows_their_own_files_newest_first_and_nobody_elses() {
    let redis = RedisServer::start();
    let hub = workshop(&redis).await;
    let put = |u: &str, rel: &str, age_s: u64| {
        let p = hub.dir(u, "output").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"png").unwrap();
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age_s);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    put("user01", "old.png", 600);
    put("user01", "job-1/new image.png", 5);
    put("user01", "clip.mp4", 60);
    put("user02", "secret-of-user02.png", 1);
    let url = format!("{}/user01/outputs", hub.url);
    let page = reqwest::Client::new()
        .get(&url)
        .bearer_auth(participant_login("user01").token)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let at = |s: &str| {
        html.find(s)
            .unwrap_or_else(|| panic!("{s} missing: {html}"))
    };
    assert!(at("job-1/new image.png") < at("clip.mp4") && at("clip.mp4") < at("old.png"));
    assert!(
        html.contains("view?filename=new%20image.png&amp;subfolder=job-1&amp;type=output")
            || html.contains("view?filename=new%20image.png&subfolder=job-1&type=output")
    );
    assert!(html.contains("<video"), "a video plays in place");
    assert!(!html.contains("secret-of-user02"));
    // Behind user01's login: nobody else's token, no token at all.
    for token in [Some(participant_login("user02").token), None] {
        let mut r = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap()
            .get(&url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let status = r.send().await.unwrap().status();
        assert!(status == 401 || status == 303, "{status}");
    }
}

#[tokio::test]
async fn join_cards_carry_a_qr_link_that_follows_a_password_reset() {
    let redis = RedisServer::start();
    let hub = workshop(&redis).await;
    let cards = |hub_url: String| async move {
        reqwest::Client::new()
            .get(format!("{hub_url}/admin/cards"))
            .bearer_auth(ADMIN_TOKEN)
            .header("host", "ws.example:8080")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let page = cards(hub.url.clone()).await;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/join-cards");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("cards.html"), &page).unwrap();
    assert!(page.contains("Test workshop"), "the workshop's name");
    assert!(
        page.contains(">http://ws.example:8080/<"),
        "the one address"
    );
    assert_eq!(page.matches("<svg").count(), 3, "a QR code per participant");
    let old = participant_login("user01").password;
    let new_pw = reset_password(&hub, "user01").await;
    let page = cards(hub.url.clone()).await;
    assert!(page.contains(&new_pw));
    assert!(
        !page.contains(&old),
        "the old password (and its link) is gone"
    );
}
