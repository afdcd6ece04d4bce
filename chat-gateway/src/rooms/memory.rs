//! Each room's memory of its latest messages, and the history reads that fill it.
//!
//! Once a history read made well after the binding has filled that memory, every later
//! message arrives through the binding, so plain joins are answered from memory until the
//! room is unbound or the broker connection is lost. Before that, the first read of the
//! binding fills it provisionally: joins are answered from it at once, and the read made once
//! the grace has passed (the settling read) delivers to those joins the messages it finds
//! that the memory lacked (stored late).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::{DateTime, Utc};
use common::domain::{MessageId, RoomId};
use common::event::{AppliedChange, ChatMessage, ReplyRef};

use crate::connection::ConnId;
use crate::outbox::{LiveMessage, Outbound};

use super::Rooms;

/// What a history read for a plain join needs to fill [`super::Room::recent`]: taken before the
/// read, checked when its answer arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTicket {
    pub(super) epoch: u64,
    pub(super) bound_at: Instant,
    /// The read starts at least the grace after the binding: its answer completes the memory.
    pub(super) settles: bool,
}

impl ReadTicket {
    pub fn settles(&self) -> bool {
        self.settles
    }

    /// The binding the read is for.
    pub fn bound_at(&self) -> Instant {
        self.bound_at
    }
}

/// A number that tells rooms apart, the same for a room every time.
pub(crate) fn room_hash(room: &RoomId) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    room.hash(&mut hasher);
    hasher.finish() as u32
}

/// Messages a room keeps in [`super::Room::recent`].
const RECENT_MESSAGES: usize = 256;

impl Rooms {
    /// Records a message delivered to the room (see [`super::Room::recent`]).
    pub fn remember(&self, message: &ChatMessage, published_at: Option<DateTime<Utc>>) {
        let mut rooms = self.lock();
        if let Some(entry) = rooms.get_mut(&message.room) {
            if entry.recent.len() == RECENT_MESSAGES {
                entry.recent.pop_front();
            }
            entry
                .recent
                .push_back((Arc::new(message.clone()), published_at));
        }
    }

    /// Brings the remembered copy of a changed message (and the replies to it) to the state
    /// history-service announced, unless it holds that version already.
    pub fn apply_change(&self, change: &AppliedChange) {
        let (room, id, version) = match change {
            AppliedChange::Edited {
                room, id, version, ..
            }
            | AppliedChange::Deleted {
                room, id, version, ..
            }
            | AppliedChange::Reactions {
                room, id, version, ..
            } => (room, *id, *version),
        };
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(room) else {
            return;
        };
        for (message, _) in entry.recent.iter_mut() {
            if message.id == id && message.state.version < version {
                let mut changed = ChatMessage::clone(message);
                changed.state.version = version;
                match change {
                    AppliedChange::Edited {
                        body,
                        edited_at,
                        changed_at,
                        ..
                    } => {
                        changed.body = Some(body.clone());
                        changed.state.edited_at = Some(*edited_at);
                        changed.state.changed_at = Some(*changed_at);
                    }
                    AppliedChange::Deleted {
                        deleted_at,
                        by,
                        changed_at,
                        ..
                    } => {
                        changed.body = None;
                        changed.state.edited_at = None;
                        changed.state.deleted = true;
                        changed.state.deleted_at = Some(*deleted_at);
                        changed.state.deleted_by = Some(by.clone());
                        changed.state.reactions.clear();
                        changed.state.changed_at = Some(*changed_at);
                    }
                    AppliedChange::Reactions {
                        reactions,
                        changed_at,
                        ..
                    } => {
                        changed.state.reactions = reactions.clone();
                        changed.state.changed_at = Some(*changed_at);
                    }
                }
                *message = Arc::new(changed);
            } else if message.reply_to.as_ref().is_some_and(|r| r.id == id) {
                let excerpt = match change {
                    AppliedChange::Edited { body, .. } => Some(ReplyRef::excerpt_of(body.as_str())),
                    AppliedChange::Deleted { .. } => None,
                    AppliedChange::Reactions { .. } => continue,
                };
                let mut changed = ChatMessage::clone(message);
                if let Some(reply) = changed.reply_to.as_mut() {
                    reply.deleted = excerpt.is_none();
                    reply.excerpt = excerpt;
                }
                *message = Arc::new(changed);
            }
        }
    }

    /// When the room's current binding was asked for: reads shared by joins of the room are
    /// keyed by it, so none outlives an unbinding (what was published while the room was
    /// unbound here reaches no join through a read made before). `None` while the room has no
    /// local member.
    pub fn binding(&self, room: &RoomId) -> Option<Instant> {
        self.lock().get(room)?.bound_at
    }

