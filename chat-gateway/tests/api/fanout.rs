use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::helpers::Cluster;

#[tokio::test]
async fn a_message_reaches_every_member_on_every_gateway_once_and_the_sender_gets_an_ack() {
    let cluster = Cluster::new().await;
    let first = cluster.gateway().await;
    let second = cluster.gateway().await;
    let mut alice = first.connect("u-alice", "alice").await;
    let mut bob = second.connect("u-bob", "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;

    alice.send_message("lobby", "c-1", "hello bob").await;
    let ack = alice.next_of("ack").await;
    assert_eq!(ack["client_id"], "c-1");
    let id = ack["id"].as_str().expect("id").to_string();

    for client in [&mut alice, &mut bob] {
        let message = client.next_of("message").await;
        assert_eq!(message["id"], id.as_str());
        assert_eq!(message["room"], "lobby");
        assert_eq!(message["client_id"], "c-1");
        assert_eq!(message["body"], "hello bob");
        assert_eq!(message["author"]["username"], "alice");
        assert_eq!(message["author"]["id"], "u-alice");
        assert!(message["sent_at"].as_str().is_some_and(|s| s.contains('T')));
        let again = client
            .collect("message", 1, Duration::from_millis(300))
            .await;
        assert!(again.is_empty(), "delivered twice: {again:?}");
    }
}

#[tokio::test]
async fn a_copy_of_a_delivered_message_coming_again_from_the_broker_is_not_delivered_twice() {
    use common::domain::{
        ClientMessageId, MessageBody, MessageId, RoomId, UserId, UserRef, Username,
    };
    use common::event::{ChatMessage, MessageEvent, topology};
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut bob = gateway.connect("u-bob", "bob").await;
    bob.join("lobby").await;
    let room = RoomId::parse("lobby".to_string()).expect("room");
    let event = |body: &str| {
        MessageEvent::new(ChatMessage::new(
            MessageId::from_ulid(ulid::Ulid::new()),
            room.clone(),
            ClientMessageId::parse(ulid::Ulid::new().to_string()).expect("client id"),
            UserRef {
                id: UserId::parse("u-alice".to_string()).expect("user id"),
                username: Username::parse("alice".to_string()).expect("username"),
            },
            MessageBody::parse(body.to_string()).expect("body"),
            chrono::Utc::now(),
        ))
    };
    let mut settings = chat_gateway::settings::Settings::load()
        .expect("settings load")
        .amqp
        .connection;
    settings.exchange = cluster.exchange.clone();
    // The broker hands over messages again after a lost connection (up to its prefetch of
    // 1,024 unacknowledged ones), or a retry published one twice: the same message, the same
    // id, here after more messages than a connection remembers on its own.
    let first = event("once");
    let others: Vec<MessageEvent> = (0..200).map(|k| event(&format!("after it {k}"))).collect();
    let mut copies = vec![first.clone()];
    copies.extend(others.iter().cloned());
    copies.push(first);
    common::testing::publish_events(&settings, &topology::message_key(&room), &copies).await;
    let delivered = bob.collect("message", 202, Duration::from_secs(5)).await;
    let bodies: Vec<&str> = delivered
        .iter()
        .map(|m| m["body"].as_str().expect("body"))
        .collect();
    assert_eq!(bodies.len(), 201, "each once: {:?}", &bodies[195..]);
    assert_eq!(bodies[0], "once");
    assert_eq!(bodies[200], "after it 199");
}

#[tokio::test]
async fn many_messages_arrive_in_send_order_with_distinct_increasing_ids() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    alice.join("lobby").await;
    for i in 0..50 {
        alice
            .send_message("lobby", &format!("c-{i}"), &format!("message {i}"))
            .await;
    }
    let messages = alice.collect("message", 50, Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 50);
    let bodies: Vec<String> = messages
        .iter()
        .map(|m| m["body"].as_str().expect("body").to_string())
        .collect();
    let expected: Vec<String> = (0..50).map(|i| format!("message {i}")).collect();
    assert_eq!(bodies, expected);
    let ids: Vec<&str> = messages
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ids of one gateway increase");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 50);
}

