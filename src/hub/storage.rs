//! The storage watch: free space on the filesystems the workshop writes to
//! (the state dir with everyone's files, and Redis's data dir), checked
//! every few seconds by the hub.
//!
//! Why this exists: a workshop of 200 people making images and videos fills
//! disks, and a full disk must be a warning, not an outage — Redis
//! (`appendfsync always`) exits on a short AOF write. Below the warning
//! threshold the instructor is told (journal, dashboard banner, CLI
//! `status`, `/metrics`); below the refusal threshold new submits are
//! refused with a clear message (enqueue.lua reads the level the hub
//! publishes; running jobs still finish), so Redis is never the first to
//! find out. The published level expires if the hub stops publishing.

use crate::config::StorageConfig;
use crate::queue::Queue;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// One filesystem as last measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Filesystem {
    /// A directory on it that the workshop uses (what it is named by).
    pub path: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

impl Filesystem {
    fn free_percent(&self) -> f64 {
        if self.total_bytes == 0 {
            return 100.0;
        }
        self.free_bytes as f64 * 100.0 / self.total_bytes as f64
    }
}

/// How full the workshop's storage is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warn,
    Refuse,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Refuse => "refuse",
        }
    }
}

/// The filesystem holding `path`, from one `statvfs` of it.
fn filesystem(path: &Path, st: &nix::sys::statvfs::Statvfs) -> Filesystem {
    let frsize = st.fragment_size();
    Filesystem {
        path: path.display().to_string(),
        free_bytes: st.blocks_available() * frsize,
        total_bytes: st.blocks() * frsize,
    }
}

/// The level of one filesystem under the thresholds.
pub fn level(fs: &Filesystem, t: &StorageConfig) -> Level {
    let pct = fs.free_percent();
    if pct < t.refuse_free_percent || fs.free_bytes < t.refuse_free_bytes {
        Level::Refuse
    } else if pct < t.warn_free_percent || fs.free_bytes < t.warn_free_bytes {
        Level::Warn
    } else {
        Level::Ok
    }
}

/// Measures every watched directory (one entry per filesystem) and the
/// worst level among them.
pub fn check(paths: &[PathBuf], t: &StorageConfig) -> (Level, Vec<(Filesystem, Level)>) {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in paths {
        let Ok(st) = nix::sys::statvfs::statvfs(p.as_path()) else {
            continue;
        };
        if !seen.insert(st.filesystem_id()) {
            continue;
        }
        let fs = filesystem(p, &st);
        let l = level(&fs, t);
        out.push((fs, l));
    }
    let worst = out
        .iter()
        .map(|(_, l)| *l)
        .max_by_key(|l| *l as u8)
        .unwrap_or(Level::Ok);
    (worst, out)
}

/// Watches until `shutdown`: the state dir, and Redis's data dir when
/// Redis runs on this machine (it answers `CONFIG GET dir` with a local
/// directory).
pub async fn watch(
    queue: Queue,
    state_dir: PathBuf,
    t: StorageConfig,
    shutdown: CancellationToken,
) {
    let every = Duration::from_millis(t.check_interval_ms.max(100));
    let mut last = Level::Ok;
    loop {
        let mut paths = vec![state_dir.clone()];
        if let Ok(Some(dir)) = queue.redis_data_dir().await {
            let dir = PathBuf::from(dir);
            if dir.is_dir() {
                paths.push(dir);
            }
        }
        let (worst, filesystems) = check(&paths, &t);
        let report = serde_json::json!({
            "level": worst,
            "filesystems": filesystems.iter().map(|(fs, l)| {
                serde_json::json!({"path": fs.path, "free_bytes": fs.free_bytes,
                    "total_bytes": fs.total_bytes, "level": l})
            }).collect::<Vec<_>>(),
        });
        if worst != last {
            let detail: Vec<String> = filesystems
                .iter()
                .map(|(fs, _)| {
                    format!(
                        "{} {} MB free of {} MB",
                        fs.path,
                        fs.free_bytes >> 20,
                        fs.total_bytes >> 20
                    )
                })
                .collect();
            match worst {
                Level::Refuse => tracing::error!(
                    "storage nearly full, new jobs are refused: {}",
                    detail.join("; ")
                ),
                Level::Warn => tracing::warn!("storage is getting full: {}", detail.join("; ")),
                Level::Ok => tracing::info!("storage is fine again: {}", detail.join("; ")),
            }
            last = worst;
        }
        let ttl = (every * 6).max(Duration::from_secs(30));
        if let Err(e) = queue
            .set_storage(worst.as_str(), &report.to_string(), ttl)
            .await
        {
            tracing::debug!("publishing the storage level: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> StorageConfig {
        StorageConfig::default()
    }

    fn fs(free: u64, total: u64) -> Filesystem {
        Filesystem {
            path: "/x".into(),
            free_bytes: free,
            total_bytes: total,
        }
    }

    #[test]
    fn the_level_follows_the_free_share_or_the_free_bytes_whichever_is_worse() {
        const G: u64 = 1 << 30;
        assert_eq!(level(&fs(500 * G, 1000 * G), &t()), Level::Ok);
        assert_eq!(level(&fs(90 * G, 1000 * G), &t()), Level::Warn, "9 % free");
        assert_eq!(
            level(&fs(15 * G, 1000 * G), &t()),
            Level::Refuse,
            "1.5 % free"
        );
        assert_eq!(
            level(&fs(4 * G, 8 * G), &t()),
            Level::Warn,
            "50 % but only 4 GB"
        );
        assert_eq!(level(&fs(G / 2, 8 * G), &t()), Level::Refuse, "half a GB");
    }

    #[test]
    fn the_state_dir_is_measured_once_per_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let (_, found) = check(&[dir.path().into(), dir.path().join("..")], &t());
        assert_eq!(found.len(), 1);
        assert!(found[0].0.total_bytes > 0);
    }
}
