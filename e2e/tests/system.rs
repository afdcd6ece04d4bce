//! The whole system as users meet it: real binaries, real RabbitMQ and MongoDB-wire server.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::SinkExt;
use support::System;

#[tokio::test]
async fn users_on_two_gateways_chat_and_the_conversation_is_stored_in_order() {
    let system = System::start(2).await;
    let alice_token = system.user(0, "alice").await;
    let bob_token = system.user(1, "bob").await;
    let mut alice = system.connect(0, &alice_token).await;
    let mut bob = system.connect(1, &bob_token).await;
    alice.join("general").await;
    bob.join("general").await;

    let mut sent = Vec::new();
    for i in 0..10 {
        let (client, name, peer) = if i % 2 == 0 {
            (&mut alice, "alice", "bob")
        } else {
            (&mut bob, "bob", "alice")
        };
        let client_id = format!("{name}-{i}");
        let body = format!("{name} to {peer}: {i}");
        client.send_message("general", &client_id, &body).await;
        let ack = client.next_of("ack").await;
        assert_eq!(ack["client_id"], client_id.as_str());
        sent.push((ack["id"].as_str().expect("id").to_string(), body));
    }

    for client in [&mut alice, &mut bob] {
        let mut received = Vec::new();
        while received.len() < sent.len() {
            received.push(client.next_of("message").await);
        }
        let ids: Vec<String> = received
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_string())
            .collect();
        let expected: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids, expected, "each message once, in order");
        let extra = client.next_json(Duration::from_millis(500)).await;
        assert!(
            extra.as_ref().is_none_or(|f| f["type"] != "message"),
            "a message arrived twice: {extra:?}"
        );
    }

    // The history API (through the gateway) returns the conversation in order.
    let stored = loop_until(Duration::from_secs(15), || async {
        let stored = system.history(0, &alice_token, "general").await;
        (stored.len() >= sent.len()).then_some(stored)
    })
    .await;
    let stored: Vec<(String, String)> = stored
        .iter()
        .map(|m| {
            (
                m["id"].as_str().expect("id").to_string(),
                m["body"].as_str().expect("body").to_string(),
            )
        })
        .collect();
    assert_eq!(stored, sent);

    // A newcomer's `joined` carries the recent history, oldest first.
    let carol_token = system.user(0, "carol").await;
    let mut carol = system.connect(0, &carol_token).await;
    let joined = carol.join("general").await;
    let recent: Vec<&str> = joined["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["body"].as_str().expect("body"))
        .collect();
    let expected: Vec<&str> = sent.iter().map(|(_, body)| body.as_str()).collect();
    assert_eq!(recent, expected);
    let members: HashSet<&str> = joined["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["username"].as_str().expect("name"))
        .collect();
    assert_eq!(members, HashSet::from(["alice", "bob", "carol"]));
}

#[tokio::test]
async fn history_service_killed_during_500_sends_still_stores_each_message_exactly_once() {
    let mut system = System::start(2).await;
    let alice_token = system.user(0, "alice").await;
    let bob_token = system.user(1, "bob").await;
    let mut alice = system.connect(0, &alice_token).await;
    let mut bob = system.connect(1, &bob_token).await;
    alice.join("stress").await;
    bob.join("stress").await;

    const TOTAL: usize = 500;
    let mut acked: HashMap<String, String> = HashMap::new();
    let mut alice_seen: HashSet<String> = HashSet::new();
    for i in 0..TOTAL {
        if i == 150 {
            system.history.kill();
        }
        if i == 350 {
            system.history.restart();
        }
        alice
            .send_message("stress", &format!("m-{i}"), &format!("message {i}"))
            .await;
        // Each send is acknowledged only after the broker confirmed it.
        loop {
            let frame = alice
                .next_json(Duration::from_secs(10))
                .await
                .expect("a frame");
            match frame["type"].as_str() {
                Some("ack") => {
                    acked.insert(
                        frame["client_id"].as_str().expect("cid").to_string(),
                        frame["id"].as_str().expect("id").to_string(),
                    );
                    break;
                }
                Some("message") => {
                    alice_seen.insert(frame["id"].as_str().expect("id").to_string());
                }
                Some("error") => panic!("send {i} refused: {frame}"),
                _ => {}
            }
        }
    }
    assert_eq!(acked.len(), TOTAL);

    // Live delivery did not depend on history-service: bob got every message once.
    let mut bob_seen: Vec<String> = Vec::new();
    while bob_seen.len() < TOTAL {
        let frame = bob
            .next_json(Duration::from_secs(10))
            .await
            .expect("bob receives");
        if frame["type"] == "message" {
            bob_seen.push(frame["id"].as_str().expect("id").to_string());
        }
    }
    let bob_unique: HashSet<&String> = bob_seen.iter().collect();
    assert_eq!(bob_unique.len(), TOTAL);

    system.history.wait_ready().await;
    let stored = loop_until(Duration::from_secs(30), || async {
        let stored = system.history(1, &bob_token, "stress").await;
        (stored.len() >= TOTAL).then_some(stored)
    })
    .await;
    let ids: Vec<&str> = stored
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    let expected: HashSet<&str> = acked.values().map(String::as_str).collect();
    println!(
        "sent {TOTAL}, acked {}, stored {}, unique {}, missing {}, duplicates {}",
        acked.len(),
        ids.len(),
        unique.len(),
        expected.difference(&unique).count(),
        ids.len() - unique.len()
    );
    assert_eq!(ids.len(), TOTAL, "stored exactly once each");
    assert_eq!(unique, expected);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "history is in id order");
    let bodies_ok = stored.iter().all(|m| {
        let cid = m["client_id"].as_str().unwrap_or_default();
        acked.get(cid).map(String::as_str) == m["id"].as_str()
    });
    assert!(bodies_ok, "every stored message matches its ack");
}

