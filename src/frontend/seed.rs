//! Seeds a participant's workflow browser with the instructor's workflows.
//!
//! Why this exists: the workshop ships ready-made workflows in the repo's
//! `workflows/` folder, and the editor's "Workflows" sidebar lists only the
//! participant's own user files (`<user_dir>/user/workflows/…`). So each
//! participant gets a copy — but their copy is theirs: seeding must never
//! clobber an edit, nor bring back a file they deleted, while still passing
//! on an instructor's fix to copies nobody touched.
//!
//! The rules, per `<rel>.json` under the workflows folder:
//! - not in the participant's folder and never seeded → copied;
//! - not there but seeded before → the participant deleted it: left out;
//! - there and identical → nothing to do;
//! - there, different, and still exactly what was last seeded → the
//!   instructor changed it: updated;
//! - there, different, and not what was seeded → the participant's: kept.
//!
//! What was seeded is remembered in `<user_dir>/user/.seeded.json` (name →
//! SHA-256 of the seeded content); hidden names are neither listed nor
//! reachable through `/userdata`, so participants never see it.

use crate::paths::safe_join;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

const MANIFEST: &str = ".seeded.json";

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Manifest {
    /// Workflow name (`sub/x.json`) → hex SHA-256 of what was seeded.
    seeded: BTreeMap<String, String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Copies every `*.json` workflow under `workflows_dir` (subfolders kept)
/// into `<user_dir>/user/workflows/`, by the rules in this module's doc.
/// Returns how many files it wrote. Files that are not `.json`, JSON that
/// does not parse, hidden names and symlinks that lead out of
/// `workflows_dir` are skipped (the last two with a warning). A missing
/// `workflows_dir` is an error.
pub async fn seed_workflows(workflows_dir: &Path, user_dir: &Path) -> io::Result<usize> {
    let src_root = workflows_dir.to_path_buf();
    let sources = tokio::task::spawn_blocking(move || list_workflows(&src_root))
        .await
        .map_err(io::Error::other)??;

    let user_root = user_dir.join("user");
    let dest_root = user_root.join("workflows");
    let manifest_path = user_root.join(MANIFEST);
    let mut manifest = read_manifest(&manifest_path).await;
    let mut changed = false;
    let mut written = 0;

    for (rel, src) in sources {
        let bytes = tokio::fs::read(&src).await?;
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            tracing::warn!(file = %src.display(), "not seeding a workflow that is not valid JSON: {e}");
            continue;
        }
        let Some(dest) = safe_join(&dest_root, &rel) else {
            tracing::warn!(file = %src.display(), "not seeding a workflow with an unusable name");
            continue;
        };
        if has_symlink_below(&user_root, &dest) {
            tracing::warn!(file = %dest.display(), "not seeding over a symlink");
            continue;
        }
        let new_hash = sha256_hex(&bytes);
        let seeded = manifest.seeded.get(&rel).cloned();
        let write = match tokio::fs::read(&dest).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => seeded.is_none(),
            Err(e) => {
                tracing::warn!(file = %dest.display(), "not seeding over an unreadable file: {e}");
                continue;
            }
            Ok(current) => {
                let current_hash = sha256_hex(&current);
                if current_hash == new_hash {
                    if seeded.as_deref() != Some(&new_hash) {
                        manifest.seeded.insert(rel.clone(), new_hash.clone());
                        changed = true;
                    }
                    false
                } else {
                    seeded.as_deref() == Some(&current_hash)
                }
            }
        };
        if write {
            write_file(&dest, &bytes).await?;
            manifest.seeded.insert(rel, new_hash);
            changed = true;
            written += 1;
        }
    }

    if changed {
        let json = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
        write_file(&manifest_path, &json).await?;
    }
    Ok(written)
}

async fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    super::userdata::write_atomic(path, bytes)
        .await
        .map_err(|e| io::Error::other(e.to_string()))
}

async fn read_manifest(path: &Path) -> Manifest {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), "ignoring an unreadable seed manifest: {e}");
            Manifest::default()
        }),
        Err(_) => Manifest::default(),
    }
}

