//! Announcing stored changes: `member.<user_id>` ([`MemberEvent`]) and `msg.<room>.evt`
//! ([`RoomEvent::RoomUpdated`], [`RoomEvent::RoomArchived`]) through the bounded outbox of
//! [`common::outbox`], published by a task of its own that retries while the broker is away.
//! Called after the change is in MongoDB; never waits. A dropped event (outbox full) is
//! logged and counted in `history_room_events_dropped_total`; clients catch up from
//! `GET /api/rooms`, and gateways' cached decisions expire.

use common::domain::{MessageId, RemovalReason, Role, RoomId, UserId};
use common::event::{EVENT_VERSION, MemberChange, MemberEvent, RoomEvent, topology};
use common::outbox::{Outbox, OutboxMetrics, OutboxReceiver};
use prometheus::{IntCounter, IntGauge, Registry};

/// `origin` of the room events history-service publishes.
pub const ORIGIN: &str = "history-service";

#[derive(Clone)]
pub struct RoomEvents {
    outbox: Outbox,
    /// This instance's id, the `origin` of its member events (its own consumer skips them).
    instance: String,
}

fn metrics(registry: &Registry) -> anyhow::Result<OutboxMetrics> {
    Ok(OutboxMetrics {
        published: common::metrics::register(
            registry,
            IntCounter::new(
                "history_room_events_published_total",
                "Member and room events the broker confirmed",
            )?,
        ),
        dropped: common::metrics::register(
            registry,
            IntCounter::new(
                "history_room_events_dropped_total",
                "Member and room events dropped because the outbox was full",
            )?,
        ),
        connected: common::metrics::register(
            registry,
            IntGauge::new(
                "history_event_publisher_connected",
                "1 while the room event publisher is connected to the broker",
            )?,
        ),
    })
}

impl RoomEvents {
    pub fn new(
        capacity: usize,
        instance: &str,
        registry: &Registry,
    ) -> anyhow::Result<(Self, OutboxReceiver)> {
        let (outbox, receiver) = Outbox::new(capacity, metrics(registry)?)?;
        let instance = instance.to_string();
        Ok((Self { outbox, instance }, receiver))
    }

    pub fn metrics(&self) -> &OutboxMetrics {
        self.outbox.metrics()
    }

    fn member(&self, user: &UserId, room: &RoomId, change: MemberChange) {
        let event =
            MemberEvent::new(user.clone(), room.clone(), change).from_origin(&self.instance);
        if let Err(reason) = self.outbox.publish_json(topology::member_key(user), &event) {
            tracing::warn!(%user, %room, %reason, "member event dropped");
        }
    }

    /// `user` became a member; `view` is the room as they see it.
    pub fn added(&self, user: &UserId, room: &RoomId, view: serde_json::Value) {
        self.member(user, room, MemberChange::Added { view });
    }

    pub fn removed(&self, user: &UserId, room: &RoomId, reason: RemovalReason) {
        self.member(user, room, MemberChange::Removed { reason });
    }

    pub fn role(&self, user: &UserId, room: &RoomId, role: Role) {
        self.member(user, room, MemberChange::Role { role });
    }

    pub fn read(&self, user: &UserId, room: &RoomId, id: MessageId, seq: u64) {
        self.member(user, room, MemberChange::Read { id, seq });
    }

    /// Publishes a room event made elsewhere (an applied message change, say).
    pub fn announce(&self, event: RoomEvent) {
        self.room(event);
    }

    fn room(&self, event: RoomEvent) {
        let room = event.room().clone();
        if let Err(reason) = self
            .outbox
            .publish_json(topology::room_event_key(&room), &event)
        {
            tracing::warn!(%room, %reason, "room event dropped");
        }
    }

    /// The room's name, topic or kind changed; `view` has no caller-specific fields.
    pub fn updated(&self, room: &RoomId, view: serde_json::Value) {
        self.room(RoomEvent::RoomUpdated {
            v: EVENT_VERSION,
            origin: ORIGIN.to_string(),
            room: room.clone(),
            view,
        });
    }

    pub fn archived(&self, room: &RoomId) {
        self.room(RoomEvent::RoomArchived {
            v: EVENT_VERSION,
            origin: ORIGIN.to_string(),
            room: room.clone(),
        });
    }
}