#[tokio::test]
async fn members_are_listed_on_join_and_presence_is_announced_across_gateways() {
    let cluster = Cluster::new().await;
    let first = cluster.gateway().await;
    let second = cluster.gateway().await;
    let mut alice = first.connect("u-alice", "alice").await;
    alice.join("lobby").await;
    let mut bob = second.connect("u-bob", "bob").await;
    let joined = bob.join("lobby").await;
    assert!(joined["messages"].as_array().is_some_and(|m| m.is_empty()));

    let presence = next_presence_of(&mut alice, "bob").await;
    assert_eq!(presence["state"], "online");

    // Gateway two learns of alice from gateway one's answer to its presence query.
    let mut carol = second.connect("u-carol", "carol").await;
    let mut names = Vec::new();
    for _ in 0..20 {
        let joined = carol.join("lobby").await;
        names = joined["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["username"].as_str().expect("name").to_string())
            .collect();
        if names.len() == 3 {
            break;
        }
        carol
            .send_json(json!({"type": "leave", "room": "lobby"}))
            .await;
        carol.next_of("left").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(names, vec!["alice", "bob", "carol"]);

    drop(bob);
    let offline = next_presence_of(&mut alice, "bob").await;
    assert_eq!(offline["state"], "offline");
}

/// The next presence event about `username`, skipping those about others.
async fn next_presence_of(
    client: &mut crate::helpers::Client,
    username: &str,
) -> serde_json::Value {
    loop {
        let presence = client.next_of("presence").await;
        if presence["user"]["username"] == username {
            return presence;
        }
    }
}

#[tokio::test]
async fn typing_is_relayed_to_the_room() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    let mut bob = gateway.connect("u-bob", "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    alice
        .send_json(json!({"type": "typing", "room": "lobby"}))
        .await;
    let typing = bob.next_of("typing").await;
    assert_eq!(typing["user"]["username"], "alice");
    assert_eq!(typing["room"], "lobby");
}

#[tokio::test]
async fn a_member_on_another_gateway_gets_the_room_s_presence_typing_and_messages() {
    let cluster = Cluster::new().await;
    let first = cluster.gateway().await;
    let second = cluster.gateway().await;
    let mut alice = first.connect("u-alice", "alice").await;
    alice.join("lobby").await;
    // The second gateway's first join of the room: its one binding of the room is made now.
    let mut bob = second.connect("u-bob", "bob").await;
    bob.join("lobby").await;

    let mut carol = first.connect("u-carol", "carol").await;
    carol.join("lobby").await;
    let presence = next_presence_of(&mut bob, "carol").await;
    assert_eq!(presence["state"], "online");
    alice
        .send_json(json!({"type": "typing", "room": "lobby"}))
        .await;
    let typing = bob.next_of("typing").await;
    assert_eq!(typing["user"]["username"], "alice");
    alice.send_message("lobby", "c-1", "hello bob").await;
    let message = bob.next_of("message").await;
    assert_eq!(message["body"], "hello bob");
    assert_eq!(message["author"]["username"], "alice");
}

#[tokio::test]
async fn after_leaving_a_room_its_messages_stop_arriving() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    let mut bob = gateway.connect("u-bob", "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    bob.send_json(json!({"type": "leave", "room": "lobby"}))
        .await;
    bob.next_of("left").await;
    alice.send_message("lobby", "c-1", "anyone?").await;
    alice.next_of("message").await;
    assert!(
        bob.collect("message", 1, Duration::from_millis(500))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn metrics_count_connections_published_messages_and_deliveries() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    let mut bob = gateway.connect("u-bob", "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    alice.send_message("lobby", "c-1", "counted").await;
    alice.next_of("ack").await;
    bob.next_of("message").await;
    let text = reqwest::get(format!("http://{}/metrics", gateway.metrics_address))
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    for needle in [
        "gateway_connections 2",
        "gateway_joins_total 2",
        "gateway_messages_published_total 1",
        "gateway_publish_confirm_seconds_count 1",
        r#"http_request_duration_seconds_count{method="GET",route="/ws",status="101"} 2"#,
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
    assert!(text.contains("gateway_frames_delivered_total"));
}

#[tokio::test]
async fn a_join_carries_the_messages_this_gateway_saw_even_before_history_stores_them() {
    // The history stand-in stores nothing: what `joined` carries comes from the gateway.
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    alice.join("lobby").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        alice
            .send_message("lobby", &format!("c-{i}"), &format!("m{i}"))
            .await;
        ids.push(alice.next_of("ack").await["id"].clone());
        alice.next_of("message").await;
    }
    let mut bob = gateway.connect("u-bob", "bob").await;
    let joined = bob.join("lobby").await;
    let got: Vec<_> = joined["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(got, ids);
}
