//! A bounded outbox of events for the exchange, and the task that publishes it.
//!
//! A service stores a change in its database first, then hands the event to
//! [`Outbox::publish`], which never waits: the event (already serialized, with its routing
//! key) goes into a bounded in-memory queue that [`run`], the publishing task, drains. The
//! task keeps one connection with a confirm-mode channel, publishes each event and waits for
//! the broker's confirm before taking the next. When the broker is unreachable the task
//! reconnects with backoff (100 ms doubling to 5 s) while the queue fills; an event that
//! arrives when the queue is full is dropped and counted, and the caller's request still
//! succeeds: events are live signals, the database holds the truth. Events are published
//! transient; an event whose confirm did not arrive is published again on the next
//! connection, so receivers must treat a repeat as a no-op.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use prometheus::{IntCounter, IntGauge};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::amqp;
use crate::event::topology;
use crate::settings::AmqpSettings;

/// Longest the publisher spends on queued events after shutdown was requested.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// One event ready to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub routing_key: String,
    pub payload: Vec<u8>,
}

/// The publisher's counters; each service names them (its metrics predate this module).
#[derive(Clone)]
pub struct OutboxMetrics {
    /// Events the broker confirmed.
    pub published: IntCounter,
    /// Events dropped because the outbox was full (or the publisher had stopped).
    pub dropped: IntCounter,
    /// 1 while the publisher is connected.
    pub connected: IntGauge,
}

/// The handlers' side: hands events to the publishing task without waiting.
#[derive(Clone)]
pub struct Outbox {
    sender: mpsc::Sender<Outgoing>,
    metrics: OutboxMetrics,
}

/// The publishing task's side of the outbox.
pub struct OutboxReceiver(mpsc::Receiver<Outgoing>);

/// Why [`Outbox::publish`] dropped an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("the outbox is full")]
    Full,
    #[error("the publisher has stopped")]
    Stopped,
}

impl Outbox {
    /// The handle and the receiver [`run`] drains, holding at most `capacity` events.
    pub fn new(capacity: usize, metrics: OutboxMetrics) -> anyhow::Result<(Self, OutboxReceiver)> {
        anyhow::ensure!(capacity > 0, "an outbox must hold at least 1 event");
        let (sender, receiver) = mpsc::channel(capacity);
        Ok((Self { sender, metrics }, OutboxReceiver(receiver)))
    }

    /// Queues an event; a full outbox (broker unreachable for a while) drops it and counts it
    /// in `dropped`. The caller logs what it dropped: it knows what the event was about.
    pub fn publish(&self, routing_key: String, payload: Vec<u8>) -> Result<(), Dropped> {
        let outgoing = Outgoing {
            routing_key,
            payload,
        };
        self.sender.try_send(outgoing).map_err(|error| {
            self.metrics.dropped.inc();
            match error {
                mpsc::error::TrySendError::Full(_) => Dropped::Full,
                mpsc::error::TrySendError::Closed(_) => Dropped::Stopped,
            }
        })
    }

    /// [`Outbox::publish`] of `event` serialized as JSON.
    pub fn publish_json<T: serde::Serialize>(
        &self,
        routing_key: String,
        event: &T,
    ) -> Result<(), Dropped> {
        match serde_json::to_vec(event) {
            Ok(payload) => self.publish(routing_key, payload),
            // Our own event types always serialize; counted as dropped if one ever does not.
            Err(error) => {
                tracing::error!(%error, "an event did not serialize");
                self.metrics.dropped.inc();
                Err(Dropped::Stopped)
            }
        }
    }

    pub fn metrics(&self) -> &OutboxMetrics {
        &self.metrics
    }
}

