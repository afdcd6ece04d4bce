//! The reads of joins, in batches.
//!
//! Every WebSocket `join` the gateway has no cached decision for asks
//! `POST /api/rooms/{room}/join`, so a gateway restart or a wave of users opening the app at
//! once arrives as thousands of joins within seconds. Each needs the room, the caller's
//! membership and their inbox entry. Read one join at a time, that is three lookups by `_id`
//! per join; FerretDB (the local and test server) answers each only after scanning its
//! collection, which caps joins at a few hundred a second there whatever the hardware.
//!
//! So joins queue here (bounded: a full queue answers `unavailable` at once) and one task reads
//! for all of them together: the rooms through the room cache (the rest by `_id`), the
//! memberships and the inbox entries each with one query for the whole batch
//! ([`RoomStore::memberships_by_id`], [`RoomStore::inbox_entries`]). A batch is whatever queued
//! while the previous one was read, up to `rooms.join_batch`, so a lone join waits for nobody
//! and a storm costs a few queries per batch instead of per join.
//!
//! A member's repeat join reads nothing: memberships found with their inbox entries are kept
//! in the member cache ([`super::cache::MemberCache`]), forgotten by this instance's writes
//! and by the member events of every instance. When the room document is cached too, such a
//! join does not queue at all: a batch waits for its slowest read, and a join that needs
//! nothing from the database must not wait behind another join's misses. Room documents come from the same cache as
//! room lists: with several history-service instances, a room's kind or archival changed by
//! another instance is seen here at most `rooms.list_cache_ttl_ms` late (the gateway keeps
//! each decision much longer anyway; the membership events revoke those).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, Registry};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::store::{InboxEntry, JoinReads, MembershipDoc, RoomDoc, RoomStore, membership_id};
use crate::reads::Deadline;

/// Most connections the reader uses at once: three queries, each at most
/// [`RoomStore::LOOKUPS_CONCURRENCY`] lookups.
pub const CONNECTIONS: u32 = 3 * RoomStore::LOOKUPS_CONCURRENCY as u32;

/// What a join reads before it decides.
#[derive(Debug, Clone)]
pub struct Found {
    pub room: Option<Arc<RoomDoc>>,
    pub membership: Option<MembershipDoc>,
    pub entry: Option<InboxEntry>,
}

/// Why a lookup got no answer.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("too many joins are waiting")]
    Full,
    #[error("the join's reads did not finish in time")]
    TimedOut,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

struct Request {
    room: String,
    user: String,
    reply: oneshot::Sender<Result<Found, Arc<anyhow::Error>>>,
}

/// The queue of joins waiting for their reads (see the module documentation).
#[derive(Clone)]
pub struct JoinLookups {
    store: RoomStore,
    queue: mpsc::Sender<Request>,
    timeout: Duration,
}

impl JoinLookups {
    /// The queue, and the task that reads for it (run it until `shutdown`).
    pub fn new(
        store: RoomStore,
        capacity: usize,
        batch: usize,
        timeout: Duration,
        registry: &Registry,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(Self, impl Future<Output = ()> + Send + 'static)> {
        let (queue, requests) = mpsc::channel(capacity.max(1));
        let metrics = BatchMetrics {
            batches: common::metrics::register(
                registry,
                IntCounter::new(
                    "history_join_batches_total",
                    "reads made for a batch of joins",
                )?,
            ),
            joins: common::metrics::register(
                registry,
                IntCounter::new(
                    "history_join_lookups_total",
                    "joins answered by those reads",
                )?,
            ),
        };
        let reader = read_batches(
            store.clone(),
            requests,
            batch.max(1),
            timeout,
            metrics,
            shutdown,
        );
        Ok((
            Self {
                store,
                queue,
                timeout,
            },
            reader,
        ))
    }

    /// The room, the user's membership and inbox entry: from the caches when they hold all
    /// three, otherwise read with the other joins waiting.
    pub async fn find(&self, room: &str, user: &str) -> Result<Found, LookupError> {
        if let Some(found) = self.cached(room, user) {
            return Ok(found);
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Request {
                room: room.to_string(),
                user: user.to_string(),
                reply,
            })
            .map_err(|_| LookupError::Full)?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(Ok(found))) => Ok(found),
            Ok(Ok(Err(error))) => Err(LookupError::Store(anyhow::anyhow!("{error:#}"))),
            // The reader stopped (shutting down) before it answered.
            Ok(Err(_)) => Err(LookupError::TimedOut),
            Err(_) => Err(LookupError::TimedOut),
        }
    }

    /// A member's join when the caches hold all it needs. Answered here rather than in the
    /// queue: a batch waits for its slowest read, so a join that needs nothing from the
    /// database would otherwise wait behind another's misses.
    fn cached(&self, room: &str, user: &str) -> Option<Found> {
        let member = self.store.cached_member(room, user)?;
        let room = self.store.cached_room(room)?;
        Some(Found {
            room: Some(room),
            membership: Some(member.membership.clone()),
            entry: Some(member.entry.clone()),
        })
    }
}

struct BatchMetrics {
    batches: IntCounter,
    joins: IntCounter,
}

async fn read_batches(
    store: RoomStore,
    mut requests: mpsc::Receiver<Request>,
    batch: usize,
    timeout: Duration,
    metrics: BatchMetrics,
    shutdown: CancellationToken,
) {
    let mut waiting = Vec::with_capacity(batch);
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            request = requests.recv() => match request {
                Some(request) => request,
                None => return,
            },
        };
        waiting.push(first);
        while waiting.len() < batch {
            match requests.try_recv() {
                Ok(request) => waiting.push(request),
                Err(_) => break,
            }
        }
        // Callers that gave up meanwhile need no reads.
        waiting.retain(|request| !request.reply.is_closed());
        if waiting.is_empty() {
            continue;
        }
        metrics.batches.inc();
        metrics.joins.inc_by(waiting.len() as u64);
        let started = std::time::Instant::now();
        let read = read(&store, &waiting, Deadline::after(timeout)).await;
        tracing::debug!(
            joins = waiting.len(),
            ms = started.elapsed().as_millis() as u64,
            "join batch read"
        );
        match read {
            Ok(mut found) => {
                for (request, found) in waiting.drain(..).zip(found.drain(..)) {
                    let _ = request.reply.send(Ok(found));
                }
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    joins = waiting.len(),
                    "reading for joins failed"
                );
                let error = Arc::new(error);
                for request in waiting.drain(..) {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The reads of `requests`, in their order.
async fn read(
    store: &RoomStore,
    requests: &[Request],
    deadline: Deadline,
) -> anyhow::Result<Vec<Found>> {
    let mut rooms: Vec<String> = requests.iter().map(|r| r.room.clone()).collect();
    rooms.sort_unstable();
    rooms.dedup();
    let pairs: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.user.clone(), r.room.clone()))
        .collect();
    let (
        rooms,
        JoinReads {
            memberships,
            entries,
        },
    ) = tokio::try_join!(
        store.rooms_cached(rooms, deadline),
        store.members_cached(&pairs, deadline),
    )?;
    let rooms: HashMap<&str, &Arc<RoomDoc>> = rooms.iter().map(|r| (r.id.as_str(), r)).collect();
    Ok(requests
        .iter()
        .map(|r| Found {
            room: rooms.get(r.room.as_str()).map(|room| Arc::clone(room)),
            membership: memberships.get(&membership_id(&r.room, &r.user)).cloned(),
            entry: entries.get(&(r.user.clone(), r.room.clone())).cloned(),
        })
        .collect())
}
