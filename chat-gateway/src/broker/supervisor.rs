//! The broker task: [`run`] keeps the connection up until shutdown. On any failure it
//! reconnects with backoff (100 ms, doubling up to 5 s), to the next address of a cluster, and
//! rebuilds everything from application state in a new [`Session`] rather than relying on the
//! client library's recovery. While disconnected it keeps answering topology commands, so
//! joins proceed and their bindings are made on reconnect. Each session and each loss is told
//! to [`crate::recovery`] and drops the cached room decisions: membership events may have been
//! missed meanwhile.

use std::collections::HashSet;
use std::time::Duration;

use common::amqp;
use common::domain::RoomId;
use common::event::topology;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::rooms::TopologyCommand;
use crate::settings::GatewayAmqpSettings;

use super::inbound::Inbound;
use super::session::Session;

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
