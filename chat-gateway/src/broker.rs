//! RabbitMQ in and out.
//!
//! Out: chat messages are published persistent on a confirm-mode channel and a send is
//! acknowledged to its client only after the broker confirmed it; room events (presence,
//! typing) are published fire-and-forget. In: this instance's own queue, bound to the rooms
//! its connections are in (one binding a room, [`topology::room_binding`], for its messages
//! and its room events), feeds [`Rooms::deliver`]; it is also bound to every account event,
//! which [`Accounts::apply`] acts on, and to every membership event (`member.*`), which
//! [`crate::membership`] applies. Every change of the broker connection drops the cached room
//! decisions: membership events may have been missed meanwhile.
//!
//! [`run`] supervises the connection: on any failure it reconnects with backoff and rebuilds
//! everything from application state (exchange, queue, one binding per local room, consumer,
//! confirm mode) rather than relying on the client library's recovery. While disconnected,
//! publishing fails fast with [`PublishError::Unavailable`].
//!
//! Deliveries of the instance queue are acknowledged after they were handed to the local
//! connections (in batches, `multiple`): a delivery lost in flight when the connection drops
//! stays in the durable queue and comes again after the reconnect, where the connections'
//! recent-id memory drops the copies they already wrote.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use common::amqp;
use common::domain::RoomId;
use common::event::{
    AccountEvent, ChangeEvent, ChatMessage, MemberEvent, MessageEvent, PresenceState, RoomEvent,
    topology::{self, KeyKind},
};
use futures_util::StreamExt;
use lapin::Acker;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::accounts::Accounts;
use crate::membership::{self, Membership};
use crate::outbox::{LiveMessage, Outbound};
use crate::protocol::ServerFrame;
use crate::recovery::Gaps;
use crate::rooms::{Rooms, TopologyCommand, room_hash};
use crate::settings::{GatewayAmqpSettings, QueueType};

