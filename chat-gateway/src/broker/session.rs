//! One connection to the broker, from opening to its end: [`Session::open`] declares the
//! exchange and this instance's durable queue (a quorum queue on a cluster), binds it to every
//! account and membership event and to each local room, consumes it and opens the
//! confirm-mode publishing channel; [`Session::apply`] binds and unbinds rooms, pipelined on
//! [`BINDING_CHANNELS`] channels; `serve` applies topology commands in batches, hands each
//! delivery to [`dispatch`] and acknowledges the deliveries in batches (`multiple`), until
//! shutdown or a failure.

use std::collections::HashSet;
use std::time::Duration;

use common::amqp;
use common::domain::RoomId;
use common::event::topology;
use futures_util::StreamExt;
use lapin::Acker;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::rooms::{Rooms, TopologyCommand, room_hash};
use crate::settings::{GatewayAmqpSettings, QueueType};

use super::inbound::{Inbound, dispatch};

/// Deliveries of the instance queue the broker sends ahead of their acknowledgements.
const PREFETCH: u16 = 1024;
/// Deliveries handed on before one `multiple` acknowledgement covers them all.
const ACK_BATCH: u32 = 64;
/// Longest a handed-on delivery waits for its acknowledgement when fewer than a batch came.
const ACK_DELAY: Duration = Duration::from_millis(20);

/// Most topology commands applied together (see [`Session::apply`]).
const TOPOLOGY_BATCH: usize = 256;

/// Channels the bindings of rooms are spread over (see [`Session::apply`]). The broker makes
/// a durable binding in about 1 ms on one channel (RabbitMQ 3.10, 2 busy cores: 400 in
/// 380 ms), and works on several channels partly side by side (4: 290 ms, 16: 200 ms).
const BINDING_CHANNELS: usize = 4;

pub(super) struct Session {
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
    pub(super) async fn open(
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

    pub(super) async fn serve(
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
