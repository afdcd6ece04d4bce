//! Inboxes: each user's entries for the rooms they are in, their read markers and DMs
//! hidden from their list, and the lock every write of an entry holds.

use std::collections::HashMap;

use anyhow::Context;
use mongodb::bson::{self, Bson, Document, doc};

use super::{InboxDoc, InboxEntry, RoomStore, membership_id};
use crate::reads::Deadline;
use crate::rooms::cache::{Caches, Member};

/// A write to one user's inbox entry for one room in progress: holds the user's inbox lock,
/// and when dropped (after the write) forgets their cached inbox and brings that room's
/// cached member up to date: forgotten unless the write said what it is now. Every write of
/// a member's entry holds the lock, so a member kept here is never older than the entry.
pub(super) struct InboxWrite<'a> {
    _lock: tokio::sync::MutexGuard<'a, ()>,
    caches: &'a Caches,
    user: String,
    member: String,
    pub(super) now: MemberNow,
}

/// What a write made of the cached member of an [`InboxWrite`].
pub(super) enum MemberNow {
    /// Unknown (the default): forgotten.
    Unknown,
    /// Exactly this, written both ways: kept.
    Written(Member),
    /// The read marker moved forward to this id and seq: moved in the cached member too.
    ReadTo(String, i64),
}

impl Drop for InboxWrite<'_> {
    fn drop(&mut self) {
        self.caches.inboxes.forget(&self.user);
        match std::mem::replace(&mut self.now, MemberNow::Unknown) {
            MemberNow::Unknown => self.caches.members.forget(&self.member),
            MemberNow::Written(member) => self.caches.members.put(member),
            MemberNow::ReadTo(id, seq) => self.caches.members.modify(&self.member, |member| {
                let mut member = member.clone();
                member.entry.read_id = Some(id);
                member.entry.read_seq = member.entry.read_seq.max(seq);
                member
            }),
        }
    }
}

impl RoomStore {
    /// Holds writes to `user`'s inbox (see [`RoomStore::inbox_locks`]) until the guard drops,
    /// which also forgets the cached inbox and the user's cached member of `room`.
    pub(super) async fn lock_inbox(&self, user: &str, room: &str) -> InboxWrite<'_> {
        InboxWrite {
            _lock: self.inbox_locks.lock(user).await,
            caches: &self.caches,
            member: membership_id(room, user),
            user: user.to_string(),
            now: MemberNow::Unknown,
        }
    }

    /// The user's entry for `room` in their inbox (only that field is sent back).
    pub async fn inbox_entry(&self, user: &str, room: &str) -> anyhow::Result<Option<InboxEntry>> {
        let field = format!("rooms.{room}");
        let found = self
            .inboxes
            .find_one(doc! {"_id": user})
            .projection(doc! {field: 1})
            .await
            .context("reading an inbox entry")?;
        let Some(found) = found else {
            return Ok(None);
        };
        let inbox: InboxDoc = bson::from_document(found).context("an unreadable inbox")?;
        Ok(inbox.rooms.get(room).cloned())
    }

    pub async fn inbox(&self, user: &str) -> anyhow::Result<InboxDoc> {
        let found = self
            .inboxes
            .find_one(doc! {"_id": user})
            .await
            .context("reading an inbox")?;
        match found {
            Some(found) => bson::from_document(found).context("an unreadable inbox"),
            None => Ok(InboxDoc {
                id: user.to_string(),
                ..InboxDoc::default()
            }),
        }
    }

    /// The inbox entries of (user, room) `pairs` that exist; only those rooms' entries are
    /// sent back.
    pub async fn inbox_entries(
        &self,
        pairs: &[(String, String)],
        deadline: Deadline,
    ) -> anyhow::Result<HashMap<(String, String), InboxEntry>> {
        let mut users: Vec<String> = pairs.iter().map(|(user, _)| user.clone()).collect();
        users.sort_unstable();
        users.dedup();
        let mut projection = Document::new();
        for (_, room) in pairs {
            projection.insert(format!("rooms.{room}"), 1);
        }
        let found = self
            .by_ids(&self.inboxes, users, Some(projection), deadline)
            .await
            .context("reading inbox entries")?;
        let mut inboxes = HashMap::new();
        for found in found {
            let Some(Bson::String(user)) = found.get("_id").cloned() else {
                continue;
            };
            let inbox: InboxDoc = bson::from_document(found).context("an unreadable inbox")?;
            inboxes.insert(user, inbox);
        }
        Ok(pairs
            .iter()
            .filter_map(|(user, room)| {
                let entry = inboxes.get(user)?.rooms.get(room)?.clone();
                Some(((user.clone(), room.clone()), entry))
            })
            .collect())
    }

    /// Hides (or shows again) a DM in the user's list.
    pub async fn set_hidden(&self, room: &str, user: &str, hidden: bool) -> anyhow::Result<()> {
        self.set_entry_field(user, room, "hidden", hidden.into())
            .await
            .context("hiding a DM")
    }

    /// Sets `field` of the user's inbox entry for `room`, if the entry exists.
    pub(super) async fn set_entry_field(
        &self,
        user: &str,
        room: &str,
        field: &str,
        value: Bson,
    ) -> anyhow::Result<()> {
        let _inbox = self.lock_inbox(user, room).await;
        self.inboxes
            .update_one(
                doc! {"_id": user, format!("rooms.{room}"): {"$exists": true}},
                doc! {"$set": {format!("rooms.{room}.{field}"): value}},
            )
            .await?;
        Ok(())
    }

    /// Moves the user's read marker in `room` forward to message `id` (`seq`); `false` when it
    /// was at or past it already, or the user is not in the room.
    pub async fn mark_read(
        &self,
        user: &str,
        room: &str,
        id: &str,
        seq: i64,
    ) -> anyhow::Result<bool> {
        let entry = format!("rooms.{room}");
        let read_id = format!("rooms.{room}.read_id");
        let filter = doc! {
            "_id": user,
            entry: {"$exists": true},
            "$or": [{read_id.clone(): Bson::Null}, {read_id.clone(): {"$lt": id}}],
        };
        let mut inbox = self.lock_inbox(user, room).await;
        let moved = self
            .inboxes
            .update_one(
                filter,
                doc! {"$set": {read_id: id}, "$max": {format!("rooms.{room}.read_seq"): seq}},
            )
            .await
            .context("moving a read marker")?;
        let moved = moved.modified_count == 1;
        if moved {
            inbox.now = MemberNow::ReadTo(id.to_string(), seq);
        }
        Ok(moved)
    }
}
