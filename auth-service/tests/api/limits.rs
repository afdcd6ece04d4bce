//! Login and sign-up limits. Requests from "another address" come from 127.0.0.2, which the
//! loopback interface also answers for.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code, spawn_app_with};

const OTHER_ADDRESS: &str = "127.0.0.2";

fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().expect("address"))
        .build()
        .expect("client")
}

async fn post_as(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    body: &Value,
    forwarded_for: Option<&str>,
) -> reqwest::Response {
    let mut request = client.post(format!("{}{path}", app.address)).json(body);
    if let Some(value) = forwarded_for {
        request = request.header("X-Forwarded-For", value);
    }
    request.send().await.expect("request sent")
}

async fn login_as(
    app: &TestApp,
    client: &reqwest::Client,
    username: &str,
    password: &str,
) -> reqwest::Response {
    let body = json!({"username": username, "password": password});
    post_as(app, client, "/api/auth/login", &body, None).await
}

/// Checks a 429 answer: the error body, and a `Retry-After` within the window.
async fn assert_rate_limited(response: reqwest::Response, window_secs: u64) {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response
        .headers()
        .get("Retry-After")
        .expect("Retry-After header")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!(
        (1..=window_secs).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(error_code(response).await, "rate_limited");
}

async fn app_with_users(configure: impl FnOnce(&mut auth_service::settings::Settings)) -> TestApp {
    let app = spawn_app_with(configure).await;
    for name in ["alice", "bob"] {
        let response = app
            .signup(name, &format!("{name}@example.com"), "correct horse")
            .await;
        assert_eq!(response.status(), 201);
    }
    app
}

#[tokio::test]
async fn the_sixth_failed_login_for_a_username_is_429_from_any_address_without_password_work() {
    let app = app_with_users(|s| {
        s.limits.login_per_username = 5;
        s.limits.login_window_secs = 60;
    })
    .await;
    let here = reqwest::Client::new();
    let elsewhere = client_from(OTHER_ADDRESS);
    for _ in 0..5 {
        let response = login_as(&app, &here, "alice", "wrong horse").await;
        assert_eq!(response.status(), 401);
    }
    let verifications = app.passwords.verifications();

    assert_rate_limited(login_as(&app, &here, "alice", "wrong horse").await, 60).await;
    // The right password from another address does not get through either, and the case of
    // the username does not matter.
    assert_rate_limited(
        login_as(&app, &elsewhere, "ALICE", "correct horse").await,
        60,
    )
    .await;
    assert_eq!(
        app.passwords.verifications(),
        verifications,
        "a refused attempt checked a password"
    );

    let bob = login_as(&app, &elsewhere, "bob", "correct horse").await;
    assert_eq!(bob.status(), 200);
}

#[tokio::test]
async fn the_sixth_login_from_one_address_is_429_whatever_the_usernames() {
    let app = app_with_users(|s| {
        s.limits.login_per_ip = 5;
        s.limits.login_window_secs = 60;
    })
    .await;
    let here = reqwest::Client::new();
    for i in 0..5 {
        let response = login_as(&app, &here, &format!("nobody{i}"), "wrong horse").await;
        assert_eq!(response.status(), 401);
    }
    assert_rate_limited(login_as(&app, &here, "alice", "correct horse").await, 60).await;

    let elsewhere = client_from(OTHER_ADDRESS);
    assert_eq!(
        login_as(&app, &elsewhere, "alice", "correct horse")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn x_forwarded_for_does_not_change_the_address_unless_trusted() {
    let app = app_with_users(|s| s.limits.login_per_ip = 2).await;
    let here = reqwest::Client::new();
    let body = json!({"username": "alice", "password": "wrong horse"});
    for (i, expected) in [401, 401, 429].into_iter().enumerate() {
        let forged = format!("203.0.113.{i}");
        let response = post_as(&app, &here, "/api/auth/login", &body, Some(&forged)).await;
        assert_eq!(response.status(), expected, "attempt {i}");
    }
}

#[tokio::test]
async fn a_trusted_proxy_entry_is_the_last_x_forwarded_for_address() {
    let app = app_with_users(|s| {
        s.limits.login_per_ip = 2;
        s.http.trust_forwarded_for = true;
    })
    .await;
    let proxy = reqwest::Client::new();
    let body = json!({"username": "alice", "password": "wrong horse"});
    let from = |value: &'static str| post_as(&app, &proxy, "/api/auth/login", &body, Some(value));
    assert_eq!(from("203.0.113.1").await.status(), 401);
    assert_eq!(from("203.0.113.1").await.status(), 401);
    assert_rate_limited(from("203.0.113.1").await, 60).await;
    // A client cannot escape by adding its own entries in front of the proxy's.
    assert_rate_limited(from("198.51.100.7, 203.0.113.1").await, 60).await;
    // Another client behind the same proxy has its own budget.
    assert_eq!(from("203.0.113.2").await.status(), 401);
}

#[tokio::test]
async fn sign_ups_are_limited_per_address_and_a_refused_one_stores_nothing() {
    let app = spawn_app_with(|s| {
        s.limits.signup_per_ip = 2;
        s.limits.signup_window_secs = 3600;
    })
    .await;
    let here = reqwest::Client::new();
    let signup = |name: &str| json!({"username": name, "email": format!("{name}@example.com"), "password": "correct horse"});
    for name in ["user1", "user2"] {
        let response = post_as(&app, &here, "/api/auth/signup", &signup(name), None).await;
        assert_eq!(response.status(), 201);
    }
    let refused = post_as(&app, &here, "/api/auth/signup", &signup("user3"), None).await;
    assert_rate_limited(refused, 3600).await;
    assert_eq!(app.user_count().await, 2);

    let elsewhere = client_from(OTHER_ADDRESS);
    let response = post_as(&app, &elsewhere, "/api/auth/signup", &signup("user3"), None).await;
    assert_eq!(response.status(), 201);
}
