use common::token::KeySet;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app, spawn_app_with, token_policy, token_signed_with};

/// A key that signed tokens before the current one took over (test-only).
const PREVIOUS_PRIVATE_PEM: &str = include_str!("testdata/test-only-previous-key.pem");
const PREVIOUS_PUBLIC_PEM: &str = include_str!("testdata/test-only-previous-key.pub.pem");

fn previous_key() -> EncodingKey {
    EncodingKey::from_ed_pem(PREVIOUS_PRIVATE_PEM.as_bytes()).expect("test key")
}

fn previous_kid() -> String {
    Jwk::from_encoding_key(&previous_key(), Algorithm::EdDSA)
        .expect("jwk")
        .thumbprint(ThumbprintHash::SHA256)
        .expect("thumbprint")
}

async fn app_publishing_the_previous_key() -> TestApp {
    spawn_app_with(|settings| {
        settings.jwt.additional_public_keys_pem = PREVIOUS_PUBLIC_PEM.to_string();
    })
    .await
}

/// Signs up alice and returns a token for her signed with the previous key.
async fn token_from_the_previous_key(app: &TestApp) -> String {
    let signup: Value = app
        .signup("alice", "alice@example.com", "correct horse")
        .await
        .json()
        .await
        .expect("json");
    token_signed_with(
        &previous_key(),
        Some(previous_kid()),
        signup["user"]["id"].as_str().expect("id"),
        "alice",
    )
}

#[tokio::test]
async fn jwks_lists_the_signing_key_and_the_previous_key_and_tokens_use_the_signing_key() {
    let app = app_publishing_the_previous_key().await;
    let jwks = app.jwks().await;
    let kids: Vec<String> = jwks
        .keys
        .iter()
        .map(|k| k.common.key_id.clone().expect("kid"))
        .collect();
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert_eq!(kids[1], previous_kid());
    assert!(
        !serde_json::to_string(&jwks)
            .expect("serializes")
            .contains("\"d\""),
        "private key material published"
    );

    assert_eq!(
        app.signup("bob", "bob@example.com", "correct horse")
            .await
            .status(),
        201
    );
    let pair = app.login_pair("bob", "correct horse").await;
    let header =
        jsonwebtoken::decode_header(pair["access_token"].as_str().expect("token")).expect("hdr");
    assert_eq!(header.kid.as_deref(), Some(kids[0].as_str()));
}

#[tokio::test]
async fn a_token_signed_with_the_previous_key_verifies_with_the_published_jwks_and_me_accepts_it() {
    let app = app_publishing_the_previous_key().await;
    let token = token_from_the_previous_key(&app).await;

    let verified = KeySet::from_jwks(&app.jwks().await)
        .verify(&token, &token_policy())
        .expect("verifies with the published keys");
    assert_eq!(verified.user.username.as_str(), "alice");

    let me = app.me(&token).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["user"]["username"], "alice");
}

#[tokio::test]
async fn without_the_previous_key_published_its_tokens_are_refused() {
    let app = spawn_app().await;
    let token = token_from_the_previous_key(&app).await;
    assert_eq!(app.jwks().await.keys.len(), 1);
    assert_eq!(app.me(&token).await.status(), 401);
}
