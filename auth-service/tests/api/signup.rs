use serde_json::{Value, json};

use crate::helpers::{error_code, spawn_app, spawn_app_with};

#[tokio::test]
async fn signup_creates_a_user_and_answers_201_without_the_hash() {
    let app = spawn_app().await;
    let response = app
        .signup("Alice", "Alice@Example.com", "correct horse")
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    let user = &body["user"];
    assert_eq!(user["username"], "Alice");
    assert_eq!(user["email"], "alice@example.com");
    assert!(user["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(user["created_at"].is_string());
    assert!(user.get("password_hash").is_none());
    assert_eq!(app.user_count().await, 1);
}

#[tokio::test]
async fn signup_refuses_a_username_taken_in_another_case_with_409() {
    let app = spawn_app().await;
    assert_eq!(
        app.signup("alice", "a1@example.com", "tulip garden 7")
            .await
            .status(),
        201
    );
    let response = app
        .signup("ALICE", "a2@example.com", "tulip garden 7")
        .await;
    assert_eq!(response.status(), 409);
    assert_eq!(error_code(response).await, "username_taken");
    assert_eq!(app.user_count().await, 1);
}

#[tokio::test]
async fn signup_refuses_a_taken_email_in_another_case_with_409() {
    let app = spawn_app().await;
    assert_eq!(
        app.signup("alice", "same@example.com", "tulip garden 7")
            .await
            .status(),
        201
    );
    let response = app
        .signup("bob", "SAME@example.com", "tulip garden 7")
        .await;
    assert_eq!(response.status(), 409);
    assert_eq!(error_code(response).await, "email_taken");
    assert_eq!(app.user_count().await, 1);
}

#[tokio::test]
async fn signup_reports_every_invalid_field_with_422() {
    let app = spawn_app().await;
    let response = app.signup("a!", "not-an-email", "short").await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "validation_failed");
    for field in ["username", "email", "password"] {
        assert!(
            body["error"]["fields"][field].is_string(),
            "{field} not reported: {body}"
        );
    }
    assert_eq!(app.user_count().await, 0);
}

#[tokio::test]
async fn signup_refuses_operator_shaped_json_with_422_and_stores_nothing() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/api/auth/signup",
            &json!({"username": {"$ne": null}, "email": "x@example.com", "password": "tulip garden 7"}),
        )
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["fields"]["username"], "must be a string");
    assert_eq!(app.user_count().await, 0);
}

#[tokio::test]
async fn signup_refuses_passwords_longer_than_bcrypt_can_use() {
    let app = spawn_app().await;
    let response = app.signup("alice", "a@example.com", &"p".repeat(73)).await;
    assert_eq!(response.status(), 422);
    assert_eq!(app.user_count().await, 0);
    assert_eq!(
        app.signup("alice", "a@example.com", &"p".repeat(72))
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_and_unknown_fields_a_422_both_with_the_error_body() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(format!("{}/api/auth/signup", app.address))
        .header("Content-Type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(response).await, "malformed_request");

    let response = app
        .post(
            "/api/auth/signup",
            &json!({"username": "alice", "email": "a@example.com", "password": "tulip garden 7", "admin": true}),
        )
        .await;
    assert_eq!(response.status(), 422);
    assert_eq!(error_code(response).await, "validation_failed");
    assert_eq!(app.user_count().await, 0);
}

#[tokio::test]
async fn unknown_routes_answer_404_with_the_error_body() {
    let app = spawn_app().await;
    let response = app.get(format!("{}/nope", app.address)).await;
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "not_found");
}

#[tokio::test]
async fn health_endpoints_answer_when_the_database_is_reachable() {
    let app = spawn_app().await;
    for path in ["/health/live", "/health/ready"] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn the_service_starts_again_on_its_existing_database_and_keeps_its_users() {
    let first = spawn_app().await;
    assert_eq!(
        first
            .signup("alice", "alice@example.com", "correct horse")
            .await
            .status(),
        201
    );
    first.login_pair("alice", "correct horse").await;
    let database = first.db.name().to_string();
    let restarted = spawn_app_with(|s| s.mongodb.database = database).await;
    restarted.login_pair("alice", "correct horse").await;
    let again = restarted
        .signup("ALICE", "other@example.com", "correct horse")
        .await;
    assert_eq!(again.status(), 409, "the unique index survived the restart");
}

#[tokio::test]
async fn metrics_report_request_latency_by_route_and_status() {
    let app = spawn_app().await;
    assert_eq!(
        app.signup("alice", "a@example.com", "tulip garden 7")
            .await
            .status(),
        201
    );
    assert_eq!(
        app.signup("alice", "b@example.com", "tulip garden 7")
            .await
            .status(),
        409
    );
    let text = app.metrics().await;
    assert!(text.contains(r#"http_request_duration_seconds_count{method="POST",route="/api/auth/signup",status="201"} 1"#), "{text}");
    assert!(text.contains(r#"http_request_duration_seconds_count{method="POST",route="/api/auth/signup",status="409"} 1"#), "{text}");
}

#[tokio::test]
async fn the_public_port_does_not_serve_metrics() {
    let app = spawn_app().await;
    let response = app.get(format!("{}/metrics", app.address)).await;
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "not_found");

    let response = app.get(format!("{}/metrics", app.metrics_address)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    assert!(text.contains("http_request_duration_seconds"), "{text}");

    // The metrics listener serves nothing else.
    let response = app
        .get(format!("{}/api/auth/me", app.metrics_address))
        .await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn signup_refuses_the_most_common_passwords_in_any_case_with_422() {
    let app = spawn_app().await;
    for (i, common) in [
        "password",
        "Password",
        "PASSWORD1",
        "1234567890",
        "qwertyuiop",
    ]
    .into_iter()
    .enumerate()
    {
        let response = app
            .signup(&format!("user{i}"), &format!("u{i}@example.com"), common)
            .await;
        assert_eq!(response.status(), 422, "{common}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "weak_password", "{common}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("most common"), "{message}");
        assert!(body["error"]["fields"]["password"].is_string(), "{body}");
    }
    assert_eq!(app.user_count().await, 0);

    let response = app
        .signup("alice", "alice@example.com", "vT7#qLm2!xR9-kelp")
        .await;
    assert_eq!(response.status(), 201);
}
