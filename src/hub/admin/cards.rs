//! Join cards: `GET /admin/cards` is a printable page (A4, eight cards a
//! sheet, cut along the dashed lines) with one card per participant — the
//! address of their editor and their password, in large type. The
//! passwords come from the credentials file, read when the page is asked
//! for; a participant without one gets "ask the instructor". One
//! self-contained page (no external assets), never cached.

use crate::auth::{escape, CredentialsFile, ADMIN};
use crate::error::AppError;
use crate::hub::HubState;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

const PER_SHEET: usize = 8;

const STYLE: &str = r#"
@page { size: A4; margin: 0; }
* { box-sizing: border-box; }
html, body { margin: 0; padding: 0; }
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; color: #111; background: #ddd; }
.bar { padding: 12px 16px; font-size: 15px; background: #222; color: #eee; }
.bar button { font-size: 15px; margin-left: 12px; padding: 4px 14px; }
.sheet { width: 210mm; height: 297mm; margin: 8mm auto; background: #fff; display: grid;
  grid-template-columns: 1fr 1fr; grid-template-rows: repeat(4, 1fr); box-shadow: 0 1px 6px rgba(0,0,0,.3); }
.card { border: 0.3mm dashed #999; padding: 7mm 8mm; display: flex; flex-direction: column;
  justify-content: space-between; overflow: hidden; position: relative; }
.qr { position: absolute; right: 7mm; top: 7mm; width: 24mm; }
.qr svg { width: 100%; height: auto; }
.direct { font-size: 7pt; color: #777; margin-top: 2mm; }
.title { font-size: 10pt; text-transform: uppercase; letter-spacing: .08em; color: #555; }
.name { font-size: 26pt; font-weight: bold; }
.label { font-size: 9pt; color: #555; margin-top: 2mm; }
.url, .password { font-family: "DejaVu Sans Mono", Consolas, "Courier New", monospace; word-break: break-all; }
.url { font-size: 12pt; }
.password { font-size: 19pt; font-weight: bold; letter-spacing: .04em; }
.ask { font-size: 14pt; font-style: italic; }
@media print {
  body { background: #fff; }
  .bar { display: none; }
  .sheet { margin: 0; box-shadow: none; break-after: page; page-break-after: always; }
  .sheet:last-child { break-after: auto; page-break-after: auto; }
}
"#;

/// Where participants open their editor: `public_url`, else the address
/// the instructor reached the hub by.
fn base_url(s: &HubState, headers: &HeaderMap) -> String {
    if let Some(u) = &s.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// A join link's QR code, as inline SVG (no external assets).
fn qr_svg(link: &str) -> String {
    match qrcode::QrCode::new(link.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(120, 120)
            .quiet_zone(false)
            .build()
            .replacen("<?xml version=\"1.0\" standalone=\"yes\"?>", "", 1),
        Err(_) => String::new(),
    }
}

/// The link that logs `name` straight in: the password rides in the
/// fragment, which browsers never send to a server.
fn join_link(base: &str, name: &str, password: &str) -> String {
    let code = crate::paths::url_component(password);
    format!("{base}/{name}/login#code={code}")
}

fn card(workshop: &str, name: &str, base: &str, password: Option<&str>) -> String {
    let secret = match password {
        Some(p) => format!(
            r#"<div class="label">Password</div><div class="password">{}</div><div class="qr" title="scan to log in">{}</div>"#,
            escape(p),
            qr_svg(&join_link(base, name, p))
        ),
        None => r#"<div class="label">Password</div><div class="ask">ask the instructor</div>"#
            .to_string(),
    };
    format!(
        r#"<div class="card"><div class="title">{}</div><div class="name">{}</div><div><div class="label">Open in your browser, log in with your name</div><div class="url">{}/</div>{secret}<div class="direct">or directly: {}/{}/</div></div></div>"#,
        escape(workshop),
        escape(name),
        escape(base),
        escape(base),
        escape(name),
    )
}

/// The page for `names` (in this order).
fn page(workshop: &str, names: &[String], base: &str, logins: &CredentialsFile) -> String {
    let mut sheets = String::new();
    for chunk in names.chunks(PER_SHEET) {
        sheets.push_str(r#"<section class="sheet">"#);
        for n in chunk {
            sheets.push_str(&card(
                workshop,
                n,
                base,
                logins.get(n).map(|c| c.password.as_str()),
            ));
        }
        sheets.push_str("</section>");
    }
    if names.is_empty() {
        sheets.push_str(r#"<p class="bar">No participants are configured.</p>"#);
    }
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Join cards</title><meta name="viewport" content="width=device-width"><style>{STYLE}</style></head><body><div class="bar">{} join cards, {PER_SHEET} per A4 sheet: print at 100 % and cut along the dashed lines.<button type="button" onclick="window.print()">Print</button></div>{sheets}</body></html>"#,
        names.len()
    )
}

/// `GET /admin/cards`.
pub async fn cards(State(s): State<HubState>, headers: HeaderMap) -> Result<Response, AppError> {
    let logins = s.current_logins(None).await?;
    let mut names: Vec<String> = s.participants.iter().cloned().collect();
    if names.is_empty() {
        names = logins
            .logins
            .keys()
            .filter(|n| n.as_str() != ADMIN)
            .cloned()
            .collect();
    }
    let html = page(&s.door.workshop, &names, &base_url(&s, &headers), &logins);
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Credentials;

    #[test]
    fn cards_escape_and_fall_back_to_asking() {
        let mut logins = CredentialsFile::default();
        logins.logins.insert(
            "user01".into(),
            Credentials {
                password: "a<b>&\"c".into(),
                token: "t".repeat(16),
            },
        );
        let names: Vec<String> = (1..=9).map(|i| format!("user{i:02}")).collect();
        let html = page("Comfy <Day>", &names, "https://ws.example/<x>", &logins);
        assert!(html.contains("Comfy &lt;Day&gt;"));
        assert!(html.contains("a&lt;b&gt;&amp;&quot;c"));
        assert!(!html.contains("<x>"));
        assert!(html.contains("https://ws.example/&lt;x&gt;/user09/"));
        assert_eq!(html.matches("ask the instructor").count(), 8);
        assert_eq!(html.matches(r#"class="sheet""#).count(), 2);
    }
}
