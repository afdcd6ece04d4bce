use common::token::KeySet;
use serde_json::Value;

use crate::helpers::{TestApp, error_code, signed_up_app, spawn_app, spawn_app_with, token_policy};

#[tokio::test]
async fn login_issues_a_bearer_token_that_verifies_with_the_published_jwks() {
    let app = signed_up_app().await;
    let response = app.login("Alice", "correct horse").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let token = body["access_token"].as_str().expect("token");

    let header = jsonwebtoken::decode_header(token).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert!(header.kid.is_some());

    let jwks = app.jwks().await;
    assert!(!jwks.keys.is_empty());
    let jwks_text = serde_json::to_string(&jwks).expect("serializes");
    assert!(
        !jwks_text.contains("\"d\""),
        "private key material published"
    );
    let user = KeySet::from_jwks(&jwks)
        .verify(token, &token_policy())
        .expect("verifies");
    assert_eq!(user.user.username.as_str(), "alice");
}

#[tokio::test]
async fn login_gives_the_same_answer_for_a_wrong_password_and_an_unknown_user() {
    let app = signed_up_app().await;
    let wrong = app.login("alice", "wrong horse").await;
    assert_eq!(wrong.status(), 401);
    let wrong_body: Value = wrong.json().await.expect("json");
    let unknown = app.login("nobody", "correct horse").await;
    assert_eq!(unknown.status(), 401);
    let unknown_body: Value = unknown.json().await.expect("json");
    assert_eq!(wrong_body, unknown_body);
    assert_eq!(wrong_body["error"]["code"], "invalid_credentials");
}

#[tokio::test]
async fn login_with_an_over_long_password_is_refused_not_truncated() {
    let app = spawn_app().await;
    let password = "p".repeat(72);
    assert_eq!(
        app.signup("alice", "a@example.com", &password)
            .await
            .status(),
        201
    );
    let longer = format!("{password}extra");
    assert_eq!(app.login("alice", &longer).await.status(), 401);
    assert_eq!(app.login("alice", &password).await.status(), 200);
}

#[tokio::test]
async fn me_returns_the_user_for_a_valid_token_and_401_otherwise() {
    let app = signed_up_app().await;
    let body: Value = app
        .login("alice", "correct horse")
        .await
        .json()
        .await
        .expect("json");
    let token = body["access_token"].as_str().expect("token");
    let me = app
        .http
        .get(format!("{}/api/auth/me", app.address))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["user"]["username"], "alice");

    for header in [
        None,
        Some("Bearer not.a.token".to_string()),
        Some(format!("Bearer {token}x")),
    ] {
        let mut request = app.http.get(format!("{}/api/auth/me", app.address));
        if let Some(h) = &header {
            request = request.header("Authorization", h);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.status(), 401, "{header:?}");
        assert_eq!(error_code(response).await, "unauthorized");
    }
}

#[tokio::test]
async fn every_failed_login_costs_one_bcrypt_verification_whether_or_not_the_user_exists() {
    let app = signed_up_app().await;
    // The dummy hash that unknown users are checked against has the configured cost.
    assert_eq!(app.passwords.dummy_cost(), Some(4));
    let over_long = "p".repeat(73);
    for (username, password) in [
        ("alice", "wrong horse"),
        ("nobody", "correct horse"),
        ("not a username!", "correct horse"),
        ("alice", "short"),
        ("alice", over_long.as_str()),
    ] {
        let before = app.passwords.verifications();
        let response = app.login(username, password).await;
        assert_eq!(response.status(), 401, "{username}/{password}");
        assert_eq!(
            app.passwords.verifications() - before,
            1,
            "{username}/{password} did not cost exactly one verification"
        );
    }
    let before = app.passwords.verifications();
    assert_eq!(app.login("alice", "correct horse").await.status(), 200);
    assert_eq!(app.passwords.verifications() - before, 1);
}

/// The bcrypt cost of alice's stored hash.
async fn stored_cost(app: &TestApp) -> u32 {
    let users = app.documents("users").await;
    let hash = users[0].get_str("password_hash").expect("password hash");
    auth_service::password::cost_of(hash).expect("a bcrypt hash")
}

#[tokio::test]
async fn a_password_stored_at_a_lower_cost_is_hashed_again_at_the_configured_cost_on_login() {
    let before = signed_up_app().await;
    assert_eq!(stored_cost(&before).await, 4);
    let database = before.db.name().to_string();
    let after = spawn_app_with(|settings| {
        settings.mongodb.database = database;
        settings.password.bcrypt_cost = 6;
    })
    .await;

    let wrong = after.login("alice", "wrong horse").await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        stored_cost(&after).await,
        4,
        "a failed login changes nothing"
    );

    after.login_pair("alice", "correct horse").await;
    assert_eq!(stored_cost(&after).await, 6);
    after.login_pair("alice", "correct horse").await;
    assert_eq!(after.login("alice", "wrong horse").await.status(), 401);
}