    /// A ticket for a history read of the room's recent messages, whose answer fills the
    /// room's memory: the broker is connected and the room is bound. `None` otherwise.
    pub fn read_ticket(&self, room: &RoomId, connected: bool) -> Option<ReadTicket> {
        if !connected {
            return None;
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let rooms = self.lock();
        let bound_at = rooms.get(room)?.bound_at?;
        Some(ReadTicket {
            epoch,
            bound_at,
            settles: bound_at.elapsed() >= self.memory_grace,
        })
    }

    /// Adds the answer of a history read made with `ticket` to the room's memory, unless the
    /// broker connection was lost or the room rebound since.
    ///
    /// Messages it holds that a provisional memory did not (stored after the earlier read)
    /// are delivered to the connections answered from that memory. A read that settles makes
    /// the memory complete; a read made within the grace makes it provisional, and the first
    /// such fill of a binding returns when to make the settling read.
    pub fn fill(
        &self,
        room: &RoomId,
        messages: &[ChatMessage],
        ticket: ReadTicket,
    ) -> Option<Instant> {
        let mut rooms = self.lock();
        if self.epoch.load(Ordering::SeqCst) != ticket.epoch {
            return None;
        }
        let entry = rooms.get_mut(room)?;
        if entry.bound_at != Some(ticket.bound_at) {
            return None;
        }
        let mut late = Vec::new();
        for message in messages {
            match entry.recent.iter_mut().find(|(m, _)| m.id == message.id) {
                // The newer state of the two (a change may have passed either way).
                Some((held, _)) if held.state.version < message.state.version => {
                    *held = Arc::new(message.clone());
                }
                Some(_) => {}
                None => {
                    let message = Arc::new(message.clone());
                    if entry.provisional {
                        late.push(message.clone());
                    }
                    entry.recent.push_back((message, None));
                }
            }
        }
        entry.recent.make_contiguous().sort_by_key(|(m, _)| m.id);
        while entry.recent.len() > RECENT_MESSAGES {
            entry.recent.pop_front();
        }
        if !late.is_empty() && !entry.unsettled.is_empty() {
            late.sort_by_key(|m| m.id);
            self.metrics.late_messages.inc_by(late.len() as u64);
            let frames: Vec<Arc<LiveMessage>> = late
                .iter()
                .map(|message| LiveMessage::of(message))
                .collect();
            for member in entry
                .unsettled
                .iter()
                .filter_map(|conn| entry.local.get(conn))
            {
                for live in &frames {
                    if !self.offer(room, member, Outbound::RoomMessage(live.clone())) {
                        break;
                    }
                }
            }
        }
        if ticket.settles {
            entry.unsettle();
            entry.complete = true;
            return None;
        }
        if entry.complete {
            return None;
        }
        entry.provisional = true;
        if entry.settling {
            return None;
        }
        entry.settling = true;
        // Rooms bound together (a gateway's start, a wave of joins) settle spread over a
        // quarter of the grace, not all in one instant.
        let spread = self.memory_grace / 4;
        let offset = spread.mul_f64(f64::from(room_hash(room) % 1_000) / 1_000.0);
        Some(ticket.bound_at + self.memory_grace + offset)
    }

    /// A settling read of the room's current binding failed: joins read again from now on.
    pub fn settle_failed(&self, room: &RoomId, bound_at: Instant) {
        let mut rooms = self.lock();
        if let Some(entry) = rooms.get_mut(room)
            && entry.bound_at == Some(bound_at)
            && !entry.complete
        {
            entry.unsettle();
        }
    }

    /// The room's latest `limit` messages, oldest first, for a plain join of `conn`: when the
    /// memory is complete, or provisional (then `conn` gets what the settling read finds).
    pub fn recent_for_join(
        &self,
        room: &RoomId,
        limit: usize,
        conn: ConnId,
    ) -> Option<Vec<ChatMessage>> {
        let mut rooms = self.lock();
        let entry = rooms
            .get_mut(room)
            .filter(|entry| entry.complete || entry.provisional)?;
        if limit > RECENT_MESSAGES {
            return None;
        }
        if !entry.complete {
            entry.unsettled.insert(conn);
        }
        let mut messages: Vec<ChatMessage> = entry
            .recent
            .iter()
            .map(|(m, _)| ChatMessage::clone(m))
            .collect();
        messages.sort_by_key(|m| m.id);
        let skip = messages.len().saturating_sub(limit);
        messages.drain(..skip);
        Some(messages)
    }

    /// The broker connection was lost: messages may have passed by the bindings meanwhile, so
    /// no room's memory is complete any more.
    pub fn connection_lost(&self) {
        let mut rooms = self.lock();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for entry in rooms.values_mut() {
            entry.unsettle();
        }
    }

    /// The room's remembered messages after `since` (all of them without it), oldest first,
    /// and also those published after `published_after` whatever their ids.
    pub fn recent_after(
        &self,
        room: &RoomId,
        since: Option<MessageId>,
        published_after: Option<DateTime<Utc>>,
    ) -> Vec<ChatMessage> {
        let rooms = self.lock();
        rooms
            .get(room)
            .map(|entry| {
                entry
                    .recent
                    .iter()
                    .filter(|(m, published)| {
                        since.is_none_or(|since| m.id > since)
                            || published
                                .zip(published_after)
                                .is_some_and(|(at, from)| at > from)
                    })
                    .map(|(m, _)| ChatMessage::clone(m))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// When message `id` was published, if this gateway remembers it (the first copy when a
    /// retry published it again: the earliest time is the safe one for a catch-up).
    pub fn published_at(&self, room: &RoomId, id: MessageId) -> Option<DateTime<Utc>> {
        let rooms = self.lock();
        let entry = rooms.get(room)?;
        entry
            .recent
            .iter()
            .find(|(m, _)| m.id == id)
            .and_then(|(_, at)| *at)
    }
}
