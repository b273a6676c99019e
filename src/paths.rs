//! Safe file names inside a participant's folders: every path a client or
//! worker names is resolved inside a root (no `..`, no absolute paths, no
//! NUL, no hidden names), and stored files never overwrite each other.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` percent-encoded as one URL component (a query value, one path
/// segment, a fragment value): `a b#c` → `a%20b%23c`.
pub fn url_component(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

/// `root/rel` when `rel` is a plain relative path (components of
/// `[^/\0]`, none `.`/`..`/empty/starting with `.`); else `None`.
pub fn safe_join(root: &Path, rel: &str) -> Option<PathBuf> {
    if rel.is_empty() || rel.contains('\0') || rel.contains('\\') || rel.starts_with('/') {
        return None;
    }
    let mut out = root.to_path_buf();
    for part in rel.split('/') {
        if part.is_empty() || part.starts_with('.') || part.len() > 255 {
            return None;
        }
        match Path::new(part).components().next() {
            Some(Component::Normal(_)) => out.push(part),
            _ => return None,
        }
    }
    Some(out)
}

/// A name with ` (n)` before its extension: `a.png` → `a (2).png`.
pub fn numbered(name: &str, n: u32) -> String {
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{} ({n}){}", &name[..dot], &name[dot..]),
        _ => format!("{name} ({n})"),
    }
}

