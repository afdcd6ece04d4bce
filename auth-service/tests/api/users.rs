//! Finding other users by username: the people picker's search and the exact lookup other
//! services make when a member is added by name.

use serde_json::Value;

use crate::helpers::{TestApp, error_code, spawn_app};

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    let request = app.http.get(format!("{}{path}", app.address));
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
    .send()
    .await
    .expect("request sent")
}

fn access(pair: &Value) -> &str {
    pair["access_token"].as_str().expect("access token")
}

#[tokio::test]
async fn search_finds_users_by_username_prefix_in_any_case_without_emails() {
    let app = spawn_app().await;
    let (_, pair) = app.user("alice").await;
    let (bob, _) = app.user("Bobby").await;
    let (bobcat, _) = app.user("bobcat").await;
    app.user("carol").await;

    let response = get(&app, "/api/users?q=BOB", Some(access(&pair))).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({"users": [
            {"id": bob, "username": "Bobby"},
            {"id": bobcat, "username": "bobcat"},
        ]}),
        "prefix matches only, username order, id and username only"
    );
}

#[tokio::test]
async fn search_answers_at_most_twenty_users() {
    let app = spawn_app().await;
    let (_, pair) = app.user("alice").await;
    for n in 0..22 {
        app.user(&format!("user{n:02}")).await;
    }
    let body: Value = get(&app, "/api/users?q=user", Some(access(&pair)))
        .await
        .json()
        .await
        .expect("json");
    let users = body["users"].as_array().expect("users");
    assert_eq!(users.len(), 20);
    assert_eq!(users[0]["username"], "user00");
}

#[tokio::test]
async fn search_refuses_bad_prefixes_and_anonymous_callers() {
    let app = spawn_app().await;
    let (_, pair) = app.user("alice").await;
    for query in [
        "",
        "?q=",
        "?q=a%20b",
        "?q=%7B%22%24ne%22%3A1%7D",
        &format!("?q={}", "a".repeat(33)),
    ] {
        let response = get(&app, &format!("/api/users{query}"), Some(access(&pair))).await;
        assert_eq!(response.status(), 422, "{query}");
        assert_eq!(error_code(response).await, "validation_failed");
    }
    let response = get(&app, "/api/users?q=al", None).await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn lookup_by_name_answers_the_user_or_user_not_found() {
    let app = spawn_app().await;
    let (_, pair) = app.user("alice").await;
    let (bob, _) = app.user("Bob").await;

    let response = get(&app, "/api/users/by-name/bOB", Some(access(&pair))).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, serde_json::json!({"id": bob, "username": "Bob"}));

    for missing in ["nobody", "no%20such%20name"] {
        let response = get(
            &app,
            &format!("/api/users/by-name/{missing}"),
            Some(access(&pair)),
        )
        .await;
        assert_eq!(response.status(), 404, "{missing}");
        assert_eq!(error_code(response).await, "user_not_found");
    }
    assert_eq!(
        get(&app, "/api/users/by-name/bob", None).await.status(),
        401
    );
}
