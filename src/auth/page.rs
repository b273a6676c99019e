//! The login page shared by participants' editors and the admin dashboard,
//! in the ComfyUI look (dark, one field, no external assets).

use axum::response::Html;

/// HTML-escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A login page in the ComfyUI editor's look: one password field posted to
/// `action`. `message` (escaped) explains a refusal.
pub fn login_page(
    subtitle: &str,
    action: &str,
    label: &str,
    message: Option<&str>,
) -> Html<String> {
    page(subtitle, action, label, message, None, "")
}

/// The workshop's front door: a name and a password field posted to
/// `action` (the name typed before is kept after a refusal), and `footer`
/// (HTML, not escaped: the caller's own markup) under the form.
pub fn front_door_page(
    workshop: &str,
    action: &str,
    name: &str,
    message: Option<&str>,
    footer: &str,
) -> Html<String> {
    page(
        workshop,
        action,
        "Password or join code",
        message,
        Some(name),
        footer,
    )
}

fn page(
    subtitle: &str,
    action: &str,
    label: &str,
    message: Option<&str>,
    name: Option<&str>,
    footer: &str,
) -> Html<String> {
    let message = message
        .map(|m| format!(r#"<p class="err" role="alert">{}</p>"#, escape(m)))
        .unwrap_or_default();
    let (subtitle, action, label) = (escape(subtitle), escape(action), escape(label));
    let (name_field, focus) = match name {
        Some(n) => (
            format!(
                r#"<label for="name">Your name (as on your card)</label>
<input id="name" name="name" autocomplete="username" autocapitalize="none" spellcheck="false" value="{}" {}required>
<div class="gap"></div>"#,
                escape(n),
                if n.is_empty() { "autofocus " } else { "" }
            ),
            name.is_some_and(|n| !n.is_empty()),
        ),
        None => (String::new(), true),
    };
    let autofocus = if focus { " autofocus" } else { "" };
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ComfyUI · {subtitle}</title>
<link rel="icon" href="data:,">
<style>
:root {{ color-scheme: dark; }}
body {{ margin:0; min-height:100vh; display:grid; place-items:center;
  background:#202020; color:#ddd; font:15px/1.4 Inter, Arial, sans-serif; }}
form {{ background:#353535; border:1px solid #4e4e4e; border-radius:8px;
  padding:28px 32px; width:min(320px, 86vw); box-shadow:0 8px 24px #0008; }}
h1 {{ margin:0 0 4px; font-size:22px; color:#fff; }}
p {{ margin:0 0 18px; color:#aaa; }}
label {{ display:block; margin-bottom:6px; }}
input {{ box-sizing:border-box; width:100%; padding:9px 10px; border-radius:6px;
  border:1px solid #4e4e4e; background:#222; color:#fff; font-size:16px; }}
input:focus {{ outline:2px solid #4a8cff; }}
button {{ margin-top:16px; width:100%; padding:10px; border:0; border-radius:6px;
  background:#4a8cff; color:#fff; font-size:15px; cursor:pointer; }}
.err {{ color:#ff8080; margin:12px 0 0; }}
.gap {{ height:12px; }}
.foot {{ margin:16px 0 0; font-size:13px; }}
.foot a {{ color:#8ab4ff; }}
</style></head>
<body><form method="post" action="{action}">
<h1>ComfyUI</h1><p>{subtitle}</p>
{name_field}<label for="password">{label}</label>
<input id="password" name="password" type="password" autocomplete="current-password"{autofocus} required>
<button type="submit">Log in</button>{message}{footer}
</form>
<script>
// A join link (the QR code on a join card) carries the password in the
// fragment, which never reaches a server or a log: fill it in and log in.
function joinLink() {{
  var m = /(?:^#|&)code=([^&]+)/.exec(location.hash);
  if (!m) return;
  history.replaceState(null, "", location.pathname + location.search);
  var f = document.forms[0];
  f.password.value = decodeURIComponent(m[1]);
  f.submit();
}}
joinLink();
window.addEventListener("hashchange", joinLink);
</script></body></html>"#
    ))
}
