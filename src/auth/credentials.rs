//! The credentials file (`participants.toml`): one table per login, e.g.
//! `[user01] password = "…" token = "…"`, the instructor's admin login under
//! `[admin]`. The NixOS module's secrets script and `comfy-multi up` write
//! it; frontends read their own table, the hub reads `[admin]`. Secrets
//! never appear in `Debug` output.

use anyhow::Context;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The table that holds the instructor's admin login.
pub const ADMIN: &str = "admin";

/// One login: a password people type (printed on a join card) and a token
/// for scripts (`Authorization: Bearer …`).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub password: String,
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { password: <redacted>, token: <redacted> }")
    }
}

impl Credentials {
    /// A fresh login: a password easy to type from paper (no 0/O/1/l/i),
    /// `xxxx-xxxx-xxxx` (≈59 bits), and a 192-bit hex token.
    pub fn generate() -> Self {
        const FRIENDLY: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
        let mut rng = rand::rng();
        let mut password = String::with_capacity(14);
        for i in 0..12 {
            if i > 0 && i % 4 == 0 {
                password.push('-');
            }
            password.push(FRIENDLY[rng.random_range(0..FRIENDLY.len())] as char);
        }
        let bytes: [u8; 24] = rng.random();
        let token = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self { password, token }
    }
}

/// All logins of a workshop, by name.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct CredentialsFile {
    pub logins: BTreeMap<String, Credentials>,
}

impl CredentialsFile {
    /// Parses the file; the error names the file but never its contents.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading credentials file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("credentials file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: Self = toml::from_str(text).map_err(|e| {
            // toml's message quotes the offending line, which may be a secret.
            anyhow::anyhow!(
                "not a table of [name] password/token entries (line {})",
                e.span()
                    .map(|s| text[..s.start].lines().count().max(1))
                    .unwrap_or(0)
            )
        })?;
        for (name, c) in &file.logins {
            if c.password.is_empty() || c.token.len() < 16 {
                anyhow::bail!("[{name}] needs a password and a token of at least 16 characters");
            }
        }
        Ok(file)
    }

    pub fn get(&self, name: &str) -> Option<&Credentials> {
        self.logins.get(name)
    }

    /// Loads `path` (empty when missing), adds a fresh login for every name
    /// in `names` that has none, and writes it back (mode 0600, atomically)
    /// when anything was added. Existing logins are never changed.
    pub fn ensure(path: &Path, names: &[String]) -> anyhow::Result<Self> {
        let mut file = if path.exists() {
            Self::load(path)?
        } else {
            Self::default()
        };
        let mut added = false;
        for n in names {
            if !file.logins.contains_key(n) {
                file.logins.insert(n.clone(), Credentials::generate());
                added = true;
            }
        }
        if added {
            file.write(path)?;
        }
        Ok(file)
    }

    /// Writes the file readable by its owner only.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = toml::to_string(self)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("creds")
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_typeable_and_tokens_long() {
        let c = Credentials::generate();
        assert_eq!(c.password.len(), 14);
        assert!(c
            .password
            .chars()
            .all(|ch| ch == '-' || "abcdefghjkmnpqrstuvwxyz23456789".contains(ch)));
        assert_eq!(c.token.len(), 48);
        assert_ne!(Credentials::generate(), c);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Credentials::generate();
        let shown = format!(
            "{:?}",
            CredentialsFile {
                logins: [("user01".to_string(), c.clone())].into()
            }
        );
        assert!(!shown.contains(&c.password) && !shown.contains(&c.token));
    }

    #[test]
    fn ensure_adds_missing_logins_and_keeps_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("participants.toml");
        let first = CredentialsFile::ensure(&path, &["user01".into()]).unwrap();
        let again = CredentialsFile::ensure(&path, &["user01".into(), "admin".into()]).unwrap();
        assert_eq!(first.get("user01"), again.get("user01"));
        assert!(again.get("admin").is_some());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(CredentialsFile::load(&path).unwrap(), again);
    }

    #[test]
    fn a_malformed_file_is_refused_without_quoting_it() {
        let err = CredentialsFile::parse("[user01]\npassword = \"s3cret-value\"\ntoken = 5\n")
            .unwrap_err();
        assert!(!format!("{err:#}").contains("s3cret"), "{err:#}");
        let err =
            CredentialsFile::parse("[user01]\npassword = \"x\"\ntoken = \"short\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("user01"));
    }
}
