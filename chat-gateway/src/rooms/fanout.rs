//! Fan-out: a room's frames handed to its local members' outboxes without waiting, and the
//! copies of messages delivered already dropped.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use common::domain::{MessageId, RoomId};

use crate::outbox::{self, LiveMessage, Outbound};

use super::{Member, Rooms};

/// Messages [`Rooms::first_delivery`] remembers, over all rooms. A copy comes again when the
/// broker redelivers what it handed over unacknowledged before a connection was lost (at most
/// the prefetch of 1,024 deliveries, plus what arrives meanwhile) or when a send was published
/// twice (a retry); both are within the last few thousand deliveries.
pub(super) const DELIVERED_IDS: usize = 8192;

/// The ids of the messages fanned out last, oldest first, and the same as a set.
#[derive(Default)]
pub(super) struct DeliveredIds {
    order: VecDeque<MessageId>,
    ids: HashSet<MessageId>,
    /// When the last one was fanned out.
    last_at: Option<Instant>,
}

impl Rooms {
    /// Hands `make()` to every local member of the room without waiting: a member whose queue
    /// is full is stopped with [`Outbound::Lagged`] instead of slowing everyone down.
    pub fn deliver(&self, room: &RoomId, make: impl Fn() -> Outbound) -> usize {
        self.fan_out(room, make, || Outbound::Lagged(Box::new(room.clone())))
    }

    /// Hands `make()` to every local member of the room without waiting; a member whose queue
    /// is full is stopped with `stop()`. How many members it was queued for.
    fn fan_out(
        &self,
        room: &RoomId,
        make: impl Fn() -> Outbound,
        stop: impl Fn() -> Outbound,
    ) -> usize {
        let rooms = self.lock();
        let Some(entry) = rooms.get(room) else {
            return 0;
        };
        let delivered = entry
            .local
            .values()
            .filter(|member| self.offer_or(member, make(), &stop))
            .count();
        self.metrics.frames_delivered.inc_by(delivered as u64);
        delivered
    }

    /// Hands `item` to one member without waiting; a member whose queue is full is stopped
    /// with [`Outbound::Lagged`]. Whether it was queued.
    pub(super) fn offer(&self, room: &RoomId, member: &Member, item: Outbound) -> bool {
        self.offer_or(member, item, || Outbound::Lagged(Box::new(room.clone())))
    }

    /// Hands `item` to one member without waiting; a member whose queue is full is stopped
    /// with `stop()`. Whether it was queued.
    fn offer_or(&self, member: &Member, item: Outbound, stop: impl FnOnce() -> Outbound) -> bool {
        match member.tx.try_send(item) {
            Ok(()) => true,
            Err(outbox::TrySendError::Full) => {
                self.metrics.outbound_overflows.inc();
                member.tx.stop(stop());
                false
            }
            Err(outbox::TrySendError::Closed) => false,
        }
    }

    /// Hands a message read back after a lost broker connection to every local member of the
    /// room, as [`Rooms::deliver`] does, except that a member whose queue is full is stopped
    /// with [`Outbound::Resync`] from `resume`: the queue it loses can hold messages older
    /// than the last one written to it.
    pub fn deliver_recovered(&self, live: &Arc<LiveMessage>, resume: MessageId) -> usize {
        self.fan_out(
            &live.room,
            || Outbound::RoomMessage(live.clone()),
            || Outbound::Resync(Box::new((live.room.clone(), resume))),
        )
    }

    /// Whether message `id` is fanned out for the first time by this gateway: a copy of one
    /// delivered already (among the last [`DELIVERED_IDS`]) is not delivered again, so no
    /// connection receives a message twice, whatever the broker redelivers.
    pub fn first_delivery(&self, id: MessageId) -> bool {
        let mut delivered = self
            .delivered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !delivered.ids.insert(id) {
            self.metrics.duplicate_deliveries.inc();
            return false;
        }
        delivered.last_at = Some(Instant::now());
        delivered.order.push_back(id);
        if delivered.order.len() > DELIVERED_IDS
            && let Some(oldest) = delivered.order.pop_front()
        {
            delivered.ids.remove(&oldest);
        }
        true
    }

    /// When the last message was fanned out, if any was.
    pub fn last_delivery(&self) -> Option<Instant> {
        self.delivered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_at
    }

    /// The current token of one of the room's local members, for a read made for all of them.
    pub fn member_token(&self, room: &RoomId) -> Option<Arc<str>> {
        let rooms = self.lock();
        let member = rooms.get(room)?.local.values().next()?;
        Some(member.token.get())
    }

    /// Stops every local member of the room with [`Outbound::Resync`]: their clients are
    /// told to rejoin from `resume` (or the last message they got, if earlier).
    pub fn resync_members(&self, room: &RoomId, resume: MessageId) -> usize {
        let rooms = self.lock();
        let Some(entry) = rooms.get(room) else {
            return 0;
        };
        for member in entry.local.values() {
            member
                .tx
                .stop(Outbound::Resync(Box::new((room.clone(), resume))));
        }
        entry.local.len()
    }
}
