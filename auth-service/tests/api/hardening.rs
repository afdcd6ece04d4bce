//! Hostile HTTP: oversized and slow requests, unknown fields, operator-shaped JSON.

use std::time::Duration;

use auth_service::refresh_tokens::RefreshTokenStore;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, error_code, signed_up_app, spawn_app, spawn_app_with};

/// Upper bound for a server-side timeout to show up; generous so a busy machine never fails
/// the test, yet finite so a missing timeout fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(20);

/// actix-web's own defaults for the header and keep-alive timeouts are 5 s; a connection
/// closed well before that shows the configured (much shorter) value is in force. The margin
/// is wide so a busy machine does not fail the test.
const SOONER_THAN_THE_DEFAULT: Duration = Duration::from_secs(4);

/// Writes `request` on a raw connection, then reads until the server closes it.
async fn raw_exchange(app: &TestApp, request: &[u8]) -> String {
    timed_raw_exchange(app, request).await.0
}

/// [`raw_exchange`], also returning how long the server took to close the connection.
async fn timed_raw_exchange(app: &TestApp, request: &[u8]) -> (String, Duration) {
    let started = std::time::Instant::now();
    let mut socket = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    socket.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, socket.read_to_end(&mut answer))
        .await
        .expect("the server closed the connection in time")
        .expect("read");
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn an_oversized_body_is_413_with_the_error_body_on_every_endpoint() {
    let app = spawn_app().await;
    let big = "x".repeat(20 * 1024);
    for path in [
        "/api/auth/signup",
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/logout",
    ] {
        let response = app.post(path, &json!({ "username": big })).await;
        assert_eq!(response.status(), 413, "{path}");
        assert_eq!(error_code(response).await, "payload_too_large", "{path}");
    }
    assert_eq!(app.user_count().await, 0);
}

#[tokio::test]
async fn an_oversized_chunked_body_is_413_too() {
    let app = spawn_app().await;
    let chunk = format!("{:x}\r\n{}\r\n", 4096, "x".repeat(4096));
    let mut request = b"POST /api/auth/signup HTTP/1.1\r\nHost: localhost\r\n\
Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec();
    for _ in 0..5 {
        request.extend_from_slice(chunk.as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(&app, &request).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

#[tokio::test]
async fn unknown_fields_are_422_on_every_endpoint() {
    let app = spawn_app().await;
    for (path, body) in [
        (
            "/api/auth/login",
            json!({"username": "alice", "password": "correct horse", "admin": true}),
        ),
        (
            "/api/auth/refresh",
            json!({"refresh_token": "x", "user_id": "someone"}),
        ),
        (
            "/api/auth/logout",
            json!({"refresh_token": "x", "all": true}),
        ),
    ] {
        let response = app.post(path, &body).await;
        assert_eq!(response.status(), 422, "{path}");
        assert_eq!(error_code(response).await, "validation_failed", "{path}");
    }
}

#[tokio::test]
async fn operator_shaped_json_in_any_string_field_is_422_and_changes_nothing() {
    let app = signed_up_app().await;
    let pair = app.login_pair("alice", "correct horse").await;
    let tokens_before = app.count(RefreshTokenStore::TOKENS).await;

    let valid: [(&str, Value); 4] = [
        (
            "/api/auth/signup",
            json!({"username": "mallory", "email": "m@example.com", "password": "correct horse"}),
        ),
        (
            "/api/auth/login",
            json!({"username": "alice", "password": "correct horse"}),
        ),
        (
            "/api/auth/refresh",
            json!({"refresh_token": pair["refresh_token"]}),
        ),
        (
            "/api/auth/logout",
            json!({"refresh_token": pair["refresh_token"]}),
        ),
    ];
    let operators = [
        json!({"$gt": ""}),
        json!({"$ne": null}),
        json!({"$regex": ".*"}),
        json!(["alice"]),
        json!(1),
    ];
    for (path, body) in &valid {
        let fields: Vec<String> = body.as_object().expect("object").keys().cloned().collect();
        for field in &fields {
            for operator in &operators {
                let mut hostile = body.clone();
                hostile[field.as_str()] = operator.clone();
                let response = app.post(path, &hostile).await;
                assert_eq!(response.status(), 422, "{path} {field} {operator}");
                let answer: Value = response.json().await.expect("json");
                assert_eq!(
                    answer["error"]["fields"][field.as_str()],
                    "must be a string",
                    "{path} {field}: {answer}"
                );
            }
        }
    }

    assert_eq!(app.user_count().await, 1);
    assert_eq!(app.count(RefreshTokenStore::TOKENS).await, tokens_before);
    // The refresh token was neither rotated nor revoked by any of it.
    let refreshed = app
        .refresh(pair["refresh_token"].as_str().expect("token"))
        .await;
    assert_eq!(refreshed.status(), 200);
}

#[tokio::test]
async fn a_client_that_does_not_finish_its_headers_gets_408_and_is_disconnected() {
    let app = spawn_app_with(|s| s.http.client_request_timeout_ms = 200).await;
    let (answer, took) = timed_raw_exchange(
        &app,
        b"POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: applic",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(took < SOONER_THAN_THE_DEFAULT, "closed after {took:?}");
}

#[tokio::test]
async fn a_body_trickled_in_too_slowly_gets_408_with_the_error_body() {
    let app = spawn_app_with(|s| s.http.request_timeout_ms = 300).await;
    let answer = raw_exchange(
        &app,
        b"POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
Content-Length: 100\r\n\r\n{\"username\": \"al",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn_app_with(|s| s.http.keep_alive_secs = 1).await;
    let (answer, took) = timed_raw_exchange(
        &app,
        b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took < SOONER_THAN_THE_DEFAULT, "closed after {took:?}");
}
