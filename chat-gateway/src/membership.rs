//! Room authorization and membership changes applied to this gateway's connections.
//!
//! history-service decides every permission (docs/rooms.md). A `join` asks it
//! (`POST /api/rooms/{room}/join` with the user's token); an allowed answer is kept as a
//! decision per (user, room), shared by the user's connections, for `rooms.decision_ttl_s`, so
//! repeat joins and every `send` and `typing` within it ask nothing. A `send` or `typing` whose
//! decision expired asks again (`GET /api/rooms/{room}`: still a member?) before it is
//! published; when history-service cannot answer, a decision that merely expired is extended
//! (live chat goes on while history-service is away; events still revoke it). A `send` or
//! `typing` in a decision's last quarter is allowed by it and refreshes it in the background.
//!
//! Decisions are dropped early when they may have been revoked: a `member.<user>` event
//! `removed` or `role` for the room, a room's archival, and every change of the broker
//! connection (events may have been missed). `added` and `read` events cannot revoke anything
//! and leave the decision as it is (a public room's join publishes `added`, which would
//! otherwise undo every first join's decision).
//!
//! A revision number counts those drops. An authorization that was in flight while one
//! happened is not kept, and a join checks it again once its connection is in the room's
//! registry: a removal either finds the connection there (and takes it out) or is seen by that
//! check.
//!
//! Removals take the user's connections out of the room in [`Rooms`], the registry that fan-out
//! reads: no `message` of the room is queued for them afterwards, and the `send` path checks the
//! same registry, so a send racing with a removal is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::domain::{RemovalReason, RoomId, UserId, UserRef};
use common::event::{MemberChange, MemberEvent, PresenceState};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::accounts::Accounts;
use crate::broker::Broker;
use crate::history::{Authorization, AuthorizationKind, HistoryClient, Refusal};
use crate::metrics::GatewayMetrics;
use crate::outbox::{self, Outbound};
use crate::protocol::ServerFrame;
use crate::rooms::{Member, Rooms};

/// An allowed (user, room) and until when it is trusted. Expired ones stay until the cache
/// is full (a lookup ignores them).
struct Decision {
    /// The room view of the answer, as JSON text (sent in `joined`).
    view: Arc<str>,
    until: Instant,
    /// A refresh of this decision was started (see [`Membership::authorize_stay`]).
    refreshing: bool,
}

struct Decisions {
    entries: HashMap<(UserId, RoomId), Decision>,
    /// Bumped by every drop of decisions that may revoke one.
    revision: u64,
}

/// The decision cache and the authorizations behind it.
pub struct Membership {
    history: HistoryClient,
    decisions: Mutex<Decisions>,
    ttl: Duration,
    capacity: usize,
    metrics: Arc<GatewayMetrics>,
    /// Refreshes running in the background, at most [`REFRESHES`].
    refreshes: Arc<tokio::sync::Semaphore>,
}

/// Most decisions refreshed at once; beyond, a decision is asked again when it expires.
const REFRESHES: usize = 32;

/// An authorization's answer with the revision it was made at (see [`Membership::revision`]).
pub struct Authorized {
    pub answer: Authorization,
    pub revision: u64,
}

