//! Where the token signing key comes from.
//!
//! `jwt.private_key_pem`, when set, is the key (the production profile requires it). Otherwise,
//! outside production, the key is this installation's own, kept in `jwt.private_key_file`: read
//! from there when the file exists, else generated (Ed25519, PKCS#8 PEM) and written there
//! with mode 0600 before it is used. The file is created whole or not at all (written under a
//! temporary name, then linked into place) and never overwritten, so two instances starting
//! at once on the same path end up with the same key. A local installation therefore never
//! signs with a key anyone else has; the committed test key is used only where a test or
//! benchmark launcher passes it explicitly.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use common::settings::Profile;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use crate::settings::JwtSettings;

/// The signing key's PEM, from the settings or from this installation's key file.
pub fn load(settings: &JwtSettings, profile: Profile) -> anyhow::Result<SecretString> {
    let configured = settings.private_key_pem.expose_secret().trim();
    if !configured.is_empty() {
        return Ok(SecretString::from(configured.to_string()));
    }
    if profile == Profile::Production {
        bail!("AUTH__JWT__PRIVATE_KEY_PEM must be set in production");
    }
    let path = settings.private_key_file.as_path();
    if path.as_os_str().is_empty() {
        bail!("jwt.private_key_file must name a file when jwt.private_key_pem is empty");
    }
    match read_existing(path)? {
        Some(pem) => {
            tracing::info!(path = %path.display(), "signing with this installation's key");
            Ok(pem)
        }
        None => {
            let pem = generate_pem()?;
            if create_new(path, pem.expose_secret()).with_context(|| {
                format!(
                    "writing a new signing key to {} (or create one there: \
                     openssl genpkey -algorithm ed25519 -out {0})",
                    path.display()
                )
            })? {
                tracing::info!(path = %path.display(), "generated a signing key for this installation");
                Ok(pem)
            } else {
                // Another instance created it between the look and the write: use theirs.
                read_existing(path)?
                    .with_context(|| format!("{} vanished while starting", path.display()))
            }
        }
    }
}

/// The key file's text, or `None` when there is no file.
fn read_existing(path: &Path) -> anyhow::Result<Option<SecretString>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "the signing key file is readable by others; chmod 600 it"
                );
            }
            Ok(Some(SecretString::from(text)))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => {
            Err(error).with_context(|| format!("reading the signing key {}", path.display()))
        }
    }
}

/// A new Ed25519 private key as PKCS#8 PEM, from the thread-local CSPRNG (seeded by the
/// operating system). Version 1 (RFC 8410), the seed alone, as `openssl genpkey -algorithm
/// ed25519` writes it: the JWT library derives the public key only from that form.
fn generate_pem() -> anyhow::Result<SecretString> {
    let mut key = KeypairBytes {
        secret_key: [0u8; ed25519_dalek::SECRET_KEY_LENGTH],
        public_key: None,
    };
    rand::rng().fill_bytes(&mut key.secret_key);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .context("encoding the new signing key")?;
    Ok(SecretString::from(pem.as_str().to_string()))
}

/// Creates `path` with `contents` and mode 0600, creating its directory (mode 0700) when
/// missing. Returns `false`, writing nothing, when the file exists already.
fn create_new(path: &Path, contents: &str) -> io::Result<bool> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.tmp", ulid::Ulid::new()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    })();
    // A hard link never replaces an existing file, and the file appears complete.
    let linked = written.and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            fs::File::open(&dir)?.sync_all()?;
            Ok(true)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("auth-key-test-{}", ulid::Ulid::new()));
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn settings(pem: &str, file: &Path) -> JwtSettings {
        JwtSettings::for_tests(pem, file)
    }

    #[test]
    fn a_missing_key_file_is_generated_once_with_mode_0600_in_a_new_0700_directory() {
        let dir = TempDir::new();
        let path = dir.0.join("keys/signing.pem");
        let first = load(&settings("", &path), Profile::Development).expect("generates");
        assert!(
            first
                .expose_secret()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        let key = jsonwebtoken::EncodingKey::from_ed_pem(first.expose_secret().as_bytes())
            .expect("an Ed25519 PKCS#8 key");
        assert!(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::EdDSA).is_ok(),
            "its public key can be published"
        );
        let mode = |p: &Path| fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.0.join("keys")), 0o700);
        assert_eq!(
            fs::read_dir(dir.0.join("keys")).expect("lists").count(),
            1,
            "no temporary file left behind"
        );

        let second = load(&settings("", &path), Profile::Development).expect("reads");
        assert_eq!(first.expose_secret(), second.expose_secret());
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = TempDir::new();
        fs::create_dir_all(&dir.0).expect("dir");
        let path = dir.0.join("signing.pem");
        fs::write(&path, "not a key").expect("writes");
        assert!(!create_new(&path, "other").expect("runs"));
        assert_eq!(fs::read_to_string(&path).expect("reads"), "not a key");
        // It is handed on as it is; parsing it is the issuer's job (and fails there).
        let loaded = load(&settings("", &path), Profile::Development).expect("reads");
        assert_eq!(loaded.expose_secret(), "not a key");
    }

    #[test]
    fn a_configured_key_wins_and_production_never_falls_back_to_a_file() {
        let dir = TempDir::new();
        let path = dir.0.join("signing.pem");
        let configured = load(&settings(" pem text\n", &path), Profile::Development).expect("ok");
        assert_eq!(configured.expose_secret(), "pem text");
        assert!(!path.exists());
        assert!(load(&settings("", &path), Profile::Production).is_err());
        assert!(!path.exists());
        assert!(load(&settings("", Path::new("")), Profile::Development).is_err());
    }
}
