use std::time::Duration;

use chat_gateway::settings::Settings;
use common::domain::RoomId;
use common::event::topology;
use common::testing::BrokerProxy;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};

use crate::helpers::Cluster;

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