impl Membership {
    pub fn new(
        history: HistoryClient,
        ttl: Duration,
        capacity: usize,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        Self {
            history,
            decisions: Mutex::new(Decisions {
                entries: HashMap::new(),
                revision: 0,
            }),
            ttl,
            capacity: capacity.max(1),
            metrics,
            refreshes: Arc::new(tokio::sync::Semaphore::new(REFRESHES)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Decisions> {
        self.decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The current revision: when it changed, a decision may have been revoked since.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// The cached view of an unexpired decision, and the revision.
    fn cached(&self, user: &UserId, room: &RoomId) -> (Option<Arc<str>>, u64) {
        let decisions = self.lock();
        let view = decisions
            .entries
            .get(&(user.clone(), room.clone()))
            .filter(|decision| decision.until > Instant::now())
            .map(|decision| decision.view.clone());
        (view, decisions.revision)
    }

    /// Whether the (user, room) decision is in the last quarter of its life with no refresh
    /// started; marks it refreshing if so.
    fn take_refresh(&self, user: &UserId, room: &RoomId) -> bool {
        let mut decisions = self.lock();
        let Some(decision) = decisions.entries.get_mut(&(user.clone(), room.clone())) else {
            return false;
        };
        let due = !decision.refreshing
            && decision.until.saturating_duration_since(Instant::now()) < self.ttl / 4;
        decision.refreshing |= due;
        due
    }

    /// Whether `user` may join `room`: a cached decision, or history-service's answer (shared
    /// with the identical request in flight), kept when allowed.
    pub async fn authorize_join(&self, user: &UserId, room: &RoomId, token: &str) -> Authorized {
        self.authorize(AuthorizationKind::Join, user, room, token)
            .await
    }

    /// Whether `user` may still act in `room` (`send`, `typing`): free while the decision
    /// holds, else asked again. A decision in the last quarter of its life is asked again in
    /// the background (at most [`REFRESHES`] at once), so an active member's sends do not
    /// wait for the check when it expires, and the checks of decisions made together (a
    /// gateway's start, a wave of joins) spread over the time their users next act.
    pub async fn authorize_stay(
        self: &Arc<Self>,
        user: &UserId,
        room: &RoomId,
        token: &str,
    ) -> Result<(), Refusal> {
        let answer = self
            .authorize(AuthorizationKind::Check, user, room, token)
            .await
            .answer
            .map(|_| ());
        if answer.is_ok()
            && let Ok(permit) = self.refreshes.clone().try_acquire_owned()
            && self.take_refresh(user, room)
        {
            let (membership, user, room, token) =
                (self.clone(), user.clone(), room.clone(), token.to_string());
            tokio::spawn(async move {
                let _permit = permit;
                let refreshed = membership
                    .ask(AuthorizationKind::Check, &user, &room, &token)
                    .await;
                if let Err(refusal) = refreshed.answer
                    && refusal != Refusal::Unavailable
                {
                    // No longer allowed: the next send asks and is refused.
                    membership.revoke(&user, &room);
                } else if let Some(decision) = membership
                    .lock()
                    .entries
                    .get_mut(&(user.clone(), room.clone()))
                {
                    // Unanswered (or not kept): tried again on a later send.
                    decision.refreshing = false;
                }
            });
        }
        answer
    }

    /// Asks history-service again for a join, whatever is cached.
    pub async fn reauthorize_join(&self, user: &UserId, room: &RoomId, token: &str) -> Authorized {
        self.ask(AuthorizationKind::Join, user, room, token).await
    }

    async fn authorize(
        &self,
        kind: AuthorizationKind,
        user: &UserId,
        room: &RoomId,
        token: &str,
    ) -> Authorized {
        let (view, revision) = self.cached(user, room);
        if let Some(view) = view {
            self.metrics.room_decisions_cached.inc();
            return Authorized {
                answer: Ok(view),
                revision,
            };
        }
        self.ask(kind, user, room, token).await
    }

    async fn ask(
        &self,
        kind: AuthorizationKind,
        user: &UserId,
        room: &RoomId,
        token: &str,
    ) -> Authorized {
        let revision = self.revision();
        let mut answer = self.history.authorize(kind, user, room, token).await;
        if kind == AuthorizationKind::Check
            && answer == Err(Refusal::Unavailable)
            && let Some(view) = self.expired_view(user, room)
        {
            // history-service cannot answer: a decision that merely expired (nothing revoked
            // it: that would have dropped it) is extended, so live chat in joined rooms goes on
            // while history-service is away; membership events still revoke it.
            answer = Ok(view);
        }
        if let Ok(view) = &answer {
            self.remember(user, room, view.clone(), revision);
        }
        Authorized { answer, revision }
    }

    /// The view of the (user, room) decision if one is kept, expired or not.
    fn expired_view(&self, user: &UserId, room: &RoomId) -> Option<Arc<str>> {
        let decisions = self.lock();
        decisions
            .entries
            .get(&(user.clone(), room.clone()))
            .map(|decision| decision.view.clone())
    }

    /// Keeps an allowed decision made at `revision`, unless decisions were dropped since (it
    /// may predate a revocation).
    fn remember(&self, user: &UserId, room: &RoomId, view: Arc<str>, revision: u64) {
        let mut decisions = self.lock();
        if decisions.revision != revision {
            return;
        }
        let now = Instant::now();
        if decisions.entries.len() >= self.capacity {
            // Full: drop the expired decisions, then arbitrary live ones (asked again when
            // needed) down to seven eighths, so the scan is paid once per many inserts.
            decisions.entries.retain(|_, decision| decision.until > now);
            let keep = self.capacity - self.capacity / 8;
            let excess = decisions.entries.len().saturating_sub(keep.max(1) - 1);
            let victims: Vec<(UserId, RoomId)> =
                decisions.entries.keys().take(excess).cloned().collect();
            for key in victims {
                decisions.entries.remove(&key);
            }
        }
        decisions.entries.insert(
            (user.clone(), room.clone()),
            Decision {
                view,
                until: now + self.ttl,
                refreshing: false,
            },
        );
    }

    /// Drops the decision of (user, room).
    pub fn revoke(&self, user: &UserId, room: &RoomId) {
        let mut decisions = self.lock();
        decisions.revision += 1;
        decisions.entries.remove(&(user.clone(), room.clone()));
    }

    /// Drops every decision of `room`.
    pub fn revoke_room(&self, room: &RoomId) {
        let mut decisions = self.lock();
        decisions.revision += 1;
        decisions.entries.retain(|(_, r), _| r != room);
    }

    /// Drops every decision: the broker connection changed and events may have been missed.
    pub fn revoke_all(&self) {
        let mut decisions = self.lock();
        decisions.revision += 1;
        decisions.entries.clear();
    }

    /// Decisions held now.
    pub fn cached_decisions(&self) -> usize {
        self.lock().entries.len()
    }
}

/// Applies a `member.<user>` event to this gateway's connections (see docs/rooms.md).
pub fn apply_member_event(
    event: &MemberEvent,
    membership: &Membership,
    rooms: &Rooms,
    accounts: &Accounts,
    broker: &Broker,
) {
    let room = &event.room;
    match &event.change {
        MemberChange::Removed { reason } => {
            membership.revoke(&event.user, room);
            let removed = rooms.remove_user(room, &event.user);
            if let Some(user) = removed.first().map(|member| member.user.clone()) {
                let connections = removed.len();
                tracing::debug!(%room, user = %user.id, ?reason, connections, "removed from a room");
                tell_removed(&removed, room, *reason);
                gone_offline(broker, room, std::iter::once(user));
            }
        }
        MemberChange::Role { .. } => membership.revoke(&event.user, room),
        MemberChange::Added { view } => {
            let frame = ServerFrame::RoomAdded { room: view }.to_text();
            accounts.send_to_user(&event.user, room, Arc::new(Utf8Bytes::from(frame)));
        }
        MemberChange::Read { id, .. } => {
            let frame = ServerFrame::Read { room, id: *id }.to_text();
            accounts.send_to_user(&event.user, room, Arc::new(Utf8Bytes::from(frame)));
        }
    }
}

/// The room was archived: every local connection leaves it with reason `archived`.
pub fn apply_archived(room: &RoomId, membership: &Membership, rooms: &Rooms, broker: &Broker) {
    membership.revoke_room(room);
    let removed = rooms.remove_all(room);
    tell_removed(&removed, room, RemovalReason::Archived);
    let mut users: Vec<UserRef> = removed.into_iter().map(|member| member.user).collect();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    users.dedup_by(|a, b| a.id == b.id);
    gone_offline(broker, room, users);
}

/// Tells each connection taken out of `room` why. The writer drops what it holds for the room
/// first; nothing of the room is queued for them after this (they left the registry).
fn tell_removed(removed: &[Member], room: &RoomId, reason: RemovalReason) {
    let frame = Arc::new(Utf8Bytes::from(
        ServerFrame::Removed { room, reason }.to_text(),
    ));
    for member in removed {
        let queued = member
            .tx
            .try_send(Outbound::Forget(Box::new(room.clone())))
            .and_then(|()| member.tx.try_send(Outbound::Frame(frame.clone())));
        if queued == Err(outbox::TrySendError::Full) {
            // It must not miss the removal: it reconnects and learns it from the room list.
            member.tx.stop(Outbound::Lagged(Box::new(room.clone())));
        }
    }
}

/// Announces that users whose connections were all taken out of `room` are offline there.
fn gone_offline(broker: &Broker, room: &RoomId, users: impl IntoIterator<Item = UserRef>) {
    for user in users {
        broker.presence(room, &user, PresenceState::Offline, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::HistorySettings;

    fn membership(capacity: usize) -> Membership {
        let metrics = Arc::new(GatewayMetrics::new());
        let history = HistoryClient::new(
            &HistorySettings {
                url: "http://127.0.0.1:9".into(),
                recent_on_join: 50,
                catch_up_limit: 100,
                late_window_ms: 1000,
                timeout_ms: 100,
                memory_grace_ms: 0,
            },
            metrics.clone(),
        )
        .expect("client");
        Membership::new(history, Duration::from_secs(60), capacity, metrics)
    }

    fn key(n: usize) -> (UserId, RoomId) {
        (
            UserId::parse(format!("u-{n}")).expect("user"),
            RoomId::parse(format!("r-{n}")).expect("room"),
        )
    }

    #[test]
    fn the_cache_stays_within_its_bound_and_keeps_the_newest_decision() {
        let membership = membership(64);
        for n in 0..1000 {
            let (user, room) = key(n);
            membership.remember(&user, &room, Arc::from("{}"), membership.revision());
            assert!(membership.cached_decisions() <= 64);
            assert!(membership.cached(&user, &room).0.is_some(), "{n}");
        }
    }

    #[test]
    fn a_decision_made_across_a_revocation_is_not_kept() {
        let membership = membership(64);
        let (user, room) = key(1);
        let before = membership.revision();
        membership.revoke(&user, &room);
        membership.remember(&user, &room, Arc::from("{}"), before);
        assert!(membership.cached(&user, &room).0.is_none());
        membership.remember(&user, &room, Arc::from("{}"), membership.revision());
        assert!(membership.cached(&user, &room).0.is_some());
        membership.revoke_room(&room);
        assert!(membership.cached(&user, &room).0.is_none());
    }
}
