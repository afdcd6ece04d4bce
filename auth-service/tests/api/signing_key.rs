//! Without a configured key, an installation signs with a key of its own, generated on first
//! start and kept in `jwt.private_key_file`; the committed test key is worthless against it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use auth_service::tokens::DEV_ONLY_KEY_PEM;
use common::token::KeySet;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app_with, token_policy, token_signed_with};

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> TempDir {
    TempDir(std::env::temp_dir().join(format!("auth-key-{}", ulid::Ulid::new())))
}

/// An instance with no configured key and its key file at `path`, on `database` if given.
async fn app_keeping_its_key_in(path: &Path, database: Option<String>) -> TestApp {
    let path = path.to_path_buf();
    spawn_app_with(move |settings| {
        settings.jwt.private_key_pem = String::new().into();
        settings.jwt.private_key_file = path;
        if let Some(database) = database {
            settings.mongodb.database = database;
        }
    })
    .await
}

fn thumbprint(key: &EncodingKey) -> String {
    Jwk::from_encoding_key(key, Algorithm::EdDSA)
        .expect("jwk")
        .thumbprint(ThumbprintHash::SHA256)
        .expect("thumbprint")
}

fn published_kids(jwks: &jsonwebtoken::jwk::JwkSet) -> Vec<String> {
    jwks.keys
        .iter()
        .map(|k| k.common.key_id.clone().expect("kid"))
        .collect()
}

#[tokio::test]
async fn an_installation_without_a_configured_key_generates_one_keeps_it_and_publishes_it() {
    let dir = temp_dir();
    let path = dir.0.join("nested/auth-signing-key.pem");
    let first = app_keeping_its_key_in(&path, None).await;

    let pem = std::fs::read_to_string(&path).expect("the key file was created");
    let mode = std::fs::metadata(&path)
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let kid = thumbprint(&EncodingKey::from_ed_pem(pem.as_bytes()).expect("Ed25519 PKCS#8"));
    let dev_kid = thumbprint(&EncodingKey::from_ed_pem(DEV_ONLY_KEY_PEM.as_bytes()).expect("key"));
    assert_ne!(kid, dev_kid);
    assert_eq!(published_kids(&first.jwks().await), vec![kid.clone()]);

    let second = app_keeping_its_key_in(&path, Some(first.db.name().to_string())).await;
    assert_eq!(published_kids(&second.jwks().await), vec![kid]);
    assert_eq!(
        std::fs::read_to_string(&path).expect("still there"),
        pem,
        "the file is reused, not replaced"
    );

    // A session started on one instance is good on the other: same key.
    assert_eq!(
        second
            .signup("alice", "alice@example.com", "correct horse")
            .await
            .status(),
        201
    );
    let pair = first.login_pair("alice", "correct horse").await;
    let token = pair["access_token"].as_str().expect("token");
    assert_eq!(second.me(token).await.status(), 200);
}

#[tokio::test]
async fn a_token_signed_with_the_committed_key_is_refused_by_an_installation_with_its_own() {
    let dir = temp_dir();
    let app = app_keeping_its_key_in(&dir.0.join("auth-signing-key.pem"), None).await;
    let signup: Value = app
        .signup("alice", "alice@example.com", "correct horse")
        .await
        .json()
        .await
        .expect("json");
    let dev_key = EncodingKey::from_ed_pem(DEV_ONLY_KEY_PEM.as_bytes()).expect("key");
    let alice = signup["user"]["id"].as_str().expect("id");
    let policy = token_policy();
    let keys = KeySet::from_jwks(&app.jwks().await);
    for kid in [Some(thumbprint(&dev_key)), None] {
        let forged = token_signed_with(&dev_key, kid.clone(), alice, "alice");
        assert!(keys.verify(&forged, &policy).is_err(), "kid {kid:?}");
        assert_eq!(app.me(&forged).await.status(), 401, "kid {kid:?}");
    }
    let genuine = app.login_pair("alice", "correct horse").await;
    let genuine = genuine["access_token"].as_str().expect("token");
    assert!(keys.verify(genuine, &policy).is_ok());
}
