//! Participants' files as lists and as zip downloads: [`walk`] lists the
//! regular files under a folder (hidden and temp names skipped, symlinks
//! never followed), [`zip_response`] streams them as one zip archive.
//!
//! Why streamed: a workshop's outputs (videos especially) can be gigabytes,
//! so the archive is never built in memory or on disk. A blocking task
//! writes it with the `zip` crate into a bounded channel whose other end is
//! the response body, so memory stays at a few chunks whatever the size and
//! a slow client slows the writer down. Entries are stored, not compressed
//! (PNG, WebP and MP4 are compressed already), with data descriptors (no
//! seeking back) and zip64 where a file or the archive needs it. A client
//! that goes away stops the writer at the next chunk.

use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// How deep [`walk`] descends (ComfyUI's subfolders are shallow).
const MAX_DEPTH: usize = 16;
/// The body's chunk size.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the writer and the client.
const IN_FLIGHT: usize = 8;

/// One regular file under a walked folder.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Relative to the walked folder, `/`-separated.
    pub rel: String,
    pub path: PathBuf,
    pub len: u64,
    pub modified: SystemTime,
}

/// Whether a file name is one a listing or archive leaves out: hidden
/// names (`.upload-…`, `.tmp-…`, dotfiles) and partial downloads.
pub fn skipped_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || [".tmp", ".part", ".partial", ".crdownload"]
            .iter()
            .any(|ext| name.to_ascii_lowercase().ends_with(ext))
}

/// The regular files under `root`, recursively (hidden and temp names
/// skipped, symlinks and non-UTF-8 names ignored), in no particular order.
/// A missing `root` is empty. Blocking: call from a blocking task.
pub fn walk(root: &Path) -> Vec<FileEntry> {
    let mut out = vec![];
    walk_into(root, "", 0, &mut out);
    out
}

fn walk_into(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<FileEntry>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if skipped_name(&name) {
            continue;
        }
        // `file_type` does not follow symlinks.
        let Ok(kind) = e.file_type() else { continue };
        let rel = format!("{prefix}{name}");
        if kind.is_dir() {
            if depth < MAX_DEPTH {
                walk_into(&e.path(), &format!("{rel}/"), depth + 1, out);
            }
        } else if kind.is_file() {
            let Ok(meta) = e.metadata() else { continue };
            out.push(FileEntry {
                rel,
                path: e.path(),
                len: meta.len(),
                modified: meta.modified().unwrap_or(UNIX_EPOCH),
            });
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// (year, month, day, hour, minute, second) in UTC.
pub fn civil(t: SystemTime) -> (i64, u8, u8, u8, u8, u8) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days → civil date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u8,
        (rem % 3600 / 60) as u8,
        (rem % 60) as u8,
    )
}

/// `YYYY-MM-DD` (UTC) of `t`, for download names.
pub fn date(t: SystemTime) -> String {
    let (y, m, d, ..) = civil(t);
    format!("{y:04}-{m:02}-{d:02}")
}

fn dos_time(t: SystemTime) -> zip::DateTime {
    let (y, mo, d, h, mi, s) = civil(t);
    u16::try_from(y)
        .ok()
        .and_then(|y| zip::DateTime::from_date_and_time(y, mo, d, h, mi, s).ok())
        .unwrap_or_default()
}

/// The body end of the archive: collects writes into chunks and hands them
/// to the response (blocking while the client is slower). Once the client
/// is gone, writes are swallowed so the zip writer can end quietly.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    gone: bool,
}

impl ChannelWriter {
    fn send(&mut self) {
        if self.buf.is_empty() || self.gone {
            self.buf.clear();
            return;
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        if self.tx.blocking_send(Ok(chunk)).is_err() {
            self.gone = true;
        }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if !self.gone {
            self.buf.extend_from_slice(data);
            if self.buf.len() >= CHUNK {
                self.send();
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send();
        Ok(())
    }
}

/// Writes `entries` (name in the archive, file) as a zip into `out`. Files
/// that vanished since they were listed are left out; a read error midway
/// (or the client going away) ends the archive with an error.
fn write_zip(entries: Vec<(String, FileEntry)>, out: ChannelWriter) -> io::Result<()> {
    let tx = out.tx.clone();
    let mut zip = zip::ZipWriter::new_stream(out);
    let mut buf = vec![0u8; CHUNK];
    for (name, entry) in entries {
        let Ok(file) = std::fs::File::open(&entry.path) else {
            continue;
        };
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .last_modified_time(dos_time(entry.modified))
            .unix_permissions(0o644)
            .large_file(entry.len >= u64::from(u32::MAX));
        zip.start_file(name, options).map_err(io::Error::other)?;
        // As long as it was when listed (a file that grows meanwhile must
        // not outgrow its zip64 choice).
        let mut file = file.take(entry.len);
        loop {
            if tx.is_closed() {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the client went away",
                ));
            }
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            zip.write_all(&buf[..n])?;
        }
    }
    let mut out = zip.finish().map_err(io::Error::other)?.into_inner();
    out.flush()
}

/// A streamed `application/zip` download of `entries` (name in the
/// archive, file), saved as `filename`. No Content-Length: the body is
/// chunked as it is written.
pub fn zip_response(entries: Vec<(String, FileEntry)>, filename: &str) -> Response {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(IN_FLIGHT);
    let writer = ChannelWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
        gone: false,
    };
    tokio::task::spawn_blocking(move || {
        if let Err(e) = write_zip(entries, writer) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::warn!("zip download broke off: {e}");
            }
            // Ends the body with an error, so the client sees a failed
            // download rather than a truncated archive.
            let _ = tx.blocking_send(Err(e));
        }
    });
    let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let safe: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!("attachment; filename=\"{safe}\"");
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    res
}

/// `entries` of `root`, sorted by name, each named `prefix` + its path.
pub fn under(root: &Path, prefix: &str) -> Vec<(String, FileEntry)> {
    let mut files = walk(root);
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    files
        .into_iter()
        .map(|f| (format!("{prefix}{}", f.rel), f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_utc_calendar_dates() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(civil(at(0)), (1970, 1, 1, 0, 0, 0));
        // 2024-02-29T23:59:58Z, a leap day.
        assert_eq!(civil(at(1_709_251_198)), (2024, 2, 29, 23, 59, 58));
        assert_eq!(date(at(1_735_689_600)), "2025-01-01");
        assert_eq!(dos_time(at(0)), zip::DateTime::default());
    }

    #[test]
    fn hidden_and_partial_files_are_skipped() {
        for name in [".upload-1", ".tmp-x", "a.png.part", "x.tmp", "a~"] {
            assert!(skipped_name(name), "{name}");
        }
        for name in ["a.png", "clip.mp4", "tmp.png"] {
            assert!(!skipped_name(name), "{name}");
        }
    }

    #[test]
    fn walking_lists_files_recursively_without_following_symlinks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sub/deeper")).unwrap();
        std::fs::write(d.path().join("a.png"), "a").unwrap();
        std::fs::write(d.path().join("sub/deeper/b.png"), "bb").unwrap();
        std::fs::write(d.path().join(".upload-x"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link.png")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("linkdir")).unwrap();
        let mut names: Vec<(String, u64)> =
            walk(d.path()).into_iter().map(|f| (f.rel, f.len)).collect();
        names.sort();
        assert_eq!(
            names,
            [
                ("a.png".to_string(), 1),
                ("sub/deeper/b.png".to_string(), 2)
            ]
        );
        assert!(walk(&d.path().join("missing")).is_empty());
    }
}
