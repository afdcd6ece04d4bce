//! Rooms as the gateway enforces them: joins authorized by history-service (its stand-in here)
//! and cached, membership events published on the exchange as history-service would, applied
//! live to the connections, and read markers coalesced before they are written.

use std::time::Duration;

use chat_gateway::settings::Settings;
use common::domain::{MessageId, RemovalReason, Role, RoomId, UserId};
use common::event::{MemberChange, MemberEvent, RoomEvent, topology};
use serde_json::json;

use crate::helpers::{Client, Cluster, room_view};

/// Publishes `payload` with `routing_key` on the cluster's exchange and waits for the confirm.
async fn publish(cluster: &Cluster, routing_key: &str, payload: &impl serde::Serialize) {
    let mut settings = Settings::load().expect("settings load").amqp.connection;
    settings.exchange = cluster.exchange.clone();
    common::testing::publish_event(&settings, routing_key, payload).await;
}

fn user(id: &str) -> UserId {
    UserId::parse(id.to_string()).expect("user id")
}

fn room(id: &str) -> RoomId {
    RoomId::parse(id.to_string()).expect("room id")
}

/// Publishes a `member.<user>` event.
async fn member_event(cluster: &Cluster, user_id: &str, room_id: &str, change: MemberChange) {
    let event = MemberEvent::new(user(user_id), room(room_id), change);
    publish(cluster, &topology::member_key(&user(user_id)), &event).await;
}

/// Publishes a room event (`msg.<room>.evt`).
async fn room_event(cluster: &Cluster, event: RoomEvent) {
    publish(cluster, &topology::room_event_key(event.room()), &event).await;
}

/// The code of the `error` answering a join of `room`.
async fn join_refused(client: &mut Client, room: &str) -> String {
    client
        .send_json(json!({"type": "join", "room": room}))
        .await;
    let error = client.next_of("error").await;
    assert_eq!(error["room"], room, "the refusal names its room: {error}");
    error["code"].as_str().expect("code").to_string()
}

fn message_id() -> String {
    ulid::Ulid::new().to_string()
}

#[tokio::test]
async fn a_join_history_service_refuses_is_answered_with_its_code() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    for (room, status, code) in [
        ("secret", 404, "not_found"),
        ("staff", 403, "forbidden"),
        ("banned-here", 403, "banned"),
        ("old", 409, "archived"),
    ] {
        cluster.history.refuse("u-alice", room, status, code);
    }
    let mut alice = gateway.connect("u-alice", "alice").await;
    for (room, code) in [
        ("secret", "not_found"),
        ("staff", "forbidden"),
        ("banned-here", "banned"),
        ("old", "archived"),
    ] {
        assert_eq!(join_refused(&mut alice, room).await, code, "{room}");
        // Not a member: nothing may be sent there.
        alice.send_message(room, "c-1", "hello?").await;
        assert_eq!(alice.next_of("error").await["code"], "not_joined", "{room}");
    }
    // Others are not affected, and the refused user joins other rooms.
    let joined = alice.join("lobby").await;
    assert_eq!(joined["room"], "lobby");
    let mut bob = gateway.connect("u-bob", "bob").await;
    assert_eq!(bob.join("secret").await["room"], "secret");
}

#[tokio::test]
async fn a_join_that_cannot_be_authorized_is_unavailable() {
    let cluster = Cluster::new().await;
    // Nothing listens there.
    let gateway = cluster
        .gateway_with(|settings| settings.history.url = "http://127.0.0.1:9".to_string())
        .await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    assert_eq!(join_refused(&mut alice, "lobby").await, "unavailable");
}

#[tokio::test]
async fn joined_carries_the_room_view() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    let joined = alice.join("lobby").await;
    assert_eq!(joined["view"], room_view("lobby"));
    assert_eq!(joined["messages"], json!([]));
}

