//! What each service's RabbitMQ user may do, over real AMQP connections to the shared broker.
//!
//! The users are made by `deploy/rabbitmq/provision.sh` from `deploy/rabbitmq/permissions.conf`,
//! the script and file `scripts/deps.sh` uses for the real `chat-*` users, with test-unique
//! names and exchange. Each test does what its service does (and must be allowed) and what an
//! attacker holding that service's password would try (and must be refused: RabbitMQ closes
//! the channel with ACCESS_REFUSED, which for a publish arrives in place of its confirm).

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind};
use support::broker_users::{BrokerUsers, ROLES, amqp_port};

/// Longest any one broker round trip may take here; they take milliseconds.
const STEP: Duration = Duration::from_secs(10);

/// One test's exchange, history queue and users.
struct Broker {
    exchange: String,
    history_queue: String,
    users: BrokerUsers,
}

impl Broker {
    async fn new() -> Self {
        let tag = ulid::Ulid::new().to_string().to_lowercase();
        let exchange = format!("e2e.{tag}");
        let history_queue = format!("{exchange}.history");
        let users = BrokerUsers::create(&tag, &exchange, &history_queue).await;
        Self {
            exchange,
            history_queue,
            users,
        }
    }

    /// A new broker on which history-service's queues exist (its connection holds them).
    async fn with_history_queues() -> (Self, Connection) {
        let broker = Self::new().await;
        let history = broker.connect("history").await;
        broker
            .declare_history_queues(&channel(&history).await)
            .await;
        (broker, history)
    }

    /// `role` connected, with a channel on which it declared the exchange, as each service
    /// does at start.
    async fn service(&self, role: &str) -> (Connection, Channel) {
        let connection = self.connect(role).await;
        let channel = channel(&connection).await;
        declare_exchange(&channel, &self.exchange)
            .await
            .unwrap_or_else(|e| panic!("{role} declares the exchange: {e}"));
        (connection, channel)
    }