/// Moves the finished temp file `tmp` into `dir` under `name`, or under
/// `name (1)`, `name (2)`, … when taken; never overwrites (hard links fail
/// on existing targets). Returns the name used.
pub fn store_unique(tmp: &Path, dir: &Path, name: &str) -> io::Result<String> {
    std::fs::create_dir_all(dir)?;
    // ComfyUI's own counter (`x_00001_.png`): a taken name moves on to the
    // next free counter, as SaveImage does, instead of `x_00001_ (1).png`.
    if let Some((stem, _, ext)) = comfy_counter(name) {
        let mut next = highest_counter(dir, stem, ext) + 1;
        for n in 0..10_000u32 {
            let candidate = if n == 0 {
                name.to_string()
            } else {
                format!("{stem}_{next:05}_.{ext}")
            };
            match std::fs::hard_link(tmp, dir.join(&candidate)) {
                Ok(()) => {
                    let _ = std::fs::remove_file(tmp);
                    return Ok(candidate);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if n > 0 {
                        next += 1;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    for n in 0..10_000u32 {
        let candidate = if n == 0 {
            name.to_string()
        } else {
            numbered(name, n)
        };
        match std::fs::hard_link(tmp, dir.join(&candidate)) {
            Ok(()) => {
                let _ = std::fs::remove_file(tmp);
                return Ok(candidate);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("too many files with the same name"))
}

/// `stem_00042_.ext` → (stem, 42, ext): the names ComfyUI's save nodes write.
fn comfy_counter(name: &str) -> Option<(&str, u64, &str)> {
    let (base, ext) = name.rsplit_once('.')?;
    let base = base.strip_suffix('_')?;
    let (stem, digits) = base.rsplit_once('_')?;
    if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) || ext.is_empty() {
        return None;
    }
    Some((stem, digits.parse().ok()?, ext))
}

/// The highest counter of `stem_NNNNN_.ext` files in `dir` (0 if none).
fn highest_counter(dir: &Path, stem: &str, ext: &str) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            match comfy_counter(&name) {
                Some((s, n, x)) if s == stem && x == ext => Some(n),
                _ => None,
            }
        })
        .max()
        .unwrap_or(0)
}

/// Like [`store_unique`], but as ComfyUI's upload does it: a taken name
/// whose file has the same bytes as `tmp` is reused (nothing is stored and
/// `tmp` is removed); a taken name with other bytes moves on to `name (1)`,
/// `name (2)`, … Returns the name used.
pub fn store_unique_or_same(tmp: &Path, dir: &Path, name: &str) -> io::Result<String> {
    std::fs::create_dir_all(dir)?;
    for n in 0..10_000u32 {
        let candidate = if n == 0 {
            name.to_string()
        } else {
            numbered(name, n)
        };
        let target = dir.join(&candidate);
        match std::fs::hard_link(tmp, &target) {
            Ok(()) => {
                std::fs::remove_file(tmp)?;
                sync_dir(dir);
                return Ok(candidate);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if same_bytes(tmp, &target)? {
                    std::fs::remove_file(tmp)?;
                    return Ok(candidate);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("too many files with the same name"))
}

/// Whether `a` and `b` are regular files with the same bytes.
pub fn same_bytes(a: &Path, b: &Path) -> io::Result<bool> {
    use std::io::Read;
    let (ma, mb) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    if !ma.is_file() || !mb.is_file() || ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            // Same length, so `b` is at its end too.
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Makes a new directory entry durable (best effort).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_comfyui_counter_name_moves_on_to_the_next_counter() {
        let dir = tempfile::tempdir().unwrap();
        let store = |name: &str| {
            let tmp = dir.path().join(".tmp");
            std::fs::write(&tmp, name).unwrap();
            store_unique(&tmp, dir.path(), name).unwrap()
        };
        assert_eq!(store("inv_00001_.png"), "inv_00001_.png");
        assert_eq!(store("inv_00001_.png"), "inv_00002_.png");
        assert_eq!(store("inv_00001_.png"), "inv_00003_.png");
        assert_eq!(store("other_00001_.png"), "other_00001_.png");
        assert_eq!(store("inv_00001_.webp"), "inv_00001_.webp");
        // Names without ComfyUI's counter keep the (1) rule.
        assert_eq!(store("photo.png"), "photo.png");
        assert_eq!(store("photo.png"), "photo (1).png");
        assert_eq!(comfy_counter("a_b_00012_.png"), Some(("a_b", 12, "png")));
        assert_eq!(comfy_counter("a_0001_.png"), None);
        assert_eq!(comfy_counter("a_00001.png"), None);
    }

    #[test]
    fn plain_relative_paths_resolve_inside_the_root() {
        let r = Path::new("/srv/u");
        assert_eq!(safe_join(r, "a.png"), Some(PathBuf::from("/srv/u/a.png")));
        assert_eq!(
            safe_join(r, "sub/a.png"),
            Some(PathBuf::from("/srv/u/sub/a.png"))
        );
    }

    #[test]
    fn escapes_and_odd_names_are_refused() {
        let r = Path::new("/srv/u");
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            ".hidden",
            "a\0b",
            "a\\b",
            "a/",
            "a/.",
        ] {
            assert_eq!(safe_join(r, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn numbered_names_keep_the_extension() {
        assert_eq!(numbered("a.png", 1), "a (1).png");
        assert_eq!(numbered("noext", 2), "noext (2)");
        assert_eq!(numbered(".x", 1), ".x (1)");
    }

    #[test]
    fn storing_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..3)
            .map(|i| {
                let tmp = d.path().join(format!("tmp{i}"));
                std::fs::write(&tmp, format!("{i}")).unwrap();
                store_unique(&tmp, &d.path().join("out"), "img.png").unwrap()
            })
            .collect();
        assert_eq!(names, ["img.png", "img (1).png", "img (2).png"]);
        assert_eq!(
            std::fs::read_to_string(d.path().join("out/img.png")).unwrap(),
            "0"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("out/img (2).png")).unwrap(),
            "2"
        );
    }

    #[test]
    fn storing_reuses_a_name_whose_file_has_the_same_bytes() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let put = |bytes: &str| {
            let tmp = d.path().join("tmp");
            std::fs::write(&tmp, bytes).unwrap();
            let name = store_unique_or_same(&tmp, &out, "img.png").unwrap();
            assert!(!tmp.exists());
            name
        };
        assert_eq!(put("a"), "img.png");
        assert_eq!(put("a"), "img.png");
        assert_eq!(put("b"), "img (1).png");
        assert_eq!(put("b"), "img (1).png");
        assert_eq!(put("c"), "img (2).png");
        assert_eq!(std::fs::read_to_string(out.join("img.png")).unwrap(), "a");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 3);
    }

    #[test]
    fn a_folder_with_the_name_is_skipped_not_compared() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        std::fs::create_dir_all(out.join("img.png")).unwrap();
        let tmp = d.path().join("tmp");
        std::fs::write(&tmp, "a").unwrap();
        assert_eq!(
            store_unique_or_same(&tmp, &out, "img.png").unwrap(),
            "img (1).png"
        );
    }
}