/// Whether any existing path from below `root` down to `path` is a symlink.
fn has_symlink_below(root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return true;
    };
    let mut p = root.to_path_buf();
    for part in rel.components() {
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// `(name relative to root with '/', path)` of every `*.json` under `root`,
/// sorted by name.
fn list_workflows(root: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let canon_root = root.canonicalize()?;
    let mut out = vec![];
    let mut ancestors = vec![canon_root.clone()];
    walk(&canon_root, root, "", &mut ancestors, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(
    canon_root: &Path,
    dir: &Path,
    prefix: &str,
    ancestors: &mut Vec<PathBuf>,
    out: &mut Vec<(String, PathBuf)>,
) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let mut file_type = entry.file_type()?;
        if file_type.is_symlink() {
            let target = match path.canonicalize() {
                Ok(t) if t.starts_with(canon_root) => t,
                _ => {
                    tracing::warn!(file = %path.display(), "not seeding through a symlink that leads out of the workflows folder");
                    continue;
                }
            };
            file_type = std::fs::metadata(&target)?.file_type();
        }
        let rel = format!("{prefix}{name}");
        if file_type.is_dir() {
            // A symlinked folder inside the tree may point back up.
            let canon = path.canonicalize()?;
            if ancestors.contains(&canon) {
                tracing::warn!(file = %path.display(), "not seeding through a symlink loop");
                continue;
            }
            ancestors.push(canon);
            walk(canon_root, &path, &format!("{rel}/"), ancestors, out)?;
            ancestors.pop();
        } else if file_type.is_file() && name.ends_with(".json") {
            out.push((rel, path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Dirs {
        _tmp: tempfile::TempDir,
        src: PathBuf,
        user: PathBuf,
    }

    impl Dirs {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let src = tmp.path().join("workflows");
            let user = tmp.path().join("users/ada");
            std::fs::create_dir_all(&src).unwrap();
            Dirs {
                src,
                user,
                _tmp: tmp,
            }
        }

        fn put(&self, rel: &str, text: &str) {
            let p = self.src.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        fn mine(&self, rel: &str) -> PathBuf {
            self.user.join("user/workflows").join(rel)
        }

        fn read_mine(&self, rel: &str) -> Option<String> {
            std::fs::read_to_string(self.mine(rel)).ok()
        }

        fn write_mine(&self, rel: &str, text: &str) {
            let p = self.mine(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        async fn seed(&self) -> usize {
            seed_workflows(&self.src, &self.user).await.unwrap()
        }
    }

    const A: &str = r#"{"version": 0.4, "nodes": []}"#;
    const B: &str = r#"{"version": 0.4, "nodes": [{"id": 1}]}"#;
    const EDITED: &str = r#"{"version": 0.4, "nodes": [{"id": 99}]}"#;

    #[tokio::test]
    async fn every_json_workflow_is_copied_with_its_subfolders() {
        let d = Dirs::new();
        d.put("top.json", A);
        d.put("demo/one.json", B);
        d.put("sd15/deep/two.json", A);
        assert_eq!(d.seed().await, 3);
        assert_eq!(d.read_mine("top.json").as_deref(), Some(A));
        assert_eq!(d.read_mine("demo/one.json").as_deref(), Some(B));
        assert_eq!(d.read_mine("sd15/deep/two.json").as_deref(), Some(A));
    }

    #[tokio::test]
    async fn other_files_invalid_json_and_hidden_names_are_skipped() {
        let d = Dirs::new();
        d.put("README.md", "# hi");
        d.put("broken.json", "{ not json");
        d.put(".hidden.json", A);
        d.put(".git/config.json", A);
        d.put("ok.json", A);
        assert_eq!(d.seed().await, 1);
        let listed: Vec<_> = std::fs::read_dir(d.mine(""))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(listed, ["ok.json"]);
    }

    #[tokio::test]
    async fn seeding_again_with_nothing_new_writes_nothing() {
        let d = Dirs::new();
        d.put("a.json", A);
        d.put("demo/b.json", B);
        assert_eq!(d.seed().await, 2);
        assert_eq!(d.seed().await, 0);
        assert_eq!(d.read_mine("a.json").as_deref(), Some(A));
    }

    #[tokio::test]
    async fn a_workflow_the_participant_edited_is_kept() {
        let d = Dirs::new();
        d.put("a.json", A);
        d.seed().await;
        d.write_mine("a.json", EDITED);
        assert_eq!(d.seed().await, 0);
        assert_eq!(d.read_mine("a.json").as_deref(), Some(EDITED));
        // …even when the instructor changes it too.
        d.put("a.json", B);
        assert_eq!(d.seed().await, 0);
        assert_eq!(d.read_mine("a.json").as_deref(), Some(EDITED));
    }

    #[tokio::test]
    async fn a_workflow_the_participant_deleted_is_not_seeded_again() {
        let d = Dirs::new();
        d.put("a.json", A);
        d.seed().await;
        std::fs::remove_file(d.mine("a.json")).unwrap();
        assert_eq!(d.seed().await, 0);
        assert_eq!(d.read_mine("a.json"), None);
        d.put("a.json", B);
        assert_eq!(
            d.seed().await,
            0,
            "not even after the instructor changed it"
        );
        assert_eq!(d.read_mine("a.json"), None);
    }

    #[tokio::test]
    async fn an_untouched_seeded_workflow_follows_the_instructors_fix() {
        let d = Dirs::new();
        d.put("demo/a.json", A);
        d.seed().await;
        d.put("demo/a.json", B);
        assert_eq!(d.seed().await, 1);
        assert_eq!(d.read_mine("demo/a.json").as_deref(), Some(B));
        // And the fix is what counts as untouched from now on.
        d.put("demo/a.json", A);
        assert_eq!(d.seed().await, 1);
        assert_eq!(d.read_mine("demo/a.json").as_deref(), Some(A));
    }

    #[tokio::test]
    async fn a_participants_own_file_of_the_same_name_is_kept() {
        let d = Dirs::new();
        d.write_mine("a.json", EDITED);
        d.put("a.json", A);
        assert_eq!(d.seed().await, 0);
        assert_eq!(d.read_mine("a.json").as_deref(), Some(EDITED));
    }

    #[tokio::test]
    async fn an_identical_file_already_there_is_left_alone_and_then_tracked() {
        let d = Dirs::new();
        d.write_mine("a.json", A);
        d.put("a.json", A);
        assert_eq!(d.seed().await, 0);
        // Now known as seeded: the instructor's next fix reaches it.
        d.put("a.json", B);
        assert_eq!(d.seed().await, 1);
        assert_eq!(d.read_mine("a.json").as_deref(), Some(B));
    }

    #[tokio::test]
    async fn the_record_of_what_was_seeded_is_hidden_from_the_workflow_list() {
        let d = Dirs::new();
        d.put("demo/a.json", A);
        d.seed().await;
        let manifest: Manifest =
            serde_json::from_slice(&std::fs::read(d.user.join("user/.seeded.json")).unwrap())
                .unwrap();
        assert_eq!(
            manifest.seeded.get("demo/a.json"),
            Some(&sha256_hex(A.as_bytes()))
        );
        assert!(safe_join(&d.user.join("user"), MANIFEST).is_none());
    }

    #[tokio::test]
    async fn writes_leave_no_temporary_files_behind() {
        let d = Dirs::new();
        d.put("demo/a.json", A);
        d.put("b.json", B);
        d.seed().await;
        d.put("b.json", A);
        d.seed().await;
        let mut names = vec![];
        for dir in [d.user.join("user"), d.mine(""), d.mine("demo")] {
            for e in std::fs::read_dir(dir).unwrap() {
                names.push(e.unwrap().file_name().into_string().unwrap());
            }
        }
        names.sort();
        assert_eq!(
            names,
            [".seeded.json", "a.json", "b.json", "demo", "workflows"]
        );
    }

    #[tokio::test]
    async fn symlinks_leading_out_of_the_workflows_folder_are_refused() {
        let d = Dirs::new();
        let outside = d.src.parent().unwrap().join("secret");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("s.json"), A).unwrap();
        symlink(outside.join("s.json"), d.src.join("leak.json")).unwrap();
        symlink(&outside, d.src.join("leakdir")).unwrap();
        d.put("real/x.json", B);
        symlink(d.src.join("real/x.json"), d.src.join("alias.json")).unwrap();
        symlink(d.src.join("real"), d.src.join("loop")).unwrap();
        symlink(&d.src, d.src.join("real/up")).unwrap();
        assert_eq!(d.seed().await, 3);
        assert_eq!(d.read_mine("leak.json"), None);
        assert!(!d.mine("leakdir").exists());
        assert_eq!(d.read_mine("alias.json").as_deref(), Some(B));
        assert_eq!(d.read_mine("real/x.json").as_deref(), Some(B));
        assert_eq!(d.read_mine("loop/x.json").as_deref(), Some(B));
    }

    #[tokio::test]
    async fn a_symlink_in_the_participants_folder_is_not_written_through() {
        let d = Dirs::new();
        let elsewhere = d.src.parent().unwrap().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::create_dir_all(d.mine("")).unwrap();
        symlink(&elsewhere, d.mine("demo")).unwrap();
        d.put("demo/a.json", A);
        assert_eq!(d.seed().await, 0);
        assert!(!elsewhere.join("a.json").exists());
    }

    #[tokio::test]
    async fn a_missing_workflows_folder_is_an_error() {
        let d = Dirs::new();
        let err = seed_workflows(&d.src.join("nope"), &d.user)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