    async fn connect(&self, role: &str) -> Connection {
        within(
            "connect",
            Connection::connect(&self.users.uri(role), ConnectionProperties::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("{role} connects: {e}"))
    }

    /// What history-service does at start: the exchange, its quorum queue bound to every
    /// room's messages, and a server-named queue for account events.
    async fn declare_history_queues(&self, channel: &Channel) -> String {
        declare_exchange(channel, &self.exchange)
            .await
            .expect("history declares the exchange");
        declare_durable_queue(channel, &self.history_queue, Some("quorum"))
            .await
            .expect("history declares its queue");
        bind(channel, &self.history_queue, &self.exchange, "msg.*")
            .await
            .expect("history binds its queue to every room's messages");
        let accounts = within(
            "declare a server-named queue",
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
        .expect("history declares a server-named queue")
        .name()
        .to_string();
        assert!(accounts.starts_with("amq.gen-"), "{accounts}");
        bind(channel, &accounts, &self.exchange, "account.*")
            .await
            .expect("history binds its account queue to account events");
        accounts
    }

    /// Fails unless publishing `key` on a fresh channel of `connection` is refused (a refusal
    /// closes the channel).
    async fn refuses_publish(&self, connection: &Connection, what: &str, key: &str) {
        let result = publish(&channel(connection).await, &self.exchange, key).await;
        assert_refused(what, result);
    }

    /// Fails unless consuming the history queue on a fresh channel of `connection` is refused.
    async fn refuses_history_queue(&self, connection: &Connection, what: &str) {
        let result = consume(&channel(connection).await, &self.history_queue).await;
        assert_refused(what, result);
    }

    /// Closes the test's connections and deletes the exchange (as guest, the local
    /// administrator); the queues expire.
    async fn remove(self, connections: &[&Connection]) {
        for connection in connections {
            let _ = connection.close(200, "done".into()).await;
        }
        let uri = format!("amqp://guest:guest@127.0.0.1:{}/%2f", amqp_port());
        if let Ok(connection) = Connection::connect(&uri, ConnectionProperties::default()).await {
            if let Ok(channel) = connection.create_channel().await {
                let _ = channel
                    .exchange_delete(
                        self.exchange.as_str().into(),
                        ExchangeDeleteOptions::default(),
                    )
                    .await;
            }
            let _ = connection.close(200, "done".into()).await;
        }
    }
}

async fn within<T>(what: &str, step: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, step)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {STEP:?}"))
}

/// A channel with publisher confirms, so a refused publish is reported.
async fn channel(connection: &Connection) -> Channel {
    let channel = within("open a channel", connection.create_channel())
        .await
        .expect("a channel opens");
    within(
        "confirm.select",
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("publisher confirms");
    channel
}

async fn declare_exchange(channel: &Channel, exchange: &str) -> lapin::Result<()> {
    within(
        "declare the exchange",
        channel.exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
}

/// A durable queue as the services declare theirs, of `kind` (`x-queue-type`) when given; it
/// expires a minute after its last consumer.
async fn declare_durable_queue(
    channel: &Channel,
    queue: &str,
    kind: Option<&str>,
) -> lapin::Result<()> {
    let mut arguments = FieldTable::default();
    if let Some(kind) = kind {
        arguments.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    }
    arguments.insert("x-expires".into(), AMQPValue::LongUInt(60_000));
    within(
        "declare a queue",
        channel.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        ),
    )
    .await
    .map(|_| ())
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    within(
        "bind",
        channel.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

/// Publishes `key` and waits for the broker's answer: Ok once it confirmed the message.
async fn publish(channel: &Channel, exchange: &str, key: &str) -> lapin::Result<()> {
    within("publish", async {
        let confirm = channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                key.as_bytes(),
                BasicProperties::default(),
            )
            .await?;
        let confirmation = confirm.await?;
        assert!(confirmation.is_ack(), "{key}: the broker nacked it");
        Ok(())
    })
    .await
}

async fn consume(channel: &Channel, queue: &str) -> lapin::Result<lapin::Consumer> {
    within(
        "consume",
        channel.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

/// The routing key of the next delivery.
async fn next_key(consumer: &mut lapin::Consumer) -> String {
    let delivery = within("a delivery", consumer.next())
        .await
        .expect("the consumer is open")
        .expect("a delivery");
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
    delivery.routing_key.to_string()
}

/// Fails unless `result` is the broker's ACCESS_REFUSED.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(what: &str, result: lapin::Result<T>) {
    match &result {
        Err(error)
            if matches!(error.kind(), ErrorKind::ProtocolError(e)
                if *e.kind() == AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)) => {}
        _ => panic!("{what}: expected ACCESS_REFUSED, got {result:?}"),
    }
}

#[tokio::test]
async fn gateway_user_runs_its_own_queue_and_publishes_only_room_traffic() {
    let (broker, history) = Broker::with_history_queues().await;
    let (gateway, ch) = broker.service("gateway").await;
    let queue = format!("{}.gateway.g1", broker.exchange);
    declare_durable_queue(&ch, &queue, None)
        .await
        .expect("gateway declares its own queue");
    for key in ["msg.general.#", "account.*"] {
        bind(&ch, &queue, &broker.exchange, key)
            .await
            .unwrap_or_else(|e| panic!("gateway binds {key}: {e}"));
    }
    let mut own = consume(&ch, &queue)
        .await
        .expect("gateway consumes its own queue");
    for key in ["msg.general", "msg.general.evt"] {
        publish(&ch, &broker.exchange, key)
            .await
            .unwrap_or_else(|e| panic!("gateway publishes {key}: {e}"));
        assert_eq!(next_key(&mut own).await, key);
    }

    // Refusals close the channel, so each check opens a fresh one.
    broker
        .refuses_publish(&gateway, "gateway publishes an account event", "account.x")
        .await;
    broker
        .refuses_publish(
            &gateway,
            "gateway publishes with a key outside msg./chg./evt.",
            "x.general",
        )
        .await;
    broker
        .refuses_history_queue(&gateway, "gateway consumes the history queue")
        .await;
    assert_refused(
        "gateway binds the history queue",
        bind(
            &channel(&gateway).await,
            &broker.history_queue,
            &broker.exchange,
            "msg.*.evt",
        )
        .await,
    );

    broker.remove(&[&gateway, &history]).await;
}

#[tokio::test]
async fn history_user_consumes_messages_and_account_events_and_publishes_no_message() {
    let broker = Broker::new().await;
    let history = broker.connect("history").await;
    let ch = channel(&history).await;
    let accounts = broker.declare_history_queues(&ch).await;
    let mut messages = consume(&ch, &broker.history_queue)
        .await
        .expect("history consumes its queue");
    let mut account_events = consume(&ch, &accounts)
        .await
        .expect("history consumes its account queue");

    // It announces room events (applied changes, room updates) under the room's `msg.` key,
    // one word longer than a message's, so its own queue does not get them back: the next
    // delivery there is the gateway's message.
    publish(&ch, &broker.exchange, "msg.general.evt")
        .await
        .expect("history publishes a room event");

    // What the other services publish reaches it.
    let gateway = broker.connect("gateway").await;
    publish(&channel(&gateway).await, &broker.exchange, "msg.general")
        .await
        .expect("gateway publishes a message");
    assert_eq!(next_key(&mut messages).await, "msg.general");
    let auth = broker.connect("auth").await;
    publish(&channel(&auth).await, &broker.exchange, "account.u1")
        .await
        .expect("auth publishes an account event");
    assert_eq!(next_key(&mut account_events).await, "account.u1");

    broker
        .refuses_publish(&history, "history publishes a chat message", "msg.general")
        .await;
    broker
        .refuses_publish(
            &history,
            "history publishes under a room's messages other than its events",
            "msg.general.other",
        )
        .await;
    broker
        .refuses_publish(&history, "history publishes an account event", "account.x")
        .await;

    broker.remove(&[&history, &gateway, &auth]).await;
}

#[tokio::test]
async fn auth_user_publishes_only_account_events() {
    let (broker, history) = Broker::with_history_queues().await;
    let (auth, ch) = broker.service("auth").await;
    publish(&ch, &broker.exchange, "account.x")
        .await
        .expect("auth publishes an account event");

    broker
        .refuses_publish(&auth, "auth publishes a chat message", "msg.room")
        .await;
    broker
        .refuses_history_queue(&auth, "auth consumes the history queue")
        .await;
    assert_refused(
        "auth declares a queue",
        within(
            "declare a queue",
            channel(&auth).await.queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await,
    );

    broker.remove(&[&auth, &history]).await;
}

#[tokio::test]
async fn no_service_user_can_use_the_management_api() {
    let broker = Broker::new().await;
    let http = reqwest::Client::builder()
        .timeout(STEP)
        .build()
        .expect("an HTTP client");
    let port: u16 = std::env::var("RABBITMQ_MANAGEMENT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(15672);
    let whoami = format!("http://127.0.0.1:{port}/api/whoami");

    // The local administrator gets in, so a refusal below is about the user.
    match http
        .get(&whoami)
        .basic_auth("guest", Some("guest"))
        .send()
        .await
    {
        Ok(response) => assert_eq!(response.status(), 200, "guest on {whoami}"),
        Err(error) if error.is_connect() => {
            println!("the management listener is off ({error}): no user can use it");
            broker.remove(&[]).await;
            return;
        }
        Err(error) => panic!("{whoami}: {error}"),
    }
    for role in ROLES {
        // The password is right: the same credentials open an AMQP connection.
        let _ = broker.connect(role).await.close(200, "done".into()).await;
        let response = http
            .get(&whoami)
            .basic_auth(broker.users.user(role), Some(broker.users.password(role)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{whoami}: {e}"));
        assert_eq!(
            response.status(),
            401,
            "{role}: the management API let a user without tags in"
        );
    }
    broker.remove(&[]).await;
}