#[tokio::test]
async fn a_user_who_deletes_their_account_is_disconnected_everywhere_and_locked_out() {
    let system = System::start(2).await;
    let alice_token = system.user(0, "alice").await;
    let bob_token = system.user(1, "bob").await;
    let mut alice_here = system.connect(0, &alice_token).await;
    let mut alice_there = system.connect(1, &alice_token).await;
    let mut bob = system.connect(1, &bob_token).await;
    alice_here.join("general").await;
    bob.join("general").await;

    let deleted = reqwest::Client::new()
        .delete(format!("{}/api/auth/me", system.gateways[0].url()))
        .bearer_auth(&alice_token)
        .json(&serde_json::json!({"password": "correct horse"}))
        .send()
        .await
        .expect("delete sent");
    assert_eq!(deleted.status(), 204);

    // auth-service's event reaches both gateways: Alice's connections close with 4003.
    for alice in [&mut alice_here, &mut alice_there] {
        assert_eq!(alice.close_code(Duration::from_secs(5)).await, Some(4003));
    }
    for gateway in &system.gateways {
        let refused = tokio_tungstenite::connect_async(format!(
            "ws://127.0.0.1:{}/ws?token={alice_token}",
            gateway.port
        ))
        .await;
        assert!(
            matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 401),
            "the deleted user's token still opens a connection"
        );
    }
    // history-service refuses the token too (through the gateway's proxy); it answers 503
    // until it has loaded the token keys, which it may not have needed yet.
    let status = loop_until(Duration::from_secs(10), || async {
        let status = reqwest::Client::new()
            .get(format!(
                "{}/api/rooms/general/messages",
                system.gateways[1].url()
            ))
            .bearer_auth(&alice_token)
            .send()
            .await
            .expect("history request sent")
            .status();
        (status != 503).then_some(status)
    })
    .await;
    assert_eq!(status, 401);

    // Nobody else is affected.
    bob.send_message("general", "bob-after", "still here").await;
    assert_eq!(bob.next_of("ack").await["client_id"], "bob-after");
}

async fn loop_until<T, F, Fut>(limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn refused_frames_store_nothing_and_the_connection_keeps_working() {
    let system = System::start(1).await;
    let token = system.user(0, "alice").await;
    let mut alice = system.connect(0, &token).await;
    alice.join("checks").await;
    let too_long = "x".repeat(4001);
    let refused = [
        (
            serde_json::json!({"type": "send", "room": "checks", "client_id": "e-1", "body": ""}),
            "invalid_body",
        ),
        (
            serde_json::json!({"type": "send", "room": "checks", "client_id": "e-2", "body": too_long}),
            "invalid_body",
        ),
        (
            serde_json::json!({"type": "send", "room": "bad room", "client_id": "e-3", "body": "x"}),
            "invalid_room",
        ),
        (
            serde_json::json!({"type": "send", "room": "other", "client_id": "e-4", "body": "x"}),
            "not_joined",
        ),
        (
            serde_json::json!({"type": "shout", "room": "checks"}),
            "unknown_type",
        ),
    ];
    for (frame, code) in refused {
        alice.send_json(frame).await;
        assert_eq!(alice.next_of("error").await["code"], code);
    }
    alice
        .socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "{\"type\":".into(),
        ))
        .await
        .expect("sent");
    assert_eq!(alice.next_of("error").await["code"], "malformed_json");
    alice
        .send_message("checks", "ok-1", "the only message")
        .await;
    let ack = alice.next_of("ack").await;

    let stored = loop_until(Duration::from_secs(15), || async {
        let stored = system.history(0, &token, "checks").await;
        (!stored.is_empty()).then_some(stored)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored_again = system.history(0, &token, "checks").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored_again.len(), 1);
    assert_eq!(stored[0]["id"], ack["id"]);
    assert!(system.history(0, &token, "other").await.is_empty());
}
