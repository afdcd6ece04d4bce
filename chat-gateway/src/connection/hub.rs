//! What every connection of this gateway shares: the [`Hub`] (rooms, broker, history client,
//! room authorization, read markers, receipts, limits, token verifier, shutdown signal), the
//! per-user connection limit ([`ConnectionSlot`]) and the ids of the messages sent through
//! this gateway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use common::domain::{MessageId, UserId};
use common::token::JwksVerifier;
use tokio_util::sync::CancellationToken;

use crate::accounts::Accounts;
use crate::broker::Broker;
use crate::history::HistoryClient;
use crate::membership::Membership;
use crate::metrics::GatewayMetrics;
use crate::read_markers::ReadMarkers;
use crate::receipts::Receipts;
use crate::rooms::Rooms;
use crate::settings::Limits;

/// What every connection shares.
pub struct Hub {
    pub rooms: Arc<Rooms>,
    /// Each user's open connections, closed when the account is deleted or disabled.
    pub accounts: Arc<Accounts>,
    pub broker: Broker,
    pub history: HistoryClient,
    /// Room authorization: decisions cached per (user, room).
    pub membership: Arc<Membership>,
    /// Read markers coalesced before they are written.
    pub read_markers: Arc<ReadMarkers>,
    pub receipts: Receipts,
    /// A retry this soon after its first attempt is published again without asking whether
    /// the message is stored.
    pub republish_within: std::time::Duration,
    pub limits: Limits,
    /// Monotonic within this instance, so one gateway's ids never go backwards.
    pub ids: Mutex<ulid::Generator>,
    pub next_conn: std::sync::atomic::AtomicU64,
    /// Verifies tokens of in-band `auth` frames.
    pub verifier: JwksVerifier,
    pub metrics: Arc<GatewayMetrics>,
    /// Open connections per user, for the per-user limit.
    pub connections: Mutex<HashMap<UserId, usize>>,
    /// Cancelled at shutdown: connections close with 1001.
    pub shutdown: CancellationToken,
}

/// Holds one of a user's connection slots; released when dropped.
pub struct ConnectionSlot {
    hub: Arc<Hub>,
    user: UserId,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut connections = self
            .hub
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = connections.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                connections.remove(&self.user);
            }
        }
    }
}

impl Hub {
    /// Whether a retry of a message first sent at `sent_at` is published again whether or
    /// not it is stored.
    pub fn republish_soon(&self, sent_at: chrono::DateTime<chrono::Utc>) -> bool {
        (chrono::Utc::now() - sent_at)
            .to_std()
            .is_ok_and(|age| age < self.republish_within)
    }

    /// Takes a connection slot for `user`, or `None` when the user is at the limit.
    pub fn claim_slot(self: &Arc<Self>, user: &UserId) -> Option<ConnectionSlot> {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = connections.entry(user.clone()).or_insert(0);
        if *count >= self.limits.max_connections_per_user {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            hub: self.clone(),
            user: user.clone(),
        })
    }

    pub(super) fn next_message_id(&self) -> MessageId {
        let mut generator = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        // The generator only fails when 2^80 ids were made in one millisecond.
        let id = generator.generate().unwrap_or_else(|_| ulid::Ulid::new());
        MessageId::from_ulid(id)
    }
}