/// Deliveries of the instance queue the broker sends ahead of their acknowledgements.
const PREFETCH: u16 = 1024;
/// Deliveries handed on before one `multiple` acknowledgement covers them all.
const ACK_BATCH: u32 = 64;
/// Longest a handed-on delivery waits for its acknowledgement when fewer than a batch came.
const ACK_DELAY: Duration = Duration::from_millis(20);

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

    fn set_channel(&self, channel: Option<Channel>) {
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

/// What the instance queue's deliveries are applied to.
pub struct Inbound {
    pub broker: Broker,
    pub rooms: Arc<Rooms>,
    pub accounts: Arc<Accounts>,
    pub membership: Arc<Membership>,
    /// Told of each loss and reconnect, for the rooms to be read back (see
    /// [`crate::recovery`]).
    pub gaps: Arc<Gaps>,
}

/// Keeps the broker connection up until `shutdown`, applying topology commands in order.
///
/// The instance queue is durable: it and its bindings outlive a broker restart, so messages
/// published while this gateway is still reconnecting wait in it instead of being lost. As a
/// quorum queue (`amqp.queue_type`, for a broker cluster) it is replicated on every node of a cluster, so it also
/// outlives the loss of the node it was declared on; the connection then fails over to the
/// next broker address (`amqp.uris`) and consumes it there. The first connection of a process
/// deletes any queue a previous process of the same `instance_id` left, so it starts clean.
pub async fn run(
    settings: GatewayAmqpSettings,
    inbound: Inbound,
    mut commands: mpsc::UnboundedReceiver<TopologyCommand>,
    shutdown: CancellationToken,
) {
    let Inbound {
        ref broker,
        ref rooms,
        ..
    } = inbound;
    let queue = topology::gateway_queue(&settings.connection.exchange, &settings.instance_id);
    let mut delay = Duration::from_millis(100);
    let mut fresh = true;
    let mut brokers = amqp::Brokers::new(&settings.connection);
    // Rooms left while the unbinding could not be made; their bindings survive in the
    // durable queue until the next session removes them.
    let mut stale: HashSet<RoomId> = HashSet::new();
    loop {
        let session = settings
            .connection
            .within_setup_timeout(Session::open(
                &settings,
                &mut brokers,
                &queue,
                rooms,
                fresh,
                &mut stale,
            ))
            .await;
        match session {
            Ok(session) => {
                fresh = false;
                delay = Duration::from_millis(100);
                inbound.gaps.reconnected();
                // Decisions made before this session may predate events it will never see.
                inbound.membership.revoke_all();
                let outcome = session
                    .serve(&inbound, &mut commands, &mut stale, &shutdown)
                    .await;
                broker.set_channel(None);
                rooms.connection_lost();
                inbound.gaps.lost(rooms.last_delivery());
                inbound.membership.revoke_all();
                match outcome {
                    Ok(()) => break,
                    Err(error) => tracing::warn!(
                        error = format!("{error:#}"),
                        broker = brokers.current(),
                        "broker connection lost"
                    ),
                }
            }
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                broker = brokers.current(),
                ?delay,
                "cannot reach the broker"
            ),
        }
        // The next attempt starts with the next address of a cluster.
        brokers.failed();
        // Keep answering topology commands while disconnected: joins proceed, and the
        // bindings they need are made on reconnect from the registry, the source of truth.
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut sleep => break,
                Some(command) = commands.recv() => match command {
                    TopologyCommand::Bind(room, bound) => {
                        stale.remove(&room);
                        bound.cancel();
                    }
                    TopologyCommand::Unbind(room) => {
                        stale.insert(room);
                    }
                },
            }
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Most topology commands applied together (see [`Session::apply`]).
const TOPOLOGY_BATCH: usize = 256;

/// Channels the bindings of rooms are spread over (see [`Session::apply`]). The broker makes
/// a durable binding in about 1 ms on one channel (RabbitMQ 3.10, 2 busy cores: 400 in
/// 380 ms), and works on several channels partly side by side (4: 290 ms, 16: 200 ms).
const BINDING_CHANNELS: usize = 4;

struct Session {
    connection: Connection,
    topology: Channel,
    /// The channels bindings are made on, a room always on the same one.
    binders: Vec<Channel>,
    publisher: Channel,
    consumer: lapin::Consumer,
    queue: String,
    exchange: String,
}

impl Session {
    async fn open(
        settings: &GatewayAmqpSettings,
        brokers: &mut amqp::Brokers,
        queue: &str,
        rooms: &Rooms,
        fresh: bool,
        stale: &mut HashSet<RoomId>,
    ) -> anyhow::Result<Self> {
        let connection = brokers.connect(ConnectionProperties::default()).await?;
        let topology = connection.create_channel().await?;
        let exchange = settings.connection.exchange.clone();
        topology::declare_exchange(&topology, &exchange).await?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-expires".into(),
            AMQPValue::LongUInt(settings.queue_expires_ms),
        );
        if settings.queue_type == QueueType::Quorum {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        if fresh {
            topology
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
        topology
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments,
            )
            .await?;
        let session_rooms = rooms.local_rooms();
        let publisher = connection.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        topology
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let consumer = topology
            .basic_consume(
                queue.into(),
                format!("gateway-{}", settings.instance_id).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut binders = Vec::with_capacity(BINDING_CHANNELS);
        for _ in 0..BINDING_CHANNELS {
            binders.push(connection.create_channel().await?);
        }
        let session = Self {
            connection,
            topology,
            binders,
            publisher,
            consumer,
            queue: queue.to_string(),
            exchange,
        };
        session
            .topology
            .queue_bind(
                queue.into(),
                session.exchange.as_str().into(),
                topology::ALL_ACCOUNTS_BINDING.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        session
            .topology
            .queue_bind(
                queue.into(),
                session.exchange.as_str().into(),
                topology::ALL_MEMBERS_BINDING.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let left: Vec<RoomId> = stale
            .iter()
            .filter(|room| !session_rooms.contains(room))
            .cloned()
            .collect();
        let changes: Vec<(&RoomId, bool, Option<&CancellationToken>)> = session_rooms
            .iter()
            .map(|room| (room, true, None))
            .chain(left.iter().map(|room| (room, false, None)))
            .collect();
        session.apply(&changes).await?;
        stale.clear();
        tracing::info!(
            queue,
            broker = brokers.current(),
            rooms = session_rooms.len(),
            "connected to the broker"
        );
        Ok(session)
    }

    /// Binds (`true`) or unbinds (`false`) the instance queue for each room, with the room's
    /// one [`topology::room_binding`] (its messages and its room events), and cancels a bind's
    /// token as soon as that room is bound (the room's joins wait for it, not for the rest of
    /// the wave). The requests are pipelined: each room's on one of [`BINDING_CHANNELS`]
    /// channels chosen by the room, which the broker handles in order, the channels side by
    /// side. So a wave of joins of many rooms waits for the broker's binding work spread over
    /// the channels, not one round trip per room.
    async fn apply(
        &self,
        changes: &[(&RoomId, bool, Option<&CancellationToken>)],
    ) -> lapin::Result<()> {
        let requests = changes.iter().map(|(room, bind, bound)| async move {
            let channel = &self.binders[binder_of(room, self.binders.len())];
            let key = topology::room_binding(room);
            let (queue, exchange) = (self.queue.as_str().into(), self.exchange.as_str().into());
            if *bind {
                channel
                    .queue_bind(
                        queue,
                        exchange,
                        key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            } else {
                channel
                    .queue_unbind(queue, exchange, key.as_str().into(), FieldTable::default())
                    .await?;
            }
            if let Some(bound) = bound {
                bound.cancel();
            }
            Ok(())
        });
        // Polled in order, so each channel's requests are sent in order.
        futures_util::future::join_all(requests)
            .await
            .into_iter()
            .collect()
    }

    async fn serve(
        mut self,
        inbound: &Inbound,
        commands: &mut mpsc::UnboundedReceiver<TopologyCommand>,
        stale: &mut HashSet<RoomId>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        // Connection-level errors end the session even when the consumer stream does not
        // end with them (it can stay pending after the socket closed).
        let mut events = amqp::failure_events(&self.connection)?;
        let broker = &inbound.broker;
        broker.set_channel(Some(self.publisher.clone()));
        // The latest delivery handed on but not yet acknowledged, and how many it covers.
        let mut unacked: Option<Acker> = None;
        let mut pending: u32 = 0;
        let mut flush = tokio::time::interval(ACK_DELAY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Sends in flight finish their confirms before the channel closes.
                    let _ = tokio::time::timeout(Duration::from_secs(5), self.publisher.wait_for_confirms()).await;
                    // Nobody will consume the queue again: no need to keep it until it expires.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        self.topology.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default()),
                    )
                    .await;
                    let _ = self.connection.close(200, "shutting down".into()).await;
                    return Ok(());
                }
                Some(command) = commands.recv() => {
                    // With the commands already waiting behind it, applied together.
                    let mut batch = vec![command];
                    while batch.len() < TOPOLOGY_BATCH {
                        match commands.try_recv() {
                            Ok(command) => batch.push(command),
                            Err(_) => break,
                        }
                    }
                    let mut changes = Vec::with_capacity(batch.len());
                    for command in &batch {
                        match command {
                            TopologyCommand::Bind(room, bound) => {
                                stale.remove(room);
                                changes.push((room, true, Some(bound)));
                            }
                            TopologyCommand::Unbind(room) => {
                                // Remembered until done, so a connection lost meanwhile
                                // retries it.
                                stale.insert(room.clone());
                                changes.push((room, false, None));
                            }
                        }
                    }
                    let applied = self.apply(&changes).await;
                    for command in &batch {
                        match command {
                            // Failed or not, the join goes on: the registry rebinds on
                            // reconnect.
                            TopologyCommand::Bind(_, bound) => bound.cancel(),
                            TopologyCommand::Unbind(room) if applied.is_ok() => {
                                stale.remove(room);
                            }
                            TopologyCommand::Unbind(_) => {}
                        }
                    }
                    applied?;
                },
                error = amqp::connection_failure(&mut events) => return Err(error),
                _ = flush.tick(), if unacked.is_some() => {
                    if let Some(acker) = unacked.take() {
                        pending = 0;
                        acknowledge_all(&acker, &mut events).await?;
                    }
                }
                delivery = self.consumer.next() => {
                    let Some(delivery) = delivery else {
                        anyhow::bail!("the broker cancelled the consumer");
                    };
                    let delivery = delivery?;
                    dispatch(inbound, delivery.routing_key.as_str(), &delivery.data);
                    pending += 1;
                    if pending >= ACK_BATCH {
                        pending = 0;
                        unacked = None;
                        acknowledge_all(&delivery.acker, &mut events).await?;
                    } else {
                        unacked = Some(delivery.acker);
                    }
                }
            }
        }
    }
}

/// Which of `channels` binding channels carries `room`'s bindings: always the same one, so
/// that a room's bind and unbind reach the broker in the order they were made.
fn binder_of(room: &RoomId, channels: usize) -> usize {
    room_hash(room) as usize % channels.max(1)
}

/// Acknowledges `acker`'s delivery and every one before it, unless the connection fails first.
async fn acknowledge_all(
    acker: &Acker,
    events: &mut (impl futures_util::Stream<Item = lapin::Event> + Unpin),
) -> anyhow::Result<()> {
    tokio::select! {
        acked = amqp::acknowledged(acker.ack(BasicAckOptions { multiple: true })) => acked,
        error = amqp::connection_failure(events) => Err(error),
    }
}

/// Routes one delivery of the instance queue to the local members of its room, an account
/// event to [`Accounts::apply`], a membership event to [`membership::apply_member_event`].
fn dispatch(inbound: &Inbound, routing_key: &str, data: &[u8]) {
    let Inbound {
        broker,
        rooms,
        accounts,
        membership,
        ..
    } = inbound;
    let kind = topology::kind_of(routing_key);
    if kind == Some(KeyKind::Member) {
        match serde_json::from_slice::<MemberEvent>(data) {
            Ok(event) => {
                membership::apply_member_event(&event, membership, rooms, accounts, broker)
            }
            Err(error) => tracing::warn!(%error, "ignoring an unreadable membership event"),
        }
        return;
    }
    if kind == Some(KeyKind::Account) {
        match serde_json::from_slice::<AccountEvent>(data) {
            Ok(event) => accounts.apply(&event),
            Err(error) => tracing::warn!(%error, "ignoring an unreadable account event"),
        }
        return;
    }
    if kind == Some(KeyKind::Message) {
        match serde_json::from_slice::<MessageEvent>(data) {
            Ok(event) if !rooms.first_delivery(event.message.id) => {}
            Ok(event) => {
                let message = event.message;
                rooms.remember(&message, event.published_at);
                let live = LiveMessage::of(&message);
                rooms.deliver(&message.room, || Outbound::RoomMessage(live.clone()));
            }
            Err(error) => tracing::warn!(%error, "ignoring an unreadable chat message"),
        }
        return;
    }
    if kind != Some(KeyKind::RoomEvent) {
        // A room binding also matches longer `msg.<room>.…` keys a later version may add.
        tracing::debug!(
            routing_key,
            "ignoring a delivery of a kind this gateway does not know"
        );
        return;
    }
    let event = match serde_json::from_slice::<RoomEvent>(data) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, "ignoring an unreadable room event");
            return;
        }
    };
    let remote = event.origin() != broker.origin();
    match &event {
        RoomEvent::Presence {
            origin,
            room,
            user,
            state,
            sync,
            ..
        } => {
            // Clients see a presence event only when the user's visibility in the room changed:
            // remote events are recorded here and shown if they changed it; local changes were
            // recorded at join/leave and are shown unless another gateway already (or still)
            // shows the user; query answers from this gateway are for the others.
            let show = if remote {
                rooms.apply_remote_presence(origin, room, user, *state == PresenceState::Online)
            } else if *sync {
                false
            } else {
                let (local, elsewhere) = rooms.visibility(room, &user.id);
                match state {
                    PresenceState::Online => !elsewhere,
                    PresenceState::Offline => !local && !elsewhere,
                }
            };
            if !show {
                return;
            }
            let frame = Arc::new(Utf8Bytes::from(
                ServerFrame::Presence {
                    room,
                    user,
                    state: *state,
                }
                .to_text(),
            ));
            rooms.deliver(room, || Outbound::Frame(frame.clone()));
        }
        RoomEvent::Typing { room, user, .. } => {
            let frame = Arc::new(Utf8Bytes::from(
                ServerFrame::Typing { room, user }.to_text(),
            ));
            rooms.deliver(room, || Outbound::Frame(frame.clone()));
        }
        RoomEvent::PresenceQuery { room, .. } => {
            if remote {
                for user in rooms.local_users(room) {
                    broker.presence(room, &user, PresenceState::Online, true);
                }
            }
        }
        RoomEvent::RoomUpdated { room, view, .. } => {
            let frame = Arc::new(Utf8Bytes::from(
                ServerFrame::RoomUpdated { room: view }.to_text(),
            ));
            rooms.deliver(room, || Outbound::Frame(frame.clone()));
        }
        RoomEvent::RoomArchived { room, .. } => {
            membership::apply_archived(room, membership, rooms, broker);
        }
        RoomEvent::MessageChanged { room, change, .. } => {
            // The applied change is the client frame (`edited`, `deleted`, `reactions`):
            // serialized once for every connection of the room.
            let Ok(text) = serde_json::to_string(change) else {
                return;
            };
            // Plain joins answered from the room's memory must show the change too.
            rooms.apply_change(change);
            let frame = Arc::new(Utf8Bytes::from(text));
            rooms.deliver(room, || Outbound::Frame(frame.clone()));
        }
    }
}
