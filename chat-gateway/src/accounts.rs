//! Account changes applied to this gateway's connections, and frames for all of a user's
//! connections (membership events: `room_added`, `read`).
//!
//! auth-service publishes `account.<user_id>` when a user deletes their account or an
//! administrator disables it. [`crate::broker`] hands those events to [`Accounts::apply`],
//! which records the revocation in the token verifier (new upgrades and in-band `auth` frames
//! with the user's earlier tokens are refused from then on) and closes every open connection of
//! the user with [`close_code::ACCOUNT_REVOKED`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use common::domain::{RoomId, UserId};
use common::event::AccountEvent;
use common::revocation::Revocations;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::connection::ConnId;
use crate::outbox::{self, Outbound};
use crate::protocol::close_code;

/// Each user's connections by id, with the sending half of their outbound queue.
type OpenConnections = HashMap<UserId, Vec<(ConnId, outbox::Sender<Outbound>)>>;

/// The open connections of each user, reachable by user id.
pub struct Accounts {
    revocations: Arc<Revocations>,
    /// A connection is here from just after its upgrade until its reader ends.
    open: Mutex<OpenConnections>,
}

impl Accounts {
    pub fn new(revocations: Arc<Revocations>) -> Self {
        Self {
            revocations,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Records an open connection. Returns `false` (and records nothing) when the user's token
    /// of `issued_at` was revoked meanwhile: the connection must close.
    pub fn register(
        &self,
        user: &UserId,
        issued_at: u64,
        conn: ConnId,
        tx: &outbox::Sender<Outbound>,
    ) -> bool {
        let mut open = self.lock();
        // Checked under the lock that `apply` takes to close connections: a revocation is
        // either seen here or finds this connection registered.
        if self.revocations.is_revoked(user.as_str(), issued_at) {
            return false;
        }
        open.entry(user.clone())
            .or_default()
            .push((conn, tx.clone()));
        true
    }

    /// Forgets a connection that ended.
    pub fn unregister(&self, user: &UserId, conn: ConnId) {
        let mut open = self.lock();
        if let Some(connections) = open.get_mut(user) {
            connections.retain(|(id, _)| *id != conn);
            if connections.is_empty() {
                open.remove(user);
            }
        }
    }

    /// Queues `frame` for every open connection of `user` without waiting; a connection whose
    /// queue is full is stopped as lagging (it reconnects and reads the room list).
    pub fn send_to_user(&self, user: &UserId, room: &RoomId, frame: Arc<Utf8Bytes>) {
        let open = self.lock();
        for (_, tx) in open.get(user).into_iter().flatten() {
            if tx.try_send(Outbound::Frame(frame.clone())) == Err(outbox::TrySendError::Full) {
                tx.stop(Outbound::Lagged(Box::new(room.clone())));
            }
        }
    }

    /// Queues `frame` for one connection of `user`, if it is still open and has room.
    pub fn send_to_conn(&self, user: &UserId, conn: ConnId, frame: Arc<Utf8Bytes>) {
        let open = self.lock();
        if let Some((_, tx)) = open
            .get(user)
            .into_iter()
            .flatten()
            .find(|(id, _)| *id == conn)
        {
            let _ = tx.try_send(Outbound::Frame(frame));
        }
    }

    /// Applies an account change: a deleted or disabled user's tokens are refused from now on
    /// and their open connections close.
    pub fn apply(&self, event: &AccountEvent) {
        let mut open = self.lock();
        if !self.revocations.apply(event) {
            return;
        }
        let Some(connections) = open.remove(&event.user_id) else {
            return;
        };
        tracing::info!(
            user = %event.user_id,
            change = ?event.change,
            connections = connections.len(),
            "closing the connections of a revoked account"
        );
        for (_, tx) in connections {
            tx.stop(revoked_close());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The close that ends a revoked user's connection.
pub fn revoked_close() -> Outbound {
    Outbound::Close(Some(Box::new(CloseFrame {
        code: CloseCode::from(close_code::ACCOUNT_REVOKED),
        reason: "account deleted or disabled".into(),
    })))
}
