//! Test helpers (feature `testing`): a committed **test-only** Ed25519 key, minting tokens with
//! any claims, and a tiny HTTP server publishing the key as a JWKS, so services can be tested
//! without auth-service. Never enable this feature in a service's normal dependencies.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{EncodingKey, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::token::{ALGORITHM, Claims};

/// Test-only private key; it signs nothing outside tests.
pub const TEST_ONLY_KEY_PEM: &str = include_str!("../testdata/test-only-signing-key.pem");
pub const TEST_KID: &str = "test-key";
pub const TEST_ISSUER: &str = "chat-auth";
pub const TEST_AUDIENCE: &str = "chat";

pub fn encoding_key() -> EncodingKey {
    EncodingKey::from_ed_pem(TEST_ONLY_KEY_PEM.as_bytes()).expect("test key parses")
}

/// The JWKS publishing the test key.
pub fn jwks() -> JwkSet {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(), ALGORITHM).expect("public key");
    jwk.common.key_id = Some(TEST_KID.to_string());
    JwkSet { keys: vec![jwk] }
}

/// Valid claims for `user_id`/`username`, expiring in 15 minutes.
pub fn claims(user_id: &str, username: &str) -> Claims {
    let now = jsonwebtoken::get_current_timestamp();
    Claims {
        sub: user_id.to_string(),
        name: username.to_string(),
        iat: now,
        exp: now + 900,
        nbf: None,
        iss: TEST_ISSUER.to_string(),
        aud: TEST_AUDIENCE.to_string(),
        jti: ulid::Ulid::new().to_string(),
    }
}

/// Signs `claims` with the test key under `kid`.
pub fn sign(claims: &Claims, kid: &str) -> String {
    let mut header = Header::new(ALGORITHM);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &encoding_key()).expect("signs")
}

/// A valid token for `user_id`/`username`.
pub fn token(user_id: &str, username: &str) -> String {
    sign(&claims(user_id, username), TEST_KID)
}

/// Serves the test JWKS at every path on a free loopback port; returns the base URL.
pub async fn serve_jwks() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind jwks server");
    let address = listener.local_addr().expect("address");
    let body = serde_json::to_string(&jwks()).expect("jwks serializes");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{address}")
}
