//! Read markers on their way to history-service.
//!
//! A client sends `{"type":"read","room":R,"id":ID}` as the user reads; a scrolling client
//! sends many. They are coalesced per (user, room), keeping the greatest id (markers only move
//! forward), and written every `rooms.read_flush_ms` with one `PUT /api/rooms/{room}/read` per
//! pair, with the token of the connection that sent that id. history-service then publishes a
//! `member.<user>` `read` event, which tells the user's other connections.
//!
//! The map is bounded (`rooms.read_markers_pending`): while it is full, a `read` for a pair not
//! in it is refused with `unavailable`. A write history-service could not take is kept for the
//! next flush unless a newer marker replaced it; a `422` is reported to the connection that sent
//! the id as `error` `invalid_marker`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use common::domain::{MessageId, RoomId, UserId};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::accounts::Accounts;
use crate::connection::ConnId;
use crate::history::{HistoryClient, MarkerWrite};
use crate::metrics::GatewayMetrics;
use crate::protocol::{ErrorCode, ServerFrame};

/// Writes in flight at once during a flush.
const CONCURRENT_WRITES: usize = 16;

/// The greatest marker of a pair not written yet.
struct Pending {
    id: MessageId,
    /// The token of the connection that sent `id`.
    token: String,
    /// That connection, for an `invalid_marker` error (reached through [`Accounts`], so a
    /// pending marker does not keep a closed connection's outbox open).
    conn: ConnId,
}

/// The map was full: the `read` is refused.
#[derive(Debug)]
pub struct Full;

pub struct ReadMarkers {
    pending: Mutex<HashMap<(UserId, RoomId), Pending>>,
    capacity: usize,
    history: HistoryClient,
    accounts: Arc<Accounts>,
    metrics: Arc<GatewayMetrics>,
}

impl ReadMarkers {
    pub fn new(
        history: HistoryClient,
        accounts: Arc<Accounts>,
        capacity: usize,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            history,
            accounts,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(UserId, RoomId), Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a marker for the next flush; an older one than the pair's pending marker is
    /// ignored.
    pub fn record(
        &self,
        user: &UserId,
        room: &RoomId,
        id: MessageId,
        token: &str,
        conn: ConnId,
    ) -> Result<(), Full> {
        let mut pending = self.lock();
        let key = (user.clone(), room.clone());
        if let Some(marker) = pending.get_mut(&key) {
            if id > marker.id {
                *marker = Pending {
                    id,
                    token: token.to_string(),
                    conn,
                };
            }
            return Ok(());
        }
        if pending.len() >= self.capacity {
            self.metrics.read_markers_refused.inc();
            return Err(Full);
        }
        pending.insert(
            key,
            Pending {
                id,
                token: token.to_string(),
                conn,
            },
        );
        Ok(())
    }

    /// Flushes every `every` until `shutdown`, then once more.
    pub async fn run(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.flush().await,
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.flush()).await;
    }

    /// Writes every pending marker.
    pub async fn flush(&self) {
        let batch: Vec<((UserId, RoomId), Pending)> = self.lock().drain().collect();
        futures_util::stream::iter(batch)
            .for_each_concurrent(CONCURRENT_WRITES, |((user, room), marker)| async move {
                match self
                    .history
                    .write_marker(&room, marker.id, &marker.token)
                    .await
                {
                    MarkerWrite::Written => self.metrics.read_markers_written.inc(),
                    MarkerWrite::Invalid => {
                        let text = ServerFrame::Error {
                            code: ErrorCode::InvalidMarker,
                            message: &format!("message {} is not in room `{room}`", marker.id),
                            client_id: None,
                            room: Some(&room),
                        }
                        .to_text();
                        self.accounts.send_to_conn(
                            &user,
                            marker.conn,
                            Arc::new(Utf8Bytes::from(text)),
                        );
                    }
                    MarkerWrite::Refused => {
                        tracing::debug!(%room, user = %user, "read marker refused");
                    }
                    MarkerWrite::Unavailable => {
                        // Again at the next flush, unless a newer marker took its place.
                        let _ = self.record(&user, &room, marker.id, &marker.token, marker.conn);
                    }
                }
            })
            .await;
    }
}
