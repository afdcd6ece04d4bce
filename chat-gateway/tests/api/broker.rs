use std::time::Duration;

use chat_gateway::settings::Settings;
use common::domain::RoomId;
use common::event::topology;
use common::testing::BrokerProxy;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};

use crate::helpers::{Cluster, SlowHistory, TestGateway};

async fn broker_proxy() -> BrokerProxy {
    BrokerProxy::start(&Settings::load().expect("settings load").amqp.connection).await
}

#[tokio::test]
async fn a_broker_that_accepts_but_never_answers_is_given_up_on_and_the_gateway_connects_again() {
    let cluster = Cluster::new().await;
    let proxy = broker_proxy().await;
    proxy.silence_next();
    // Ready only once a connection attempt after the silent one succeeded.
    let gateway = cluster
        .gateway_with(|settings| {
            settings.amqp.connection.uri = SecretString::from(proxy.uri());
            settings.amqp.connection.setup_timeout_ms = 300;
        })
        .await;

    let mut alice = gateway.connect("u-alice", "alice").await;
    alice.join("lobby").await;
    alice
        .send_message("lobby", "c-1", "through the second connection")
        .await;
    let ack = alice.next_of("ack").await;
    let message = alice.next_of("message").await;
    assert_eq!(message["id"], ack["id"]);
    assert_eq!(message["body"], "through the second connection");
    let again = alice
        .collect("message", 1, Duration::from_millis(200))
        .await;
    assert!(again.is_empty(), "delivered twice: {again:?}");
}

#[tokio::test]
async fn a_message_lost_in_flight_to_a_gateway_comes_again_after_it_reconnects() {
    let cluster = Cluster::new().await;
    let proxy = broker_proxy().await;
    let behind_proxy = cluster
        .gateway_with(|settings| {
            settings.amqp.connection.uri = SecretString::from(proxy.uri());
        })
        .await;
    let direct = cluster.gateway().await;
    let mut alice = behind_proxy.connect("u-alice", "alice").await;
    let mut bob = direct.connect("u-bob", "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;

    // The broker sends the delivery to alice's gateway, which never receives it: its
    // connection is then cut, as when a broker goes down with deliveries on the wire.
    proxy.hold();
    bob.send_message("lobby", "c-1", "sent while the wire was cut")
        .await;
    let ack = bob.next_of("ack").await;
    proxy.cut_once_held().await;

    let message = alice.next_of("message").await;
    assert_eq!(message["id"], ack["id"]);
    assert_eq!(message["body"], "sent while the wire was cut");
    let again = alice
        .collect("message", 1, Duration::from_millis(300))
        .await;
    assert!(again.is_empty(), "delivered twice: {again:?}");
}

/// A gateway behind `proxy` whose history-service is `history`, with a short memory grace.
async fn gateway_behind(
    cluster: &Cluster,
    proxy: &BrokerProxy,
    history: &str,
    timeout_ms: u64,
) -> TestGateway {
    let (uri, history) = (proxy.uri().to_string(), history.to_string());
    cluster
        .gateway_with(move |settings| {
            settings.amqp.connection.uri = SecretString::from(uri);
            settings.history.url = history;
            settings.history.timeout_ms = timeout_ms;
            settings.history.memory_grace_ms = 200;
        })
        .await
}

#[tokio::test]
async fn a_message_stored_while_a_gateway_was_cut_off_but_never_queued_for_it_comes_after_its_reconnect()
 {
    let cluster = Cluster::new().await;
    let proxy = broker_proxy().await;
    let (history, url) = SlowHistory::start().await;
    history.open();
    let gateway = gateway_behind(&cluster, &proxy, &url, 5_000).await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    let joined = alice.join("lobby").await;
    assert_eq!(joined["messages"][0]["body"], "stored before");

    // Stored, but routed to no queue of this gateway: as a publish cut off by the loss of a
    // broker node that reached history-service's queue only, or a message a classic queue
    // lost with its node.
    proxy.cut();
    history.store("stored while the gateway was cut off");

    let message = alice.next_of("message").await;
    assert_eq!(message["body"], "stored while the gateway was cut off");
    let again = alice
        .collect("message", 1, Duration::from_millis(1_500))
        .await;
    assert!(
        again.is_empty(),
        "neither the joined history nor the recovered message again: {again:?}"
    );
}

#[tokio::test]
async fn clients_of_a_room_that_cannot_be_read_back_after_a_reconnect_are_told_to_rejoin() {
    let cluster = Cluster::new().await;
    let proxy = broker_proxy().await;
    let (history, url) = SlowHistory::start().await;
    history.open();
    let gateway = gateway_behind(&cluster, &proxy, &url, 300).await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    let joined = alice.join("lobby").await;
    let last = joined["messages"][0]["id"].clone();

    history.close();
    proxy.cut();

    // Six attempts at the read, each given 300 ms, with 12.5 s of waits between them.
    let lagged = alice.collect("lagged", 1, Duration::from_secs(30)).await;
    let lagged = lagged.first().expect("a `lagged` frame");
    assert_eq!(lagged["room"], "lobby");
    // From where the read back ended (nothing was read: from the loss), at the latest the
    // last message the client has: live messages after the reconnect may be newer than
    // messages it never got.
    let resume = lagged["last_id"].as_str().expect("a resume id");
    assert!(
        resume <= last.as_str().expect("the stored message's id"),
        "rejoin from {resume}, at the latest from {last}"
    );
}

/// A confirm-mode channel to the broker the gateways of the tests use.
async fn broker_channel() -> (Connection, Channel) {
    let settings = Settings::load().expect("settings load").amqp.connection;
    let connection = Connection::connect(
        settings.uri.expose_secret(),
        ConnectionProperties::default(),
    )
    .await
    .expect("broker reachable");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    (connection, channel)
}

/// Whether `exchange` routes `key` to some queue: a mandatory publish that no binding matches
/// comes back with its confirm. What is routed reaches the gateway as an unreadable event,
/// which it ignores.
async fn routed(channel: &Channel, exchange: &str, key: &str) -> bool {
    let confirmation = channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"{}",
            BasicProperties::default(),
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
    confirmation.take_message().is_none()
}

#[tokio::test]
async fn a_room_s_messages_and_events_reach_a_gateway_until_its_last_local_member_leaves() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    let mut bob = gateway.connect("u-bob", "bob").await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    let (connection, channel) = broker_channel().await;
    let room = RoomId::parse("lobby".to_string()).expect("room");
    let keys = [
        topology::message_key(&room),
        topology::room_event_key(&room),
    ];

    alice.leave("lobby").await;
    for key in &keys {
        assert!(
            routed(&channel, &cluster.exchange, key).await,
            "{key} is not routed while bob is in the room"
        );
    }

    // The room is unbound after `left` is answered, so the test waits for it.
    bob.leave("lobby").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for key in &keys {
        while routed(&channel, &cluster.exchange, key).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{key} is still routed after the room's last member left"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = connection.close(200, "done".into()).await;
}
