//! Deleting and disabling accounts: what the user sees, what is stored, and the event the
//! other services receive on the exchange.

use common::event::AccountChange;
use serde_json::{Value, json};

use crate::helpers::{AccountEventListener, TestApp, error_code, spawn_app, spawn_app_with};

/// An instance where `root` (any case) is an administrator.
async fn app_with_an_administrator() -> TestApp {
    spawn_app_with(|settings| settings.admin.usernames = vec!["Root".into()]).await
}

fn access(pair: &Value) -> &str {
    pair["access_token"].as_str().expect("access token")
}

fn refresh(pair: &Value) -> &str {
    pair["refresh_token"].as_str().expect("refresh token")
}

/// Waits for the next event and checks it is `change` of `user_id` under its routing key.
async fn expect_event(events: &mut AccountEventListener, user_id: &str, change: AccountChange) {
    let (routing_key, event) = events.next().await;
    assert_eq!(routing_key, format!("account.{user_id}"));
    assert_eq!(event.user_id.as_str(), user_id);
    assert_eq!(event.change, change);
    assert_eq!(event.v, 1);
}

#[tokio::test]
async fn deleting_an_account_with_its_password_removes_it_ends_its_sessions_and_is_published() {
    let app = spawn_app().await;
    let mut events = app.listen_to_account_events().await;
    let (alice, pair) = app.user("alice").await;
    let (bob, _) = app.user("bob").await;

    let response = app
        .delete_me(access(&pair), Some(json!({"password": "correct horse"})))
        .await;
    assert_eq!(response.status(), 204);
    expect_event(&mut events, &alice, AccountChange::Deleted).await;

    assert_eq!(app.user_count().await, 1, "only bob is left");
    let login = app.login("alice", "correct horse").await;
    assert_eq!(login.status(), 401);
    assert_eq!(error_code(login).await, "invalid_credentials");
    assert_eq!(app.refresh(refresh(&pair)).await.status(), 401);
    assert_eq!(app.me(access(&pair)).await.status(), 401);
    let families = app.documents("refresh_token_families").await;
    for family in families {
        let owner = family.get_str("user_id").expect("user id");
        let revoked = family.get_bool("revoked").expect("revoked flag");
        assert_eq!(revoked, owner == alice, "family of {owner}");
    }
    assert_ne!(alice, bob);
    app.login_pair("bob", "correct horse").await;
}

