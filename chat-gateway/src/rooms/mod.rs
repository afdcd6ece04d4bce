//! Local room membership: which connections of this gateway are in which room, and the users
//! other gateways reported online. The room's fan-out is in [`fanout`], its memory of recent
//! messages in [`memory`].
//!
//! Topology follows membership: the first local member of a room makes the broker bind this
//! instance's queue to the room, the last one leaving unbinds it. The commands are queued while
//! the registry lock is held, so the broker applies bind/unbind in the order membership changed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::domain::{RoomId, UserId, UserRef};
use common::event::ChatMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::connection::{ConnId, SessionToken};
use crate::metrics::GatewayMetrics;
use crate::outbox::{self, Outbound};

mod fanout;
mod memory;

use fanout::DeliveredIds;
pub use memory::ReadTicket;
pub(crate) use memory::room_hash;

/// Topology changes for the broker task, applied in order.
#[derive(Debug)]
pub enum TopologyCommand {
    /// Bind the instance queue to the room, then cancel the token: the room's joins wait for
    /// it. While disconnected the token is cancelled at once, and the binding is made on
    /// reconnect from the registry.
    Bind(RoomId, CancellationToken),
    Unbind(RoomId),
}

/// A local connection in a room.
#[derive(Clone)]
pub struct Member {
    pub user: UserRef,
    pub tx: outbox::Sender<Outbound>,
    /// The connection's token: a read the gateway makes for the room is authorized with a
    /// member's.
    pub token: SessionToken,
}

#[derive(Default)]
struct Room {
    local: HashMap<ConnId, Member>,
    /// Users online through other gateways, by (gateway, user id).
    remote: HashMap<(String, UserId), UserRef>,
    /// The room's latest messages seen by this gateway, oldest first: a join merges them with
    /// the history it reads, so a message history-service has not stored yet is not missed.
    /// Each with the time its copy was published, when the publisher stamped it.
    recent: VecDeque<(Arc<ChatMessage>, Option<DateTime<Utc>>)>,
    /// Cancelled once the instance queue is bound to the room for its current local members.
    bound: CancellationToken,
    /// When the binding for the current local members was asked for.
    bound_at: Option<Instant>,
    /// `recent` holds the room's latest messages without a gap: filled from a history read
    /// made well after the binding, and every message since arrived through the binding.
    /// Plain joins are then answered from it without reading history.
    complete: bool,
    /// `recent` was filled by a read made within the grace: plain joins are answered from it,
    /// and the settling read delivers to them what it lacked.
    provisional: bool,
    /// Connections whose join was answered from the provisional memory.
    unsettled: HashSet<ConnId>,
    /// The settling read of the current binding is scheduled.
    settling: bool,
}

impl Room {
    /// Forgets the memory's state for a new binding, or after a lost broker connection.
    fn unsettle(&mut self) {
        self.complete = false;
        self.provisional = false;
        self.unsettled.clear();
        self.settling = false;
    }
}

/// Result of a join.
pub struct Joined {
    /// This connection is the first local member: the room is new to this gateway.
    pub first_local: bool,
    /// No other local connection of this user was in the room.
    pub first_for_user: bool,
    /// Cancelled once the queue is bound to the room (or the binding is recorded for when the
    /// broker is back). Only the first local member's join waits for a bind; later ones find
    /// it done, or wait for the same one.
    pub bound: CancellationToken,
}

pub struct Rooms {
    rooms: Mutex<HashMap<RoomId, Room>>,
    topology: mpsc::UnboundedSender<TopologyCommand>,
    metrics: Arc<GatewayMetrics>,
    /// Bumped each time the broker connection is lost: what arrived through the bindings may
    /// have a gap from then on.
    epoch: AtomicU64,
    /// How long after a room's binding a history read must start for its answer to make the
    /// room's memory complete (messages published before the binding are stored by then).
    memory_grace: Duration,
    /// The messages fanned out last (see [`Rooms::first_delivery`]).
    delivered: Mutex<DeliveredIds>,
}

