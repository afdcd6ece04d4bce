//! Account events (`account.<user_id>`: deleted, disabled, enabled) out to RabbitMQ, so the
//! gateways and history-service stop honouring the user's access tokens at once instead of
//! when they expire.
//!
//! The database is the source of truth: a handler stores the change, then hands the event to
//! [`AccountEvents::publish`], which never waits. The event goes into the bounded outbox of
//! [`common::outbox`], which [`run`] publishes with confirms, reconnecting while the broker is
//! away. An event that arrives when the outbox is full is dropped, logged and counted
//! (`auth_account_events_dropped_total`), and the request still succeeds: the user's access
//! tokens expire anyway.

use std::time::Duration;

use common::event::{AccountEvent, topology};
use common::outbox::{self, Outbox, OutboxMetrics, OutboxReceiver};
use prometheus::{IntCounter, IntGauge, Registry};
use tokio_util::sync::CancellationToken;

use crate::settings::AuthAmqpSettings;

pub use common::outbox::DRAIN_LIMIT;

/// The handlers' side: hands events to the publishing task without waiting.
#[derive(Clone)]
pub struct AccountEvents {
    outbox: Outbox,
}

fn metrics(registry: &Registry) -> OutboxMetrics {
    let counter = |name: &str, help: &str| {
        common::metrics::register(
            registry,
            IntCounter::new(name, help).expect("static counter options are valid"),
        )
    };
    OutboxMetrics {
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

impl AccountEvents {
    /// The handle and the outbox [`run`] drains, holding at most `capacity` events.
    pub fn new(capacity: usize, registry: &Registry) -> anyhow::Result<(Self, OutboxReceiver)> {
        anyhow::ensure!(capacity > 0, "amqp.outbox_capacity must be at least 1");
        let (outbox, receiver) = Outbox::new(capacity, metrics(registry))?;
        Ok((Self { outbox }, receiver))
    }

    /// Queues `event` for publishing. A full outbox (broker unreachable for a while) drops it:
    /// the change is in the database already, and the user's access tokens expire anyway.
    pub fn publish(&self, event: AccountEvent) {
        let key = topology::account_key(&event.user_id);
        if let Err(reason) = self.outbox.publish_json(key, &event) {
            tracing::warn!(
                user_id = %event.user_id,
                change = ?event.change,
                %reason,
                "account event dropped"
            );
        }
    }

    pub fn metrics(&self) -> &OutboxMetrics {
        self.outbox.metrics()
    }
}

/// Publishes the outbox's events until `shutdown` (see [`common::outbox::run`]).
pub async fn run(
    settings: AuthAmqpSettings,
    outbox: OutboxReceiver,
    metrics: OutboxMetrics,
    shutdown: CancellationToken,
) {
    outbox::run(
        "account-events",
        settings.connection,
        Duration::from_millis(settings.confirm_timeout_ms),
        outbox,
        metrics,
        shutdown,
    )
    .await
}