#[tokio::test]
async fn repeat_joins_of_a_user_and_room_ask_history_service_once() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut first = gateway.connect("u-alice", "alice").await;
    let mut second = gateway.connect("u-alice", "alice").await;
    first.join("lobby").await;
    second.join("lobby").await;
    first.leave("lobby").await;
    let joined = first.join("lobby").await;
    // The cached decision keeps its view.
    assert_eq!(joined["view"], room_view("lobby"));
    // Sends and typing within the decision's lifetime ask nothing either.
    first.send_message("lobby", "c-1", "hi").await;
    first.next_of("ack").await;
    first
        .send_json(json!({"type": "typing", "room": "lobby"}))
        .await;
    assert_eq!(cluster.history.joins("u-alice", "lobby"), 1);
    assert_eq!(cluster.history.checks("u-alice", "lobby"), 0);
    // Another user is another decision.
    gateway.connect("u-bob", "bob").await.join("lobby").await;
    assert_eq!(cluster.history.joins("u-bob", "lobby"), 1);
}

#[tokio::test]
async fn simultaneous_joins_of_one_user_and_room_share_one_authorization() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    cluster.history.delay(Duration::from_millis(300));
    let mut tabs = Vec::new();
    for _ in 0..5 {
        tabs.push(gateway.connect("u-alice", "alice").await);
    }
    for tab in &mut tabs {
        tab.send_json(json!({"type": "join", "room": "lobby"}))
            .await;
    }
    for tab in &mut tabs {
        assert_eq!(tab.next_of("joined").await["room"], "lobby");
    }
    assert_eq!(cluster.history.joins("u-alice", "lobby"), 1);
}

#[tokio::test]
async fn a_removed_user_is_taken_out_of_the_room_on_every_connection_and_gets_no_later_message() {
    let cluster = Cluster::new().await;
    let (first, second) = (cluster.gateway().await, cluster.gateway().await);
    let mut alice_here = first.connect("u-alice", "alice").await;
    let mut alice_there = second.connect("u-alice", "alice").await;
    let mut bob = first.connect("u-bob", "bob").await;
    alice_here.join("lobby").await;
    alice_there.join("lobby").await;
    alice_here.join("other").await;
    bob.join("lobby").await;

    member_event(
        &cluster,
        "u-alice",
        "lobby",
        MemberChange::Removed {
            reason: RemovalReason::Kicked,
        },
    )
    .await;
    for alice in [&mut alice_here, &mut alice_there] {
        let removed = alice.next_of("removed").await;
        assert_eq!(
            removed,
            json!({"type": "removed", "room": "lobby", "reason": "kicked"})
        );
    }

    bob.send_message("lobby", "c-after", "after the kick").await;
    bob.next_of("ack").await;
    let message = bob.next_of("message").await;
    assert_eq!(message["body"], "after the kick");
    for alice in [&mut alice_here, &mut alice_there] {
        let late = alice
            .collect("message", 1, Duration::from_millis(500))
            .await;
        assert!(
            late.is_empty(),
            "a message reached the removed user: {late:?}"
        );
        // A send now is refused, never acknowledged.
        alice.send_message("lobby", "c-late", "still here?").await;
        let error = alice.next_of("error").await;
        assert_eq!(error["code"], "not_joined");
        assert_eq!(error["client_id"], "c-late");
    }
    // The other room is untouched.
    alice_here
        .send_message("other", "c-other", "elsewhere")
        .await;
    assert_eq!(alice_here.next_of("ack").await["client_id"], "c-other");
}

#[tokio::test]
async fn a_send_after_the_decision_expired_asks_again_and_a_refusal_removes_the_connection() {
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|settings| settings.rooms.decision_ttl_s = 0)
        .await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    alice.join("lobby").await;
    alice.send_message("lobby", "c-1", "still allowed").await;
    alice.next_of("ack").await;
    assert_eq!(cluster.history.checks("u-alice", "lobby"), 1);

    // Kicked while this gateway heard nothing of it.
    cluster.history.refuse("u-alice", "lobby", 403, "forbidden");
    alice.send_message("lobby", "c-2", "not any more").await;
    let error = alice.next_of("error").await;
    assert_eq!(error["code"], "forbidden");
    assert_eq!(error["client_id"], "c-2");
    let removed = alice.next_of("removed").await;
    assert_eq!(removed["room"], "lobby");
    let acks = alice.collect("ack", 1, Duration::from_millis(300)).await;
    assert!(acks.is_empty(), "a refused send was acknowledged: {acks:?}");
}

