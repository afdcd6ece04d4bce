//! Changed messages in the store: the change feed catch-ups read, and what applying a change
//! ([`crate::changes`]) reads and writes: the stored documents, a compare-and-set on their
//! version, the room list's preview.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use common::domain::{MessageId, RoomId};
use futures_util::TryStreamExt;
use mongodb::bson::{self, doc};

use super::{MessageDocument, MessageStore, PREVIEW_CHARS, Page};
use crate::reads::Deadline;

impl MessageStore {
    /// The change feed: messages of `room` (with ids up to `up_to`, when given) changed after
    /// `from`, in their current state, oldest change first; the first `limit` (`has_more`
    /// when there are others).
    pub async fn changed_since(
        &self,
        room: &RoomId,
        up_to: Option<MessageId>,
        from: DateTime<Utc>,
        limit: u32,
        deadline: Deadline,
        reader: Option<&str>,
    ) -> anyhow::Result<Page> {
        let mut filter = doc! {
            "room": room.as_str(),
            "changed_at": {"$gt": bson::DateTime::from_millis(from.timestamp_millis())},
        };
        if let Some(up_to) = up_to {
            filter.insert("_id", doc! {"$lte": up_to.to_string()});
        }
        let (sort, what) = (doc! {"changed_at": 1, "_id": 1}, "reading changed messages");
        let (documents, has_more) = self.read_page(filter, sort, limit, deadline, what).await?;
        Page::of(documents, has_more, reader)
    }

    /// The stored document of `id` in `room`, if stored.
    pub(crate) async fn document(
        &self,
        room: &RoomId,
        id: MessageId,
        deadline: Option<Deadline>,
    ) -> anyhow::Result<Option<MessageDocument>> {
        let stored = self.stored(id, deadline).await?;
        Ok(stored.filter(|m| m.room == room.as_str()))
    }

    /// The stored documents of `ids` (one `$in`), by id.
    pub(crate) async fn documents(
        &self,
        ids: &[String],
    ) -> anyhow::Result<HashMap<String, MessageDocument>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        self.messages
            .find(doc! {"_id": {"$in": ids}})
            .limit(ids.len() as i64)
            .await?
            .map_ok(|m| (m.id.clone(), m))
            .try_collect()
            .await
            .context("reading changed messages")
    }

    /// Replaces the stored document with `changed` if it still has `version` (compare and
    /// set); false when another writer changed it meanwhile.
    pub(crate) async fn replace_if_version(
        &self,
        changed: &MessageDocument,
        version: Option<i64>,
    ) -> anyhow::Result<bool> {
        let filter = match version {
            Some(version) => doc! {"_id": &changed.id, "version": version},
            None => doc! {"_id": &changed.id, "version": {"$exists": false}},
        };
        let result = self
            .messages
            .replace_one(filter, changed)
            .await
            .context("writing a changed message")?;
        Ok(result.matched_count == 1)
    }

    /// Brings the room list's preview in line with a changed message when it shows that
    /// message: the new text of an edit, nothing of a deleted one (deleting erases).
    pub(crate) async fn update_preview(
        &self,
        room: &str,
        id: &str,
        body: Option<&str>,
    ) -> anyhow::Result<()> {
        let update = match body {
            Some(body) => doc! {"$set": {
                "last_message.preview": body.chars().take(PREVIEW_CHARS).collect::<String>(),
            }},
            None => doc! {"$set": {"last_message.preview": "", "last_message.deleted": true}},
        };
        let room_lock = self.room_locks.lock(room).await;
        let updated = self
            .rooms
            .update_one(doc! {"_id": room, "last_message.id": id}, update)
            .await;
        drop(room_lock);
        self.forget_room(room);
        updated.context("updating a room's preview")?;
        Ok(())
    }
}
