//! The publishing side, shared by all connections: [`Broker`]. Chat messages and message
//! changes go out persistent on the current session's confirm-mode channel, and a send is
//! acknowledged to its client only after the broker confirmed it; room events (presence,
//! typing) go out fire-and-forget, at most [`EPHEMERAL_IN_FLIGHT`] at once. The channel is set
//! by each session and cleared when it ends: while disconnected, publishing fails fast with
//! [`PublishError::Unavailable`].

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use common::domain::RoomId;
use common::event::{ChangeEvent, ChatMessage, MessageEvent, PresenceState, RoomEvent, topology};
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};
use tokio::sync::Semaphore;

use crate::settings::GatewayAmqpSettings;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the message broker is unavailable")]
    Unavailable,
    #[error("the message broker did not confirm the message")]
    NotConfirmed,
}

/// Publishing side, shared by all connections.
#[derive(Clone)]
pub struct Broker {
    publisher: Arc<RwLock<Option<Channel>>>,
    exchange: Arc<str>,
    origin: Arc<str>,
    confirm_timeout: Duration,
    /// Ephemeral room events being published (see [`Broker::publish_room_event`]).
    ephemeral: Arc<Semaphore>,
}

/// Ephemeral room events (presence, typing) published at once at most; beyond, one is dropped
/// rather than queued behind a broker that does not take them (losing one is harmless).
const EPHEMERAL_IN_FLIGHT: usize = 1024;

impl Broker {
    pub fn new(settings: &GatewayAmqpSettings) -> Self {
        Self {
            publisher: Arc::new(RwLock::new(None)),
            exchange: settings.connection.exchange.as_str().into(),
            origin: settings.instance_id.as_str().into(),
            confirm_timeout: Duration::from_millis(settings.confirm_timeout_ms),
            ephemeral: Arc::new(Semaphore::new(EPHEMERAL_IN_FLIGHT)),
        }
    }

    /// This instance's id, stamped on the room events it publishes.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn is_connected(&self) -> bool {
        self.channel().is_some_and(|c| c.status().connected())
    }

    fn channel(&self) -> Option<Channel> {
        self.publisher
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_channel(&self, channel: Option<Channel>) {
        *self
            .publisher
            .write()
            .unwrap_or_else(PoisonError::into_inner) = channel;
    }

    /// Publishes a chat message persistently and waits for the broker's confirm.
    pub async fn publish_message(&self, message: &ChatMessage) -> Result<(), PublishError> {
        let payload = serde_json::to_vec(&MessageEvent::new(message.clone()))
            .map_err(|_| PublishError::NotConfirmed)?;
        self.publish_confirmed(topology::message_key(&message.room), payload)
            .await
    }

    /// Publishes a message change persistently (`chg.<room>`, to the history queue only) and
    /// waits for the broker's confirm.
    pub async fn publish_change(&self, change: &ChangeEvent) -> Result<(), PublishError> {
        let payload = serde_json::to_vec(change).map_err(|_| PublishError::NotConfirmed)?;
        self.publish_confirmed(topology::change_key(&change.room), payload)
            .await
    }

    async fn publish_confirmed(
        &self,
        routing_key: String,
        payload: Vec<u8>,
    ) -> Result<(), PublishError> {
        let channel = self.channel().ok_or(PublishError::Unavailable)?;
        let publish = async {
            let confirm = channel
                .basic_publish(
                    self.exchange.as_ref().into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &payload,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into()),
                )
                .await
                .map_err(|_| PublishError::Unavailable)?;
            match confirm.await {
                Ok(confirmation) if confirmation.is_ack() => Ok(()),
                Ok(_) => Err(PublishError::NotConfirmed),
                Err(_) => Err(PublishError::Unavailable),
            }
        };
        tokio::time::timeout(self.confirm_timeout, publish)
            .await
            .map_err(|_| PublishError::NotConfirmed)?
    }

    /// Publishes an ephemeral room event without waiting; losing one is harmless, so one is
    /// dropped when [`EPHEMERAL_IN_FLIGHT`] are still being published.
    pub fn publish_room_event(&self, event: RoomEvent) {
        let Some(channel) = self.channel() else {
            return;
        };
        let Ok(turn) = Arc::clone(&self.ephemeral).try_acquire_owned() else {
            tracing::debug!(room = %event.room(), "ephemeral room event dropped: too many in flight");
            return;
        };
        let exchange = self.exchange.clone();
        tokio::spawn(async move {
            let _turn = turn;
            let Ok(payload) = serde_json::to_vec(&event) else {
                return;
            };
            let key = topology::room_event_key(event.room());
            let _ = channel
                .basic_publish(
                    exchange.as_ref().into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    &payload,
                    BasicProperties::default().with_delivery_mode(1),
                )
                .await;
        });
    }

    /// Announces a local presence change (`sync` false) or answers a presence query.
    pub fn presence(
        &self,
        room: &RoomId,
        user: &common::domain::UserRef,
        state: PresenceState,
        sync: bool,
    ) {
        self.publish_room_event(RoomEvent::Presence {
            v: common::event::EVENT_VERSION,
            origin: self.origin.to_string(),
            room: room.clone(),
            user: user.clone(),
            state,
            sync,
        });
    }
}
