//! Logging in to a participant's editor: the login page, the session cookie
//! (HttpOnly, SameSite, path-scoped, Secure behind TLS), bearer tokens for
//! scripts, and what is refused — wrong passwords, another participant's
//! cookie or token, forged cookies, too many attempts.

mod support;

use comfy_multi::auth::Credentials;
use comfy_multi::frontend::FrontendState;
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use support::report::{Record, Section};
use support::RedisServer;

struct Site {
    _redis: RedisServer,
    _dir: tempfile::TempDir,
    base: String,
    creds: Vec<Credentials>,
}

/// user07 and user08 on one address (as behind nginx), each with a login.
async fn spawn_site(secure: bool) -> Site {
    let redis = RedisServer::start();
    let queue = support::queue(&redis, support::test_settings()).await;
    let dir = tempfile::tempdir().unwrap();
    let static_dir = dir.path().join("static");
    std::fs::create_dir_all(static_dir.join("assets")).unwrap();
    std::fs::write(static_dir.join("index.html"), "<html>editor</html>").unwrap();
    std::fs::write(static_dir.join("assets/app.js"), "console.log(1)").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut app = axum::Router::new();
    let mut creds = vec![];
    for u in ["user07", "user08"] {
        let c = Credentials::generate();
        let s = FrontendState::new(
            u,
            queue.clone(),
            static_dir.clone(),
            dir.path().join("users").join(u),
            1 << 20,
        )
        .with_login(c.clone(), b"session-secret", secure);
        app = app.merge(comfy_multi::frontend::routes(s));
        creds.push(c);
    }
    let app = app.merge(comfy_multi::frontend::assets(&static_dir));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Site {
        _redis: redis,
        _dir: dir,
        base,
        creds,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn login(site: &Site, user: &str, password: &str, from: &str) -> reqwest::Response {
    client()
        .post(format!("{}/{user}/login", site.base))
        .header("x-real-ip", from)
        .form(&[("password", password)])
        .send()
        .await
        .unwrap()
}

fn session_cookie(r: &reqwest::Response) -> String {
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn a_browser_without_a_session_is_sent_to_the_login_page() {
    let site = spawn_site(false).await;
    let r = client()
        .get(format!("{}/user07/", site.base))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/user07/login");
    let page = client()
        .get(format!("{}/user07/login", site.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("user07") && html.contains("type=\"password\""));
    // API calls get 401, not a page.
    let api = client()
        .get(format!("{}/user07/api/settings", site.base))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    // The app's own files are public.
    let asset = client()
        .get(format!("{}/user07/assets/app.js", site.base))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_right_password_gives_a_cookie_for_this_participant_only() {
    let site = spawn_site(false).await;
    let r = login(&site, "user07", &site.creds[0].password, "10.0.0.1").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/user07/");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/user07/"] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    let cookie = session_cookie(&r);
    let get = |url: String| {
        let cookie = cookie.clone();
        async move {
            client()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(get(format!("{}/user07/", site.base)).await, StatusCode::OK);
    assert_eq!(
        get(format!("{}/user07/api/settings", site.base)).await,
        StatusCode::OK
    );
    assert_eq!(
        get(format!("{}/user08/api/settings", site.base)).await,
        StatusCode::UNAUTHORIZED,
        "user07's cookie on user08's server"
    );
    // The socket is guarded too.
    let ws = format!(
        "{}/user08/ws?clientId=x",
        site.base.replace("http://", "ws://")
    );
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws.as_str())
            .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        ws.replace("user08", "user07").as_str(),
    )
    .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
}

#[tokio::test]
async fn behind_tls_the_cookie_is_secure() {
    let site = spawn_site(true).await;
    let r = login(&site, "user07", &site.creds[0].password, "10.0.0.1").await;
    let set = r.headers()["set-cookie"].to_str().unwrap();
    assert!(set.contains("Secure"), "{set}");
}

#[tokio::test]
async fn a_wrong_password_is_refused_without_a_cookie() {
    let site = spawn_site(false).await;
    let r = login(&site, "user07", &site.creds[1].password, "10.0.0.1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("set-cookie").is_none());
    let html = r.text().await.unwrap();
    assert!(html.contains("Wrong password"));
    assert!(!html.contains(&site.creds[1].password));
}

#[tokio::test]
async fn forged_and_foreign_cookies_and_tokens_are_refused() {
    let site = spawn_site(false).await;
    let r = login(&site, "user07", &site.creds[0].password, "10.0.0.1").await;
    let cookie = session_cookie(&r);
    let mut forged = cookie.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let url = format!("{}/user07/api/settings", site.base);
    for c in [
        forged,
        "cm_session=4102444800.AAAA.AAAA".to_string(),
        "cm_session=".to_string(),
    ] {
        let s = client()
            .get(&url)
            .header("cookie", &c)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{c}");
    }
    let with_token = |t: String| {
        let url = url.clone();
        async move {
            client()
                .get(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        with_token(site.creds[0].token.clone()).await,
        StatusCode::OK
    );
    assert_eq!(
        with_token(site.creds[1].token.clone()).await,
        StatusCode::UNAUTHORIZED,
        "user08's token"
    );
    assert_eq!(
        with_token(site.creds[0].password.clone()).await,
        StatusCode::UNAUTHORIZED,
        "the password is not a token"
    );
}

#[tokio::test]
async fn repeated_wrong_passwords_are_rate_limited_per_client() {
    let site = spawn_site(false).await;
    let mut statuses = vec![];
    for _ in 0..7 {
        statuses.push(login(&site, "user07", "guess", "10.9.9.9").await.status());
    }
    let limited = login(&site, "user07", &site.creds[0].password, "10.9.9.9").await;
    let wait: Option<u64> = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let cookie_when_limited = limited.headers().get("set-cookie").is_some();
    // The participant at another machine still gets in.
    let ok = login(&site, "user07", &site.creds[0].password, "10.0.0.2").await;
    let mut r = Record::new(
        Section::Input,
        "input-auth-login-brute-force",
        "Repeated wrong passwords from one client on a participant's login",
    )
    .setup("7 wrong passwords from one x-real-ip, then the right one from it, then the right one from another address")
    .measure("wrong passwords answered 401", statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count())
    .measure("right password from the guessing client", limited.status().as_u16())
    .measure("Retry-After (s)", wait.map_or("none".into(), |w| w.to_string()))
    .measure("right password from another address", ok.status().as_u16());
    r.passed = statuses[..5].iter().all(|s| *s == StatusCode::UNAUTHORIZED)
        && limited.status() == StatusCode::TOO_MANY_REQUESTS
        && wait.is_some_and(|w| w >= 1)
        && !cookie_when_limited
        && ok.status() == StatusCode::SEE_OTHER;
    r.write();
    assert!(
        statuses[..5].iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(wait.unwrap() >= 1);
    assert!(!cookie_when_limited);
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn logging_out_clears_the_cookie() {
    let site = spawn_site(false).await;
    let r = client()
        .post(format!("{}/user07/logout", site.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("cm_session=;") && set.contains("Max-Age=0"),
        "{set}"
    );
}

/// A cookie signed with the participant's real key but already expired
/// (issued with no time to live) is refused, while one from the same key
/// with the normal lifetime opens the server — so the refusal is the
/// expiry, not a wrong signature.
#[tokio::test]
async fn an_expired_session_cookie_is_refused() {
    let site = spawn_site(false).await;
    let key = comfy_multi::auth::SessionKey::derive(
        b"session-secret",
        "participant",
        "user07",
        &site.creds[0],
    );
    let url = format!("{}/user07/api/settings", site.base);
    let status = |cookie: String| {
        let url = url.clone();
        async move {
            client()
                .get(url)
                .header("cookie", format!("cm_session={cookie}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let expired = key.issue(std::time::Duration::ZERO);
    let fresh = key.issue(comfy_multi::auth::SESSION_TTL);
    let expired_status = status(expired.clone()).await;
    let fresh_status = status(fresh).await;
    // The same expired cookie on the socket.
    let ws = format!(
        "{}/user07/ws?clientId=x",
        site.base.replace("http://", "ws://")
    );
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws.as_str())
            .unwrap();
    req.headers_mut()
        .insert("cookie", format!("cm_session={expired}").parse().unwrap());
    let ws_refused = tokio_tungstenite::connect_async(req).await.is_err();
    let mut r = Record::new(
        Section::Input,
        "input-auth-expired-session",
        "An expired but correctly signed participant session cookie",
    )
    .setup("cookie from the participant's own session key with no time to live, on the API and the socket; the same key's normal cookie as the control")
    .measure("expired cookie", expired_status.as_u16())
    .measure("expired cookie on /ws", if ws_refused { "refused" } else { "accepted" })
    .measure("control cookie", fresh_status.as_u16());
    r.passed =
        expired_status == StatusCode::UNAUTHORIZED && ws_refused && fresh_status == StatusCode::OK;
    r.write();
    assert_eq!(expired_status, StatusCode::UNAUTHORIZED);
    assert!(ws_refused, "the socket took an expired cookie");
    assert_eq!(fresh_status, StatusCode::OK, "the control cookie");
}

/// Guesses spread over many client addresses (x-real-ip is whatever the
/// proxy says) still meet the per-login cap.
#[tokio::test]
async fn guesses_from_many_addresses_meet_the_per_login_cap() {
    let site = spawn_site(false).await;
    let mut statuses = vec![];
    for i in 0..40 {
        let r = login(
            &site,
            "user07",
            "guess",
            &format!("10.7.{}.{}", i / 200, i % 200),
        )
        .await;
        assert!(r.headers().get("set-cookie").is_none());
        statuses.push(r.status());
    }
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let other = statuses
        .iter()
        .filter(|s| **s != StatusCode::TOO_MANY_REQUESTS && **s != StatusCode::UNAUTHORIZED)
        .count();
    // user08's login is not capped by user07's guesses.
    let theirs = login(&site, "user08", &site.creds[1].password, "10.8.0.1").await;
    let mut r = Record::new(
        Section::Input,
        "input-auth-login-cap",
        "Password guesses from 40 different client addresses against one login",
    )
    .setup("40 wrong passwords for user07, each from its own x-real-ip (no per-client limit applies); then user08's right password")
    .measure("attempts", statuses.len())
    .measure("rate-limited (429)", limited)
    .measure("other than 401/429", other)
    .measure("another login", theirs.status().as_u16());
    r.passed = limited > 0 && other == 0 && theirs.status() == StatusCode::SEE_OTHER;
    r.write();
    assert!(limited > 0, "no cap over 40 guesses: {statuses:?}");
    assert_eq!(other, 0, "{statuses:?}");
    assert_eq!(theirs.status(), StatusCode::SEE_OTHER);
}
