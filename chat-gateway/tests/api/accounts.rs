//! A deleted or disabled account loses its live connections on every gateway, and its earlier
//! tokens are refused from then on.

use std::time::Duration;

use chat_gateway::settings::Settings;
use common::domain::UserId;
use common::event::{AccountChange, AccountEvent};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Client, Cluster};

/// The close code the client sees, waiting up to `within` (frames before it are skipped).
async fn close_code(client: &mut Client, within: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, client.socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) | Err(_) => return None,
        }
    }
}

async fn publish(cluster: &Cluster, user: &str, change: AccountChange) {
    let mut settings = Settings::load().expect("settings load").amqp.connection;
    settings.exchange = cluster.exchange.clone();
    let user = UserId::parse(user.to_string()).expect("valid user id");
    common::testing::publish_account_event(
        &settings,
        &AccountEvent::new(user, change, chrono::Utc::now()),
    )
    .await;
}

#[tokio::test]
async fn a_deleted_account_is_disconnected_on_every_gateway_and_its_token_refused() {
    let cluster = Cluster::new().await;
    let (first, second) = (cluster.gateway().await, cluster.gateway().await);
    let alice_token = common::testing::token("u-alice", "alice");
    let mut alice_here = first
        .connect_with_token(&alice_token)
        .await
        .expect("upgrade");
    let mut alice_there = second
        .connect_with_token(&alice_token)
        .await
        .expect("upgrade");
    let mut bob = first.connect("u-bob", "bob").await;
    alice_here.join("general").await;
    bob.join("general").await;

    publish(&cluster, "u-alice", AccountChange::Deleted).await;

    assert_eq!(
        close_code(&mut alice_here, Duration::from_secs(5)).await,
        Some(4003)
    );
    assert_eq!(
        close_code(&mut alice_there, Duration::from_secs(5)).await,
        Some(4003)
    );
    assert_eq!(
        first.connect_with_token(&alice_token).await.err(),
        Some(401)
    );
    assert_eq!(
        second.connect_with_token(&alice_token).await.err(),
        Some(401)
    );
    // Nobody else is affected.
    bob.send_json(serde_json::json!({"type": "ping"})).await;
    assert_eq!(bob.next_of("pong").await["type"], "pong");
    assert!(
        first
            .connect("u-carol", "carol")
            .await
            .join("general")
            .await["room"]
            == "general"
    );
}

#[tokio::test]
async fn a_disabled_account_is_refused_until_enabled_and_then_needs_a_new_token() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let old_token = common::testing::token("u-dave", "dave");
    let mut dave = gateway
        .connect_with_token(&old_token)
        .await
        .expect("upgrade");

    publish(&cluster, "u-dave", AccountChange::Disabled).await;
    assert_eq!(
        close_code(&mut dave, Duration::from_secs(5)).await,
        Some(4003)
    );
    assert_eq!(
        gateway.connect_with_token(&old_token).await.err(),
        Some(401)
    );

    publish(&cluster, "u-dave", AccountChange::Enabled).await;
    // A token from a login after the account was enabled again (issued a second later, as
    // token times are whole seconds) is accepted; the old one stays refused.
    let mut claims = common::testing::claims("u-dave", "dave");
    claims.iat += 2;
    let new_token = common::testing::sign(&claims, common::testing::TEST_KID);
    let mut accepted = false;
    for _ in 0..50 {
        if gateway.connect_with_token(&new_token).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "a token issued after enabling was refused");
    assert_eq!(
        gateway.connect_with_token(&old_token).await.err(),
        Some(401)
    );
}
