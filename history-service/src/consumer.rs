//! The history queue consumer: RabbitMQ deliveries → batched MongoDB writes → acks.
//!
//! A message is acknowledged only after the batch holding it was written (or found already
//! written), so a crash at any point leaves it in the queue to be delivered again, and the
//! unique `_id` absorbs the redelivery. A failed write keeps the batch unacknowledged and
//! retries it with backoff (MongoDB restarting); a lost broker connection is rebuilt by
//! [`run`]'s supervisor loop, which declares the topology again each time.
//!
//! Before a batch is written its messages are numbered within their rooms (one `$inc` of
//! each room document's `seq`), and after it the rooms' `last_message` is moved forward: the
//! room list's unread counts and previews. A message redelivered after it was stored takes a
//! number again without being stored again (a count one too high until the next read).
//!
//! Message changes (`chg.<room>`: edit, delete, react) come through the same queue. A batch's
//! messages are stored first, then its changes applied ([`crate::changes::apply_batch`]);
//! after the acknowledgement each applied change is announced to the room on `msg.<room>.evt`
//! through the room events' outbox.
//!
//! The same connection also consumes account and member events (`account.*`, `member.*`)
//! from a queue of this instance's own (server-named, exclusive): every instance must learn of
//! a deleted or disabled account, to refuse that user's earlier tokens on its HTTP API, and of
//! every membership change, to forget what its caches hold of it ([`Caches::member_changed`]).
//! Events published while the connection was down are missed, so each new connection starts
//! by forgetting everything cached ([`Caches::forget_all`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::amqp;
use common::event::{
    AccountEvent, ChangeEvent, EVENT_VERSION, MemberEvent, MessageEvent, RoomEvent, topology,
};
use common::revocation::Revocations;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, message::Delivery};
use tokio_util::sync::CancellationToken;

use crate::changes::{self, Rules};
use crate::message_store::MessageStore;
use crate::metrics::ConsumerMetrics;
use crate::rooms::cache::Caches;
use crate::rooms::events::{self as room_events, RoomEvents};
use crate::settings::HistoryAmqpSettings;

/// Shared view of the consumer's state, for readiness.
#[derive(Clone, Default)]
pub struct ConsumerStatus {
    connected: Arc<AtomicBool>,
}

