//! Account events (`account.<user_id>`: deleted, disabled, enabled) out to RabbitMQ, so the
//! gateways and history-service stop honouring the user's access tokens at once instead of
//! when they expire.
//!
//! The database is the source of truth: a handler stores the change, then hands the event to
//! [`AccountEvents::publish`], which never waits. The event goes into a bounded in-memory
//! outbox that [`run`], the publishing task, drains: it keeps one connection with a
//! confirm-mode channel, publishes each event and waits for the broker's confirm before
//! taking the next. When the broker is unreachable the task reconnects with backoff while
//! the outbox fills; an event that arrives when the outbox is full is dropped, logged and
//! counted (`auth_account_events_dropped_total`), and the request still succeeds. Events are
//! live signals, not records, so they are published transient; an event whose confirm did
//! not arrive is published again on the next connection (receivers treat a repeat as a
//! no-op).

use std::time::Duration;

use common::amqp;
use common::event::{AccountEvent, topology};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use prometheus::{IntCounter, IntGauge, Registry};
use secrecy::ExposeSecret;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::settings::AuthAmqpSettings;

/// The handlers' side: hands events to the publishing task without waiting.
#[derive(Clone)]
pub struct AccountEvents {
    outbox: mpsc::Sender<AccountEvent>,
    metrics: EventMetrics,
}

/// The publishing task's side of the outbox.
pub struct Outbox(mpsc::Receiver<AccountEvent>);

#[derive(Clone)]
pub struct EventMetrics {
    published: IntCounter,
    dropped: IntCounter,
    connected: IntGauge,
}

impl EventMetrics {
    fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            common::metrics::register(
                registry,
                IntCounter::new(name, help).expect("static counter options are valid"),
            )
        };
        Self {
            published: counter(
                "auth_account_events_published_total",
                "Account events the broker confirmed",
            ),
            dropped: counter(
                "auth_account_events_dropped_total",
                "Account events dropped because the outbox was full",
            ),
            connected: common::metrics::register(
                registry,
                IntGauge::new(
                    "auth_broker_connected",
                    "1 while the account-event publisher is connected to the broker",
                )
                .expect("static gauge options are valid"),
            ),
        }
    }
}

impl AccountEvents {
    /// The handle and the outbox [`run`] drains, holding at most `capacity` events.
    pub fn new(capacity: usize, registry: &Registry) -> anyhow::Result<(Self, Outbox)> {
        anyhow::ensure!(capacity > 0, "amqp.outbox_capacity must be at least 1");
        let (outbox, receiver) = mpsc::channel(capacity);
        let events = Self {
            outbox,
            metrics: EventMetrics::new(registry),
        };
        Ok((events, Outbox(receiver)))
    }

    /// Queues `event` for publishing. A full outbox (broker unreachable for a while) drops it:
    /// the change is in the database already, and the user's access tokens expire anyway.
    pub fn publish(&self, event: AccountEvent) {
        if let Err(error) = self.outbox.try_send(event) {
            let (reason, event) = match error {
                mpsc::error::TrySendError::Full(event) => ("the outbox is full", event),
                mpsc::error::TrySendError::Closed(event) => ("the publisher has stopped", event),
            };
            self.metrics.dropped.inc();
            tracing::warn!(
                user_id = %event.user_id,
                change = ?event.change,
                reason,
                "account event dropped"
            );
        }
    }

    pub fn metrics(&self) -> &EventMetrics {
        &self.metrics
    }
}

/// Publishes the outbox's events until `shutdown`, reconnecting with backoff (100 ms doubling
/// to 5 s) whenever the broker is unreachable or a publication is not confirmed. On shutdown
/// the events already queued are published if the broker is connected, for at most
/// [`DRAIN_LIMIT`].
pub async fn run(
    settings: AuthAmqpSettings,
    mut outbox: Outbox,
    metrics: EventMetrics,
    shutdown: CancellationToken,
) {
    // Taken from the outbox but not confirmed yet: published first on the next connection.
    let mut unconfirmed: Option<AccountEvent> = None;
    let mut delay = Duration::from_millis(100);
    loop {
        let session = tokio::select! {
            _ = shutdown.cancelled() => break,
            session = settings.connection.within_setup_timeout(Session::open(&settings)) => session,
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
                        "account event publisher lost the broker"
                    ),
                }
            }
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                ?delay,
                "account event publisher cannot reach the broker"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    let left = outbox.0.len() + usize::from(unconfirmed.is_some());
    if left > 0 {
        tracing::warn!(left, "account events not published before stopping");
    }
    tracing::info!("account event publisher stopped");
}

/// Longest the publisher spends on queued events after shutdown was requested.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

struct Session {
    connection: Connection,
    channel: Channel,
    exchange: String,
    confirm_timeout: Duration,
}

impl Session {
    async fn open(settings: &AuthAmqpSettings) -> anyhow::Result<Self> {
        let connection = Connection::connect(
            settings.connection.uri.expose_secret(),
            ConnectionProperties::default(),
        )
        .await?;
        let channel = connection.create_channel().await?;
        topology::declare_exchange(&channel, &settings.connection.exchange).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        tracing::info!("account event publisher connected to the broker");
        Ok(Self {
            connection,
            channel,
            exchange: settings.connection.exchange.clone(),
            confirm_timeout: Duration::from_millis(settings.confirm_timeout_ms),
        })
    }

    /// Publishes events as they come until shutdown (then drains) or a failure.
    async fn serve(
        self,
        outbox: &mut Outbox,
        unconfirmed: &mut Option<AccountEvent>,
        metrics: &EventMetrics,
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
            tracing::warn!(
                error = format!("{error:#}"),
                "draining account events failed"
            );
        }
        let _ = self.connection.close(200, "shutting down".into()).await;
        Ok(())
    }

    /// Publishes one event and waits for the broker's confirm.
    async fn publish(&self, event: &AccountEvent) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(event)?;
        let routing_key = topology::account_key(&event.user_id);
        let publish = async {
            let confirm = self
                .channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &payload,
                    BasicProperties::default()
                        .with_delivery_mode(1)
                        .with_content_type("application/json".into()),
                )
                .await?;
            let confirmation = confirm.await?;
            anyhow::ensure!(
                confirmation.is_ack(),
                "the broker refused the account event"
            );
            Ok(())
        };
        tokio::time::timeout(self.confirm_timeout, publish)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the broker did not confirm the account event within {:?}",
                    self.confirm_timeout
                )
            })?
    }
}