#[tokio::test]
async fn a_send_late_in_the_decisions_life_refreshes_it_in_the_background() {
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|settings| settings.rooms.decision_ttl_s = 4)
        .await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    let joined_at = tokio::time::Instant::now();
    alice.join("lobby").await;
    alice.send_message("lobby", "c-1", "early").await;
    alice.next_of("ack").await;
    assert_eq!(
        cluster.history.checks("u-alice", "lobby"),
        0,
        "a fresh decision"
    );

    // In the decision's last quarter: the send goes on, and the decision is asked again.
    tokio::time::sleep_until(joined_at + Duration::from_millis(3_200)).await;
    alice.send_message("lobby", "c-2", "late").await;
    alice.next_of("ack").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cluster.history.checks("u-alice", "lobby") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Past the first decision's end, the refreshed one holds: no check before this send.
    tokio::time::sleep_until(joined_at + Duration::from_millis(4_600)).await;
    alice.send_message("lobby", "c-3", "after").await;
    alice.next_of("ack").await;
    assert_eq!(cluster.history.checks("u-alice", "lobby"), 1);
}

#[tokio::test]
async fn room_added_and_read_markers_reach_every_connection_of_the_user() {
    let cluster = Cluster::new().await;
    let (first, second) = (cluster.gateway().await, cluster.gateway().await);
    let mut alice_here = first.connect("u-alice", "alice").await;
    let mut alice_there = second.connect("u-alice", "alice").await;
    let mut bob = first.connect("u-bob", "bob").await;

    let view = room_view("project");
    member_event(
        &cluster,
        "u-alice",
        "project",
        MemberChange::Added { view: view.clone() },
    )
    .await;
    let id = message_id();
    member_event(
        &cluster,
        "u-alice",
        "project",
        MemberChange::Read {
            id: MessageId::parse(&id).expect("id"),
            seq: 7,
        },
    )
    .await;
    for alice in [&mut alice_here, &mut alice_there] {
        assert_eq!(
            alice.next_of("room_added").await,
            json!({"type": "room_added", "room": view})
        );
        assert_eq!(
            alice.next_of("read").await,
            json!({"type": "read", "room": "project", "id": id})
        );
    }
    let others = bob
        .collect("room_added", 1, Duration::from_millis(300))
        .await;
    assert!(others.is_empty(), "{others:?}");
}

#[tokio::test]
async fn a_room_update_reaches_the_connections_in_the_room() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    let mut carol = gateway.connect("u-carol", "carol").await;
    alice.join("lobby").await;
    carol.join("elsewhere").await;
    let mut view = room_view("lobby");
    view["name"] = "The lobby".into();
    room_event(
        &cluster,
        RoomEvent::RoomUpdated {
            v: 1,
            origin: "history".into(),
            room: room("lobby"),
            view: view.clone(),
        },
    )
    .await;
    assert_eq!(
        alice.next_of("room_updated").await,
        json!({"type": "room_updated", "room": view})
    );
    let others = carol
        .collect("room_updated", 1, Duration::from_millis(300))
        .await;
    assert!(others.is_empty(), "{others:?}");
}

#[tokio::test]
async fn an_archived_room_removes_every_connection_and_a_later_join_asks_again() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    let mut bob = gateway.connect("u-bob", "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    room_event(
        &cluster,
        RoomEvent::RoomArchived {
            v: 1,
            origin: "history".into(),
            room: room("lobby"),
        },
    )
    .await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            client.next_of("removed").await,
            json!({"type": "removed", "room": "lobby", "reason": "archived"})
        );
        client.send_message("lobby", "c-1", "anyone?").await;
        assert_eq!(client.next_of("error").await["code"], "not_joined");
    }
    cluster.history.refuse("u-alice", "lobby", 409, "archived");
    assert_eq!(join_refused(&mut alice, "lobby").await, "archived");
    assert_eq!(cluster.history.joins("u-alice", "lobby"), 2);
}