impl ConsumerStatus {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn set(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}

/// What the consumer writes to and announces on.
pub struct Sinks {
    pub store: MessageStore,
    /// Announces applied changes to their rooms.
    pub events: RoomEvents,
    pub rules: Rules,
    /// Forgotten by member events (of every other instance).
    pub caches: Caches,
    /// This instance's id: its own member events are skipped (its writes updated its caches).
    pub instance: String,
}

/// Consumes until `shutdown` is cancelled, reconnecting with backoff whenever the broker
/// connection fails. Returns after the in-flight batch was written and acknowledged.
pub async fn run(
    settings: HistoryAmqpSettings,
    sinks: Sinks,
    status: ConsumerStatus,
    metrics: ConsumerMetrics,
    revocations: Arc<Revocations>,
    shutdown: CancellationToken,
) {
    let mut link = Link {
        brokers: amqp::Brokers::new(&settings.connection),
        backoff: Backoff::new(),
    };
    loop {
        match consume(
            &settings,
            &sinks,
            &status,
            &metrics,
            &revocations,
            &shutdown,
            &mut link,
        )
        .await
        {
            Ok(()) => break,
            Err(error) => {
                status.set(false);
                let delay = link.backoff.next();
                tracing::warn!(
                    error = format!("{error:#}"),
                    broker = link.brokers.current(),
                    ?delay,
                    "history consumer interrupted; reconnecting"
                );
                // The next attempt starts with the next address of a cluster.
                link.brokers.failed();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    status.set(false);
    tracing::info!("history consumer stopped");
}

/// Declares the topology both sides rely on: the durable topic exchange and the durable
/// quorum queue bound to every room's messages.
async fn declare(channel: &lapin::Channel, settings: &HistoryAmqpSettings) -> lapin::Result<()> {
    topology::declare_exchange(channel, &settings.connection.exchange).await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(expires) = settings.queue_expires_ms {
        arguments.insert("x-expires".into(), AMQPValue::LongUInt(expires));
    }
    channel
        .queue_declare(
            settings.queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await?;
    for binding in [
        topology::ALL_MESSAGES_BINDING,
        topology::ALL_CHANGES_BINDING,
    ] {
        channel
            .queue_bind(
                settings.queue.as_str().into(),
                settings.connection.exchange.as_str().into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// The connection, the history queue's channel and consumer, and the account and member
/// events' consumer.
type Consumers = (Connection, lapin::Channel, lapin::Consumer, lapin::Consumer);

/// Connects, declares the topology and starts consuming.
async fn open_consumer(
    settings: &HistoryAmqpSettings,
    brokers: &mut amqp::Brokers,
) -> anyhow::Result<Consumers> {
    let connection = brokers.connect(ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    declare(&channel, settings).await?;
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            settings.queue.as_str().into(),
            format!("history-{}", ulid::Ulid::new()).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let events_channel = connection.create_channel().await?;
    let instance_events = topology::consume_instance_events(
        &events_channel,
        &settings.connection.exchange,
        "history-instance-events",
        &[
            topology::ALL_ACCOUNTS_BINDING,
            topology::ALL_MEMBERS_BINDING,
        ],
    )
    .await?;
    Ok((connection, channel, consumer, instance_events))
}

/// Where the consumer connects next and how long it waits before trying.
struct Link {
    brokers: amqp::Brokers,
    backoff: Backoff,
}

async fn consume(
    settings: &HistoryAmqpSettings,
    sinks: &Sinks,
    status: &ConsumerStatus,
    metrics: &ConsumerMetrics,
    revocations: &Revocations,
    shutdown: &CancellationToken,
    link: &mut Link,
) -> anyhow::Result<()> {
    let (connection, channel, mut consumer, mut instance_events) = settings
        .connection
        .within_setup_timeout(open_consumer(settings, &mut link.brokers))
        .await?;
    // Member events published while this instance was not listening are lost.
    sinks.caches.forget_all();
    status.set(true);
    link.backoff.reset();
    tracing::info!(
        queue = %settings.queue,
        broker = link.brokers.current(),
        "consuming the history queue"
    );

    // Connection-level errors end the session even when the consumer stream does not end
    // with them (it can stay pending after the socket closed).
    let mut events = amqp::failure_events(&connection)?;
    let wait = Duration::from_millis(settings.batch_wait_ms);
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            error = amqp::connection_failure(&mut events) => return Err(error),
            event = instance_events.next() => {
                let Some(event) = event else {
                    anyhow::bail!("the broker closed the instance events' consumer");
                };
                let event = event?;
                if topology::kind_of(event.routing_key.as_str()) == Some(topology::KeyKind::Member) {
                    apply_member_event(sinks, &event.data);
                } else {
                    apply_account_event(revocations, &event.data);
                }
                continue;
            }
            next = consumer.next() => next,
        };
        let Some(first) = first else {
            anyhow::bail!("the broker closed the consumer");
        };
        let mut deliveries = vec![first?];
        let deadline = tokio::time::Instant::now() + wait;
        while deliveries.len() < settings.batch_size {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(delivery)) => deliveries.push(delivery?),
                Ok(None) | Err(_) => break,
            }
        }
        // The batch is finished even when shutdown is requested meanwhile: a deploy must
        // not leave written-but-unacknowledged work behind needlessly.
        process_batch(sinks, deliveries, metrics, shutdown).await?;
    }
    let _ = channel.close(200, "shutting down".into()).await;
    let _ = connection.close(200, "shutting down".into()).await;
    Ok(())
}

fn apply_member_event(sinks: &Sinks, data: &[u8]) {
    match serde_json::from_slice::<MemberEvent>(data) {
        Ok(event) if event.origin.as_deref() == Some(sinks.instance.as_str()) => {}
        Ok(event) => sinks.caches.member_changed(&event),
        Err(error) => tracing::warn!(%error, "ignoring an unreadable member event"),
    }
}

fn apply_account_event(revocations: &Revocations, data: &[u8]) {
    match serde_json::from_slice::<AccountEvent>(data) {
        Ok(event) => {
            if revocations.apply(&event) {
                tracing::info!(user = %event.user_id, change = ?event.change, "account revoked");
            }
        }
        Err(error) => tracing::warn!(%error, "ignoring an unreadable account event"),
    }
}

/// One delivery of the history queue, read.
enum Taken {
    Message(Box<MessageEvent>),
    Change(Box<ChangeEvent>),
}

fn read_delivery(delivery: &Delivery) -> Result<Taken, String> {
    if topology::kind_of(delivery.routing_key.as_str()) == Some(topology::KeyKind::Change) {
        return serde_json::from_slice::<ChangeEvent>(&delivery.data)
            .map(|event| Taken::Change(Box::new(event)))
            .map_err(|e| e.to_string());
    }
    match serde_json::from_slice::<MessageEvent>(&delivery.data) {
        Ok(event) if event.message.body.is_some() => Ok(Taken::Message(Box::new(event))),
        Ok(_) => Err("a message without a body".to_string()),
        Err(error) => Err(error.to_string()),
    }
}

async fn process_batch(
    sinks: &Sinks,
    deliveries: Vec<Delivery>,
    metrics: &ConsumerMetrics,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let store = &sinks.store;
    let mut messages = Vec::with_capacity(deliveries.len());
    let mut changes = Vec::new();
    let mut valid = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match read_delivery(&delivery) {
            Ok(taken) => {
                match taken {
                    Taken::Message(event) => messages.push(*event),
                    Taken::Change(event) => changes.push(*event),
                }
                valid.push(delivery);
            }
            Err(error) => {
                // A message no consumer can ever parse would otherwise be redelivered forever.
                tracing::error!(%error, "dropping an unreadable message from the history queue");
                metrics.rejected.inc();
                amqp::acknowledged(delivery.reject(BasicRejectOptions { requeue: false })).await?;
            }
        }
    }
    let mut backoff = Backoff::new();
    let started = std::time::Instant::now();
    // Numbered once: a retried write keeps its numbers instead of taking new ones.
    let mut numbers: Option<Vec<i64>> = None;
    let (outcome, applied) = loop {
        let written = async {
            let numbers = match &numbers {
                Some(numbers) => numbers,
                None => numbers.insert(store.number(&messages).await?),
            };
            let outcome = store.insert_numbered(&messages, Some(numbers)).await?;
            store.record_last_messages(&messages).await?;
            // After the messages: a change can follow its message in one batch.
            let applied = changes::apply_batch(store, &changes, sinks.rules).await?;
            anyhow::Ok((outcome, applied))
        };
        match written.await {
            Ok(outcome) => break outcome,
            Err(error) => {
                if shutdown.is_cancelled() {
                    // Unacknowledged deliveries go back to the queue when the channel closes.
                    anyhow::bail!("shutting down with an unwritten batch: {error:#}");
                }
                let delay = backoff.next();
                tracing::warn!(
                    error = format!("{error:#}"),
                    ?delay,
                    batch = messages.len(),
                    "writing history failed; retrying"
                );
                tokio::time::sleep(delay).await;
            }
        }
    };
    if let Some(last) = valid.last() {
        amqp::acknowledged(last.ack(BasicAckOptions { multiple: true })).await?;
    }
    for (room, change) in applied {
        sinks.events.announce(RoomEvent::MessageChanged {
            v: EVENT_VERSION,
            origin: room_events::ORIGIN.to_string(),
            room,
            change,
        });
    }
    metrics
        .write_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.batch_size.observe(messages.len() as f64);
    metrics.stored.inc_by(outcome.inserted as u64);
    metrics.duplicates.inc_by(outcome.duplicates as u64);
    let now = chrono::Utc::now();
    for event in &messages {
        let lag = (now - event.message.sent_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics.lag_seconds.observe(lag);
    }
    tracing::debug!(
        inserted = outcome.inserted,
        duplicates = outcome.duplicates,
        "stored a batch"
    );
    Ok(())
}

/// Exponential backoff from 100 ms to 5 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self { next: Self::FIRST }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    fn next(&mut self) -> Duration {
        let current = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        current
    }
}