/// Publishes the outbox's events to `settings.exchange` until `shutdown`, reconnecting with
/// backoff whenever the broker is unreachable or a publication is not confirmed within
/// `confirm_timeout`. On shutdown the events already queued are published if the broker is
/// connected, for at most [`DRAIN_LIMIT`]. `name` says whose publisher it is in the logs.
pub async fn run(
    name: &'static str,
    settings: AmqpSettings,
    confirm_timeout: Duration,
    mut outbox: OutboxReceiver,
    metrics: OutboxMetrics,
    shutdown: CancellationToken,
) {
    // Taken from the outbox but not confirmed yet: published first on the next connection.
    let mut unconfirmed: Option<Outgoing> = None;
    let mut delay = Duration::from_millis(100);
    let mut brokers = amqp::Brokers::new(&settings);
    loop {
        let session = tokio::select! {
            _ = shutdown.cancelled() => break,
            session = settings.within_setup_timeout(Session::open(name, &settings, &mut brokers, confirm_timeout)) => session,
        };
        match session {
            Ok(session) => {
                delay = Duration::from_millis(100);
                metrics.connected.set(1);
                let outcome = session
                    .serve(&mut outbox, &mut unconfirmed, &metrics, &shutdown)
                    .await;
                metrics.connected.set(0);
                match outcome {
                    Ok(()) => break,
                    Err(error) => tracing::warn!(
                        error = format!("{error:#}"),
                        publisher = name,
                        broker = brokers.current(),
                        "event publisher lost the broker"
                    ),
                }
            }
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                ?delay,
                publisher = name,
                broker = brokers.current(),
                "event publisher cannot reach the broker"
            ),
        }
        // The next attempt starts with the next address of a cluster.
        brokers.failed();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    let left = outbox.0.len() + usize::from(unconfirmed.is_some());
    if left > 0 {
        tracing::warn!(
            left,
            publisher = name,
            "events not published before stopping"
        );
    }
    tracing::info!(publisher = name, "event publisher stopped");
}

struct Session {
    connection: Connection,
    channel: Channel,
    exchange: String,
    confirm_timeout: Duration,
}

impl Session {
    async fn open(
        name: &'static str,
        settings: &AmqpSettings,
        brokers: &mut amqp::Brokers,
        confirm_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let connection = brokers.connect(ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        topology::declare_exchange(&channel, &settings.exchange).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        tracing::info!(
            publisher = name,
            broker = brokers.current(),
            "event publisher connected to the broker"
        );
        Ok(Self {
            connection,
            channel,
            exchange: settings.exchange.clone(),
            confirm_timeout,
        })
    }

    /// Publishes events as they come until shutdown (then drains) or a failure.
    async fn serve(
        self,
        outbox: &mut OutboxReceiver,
        unconfirmed: &mut Option<Outgoing>,
        metrics: &OutboxMetrics,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut failures = amqp::failure_events(&self.connection)?;
        loop {
            let event = match unconfirmed.take() {
                Some(event) => event,
                None => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    error = amqp::connection_failure(&mut failures) => return Err(error),
                    next = outbox.0.recv() => match next {
                        Some(event) => event,
                        // Every handle is gone: the application has stopped.
                        None => break,
                    },
                },
            };
            if let Err(error) = self.publish(&event).await {
                *unconfirmed = Some(event);
                return Err(error);
            }
            metrics.published.inc();
        }
        let drained = tokio::time::timeout(DRAIN_LIMIT, async {
            while let Ok(event) = outbox.0.try_recv() {
                if let Err(error) = self.publish(&event).await {
                    *unconfirmed = Some(event);
                    return Err(error);
                }
                metrics.published.inc();
            }
            Ok(())
        })
        .await;
        if let Ok(Err(error)) = drained {
            tracing::warn!(error = format!("{error:#}"), "draining the outbox failed");
        }
        let _ = self.connection.close(200, "shutting down".into()).await;
        Ok(())
    }

    /// Publishes one event and waits for the broker's confirm.
    async fn publish(&self, event: &Outgoing) -> anyhow::Result<()> {
        let publish = async {
            let confirm = self
                .channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    event.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &event.payload,
                    BasicProperties::default()
                        .with_delivery_mode(1)
                        .with_content_type("application/json".into()),
                )
                .await?;
            let confirmation = confirm.await?;
            anyhow::ensure!(confirmation.is_ack(), "the broker refused the event");
            Ok(())
        };
        tokio::time::timeout(self.confirm_timeout, publish)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the broker did not confirm the event within {:?}",
                    self.confirm_timeout
                )
            })?
    }
}
