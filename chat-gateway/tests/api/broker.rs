use std::time::Duration;

use chat_gateway::settings::Settings;
use common::testing::BrokerProxy;
use secrecy::SecretString;

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