#[tokio::test]
async fn a_membership_event_drops_the_cached_decision() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    for _ in 0..2 {
        alice.join("lobby").await;
        alice.leave("lobby").await;
    }
    assert_eq!(
        cluster.history.joins("u-alice", "lobby"),
        1,
        "the rejoin was cached"
    );
    member_event(
        &cluster,
        "u-alice",
        "lobby",
        MemberChange::Role { role: Role::Admin },
    )
    .await;
    // Applied within a generous bound (the event crosses the broker): the next join asks.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        alice.join("lobby").await;
        if cluster.history.joins("u-alice", "lobby") == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the decision was kept"
        );
        alice.leave("lobby").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn read_frames_are_coalesced_into_one_write_with_the_greatest_id() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    alice.join("lobby").await;
    let mut ids: Vec<String> = (0..20)
        .map(|n| ulid::Ulid::from_parts(1_700_000_000_000 + n, 0).to_string())
        .collect();
    let greatest = ids.last().cloned().expect("ids");
    ids.reverse();
    ids.swap(0, 10);
    for id in &ids {
        alice
            .send_json(json!({"type": "read", "room": "lobby", "id": id}))
            .await;
    }
    // Written within a generous bound (the gateway flushes every 500 ms).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while cluster.history.markers().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no marker written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        cluster.history.markers(),
        vec![("u-alice".to_string(), "lobby".to_string(), greatest)]
    );

    // A room this connection is not in, and an id that is none.
    alice
        .send_json(json!({"type": "read", "room": "other", "id": message_id()}))
        .await;
    assert_eq!(alice.next_of("error").await["code"], "not_joined");
    alice
        .send_json(json!({"type": "read", "room": "lobby", "id": "nope"}))
        .await;
    assert_eq!(alice.next_of("error").await["code"], "invalid_marker");
}

#[tokio::test]
async fn a_marker_history_service_refuses_is_reported_to_the_connection_that_sent_it() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    alice.join("lobby").await;
    let id = message_id();
    cluster.history.reject_marker(&id);
    alice
        .send_json(json!({"type": "read", "room": "lobby", "id": id}))
        .await;
    let error = alice.next_of("error").await;
    assert_eq!(error["code"], "invalid_marker");
    assert!(cluster.history.markers().is_empty());
}

#[tokio::test]
async fn a_broker_reconnect_drops_every_cached_decision() {
    let cluster = Cluster::new().await;
    let proxy =
        common::testing::BrokerProxy::start(&Settings::load().expect("settings").amqp.connection)
            .await;
    let gateway = cluster
        .gateway_with(|settings| {
            settings.amqp.connection.uri = secrecy::SecretString::from(proxy.uri());
        })
        .await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    for _ in 0..2 {
        alice.join("lobby").await;
        alice.leave("lobby").await;
    }
    assert_eq!(
        cluster.history.joins("u-alice", "lobby"),
        1,
        "the rejoin was cached"
    );

    // Membership events may pass by while the connection is down.
    proxy.cut();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        alice.join("lobby").await;
        if cluster.history.joins("u-alice", "lobby") == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the decision was kept"
        );
        alice.leave("lobby").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sends_go_on_while_history_service_is_away_unless_the_decision_was_revoked() {
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|settings| settings.rooms.decision_ttl_s = 0)
        .await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    alice.join("lobby").await;

    // The decision expired and history-service cannot answer: live chat goes on.
    cluster
        .history
        .refuse("u-alice", "lobby", 503, "unavailable");
    alice.send_message("lobby", "c-1", "history is away").await;
    assert_eq!(alice.next_of("ack").await["client_id"], "c-1");

    // A revoked decision is not extended.
    member_event(
        &cluster,
        "u-alice",
        "lobby",
        MemberChange::Role { role: Role::Member },
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for n in 2.. {
        let client_id = format!("c-{n}");
        alice.send_message("lobby", &client_id, "and now?").await;
        let answer = loop {
            let frame = alice.next_json().await;
            if frame["client_id"] == client_id.as_str() {
                break frame;
            }
        };
        if answer["type"] == "error" {
            assert_eq!(answer["code"], "unavailable");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the decision was extended"
        );
    }
}
