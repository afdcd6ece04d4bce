use std::time::Duration;

use serde_json::json;

use crate::helpers::{Client, Cluster};

#[tokio::test]
async fn a_retried_send_is_acked_with_the_original_id_and_delivered_once() {
    let cluster = Cluster::new().await;
    let first = cluster.gateway().await;
    let second = cluster.gateway().await;
    let mut alice = first.connect("u-alice", "alice").await;
    let mut bob = second.connect("u-bob", "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;

    // The same send again on the same connection: same id and time, nothing new delivered.
    let original = send_and_retry(&mut alice, "lobby", "c-1").await;

    // And from another connection on the other gateway (the client reconnected elsewhere).
    let mut alice_elsewhere = second.connect("u-alice", "alice").await;
    alice_elsewhere.join("lobby").await;
    alice_elsewhere.send_message("lobby", "c-1", "hello").await;
    let elsewhere = alice_elsewhere.next_of("ack").await;
    assert_eq!(elsewhere["id"], original["id"]);

    let delivered = bob.collect("message", 3, Duration::from_millis(800)).await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["id"], original["id"]);
}

#[tokio::test]
async fn client_ids_are_per_user_and_per_room() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    let mut bob = gateway.connect("u-bob", "bob").await;
    alice.join("lobby").await;
    alice.join("other").await;
    bob.join("lobby").await;

    alice.send_message("lobby", "same", "from alice").await;
    let alice_ack = alice.next_of("ack").await;
    bob.send_message("lobby", "same", "from bob").await;
    let bob_ack = bob.next_of("ack").await;
    assert_ne!(
        alice_ack["id"], bob_ack["id"],
        "another user's client_id is another message"
    );

    alice
        .send_message("other", "same", "reused elsewhere")
        .await;
    let error = alice.next_of("error").await;
    assert_eq!(error["code"], "duplicate_client_id");
    assert_eq!(error["client_id"], "same");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_4008_and_others_keep_receiving() {
    const SENT: usize = 150;
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|s| {
            s.limits.outbound_queue = 4;
            s.limits.socket_send_buffer_bytes = 16 * 1024;
        })
        .await;
    let mut sender = gateway.connect("u-sender", "sender").await;
    let mut stalled = gateway
        .connect_with_small_receive_buffer("u-stalled", "stalled")
        .await;
    sender.join("busy").await;
    stalled.join("busy").await;

    // Large messages (12 KB) fill the small socket buffers quickly.
    let body = "€".repeat(4000);
    let mut acked = 0;
    for i in 0..SENT {
        sender.send_json(json!({"type": "send", "room": "busy", "client_id": format!("m-{i}"), "body": body})).await;
        loop {
            let frame = sender.next_json().await;
            if frame["type"] == "ack" {
                acked += 1;
                break;
            }
        }
    }
    assert_eq!(acked, SENT);

    // Now read the stalled client: it got some messages, then was cut off.
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut received = 0;
    let mut outcome = None;
    while let Ok(Some(frame)) =
        tokio::time::timeout(Duration::from_secs(10), stalled.socket.next()).await
    {
        match frame {
            Ok(Message::Text(text)) => {
                let value: serde_json::Value = serde_json::from_str(&text).expect("json");
                if value["type"] == "message" {
                    received += 1;
                } else if value["type"] == "lagged" {
                    outcome = Some("lagged".to_string());
                }
            }
            Ok(Message::Close(frame)) => {
                outcome = Some(format!(
                    "close {}",
                    frame.map(|f| u16::from(f.code)).unwrap_or(0)
                ));
                break;
            }
            Ok(_) => {}
            Err(_) => {
                outcome.get_or_insert_with(|| "dropped".to_string());
                break;
            }
        }
    }
    assert!(received < SENT, "the stalled client was not cut off");
    let outcome = outcome.expect("the stalled connection stayed open");
    println!("stalled client: {received} of {SENT} messages, then {outcome}");
    // The close frame gets through when the socket buffers have room, else the socket is cut.
    assert!(outcome == "close 4008" || outcome == "dropped", "{outcome}");

    // The sender's own connection kept working throughout.
    sender.send_message("busy", "after", "still fine").await;
    assert_eq!(sender.next_of("ack").await["client_id"], "after");
}

/// Sends `client_id` twice on one connection; both acks carry the same id and time. Returns
/// the first ack.
async fn send_and_retry(client: &mut Client, room: &str, client_id: &str) -> serde_json::Value {
    client.send_message(room, client_id, "hello").await;
    let original = client.next_of("ack").await;
    client.send_message(room, client_id, "hello").await;
    let again = client.next_of("ack").await;
    assert_eq!(again["id"], original["id"]);
    assert_eq!(again["sent_at"], original["sent_at"]);
    original
}

/// A stand-in for history-service: empty pages, and every message id stored or none.
async fn history_where_everything_is_stored(stored: bool) -> String {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/api/rooms/{room}/messages",
            get(|| async { axum::Json(json!({"messages": [], "has_more": false})) }),
        )
        .route(
            "/api/rooms/{room}/messages/{id}",
            get(move || async move {
                if stored {
                    (StatusCode::OK, axum::Json(json!({})))
                } else {
                    let error = json!({"error": {"code": "not_found", "message": "not found"}});
                    (StatusCode::NOT_FOUND, axum::Json(error))
                }
            }),
        )
        .merge(crate::helpers::StubHistory::default().routes());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

async fn published_total(address: &str) -> u64 {
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix("gateway_messages_published_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the published counter is exported")
}

#[tokio::test]
async fn a_prompt_retry_is_published_again_and_a_later_one_only_when_history_has_not_stored_it() {
    // (stored, republish window, publishes): a retry within the window is published again
    // even when stored; one after it only when not stored.
    for (stored, window_ms, expected) in [(true, 0, 1), (false, 0, 2), (true, 60_000, 2)] {
        let history = history_where_everything_is_stored(stored).await;
        let cluster = Cluster::new().await;
        let gateway = cluster
            .gateway_with(|settings| {
                settings.history.url = history.clone();
                settings.receipts.republish_within_ms = window_ms;
            })
            .await;
        let mut alice = gateway.connect("u-alice", "alice").await;
        alice.join("lobby").await;
        send_and_retry(&mut alice, "lobby", "c-1").await;
        assert_eq!(
            published_total(&gateway.metrics_address).await,
            expected,
            "stored: {stored}, window: {window_ms} ms"
        );
        // Either way the connection sees the message once.
        let delivered = alice
            .collect("message", 2, Duration::from_millis(500))
            .await;
        assert_eq!(delivered.len(), 1, "{delivered:?}");
    }
}
