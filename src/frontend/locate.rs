//! Finding the ComfyUI web app's files (`comfyui-frontend-package`'s
//! `static/`): the configured directory, else where
//! `scripts/frontend/install.sh` puts the pinned wheel, else the Python
//! package when it is importable (a ComfyUI venv has it).

use anyhow::Context;
use std::path::{Path, PathBuf};

/// The frontend version the boot API is written against.
pub const PINNED_FRONTEND: &str = "1.58.1";

fn has_app(dir: &Path) -> bool {
    dir.join("index.html").is_file()
}

/// The static dir to serve, or an error saying how to get one.
pub fn find_static_dir(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = configured {
        anyhow::ensure!(
            has_app(dir),
            "{} holds no index.html (the ComfyUI frontend's static dir)",
            dir.display()
        );
        return Ok(dir.to_path_buf());
    }
    let cache = std::env::var_os("COMFY_MULTI_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/comfy-multi")));
    if let Some(cache) = cache {
        let dir = cache
            .join(format!("comfyui-frontend-{PINNED_FRONTEND}"))
            .join("static");
        if has_app(&dir) {
            return Ok(dir);
        }
    }
    let python = std::process::Command::new(
        std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into()),
    )
    .args([
        "-c",
        "import comfyui_frontend_package as p, os; print(os.path.join(os.path.dirname(p.__file__), 'static'))",
    ])
    .stderr(std::process::Stdio::null())
    .output();
    if let Ok(out) = python {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_app(&dir) {
            return Ok(dir);
        }
    }
    None.context(
        "the ComfyUI web app was not found: run scripts/frontend/install.sh \
         (or set frontend.static_dir to a comfyui-frontend-package static/ directory)",
    )
}

/// The pre-loaded workflows to seed: the configured directory, else the
/// repository's `workflows/` when run from a checkout.
pub fn find_workflows_dir(configured: Option<&Path>) -> Option<PathBuf> {
    match configured {
        Some(dir) => Some(dir.to_path_buf()),
        None => Some(PathBuf::from("workflows")).filter(|d| d.is_dir()),
    }
}

/// Seeds `user_dir` with the pre-loaded workflows (never overwriting a
/// participant's edits); problems are logged, not fatal.
pub async fn seed_participant(workflows: Option<&Path>, participant: &str, user_dir: &Path) {
    let Some(dir) = workflows else { return };
    match super::seed_workflows(dir, user_dir).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(participant, added = n, "pre-loaded workflows seeded"),
        Err(e) => tracing::warn!(participant, "seeding workflows from {}: {e}", dir.display()),
    }
}
