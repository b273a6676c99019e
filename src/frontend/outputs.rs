//! `GET /<name>/outputs`: this participant's own outputs, newest first, as
//! a page — thumbnails (videos play), each with a download link, and the
//! whole lot as one zip. Behind the participant's login like every route
//! of theirs; it only ever reads their own `output/` folder. The editor's
//! status pill links to it.

use super::FrontendState;
use crate::archive;
use crate::auth::escape;
use crate::error::AppError;
use crate::paths::url_component;
use axum::extract::State;
use axum::response::Html;

/// The most files the page shows (the zip has all of them).
const MOST: usize = 500;

/// `GET /<name>/outputs`.
pub async fn page(State(s): State<FrontendState>) -> Result<Html<String>, AppError> {
    let root = s.user_dir.join("output");
    let mut files = tokio::task::spawn_blocking(move || archive::walk(&root))
        .await
        .map_err(AppError::internal)?;
    files.sort_by(|a, b| b.modified.cmp(&a.modified).then(a.rel.cmp(&b.rel)));
    let total = files.len();
    let mut items = String::new();
    for f in files.iter().take(MOST) {
        let (subfolder, name) = f.rel.rsplit_once('/').unwrap_or(("", &f.rel));
        let view = format!(
            "view?filename={}&subfolder={}&type=output",
            url_component(name),
            url_component(subfolder)
        );
        let lower = name.to_ascii_lowercase();
        let media = if [".mp4", ".webm", ".mov"].iter().any(|e| lower.ends_with(e)) {
            format!(r#"<video src="{view}" controls muted loop preload="metadata"></video>"#)
        } else if [".png", ".jpg", ".jpeg", ".webp", ".gif"]
            .iter()
            .any(|e| lower.ends_with(e))
        {
            format!(
                r#"<img src="{view}" loading="lazy" alt="{}">"#,
                escape(name)
            )
        } else {
            r#"<div class="file">file</div>"#.to_string()
        };
        items.push_str(&format!(
            r#"<figure data-file="{rel}">{media}<figcaption><a href="{view}" download="{name}">{rel}</a> <span>{kb} KB</span></figcaption></figure>"#,
            rel = escape(&f.rel),
            name = escape(name),
            kb = f.len.div_ceil(1024),
        ));
    }
    let who = escape(&s.participant);
    let note = if total > MOST {
        format!("the newest {MOST} of {total}; the zip has all of them")
    } else {
        format!("{total} file(s)")
    };
    let empty = if total == 0 {
        r#"<p class="empty">Nothing yet: what you generate in the editor appears here.</p>"#
    } else {
        ""
    };
    Ok(Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{who}'s outputs</title><link rel="icon" href="data:,">
<style>
:root {{ color-scheme: dark; }}
body {{ margin:0; padding:16px 20px; background:#202020; color:#ddd; font:14px/1.4 Inter, Arial, sans-serif; }}
a {{ color:#8ab4ff; }}
header {{ display:flex; gap:16px; align-items:baseline; flex-wrap:wrap; margin-bottom:14px; }}
h1 {{ font-size:20px; margin:0; color:#fff; }}
.grid {{ display:grid; grid-template-columns:repeat(auto-fill, minmax(220px, 1fr)); gap:12px; }}
figure {{ margin:0; background:#2b2b2b; border:1px solid #3c3c3c; border-radius:6px; overflow:hidden; }}
figure img, figure video {{ display:block; width:100%; height:200px; object-fit:contain; background:#111; }}
.file {{ height:200px; display:grid; place-items:center; color:#888; }}
figcaption {{ padding:6px 8px; font-size:12px; word-break:break-all; }}
figcaption span {{ color:#888; }}
.empty {{ color:#aaa; }}
</style></head><body>
<header><h1>{who}'s outputs</h1><span>{note}</span>
<a href="api/comfy-multi/outputs.zip" download>Download all (zip)</a>
<a href="./">Back to the editor</a></header>
{empty}<div class="grid">{items}</div>
</body></html>"#
    )))
}
