use common::testing;
use serde_json::Value;

use crate::helpers::{Cluster, EchoUpstream};

async fn upgrade_status(
    address: &str,
    auth: Option<String>,
    query_token: Option<String>,
) -> (u16, Value) {
    let mut url = format!("http://{address}/ws");
    if let Some(token) = query_token {
        url.push_str(&format!("?token={token}"));
    }
    let mut request = reqwest::Client::new()
        .get(url)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn the_upgrade_is_refused_with_401_before_any_handshake_for_bad_tokens() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut expired = testing::claims("u", "alice");
    expired.exp = expired.iat - 3600;
    let mut wrong_audience = testing::claims("u", "alice");
    wrong_audience.aud = "elsewhere".into();
    let mut wrong_issuer = testing::claims("u", "alice");
    wrong_issuer.iss = "someone".into();
    let valid = testing::token("u", "alice");
    let (header, rest) = valid.split_once('.').expect("jwt");
    let (payload, _signature) = rest.split_once('.').expect("jwt");
    let other_signature = testing::token("u2", "bob");
    let wrong_signature = format!(
        "{header}.{payload}.{}",
        other_signature.rsplit('.').next().expect("sig")
    );
    // {"alg":"none","typ":"JWT","kid":"test-key"}
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoidGVzdC1rZXkifQ.{payload}.");
    let mut not_yet_valid = testing::claims("u", "alice");
    not_yet_valid.nbf = Some(not_yet_valid.iat + 3600);
    // Algorithm confusion: HS256 "signed" with the published public key as the HMAC secret.
    let public_x = match &testing::jwks().keys[0].algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(okp) => okp.x.clone(),
        other => panic!("unexpected key {other:?}"),
    };
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(testing::TEST_KID.to_string());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &testing::claims("u", "alice"),
        &jsonwebtoken::EncodingKey::from_secret(public_x.as_bytes()),
    )
    .expect("hs256 token");
    let bad_tokens = [
        Some(testing::sign(&not_yet_valid, testing::TEST_KID)),
        Some(confused),
        Some(testing::sign(&testing::claims("u", "alice"), "unknown-kid")),
        None,
        Some("garbage".to_string()),
        Some(alg_none),
        Some(wrong_signature),
        Some(testing::sign(&expired, testing::TEST_KID)),
        Some(testing::sign(&wrong_audience, testing::TEST_KID)),
        Some(testing::sign(&wrong_issuer, testing::TEST_KID)),
    ];
    for token in bad_tokens {
        let (status, body) = upgrade_status(&gateway.address, None, token.clone()).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(body["error"]["code"], "unauthorized", "{token:?}");
        if let Some(token) = token {
            let (status, _) =
                upgrade_status(&gateway.address, Some(format!("Bearer {token}")), None).await;
            assert_eq!(status, 401, "header {token}");
        }
    }
    let (status, _) = upgrade_status(&gateway.address, Some(format!("Bearer {valid}")), None).await;
    assert_eq!(status, 101);
    let (status, _) = upgrade_status(&gateway.address, None, Some(valid)).await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn a_plain_get_with_a_valid_token_is_a_400_not_an_upgrade() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let response = reqwest::Client::new()
        .get(format!(
            "http://{}/ws?token={}",
            gateway.address,
            testing::token("u", "alice")
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "bad_upgrade");
}