#[tokio::test]
async fn a_wrong_or_missing_password_leaves_the_account_as_it_was() {
    let app = spawn_app().await;
    let (_, pair) = app.user("alice").await;

    let wrong = app
        .delete_me(access(&pair), Some(json!({"password": "wrong horse"})))
        .await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(error_code(wrong).await, "invalid_credentials");
    for body in [None, Some(json!({})), Some(json!({"password": 12345678}))] {
        let response = app.delete_me(access(&pair), body.clone()).await;
        assert_eq!(response.status(), 422, "{body:?}");
        assert_eq!(error_code(response).await, "validation_failed");
    }
    let anonymous = app
        .http
        .delete(format!("{}/api/auth/me", app.address))
        .json(&json!({"password": "correct horse"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(anonymous.status(), 401);

    assert_eq!(app.user_count().await, 1);
    assert_eq!(app.me(access(&pair)).await.status(), 200);
    assert_eq!(app.refresh(refresh(&pair)).await.status(), 200);
    app.login_pair("alice", "correct horse").await;
}

#[tokio::test]
async fn a_disabled_account_cannot_log_in_or_refresh_and_enabling_it_lets_it_in_again() {
    let app = app_with_an_administrator().await;
    let mut events = app.listen_to_account_events().await;
    let (_, root) = app.user("root").await;
    let (alice, pair) = app.user("alice").await;

    let response = app.admin(access(&root), &alice, "disable").await;
    assert_eq!(response.status(), 204);
    expect_event(&mut events, &alice, AccountChange::Disabled).await;
    let stored = &app.documents("users").await;
    let alice_document = stored
        .iter()
        .find(|user| user.get_str("_id") == Ok(alice.as_str()))
        .expect("alice is kept");
    assert!(alice_document.get_datetime("disabled_at").is_ok());

    let right = app.login("alice", "correct horse").await;
    assert_eq!(right.status(), 403);
    assert_eq!(error_code(right).await, "account_disabled");
    // A wrong password gets exactly what a wrong password of an enabled account or an unknown
    // user gets, so a disabled account cannot be found by probing.
    let wrong: Value = app
        .login("alice", "wrong horse")
        .await
        .json()
        .await
        .expect("json");
    let unknown: Value = app
        .login("nobody", "wrong horse")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"]["code"], "invalid_credentials");
    let refused = app.refresh(refresh(&pair)).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(error_code(refused).await, "invalid_refresh_token");
    assert_eq!(app.me(access(&pair)).await.status(), 403);

    // Idempotent: disabling again answers the same and announces it again.
    assert_eq!(
        app.admin(access(&root), &alice, "disable").await.status(),
        204
    );
    expect_event(&mut events, &alice, AccountChange::Disabled).await;

    assert_eq!(
        app.admin(access(&root), &alice, "enable").await.status(),
        204
    );
    expect_event(&mut events, &alice, AccountChange::Enabled).await;
    assert_eq!(
        app.admin(access(&root), &alice, "enable").await.status(),
        204
    );
    expect_event(&mut events, &alice, AccountChange::Enabled).await;
    app.login_pair("alice", "correct horse").await;
}

#[tokio::test]
async fn only_administrators_disable_or_enable_and_only_existing_users() {
    let app = app_with_an_administrator().await;
    let (_, root) = app.user("ROOT").await;
    let (alice, _) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;

    for action in ["disable", "enable"] {
        let response = app.admin(access(&bob), &alice, action).await;
        assert_eq!(response.status(), 403, "{action}");
        assert_eq!(error_code(response).await, "forbidden");
        let response = app.admin("not a token", &alice, action).await;
        assert_eq!(response.status(), 401, "{action}");
        let response = app.admin(access(&root), "01NOSUCHUSER", action).await;
        assert_eq!(response.status(), 404, "{action}");
        assert_eq!(error_code(response).await, "user_not_found");
    }
    app.login_pair("alice", "correct horse").await;

    // An administrator's own account cannot be deleted while the name grants the role.
    let response = app
        .delete_me(access(&root), Some(json!({"password": "correct horse"})))
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(app.user_count().await, 3);
}

#[tokio::test]
async fn an_event_from_while_the_broker_was_unreachable_is_published_once_it_is_back() {
    // A port nobody listens on yet: the publisher cannot connect.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let mut broker_uri = String::new();
    let app = spawn_app_with(|settings| {
        use secrecy::ExposeSecret;
        broker_uri = settings.amqp.connection.uri.expose_secret().to_string();
        let mut unreachable = reqwest::Url::parse(&broker_uri).expect("URI");
        unreachable.set_port(Some(port)).expect("port");
        settings.amqp.connection.uri = unreachable.to_string().into();
        settings.amqp.outbox_capacity = 1;
    })
    .await;
    let mut events = AccountEventListener::start(&broker_uri, &app.exchange).await;
    let (alice, alice_pair) = app.user("alice").await;
    let (_, bob_pair) = app.user("bob").await;

    for pair in [&alice_pair, &bob_pair] {
        let response = app
            .delete_me(access(pair), Some(json!({"password": "correct horse"})))
            .await;
        assert_eq!(response.status(), 204, "the database change is what counts");
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("auth_account_events_dropped_total 1"),
        "bob's event did not fit: {metrics}"
    );

    // The broker comes back on that port.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port is still free");
    let broker = reqwest::Url::parse(&broker_uri).expect("URI");
    let broker = format!(
        "{}:{}",
        broker.host_str().expect("host"),
        broker.port().expect("port")
    );
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let broker = broker.clone();
            tokio::spawn(async move {
                if let Ok(mut upstream) = tokio::net::TcpStream::connect(broker).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    expect_event(&mut events, &alice, AccountChange::Deleted).await;
}