impl Rooms {
    /// The receiver feeds the broker task.
    pub fn new(
        metrics: Arc<GatewayMetrics>,
        memory_grace: Duration,
    ) -> (Self, mpsc::UnboundedReceiver<TopologyCommand>) {
        // Unbounded on purpose: commands are sent under the registry lock, which must not wait
        // for the broker task. One is made only when a room gains its first local member or
        // loses its last, so the backlog grows with room churn while the broker task is away
        // (reconnecting), never with messages; each join waits for its own bind anyway.
        let (topology, commands) = mpsc::unbounded_channel();
        (
            Self {
                rooms: Mutex::new(HashMap::new()),
                topology,
                metrics,
                epoch: AtomicU64::new(0),
                memory_grace,
                delivered: Mutex::default(),
            },
            commands,
        )
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RoomId, Room>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn command(&self, command: TopologyCommand) {
        // The broker task outlives every connection; a send can only fail during shutdown.
        let _ = self.topology.send(command);
    }

    pub fn join(&self, room: &RoomId, conn: ConnId, member: Member) -> Joined {
        let mut rooms = self.lock();
        let entry = rooms.entry(room.clone()).or_default();
        let first_local = entry.local.is_empty();
        if first_local {
            entry.bound = CancellationToken::new();
            entry.bound_at = Some(Instant::now());
            entry.unsettle();
            self.command(TopologyCommand::Bind(room.clone(), entry.bound.clone()));
        }
        let first_for_user = !entry.local.values().any(|m| m.user.id == member.user.id);
        entry.local.insert(conn, member);
        Joined {
            first_local,
            first_for_user,
            bound: entry.bound.clone(),
        }
    }

    /// Removes the connection; returns whether it was the user's last local connection there.
    pub fn leave(&self, room: &RoomId, conn: ConnId) -> Option<bool> {
        let mut rooms = self.lock();
        let removed = self.remove_where(&mut rooms, room, |id, _| *id == conn);
        let member = removed.first()?;
        let last_for_user = !rooms
            .get(room)
            .is_some_and(|entry| entry.local.values().any(|m| m.user.id == member.user.id));
        Some(last_for_user)
    }

    /// Whether the connection is in the room: the registry fan-out reads, so a connection that
    /// a removal took out is no longer in it even before its reader hears of it.
    pub fn is_member(&self, room: &RoomId, conn: ConnId) -> bool {
        self.lock()
            .get(room)
            .is_some_and(|entry| entry.local.contains_key(&conn))
    }

    /// Takes every local connection of `user` out of the room; returns them.
    pub fn remove_user(&self, room: &RoomId, user: &UserId) -> Vec<Member> {
        let mut rooms = self.lock();
        self.remove_where(&mut rooms, room, |_, member| member.user.id == *user)
    }

    /// Takes every local connection out of the room; returns them.
    pub fn remove_all(&self, room: &RoomId) -> Vec<Member> {
        let mut rooms = self.lock();
        self.remove_where(&mut rooms, room, |_, _| true)
    }

    /// Removes the matching local members, unbinding the room when none is left.
    fn remove_where(
        &self,
        rooms: &mut HashMap<RoomId, Room>,
        room: &RoomId,
        matches: impl Fn(&ConnId, &Member) -> bool,
    ) -> Vec<Member> {
        let Some(entry) = rooms.get_mut(room) else {
            return Vec::new();
        };
        let conns: Vec<ConnId> = entry
            .local
            .iter()
            .filter(|(id, member)| matches(id, member))
            .map(|(id, _)| *id)
            .collect();
        let removed: Vec<Member> = conns
            .iter()
            .filter_map(|id| entry.local.remove(id))
            .collect();
        if !removed.is_empty() && entry.local.is_empty() {
            self.command(TopologyCommand::Unbind(room.clone()));
            entry.bound_at = None;
            entry.unsettle();
            if entry.remote.is_empty() {
                rooms.remove(room);
            }
        }
        removed
    }

    /// Users online in the room, here and on other gateways, each once.
    pub fn members(&self, room: &RoomId) -> Vec<UserRef> {
        let rooms = self.lock();
        let Some(entry) = rooms.get(room) else {
            return Vec::new();
        };
        let mut users: HashMap<&UserId, &UserRef> = HashMap::new();
        for user in entry
            .local
            .values()
            .map(|m| &m.user)
            .chain(entry.remote.values())
        {
            users.entry(&user.id).or_insert(user);
        }
        let mut users: Vec<UserRef> = users.into_values().cloned().collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        users
    }

    /// Users with a local connection in the room, each once.
    pub fn local_users(&self, room: &RoomId) -> Vec<UserRef> {
        let rooms = self.lock();
        let mut users: Vec<UserRef> = rooms
            .get(room)
            .map(|entry| entry.local.values().map(|m| m.user.clone()).collect())
            .unwrap_or_default();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        users.dedup_by(|a, b| a.id == b.id);
        users
    }

    /// Records what another gateway said about a user's presence in a room this gateway
    /// serves; returns whether that changed who is visible in the room.
    pub fn apply_remote_presence(
        &self,
        origin: &str,
        room: &RoomId,
        user: &UserRef,
        online: bool,
    ) -> bool {
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(room) else {
            return false;
        };
        let visible = |entry: &Room| {
            entry.local.values().any(|m| m.user.id == user.id)
                || entry.remote.keys().any(|(_, id)| *id == user.id)
        };
        let before = visible(entry);
        let key = (origin.to_string(), user.id.clone());
        if online {
            entry.remote.insert(key, user.clone());
        } else {
            entry.remote.remove(&key);
        }
        let after = visible(entry);
        if entry.local.is_empty() && entry.remote.is_empty() {
            rooms.remove(room);
        }
        before != after
    }

    /// Whether the user has a local connection in the room, and whether another gateway
    /// reported them there.
    pub fn visibility(&self, room: &RoomId, user: &UserId) -> (bool, bool) {
        let rooms = self.lock();
        rooms.get(room).map_or((false, false), |entry| {
            (
                entry.local.values().any(|m| m.user.id == *user),
                entry.remote.keys().any(|(_, id)| id == user),
            )
        })
    }

    /// Rooms with local members (rebound after a broker reconnect).
    pub fn local_rooms(&self) -> Vec<RoomId> {
        self.lock()
            .iter()
            .filter(|(_, r)| !r.local.is_empty())
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fanout::DELIVERED_IDS;
    use super::*;
    use common::domain::MessageId;
    use common::domain::Username;
    use std::sync::atomic::Ordering;
    use tokio_tungstenite::tungstenite::Utf8Bytes;

    fn member(user: &str, capacity: usize) -> (Member, outbox::Receiver<Outbound>) {
        let (tx, rx) = outbox::bounded(capacity);
        let user = UserRef {
            id: UserId::parse(format!("id-{user}")).expect("id"),
            username: Username::parse(user.to_string()).expect("username"),
        };
        let token = SessionToken::new(format!("token-{}", user.id));
        (Member { user, tx, token }, rx)
    }

    fn room(name: &str) -> RoomId {
        RoomId::parse(name.to_string()).expect("room")
    }

    #[test]
    fn a_message_fanned_out_again_is_not_delivered_twice_within_the_last_ids() {
        let (rooms, _commands) = Rooms::new(Arc::default(), Duration::ZERO);
        let id = |n: u64| MessageId::from_ulid(ulid::Ulid::from_parts(1_700_000_000_000, n.into()));
        assert!(rooms.first_delivery(id(0)));
        assert!(
            !rooms.first_delivery(id(0)),
            "a copy of a delivered message"
        );
        for n in 1..DELIVERED_IDS as u64 {
            assert!(rooms.first_delivery(id(n)));
        }
        assert!(!rooms.first_delivery(id(0)), "still among the last ids");
        assert!(rooms.first_delivery(id(DELIVERED_IDS as u64)));
        assert!(
            rooms.first_delivery(id(0)),
            "forgotten once older than the last ids (memory stays bounded)"
        );
        assert_eq!(rooms.metrics.duplicate_deliveries.get(), 2);
    }

    #[test]
    fn the_first_join_binds_and_the_last_leave_unbinds() {
        let (rooms, mut commands) = Rooms::new(Arc::default(), Duration::ZERO);
        let (alice, _a) = member("alice", 4);
        let (bob, _b) = member("bob", 4);
        let _ = rooms.join(&room("r"), 1, alice);
        let _ = rooms.join(&room("r"), 2, bob);
        assert_eq!(rooms.leave(&room("r"), 1), Some(true));
        assert_eq!(rooms.leave(&room("r"), 2), Some(true));
        let mut seen = Vec::new();
        while let Ok(command) = commands.try_recv() {
            match command {
                TopologyCommand::Bind(r, _) => seen.push(format!("bind {r}")),
                TopologyCommand::Unbind(r) => seen.push(format!("unbind {r}")),
            }
        }
        assert_eq!(seen, vec!["bind r", "unbind r"]);
    }

    #[test]
    fn a_join_waits_for_its_own_rooms_bind_only() {
        let (rooms, mut commands) = Rooms::new(Arc::default(), Duration::ZERO);
        let (alice, _a) = member("alice", 4);
        let (bob, _b) = member("bob", 4);
        let (carol, _c) = member("carol", 4);
        let first = rooms.join(&room("r"), 1, alice);
        let second = rooms.join(&room("r"), 2, bob);
        let other = rooms.join(&room("s"), 3, carol);
        let mut binds = Vec::new();
        while let Ok(command) = commands.try_recv() {
            if let TopologyCommand::Bind(r, bound) = command {
                binds.push((r.to_string(), bound));
            }
        }
        let names: Vec<&str> = binds.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(
            names,
            vec!["r", "s"],
            "one bind per room, by its first member"
        );
        assert!(!first.bound.is_cancelled() && !second.bound.is_cancelled());

        binds[1].1.cancel();
        assert!(other.bound.is_cancelled(), "room s is bound");
        assert!(!second.bound.is_cancelled(), "room r is not bound yet");
        binds[0].1.cancel();
        assert!(first.bound.is_cancelled() && second.bound.is_cancelled());

        let (dave, _d) = member("dave", 4);
        assert!(
            rooms.join(&room("r"), 4, dave).bound.is_cancelled(),
            "a join of a bound room waits for nothing"
        );
    }

    #[test]
    fn a_member_whose_queue_is_full_is_stopped_as_lagged_and_others_still_receive() {
        let (rooms, _commands) = Rooms::new(Arc::default(), Duration::ZERO);
        let (slow, mut slow_rx) = member("slow", 1);
        let (fast, mut fast_rx) = member("fast", 8);
        let _ = rooms.join(&room("r"), 1, slow);
        let _ = rooms.join(&room("r"), 2, fast);
        for _ in 0..3 {
            rooms.deliver(&room("r"), || {
                Outbound::Frame(Arc::new(Utf8Bytes::from_static("x")))
            });
        }
        match slow_rx.try_recv() {
            Some(Some(Outbound::Lagged(lagged))) => assert_eq!(*lagged, room("r")),
            other => panic!("expected the lagged stop first, got {other:?}"),
        }
        assert!(
            matches!(slow_rx.try_recv(), Some(None)),
            "the stopped queue still had items"
        );
        let mut received = 0;
        while let Some(Some(_)) = fast_rx.try_recv() {
            received += 1;
        }
        assert_eq!(received, 3);
    }

    #[test]
    fn members_merge_local_and_remote_users_once_each() {
        let (rooms, _commands) = Rooms::new(Arc::default(), Duration::ZERO);
        let (alice, _a) = member("alice", 4);
        let alice_user = alice.user.clone();
        let (alice2, _a2) = member("alice", 4);
        let (bob, _b) = member("bob", 4);
        let joined = rooms.join(&room("r"), 1, alice);
        assert!(joined.first_for_user);
        assert!(!rooms.join(&room("r"), 2, alice2).first_for_user);
        rooms.apply_remote_presence("gw-2", &room("r"), &bob.user, true);
        rooms.apply_remote_presence("gw-2", &room("r"), &alice_user, true);
        let names: Vec<String> = rooms
            .members(&room("r"))
            .iter()
            .map(|u| u.username.to_string())
            .collect();
        assert_eq!(names, vec!["alice", "bob"]);
        rooms.apply_remote_presence("gw-2", &room("r"), &bob.user, false);
        assert_eq!(rooms.members(&room("r")).len(), 1);
        assert_eq!(rooms.leave(&room("r"), 1), Some(false));
    }

    /// A message whose id sorts after every earlier one's.
    fn message(room_name: &str, body: &str) -> ChatMessage {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        ChatMessage::new(
            MessageId::from_ulid(ulid::Ulid::from_parts(1_700_000_000_000 + n, 0)),
            room(room_name),
            common::domain::ClientMessageId::parse(body.to_string()).expect("id"),
            member("alice", 1).0.user,
            common::domain::MessageBody::parse(body.to_string()).expect("body"),
            Utc::now(),
        )
    }

    fn bodies(messages: &[ChatMessage]) -> Vec<String> {
        messages
            .iter()
            .map(|m| m.body.as_ref().map(ToString::to_string).unwrap_or_default())
            .collect()
    }

    #[test]
    fn a_filled_room_answers_joins_from_memory_with_live_messages_after_the_read() {
        let (rooms, _commands) = Rooms::new(Arc::default(), Duration::ZERO);
        let (alice, _a) = member("alice", 4);
        let _ = rooms.join(&room("r"), 1, alice);
        assert!(
            rooms.recent_for_join(&room("r"), 2, 1).is_none(),
            "nothing read yet"
        );
        let ticket = rooms.read_ticket(&room("r"), true).expect("a ticket");
        let (old, older) = (message("r", "old"), message("r", "older"));
        let live = message("r", "live");
        rooms.remember(&live, None);
        rooms.fill(&room("r"), &[old.clone(), older.clone()], ticket);
        let recent = rooms.recent_for_join(&room("r"), 2, 1).expect("complete");
        assert_eq!(
            bodies(&recent),
            vec!["older", "live"],
            "the latest two, by id"
        );
    }

    #[test]
    fn memory_is_not_complete_without_the_broker_or_before_the_grace_or_after_a_loss() {
        let (rooms, _commands) = Rooms::new(Arc::default(), Duration::ZERO);
        let (alice, _a) = member("alice", 4);
        let _ = rooms.join(&room("r"), 1, alice);
        assert!(
            rooms.read_ticket(&room("r"), false).is_none(),
            "broker down"
        );

        let ticket = rooms.read_ticket(&room("r"), true).expect("a ticket");
        rooms.connection_lost();
        rooms.fill(&room("r"), &[message("r", "a")], ticket);
        assert!(
            rooms.recent_for_join(&room("r"), 1, 1).is_none(),
            "a read from before a lost connection completes nothing"
        );

        let ticket = rooms.read_ticket(&room("r"), true).expect("a ticket");
        rooms.fill(&room("r"), &[message("r", "a")], ticket);
        assert!(rooms.recent_for_join(&room("r"), 1, 1).is_some());
        rooms.connection_lost();
        assert!(
            rooms.recent_for_join(&room("r"), 1, 1).is_none(),
            "a lost connection may have let messages pass by"
        );

        let (patient, _commands) = Rooms::new(Arc::default(), Duration::from_secs(3600));
        let (bob, _b) = member("bob", 4);
        let _ = patient.join(&room("r"), 1, bob);
        assert!(
            !patient
                .read_ticket(&room("r"), true)
                .expect("a ticket")
                .settles(),
            "a read right after the binding may miss a message not stored yet"
        );
    }

    /// The ids of the live messages queued for a member.
    fn queued(rx: &mut outbox::Receiver<Outbound>) -> Vec<MessageId> {
        let mut ids = Vec::new();
        while let Some(Some(item)) = rx.try_recv() {
            if let Outbound::RoomMessage(live) = item {
                ids.push(live.id);
            }
        }
        ids
    }

    #[test]
    fn joins_within_the_grace_are_answered_from_the_first_read_and_get_what_the_settling_read_finds()
     {
        let (rooms, _commands) = Rooms::new(Arc::default(), Duration::from_secs(3600));
        let (alice, mut alice_rx) = member("alice", 8);
        let (bob, mut bob_rx) = member("bob", 8);
        let (carol, mut carol_rx) = member("carol", 8);
        let _ = rooms.join(&room("r"), 1, alice);
        assert!(
            rooms.recent_for_join(&room("r"), 10, 1).is_none(),
            "nothing read yet"
        );

        let early = rooms.read_ticket(&room("r"), true).expect("a ticket");
        assert!(!early.settles());
        let (stored, late) = (message("r", "stored"), message("r", "late"));
        let settle_at = rooms
            .fill(&room("r"), std::slice::from_ref(&stored), early)
            .expect("the first read within the grace schedules the settling read");
        let grace = Duration::from_secs(3600);
        assert!(
            (early.bound_at() + grace..=early.bound_at() + grace + grace / 4).contains(&settle_at),
            "after the grace, spread over a quarter of it"
        );
        assert_eq!(
            rooms.fill(&room("r"), std::slice::from_ref(&stored), early),
            None,
            "scheduled once per binding"
        );
        let answered = rooms
            .recent_for_join(&room("r"), 10, 1)
            .expect("provisional");
        assert_eq!(bodies(&answered), vec!["stored"]);
        let _ = rooms.join(&room("r"), 2, bob);
        let answered = rooms
            .recent_for_join(&room("r"), 10, 2)
            .expect("provisional");
        assert_eq!(bodies(&answered), vec!["stored"], "no read of its own");
        let _ = rooms.join(&room("r"), 3, carol);

        let settling = ReadTicket {
            settles: true,
            ..early
        };
        rooms.fill(&room("r"), &[stored.clone(), late.clone()], settling);
        assert_eq!(
            queued(&mut alice_rx),
            vec![late.id],
            "stored after the first read"
        );
        assert_eq!(queued(&mut bob_rx), vec![late.id]);
        assert_eq!(
            queued(&mut carol_rx),
            vec![],
            "a connection not answered from the provisional memory has its own read"
        );
        let answered = rooms.recent_for_join(&room("r"), 10, 3).expect("complete");
        assert_eq!(bodies(&answered), vec!["stored", "late"]);

        let later = message("r", "later");
        rooms.fill(&room("r"), &[later], settling);
        assert_eq!(
            queued(&mut alice_rx),
            vec![],
            "settled: nobody waits for more"
        );
    }

    #[test]
    fn a_failed_settling_read_makes_joins_read_again() {
        let (rooms, _commands) = Rooms::new(Arc::default(), Duration::from_secs(3600));
        let (alice, _a) = member("alice", 8);
        let _ = rooms.join(&room("r"), 1, alice);
        let early = rooms.read_ticket(&room("r"), true).expect("a ticket");
        assert!(
            rooms
                .fill(&room("r"), &[message("r", "a")], early)
                .is_some()
        );
        assert!(rooms.recent_for_join(&room("r"), 10, 1).is_some());
        rooms.settle_failed(&room("r"), early.bound_at());
        assert!(
            rooms.recent_for_join(&room("r"), 10, 1).is_none(),
            "a provisional memory never settled answers no join"
        );
        assert!(
            rooms
                .fill(&room("r"), &[message("r", "b")], early)
                .is_some(),
            "the next read within the grace schedules a settling read again"
        );
    }

    #[test]
    fn a_room_rebound_after_its_last_member_left_needs_a_new_read() {
        let (rooms, _commands) = Rooms::new(Arc::default(), Duration::ZERO);
        let (alice, _a) = member("alice", 4);
        let _ = rooms.join(&room("r"), 1, alice.clone());
        // Kept in the registry by a remote user while no local member is there.
        rooms.apply_remote_presence("gw-2", &room("r"), &member("bob", 1).0.user, true);
        let first_binding = rooms.binding(&room("r")).expect("bound");
        let stale = rooms.read_ticket(&room("r"), true).expect("a ticket");
        rooms.fill(&room("r"), &[message("r", "a")], stale);
        assert_eq!(rooms.leave(&room("r"), 1), Some(true));
        assert!(rooms.recent_for_join(&room("r"), 1, 1).is_none(), "unbound");
        assert_eq!(
            rooms.binding(&room("r")),
            None,
            "no local member, no binding"
        );
        let _ = rooms.join(&room("r"), 2, alice);
        assert_ne!(
            rooms.binding(&room("r")),
            Some(first_binding),
            "reads shared within the first binding are not shared with the second"
        );
        rooms.fill(&room("r"), &[message("r", "b")], stale);
        assert!(
            rooms.recent_for_join(&room("r"), 1, 1).is_none(),
            "a read made for the earlier binding completes nothing"
        );
    }
}