#[tokio::test]
async fn forwarded_apis_answer_502_with_the_error_body_when_the_upstream_is_down() {
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|s| {
            s.auth.url = "http://127.0.0.1:9".to_string();
            s.history.url = "http://127.0.0.1:9".to_string();
        })
        .await;
    let http = reqwest::Client::new();
    for path in ["/api/auth/login", "/api/rooms/lobby/messages", "/api/dms"] {
        let response = http
            .post(format!("http://{}{path}", gateway.address))
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 502, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "upstream_unavailable");
    }
    let response = http
        .get(format!("http://{}/api/nothing", gateway.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_valid_token_is_answered_503_not_401_while_the_token_keys_cannot_be_fetched() {
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|s| s.auth.url = "http://127.0.0.1:9".to_string())
        .await;
    let token = testing::token("u-alice", "alice");
    // The first attempt fetches and fails; the second comes before the next fetch is due.
    for attempt in 0..2 {
        let (status, body) = upgrade_status(&gateway.address, None, Some(token.clone())).await;
        assert_eq!(status, 503, "attempt {attempt}: {body}");
        assert_eq!(body["error"]["code"], "unavailable", "attempt {attempt}");
    }
}

#[tokio::test]
async fn forwarded_requests_reach_the_upstream_with_method_path_query_and_body() {
    // The test JWKS server answers every request with the JWKS: enough to see the forwarding.
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let response = reqwest::Client::new()
        .get(format!("http://{}/api/auth/anything?x=1", gateway.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert!(body["keys"].is_array());
}

/// A web client directory of its own: a page, one hashed script, and `extra` files.
fn web_dir(extra: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gateway-web-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(dir.join("assets")).expect("dirs");
    std::fs::write(dir.join("index.html"), "<!doctype html><title>chat</title>").expect("index");
    std::fs::write(dir.join("assets/app-abc123.js"), "console.log(1)").expect("asset");
    for (path, contents) in extra {
        std::fs::write(dir.join(path), contents).expect("extra file");
    }
    dir
}

#[tokio::test]
async fn the_web_client_is_served_with_spa_fallback_and_cache_headers() {
    let dir = web_dir(&[]);
    let cluster = Cluster::new().await;
    let web_dir = dir.to_string_lossy().to_string();
    let gateway = cluster.gateway_with(|s| s.web.dir = web_dir).await;
    let http = reqwest::Client::new();

    let index = http
        .get(format!("http://{}/", gateway.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(index.status(), 200);
    assert!(
        index.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    assert_eq!(index.headers()["cache-control"], "no-cache");

    let asset = http
        .get(format!("http://{}/assets/app-abc123.js", gateway.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(asset.status(), 200);
    assert!(
        asset.headers()["content-type"]
            .to_str()
            .expect("ct")
            .contains("javascript")
    );
    assert!(
        asset.headers()["cache-control"]
            .to_str()
            .expect("cc")
            .contains("immutable")
    );

    let missing = http
        .get(format!("http://{}/assets/missing-123.js", gateway.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);

    let deep = http
        .get(format!("http://{}/rooms/lobby", gateway.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(deep.status(), 200);
    assert!(
        deep.text()
            .await
            .expect("body")
            .contains("<title>chat</title>")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_web_client_is_served_precompressed_as_accept_encoding_allows() {
    // Stand-ins for the compressed copies the build writes: the test checks which file is sent.
    let dir = web_dir(&[
        ("index.html.gz", "gzip of the page"),
        ("assets/app-abc123.js.gz", "gzip of the script"),
        ("assets/app-abc123.js.br", "brotli of the script"),
    ]);
    let cluster = Cluster::new().await;
    let web_dir = dir.to_string_lossy().to_string();
    let gateway = cluster.gateway_with(|s| s.web.dir = web_dir).await;
    let http = reqwest::Client::new();
    let get = |path: &str, accept: Option<&str>| {
        let mut request = http.get(format!("http://{}{path}", gateway.address));
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        request.send()
    };
    let script = "/assets/app-abc123.js";

    // Brotli is preferred when allowed, gzip otherwise, the file itself without either.
    for (accept, encoding, body) in [
        (
            Some("gzip, deflate, br"),
            Some("br"),
            "brotli of the script",
        ),
        (Some("gzip"), Some("gzip"), "gzip of the script"),
        (Some("br;q=0, gzip"), Some("gzip"), "gzip of the script"),
        (Some("identity"), None, "console.log(1)"),
        (None, None, "console.log(1)"),
    ] {
        let response = get(script, accept).await.expect("sent");
        assert_eq!(response.status(), 200, "{accept:?}");
        let headers = response.headers().clone();
        assert_eq!(
            headers
                .get("content-encoding")
                .map(|v| v.to_str().expect("ce")),
            encoding,
            "{accept:?}"
        );
        // The type is the script's, whatever the encoding, and the cache headers are unchanged.
        assert!(
            headers["content-type"]
                .to_str()
                .expect("ct")
                .contains("javascript")
        );
        assert_eq!(headers["vary"], "accept-encoding", "{accept:?}");
        assert!(
            headers["cache-control"]
                .to_str()
                .expect("cc")
                .contains("immutable")
        );
        assert_eq!(response.text().await.expect("body"), body, "{accept:?}");
    }

    // The page (and the SPA fallback that answers with it) too, revalidated as before.
    for path in ["/", "/r/lobby"] {
        let response = get(path, Some("gzip")).await.expect("sent");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-encoding"], "gzip", "{path}");
        assert_eq!(response.headers()["vary"], "accept-encoding", "{path}");
        assert_eq!(response.headers()["cache-control"], "no-cache", "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .expect("ct")
                .starts_with("text/html")
        );
    }
    // Without a compressed copy (no `.br` of the page), the next allowed encoding or the file.
    let page = get("/", Some("br")).await.expect("sent");
    assert!(page.headers().get("content-encoding").is_none());
    assert_eq!(page.headers()["vary"], "accept-encoding");
    assert!(
        page.text()
            .await
            .expect("body")
            .contains("<title>chat</title>")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn forwarded_requests_carry_the_clients_address_after_any_earlier_hops() {
    let cluster = Cluster::new().await;
    let echo = EchoUpstream::start().await;
    let url = echo.url.clone();
    let gateway = cluster.gateway_with(|s| s.auth.url = url).await;
    let head = reqwest::Client::new()
        .post(format!("http://{}/api/auth/login?x=1", gateway.address))
        .header("X-Forwarded-For", "203.0.113.9")
        .json(&serde_json::json!({"username": "alice"}))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body")
        .to_ascii_lowercase();
    assert!(head.starts_with("post /api/auth/login?x=1 "), "{head}");
    assert!(
        head.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1"),
        "{head}"
    );
}
