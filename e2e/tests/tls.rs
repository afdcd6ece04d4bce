//! TLS to the broker and the database: a RabbitMQ node and a FerretDB that accept TLS only
//! (`scripts/tls-deps.sh`), whose certificate a private CA made for this run signed.
//!
//! The services connect through `common`: `amqps://` addresses with `amqp.tls_ca_file` naming
//! the CA, MongoDB URIs with `tls=true&tlsCAFile=…`. Without the CA, both connections are
//! refused, because the certificate chains to no CA the client trusts.

mod support;

use std::time::Duration;

use common::amqp::Brokers;
use common::settings::{AmqpSettings, MongoSettings};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ConnectionProperties};
use mongodb::bson::{Document, doc};
use serde_json::json;
use support::tls::TlsServers;
use support::{System, SystemOptions};

/// Longest one round trip to a server may take; they take milliseconds.
const STEP: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, step: impl IntoFuture<Output = T>) -> T {
    tokio::time::timeout(STEP, step.into_future())
        .await
        .unwrap_or_else(|_| panic!("{what} took more than {STEP:?}"))
}

/// The broker settings a service would load, with `ca_file` as `amqp.tls_ca_file` ("" for
/// none). Read the way the services read them, so the CA file is read and checked here too.
fn amqp_settings(uri: &str, ca_file: &str) -> AmqpSettings {
    serde_json::from_value(json!({
        "uri": uri,
        "uris": [],
        "exchange": "chat.events",
        "setup_timeout_ms": 10_000,
        "tls_ca_file": ca_file,
    }))
    .expect("broker settings")
}

fn mongo_settings(uri: &str) -> MongoSettings {
    serde_json::from_value(json!({"uri": uri, "database": "tls"})).expect("database settings")
}

#[tokio::test]
async fn a_message_goes_through_a_broker_reached_over_amqps_with_its_private_ca_trusted() {
    let servers = TlsServers::start().await;
    let mut brokers = Brokers::new(&amqp_settings(&servers.amqps_uri(), &servers.ca_file()));
    let connection = within(
        "the connection",
        brokers.connect(ConnectionProperties::default()),
    )
    .await
    .expect("an amqps:// connection to a broker whose CA is trusted");

    let channel = within("a channel", connection.create_channel())
        .await
        .expect("channel");
    within(
        "confirms",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("publisher confirms");
    let queue = within(
        "the queue",
        channel.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("a queue of this test");
    let mut consumer = within(
        "the consumer",
        channel.basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("consumer");

    let body = format!("over TLS {}", ulid::Ulid::new());
    let confirmation = within("the publish", async {
        channel
            .basic_publish(
                "".into(),
                queue.name().clone(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await?
            .await
    })
    .await
    .expect("published");
    assert!(confirmation.is_ack(), "the broker confirmed the message");

    let delivery = within("the delivery", consumer.next())
        .await
        .expect("the consumer is open")
        .expect("a delivery");
    assert_eq!(String::from_utf8_lossy(&delivery.data), body);
    delivery
        .ack(BasicAckOptions::default())
        .await
        .expect("acknowledged");
    connection.close(200, "done".into()).await.ok();
}

#[tokio::test]
async fn amqps_to_a_broker_whose_ca_is_not_trusted_is_refused_naming_the_certificate_problem() {
    let servers = TlsServers::start().await;
    let mut brokers = Brokers::new(&amqp_settings(&servers.amqps_uri(), ""));
    let error = within(
        "the refusal",
        brokers.connect(ConnectionProperties::default()),
    )
    .await
    .expect_err("a certificate of an unknown CA is refused")
    .to_string();
    println!("refused: {error}");
    assert!(error.contains("amqps://127.0.0.1:"), "{error}");
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(!error.contains("guest:guest"), "{error}");
}

#[tokio::test]
async fn mongodb_over_tls_writes_and_reads_with_the_ca_file_named_in_the_uri() {
    let servers = TlsServers::start().await;
    let uri = servers.mongodb_uri(&format!("tls=true&tlsCAFile={}", servers.ca_file()));
    let client = within("the client", mongo_settings(&uri).client("tls-test"))
        .await
        .expect("a client for a TLS URI");
    let database = client.database(&format!("tls_{}", ulid::Ulid::new()));
    within("the ping", database.run_command(doc! {"ping": 1}))
        .await
        .expect("ping over TLS");
    let collection = database.collection::<Document>("notes");
    within(
        "the insert",
        collection.insert_one(doc! {"_id": "n1", "text": "over TLS"}),
    )
    .await
    .expect("insert over TLS");
    let found = within("the read", collection.find_one(doc! {"_id": "n1"}))
        .await
        .expect("read over TLS")
        .expect("the document");
    assert_eq!(found.get_str("text").ok(), Some("over TLS"));
    database.drop().await.ok();
}

#[tokio::test]
async fn mongodb_over_tls_without_the_ca_file_is_refused_naming_the_certificate_problem() {
    let servers = TlsServers::start().await;
    let uri = servers.mongodb_uri("tls=true");
    let client = mongo_settings(&uri)
        .client("tls-test")
        .await
        .expect("a client (it connects lazily)");
    // The server selection timeout (5 s) bounds the attempt.
    let error = within(
        "the refusal",
        client.database("tls").run_command(doc! {"ping": 1}),
    )
    .await
    .expect_err("a certificate of an unknown CA is refused")
    .to_string();
    println!("refused: {error}");
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn the_services_run_and_store_a_conversation_over_tls_to_the_broker_and_the_database() {
    let servers = TlsServers::start().await;
    let ca = servers.ca_file();
    let env = |prefix: &str| vec![(format!("{prefix}__AMQP__TLS_CA_FILE"), ca.clone())];
    let system = System::start_with(&SystemOptions {
        gateways: 1,
        amqp_uri: Some(servers.amqps_uri()),
        mongodb_uri: Some(servers.mongodb_uri(&format!("tls=true&tlsCAFile={ca}"))),
        auth_env: env("AUTH"),
        history_env: env("HISTORY"),
        gateway_env: env("GATEWAY"),
        ..SystemOptions::default()
    })
    .await;

    let token = system.user(0, "tlsuser").await;
    let mut client = system.connect(0, &token).await;
    client.join("secure").await;
    client
        .send_message("secure", "t-1", "sealed in transit")
        .await;
    let ack = client.next_of("ack").await;
    let live = client.next_of("message").await;
    assert_eq!(live["id"], ack["id"]);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let stored = system.history(0, &token, "secure").await;
        if let Some(message) = stored.first() {
            assert_eq!(message["id"], ack["id"]);
            assert_eq!(message["body"], "sealed in transit");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message was not stored within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
