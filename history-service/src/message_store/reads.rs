//! Reading messages back: pages of a room's history before or after a cursor, the messages
//! published late, single messages by id, and the excerpts of the messages replies answer.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use common::domain::{MessageId, RoomId};
use common::event::{ChatMessage, ReplyRef};
use futures_util::TryStreamExt;
use mongodb::bson::{self, Document, doc};

use super::{MessageDocument, MessageStore};
use crate::reads::Deadline;

/// A page of a room's history, oldest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub messages: Vec<ChatMessage>,
    pub has_more: bool,
}

impl Page {
    /// The page of `documents` (in the order given); `reader` as in
    /// [`MessageDocument::into_message`].
    pub(super) fn of(
        documents: Vec<MessageDocument>,
        has_more: bool,
        reader: Option<&str>,
    ) -> anyhow::Result<Self> {
        let messages = documents
            .into_iter()
            .map(|m| m.into_message(reader))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { messages, has_more })
    }
}

impl MessageStore {
    /// The first `limit` messages matching `filter` in `sort` order, and whether there are
    /// more. One more than asked tells whether there are more; it also keeps the limit off 0,
    /// which MongoDB reads as no limit at all. `what` names the read in its error.
    pub(super) async fn read_page(
        &self,
        filter: Document,
        sort: Document,
        limit: u32,
        deadline: Deadline,
        what: &'static str,
    ) -> anyhow::Result<(Vec<MessageDocument>, bool)> {
        let mut documents: Vec<MessageDocument> = self
            .messages
            .find(filter)
            .sort(sort)
            .limit(i64::from(limit) + 1)
            .max_time(deadline.max_time())
            .await?
            .try_collect()
            .await
            .context(what)?;
        let has_more = documents.len() > limit as usize;
        documents.truncate(limit as usize);
        Ok((documents, has_more))
    }

    /// The stored document of `id` (by `_id`), if stored, read within `deadline` when given.
    pub(super) async fn stored(
        &self,
        id: MessageId,
        deadline: Option<Deadline>,
    ) -> anyhow::Result<Option<MessageDocument>> {
        let mut find = self.messages.find_one(doc! {"_id": id.to_string()});
        if let Some(deadline) = deadline {
            find = find.max_time(deadline.max_time());
        }
        find.await.context("reading a message")
    }

    /// The room and number of the stored message `id` (by `_id`), if stored.
    pub async fn locate(
        &self,
        id: MessageId,
        deadline: Deadline,
    ) -> anyhow::Result<Option<(String, Option<i64>)>> {
        let stored = self.stored(id, Some(deadline)).await?;
        Ok(stored.map(|m| (m.room, m.seq)))
    }

    /// The `limit` messages of `room` just before `before` (or the latest), oldest first.
    pub async fn page_before(
        &self,
        room: &RoomId,
        before: Option<MessageId>,
        limit: u32,
        deadline: Deadline,
        reader: Option<&str>,
    ) -> anyhow::Result<Page> {
        let mut filter = doc! {"room": room.as_str()};
        if let Some(before) = before {
            filter.insert("_id", doc! {"$lt": before.to_string()});
        }
        let (sort, what) = (doc! {"_id": -1}, "reading a page of history");
        let (mut documents, has_more) = self.read_page(filter, sort, limit, deadline, what).await?;
        documents.reverse();
        Page::of(documents, has_more, reader)
    }

    /// The first `limit` messages of `room` after `after`, oldest first (catching up). With
    /// `limit` 0 the page is empty and `has_more` says whether there is any.
    pub async fn page_after(
        &self,
        room: &RoomId,
        after: MessageId,
        limit: u32,
        deadline: Deadline,
        reader: Option<&str>,
    ) -> anyhow::Result<Page> {
        let filter = doc! {"room": room.as_str(), "_id": {"$gt": after.to_string()}};
        let (sort, what) = (doc! {"_id": 1}, "reading messages after a cursor");
        let (documents, has_more) = self.read_page(filter, sort, limit, deadline, what).await?;
        Page::of(documents, has_more, reader)
    }

    /// The stored message `id` of `room`, if stored.
    pub async fn find(
        &self,
        room: &RoomId,
        id: MessageId,
        deadline: Deadline,
        reader: Option<&str>,
    ) -> anyhow::Result<Option<ChatMessage>> {
        // By `_id` alone, which every server answers from its primary key; then the room.
        let stored = self.stored(id, Some(deadline)).await?;
        stored
            .filter(|m| m.room == room.as_str())
            .map(|m| m.into_message(reader))
            .transpose()
    }

    /// When the stored copy of `id` was published: its `published_at`, or the time in its id
    /// when it has none or is not stored.
    pub async fn published_at(
        &self,
        id: MessageId,
        deadline: Deadline,
    ) -> anyhow::Result<DateTime<Utc>> {
        let stored = self.stored(id, Some(deadline)).await?;
        let at = stored
            .and_then(|m| m.published_at)
            .map(|at| at.timestamp_millis())
            .unwrap_or(id.timestamp_ms() as i64);
        DateTime::from_timestamp_millis(at).context("publish time out of range")
    }

    /// Messages of `room` with ids up to `up_to` that were published after `published_after`,
    /// oldest first, the first `limit` of them (`has_more` when there are others): an id is
    /// assigned before its message is published, so a message can be published after one
    /// whose id sorts later (a retry after an outage keeps its first id). A catch-up sends
    /// these along with the messages after its cursor.
    pub async fn published_late(
        &self,
        room: &RoomId,
        up_to: MessageId,
        published_after: DateTime<Utc>,
        limit: u32,
        deadline: Deadline,
        reader: Option<&str>,
    ) -> anyhow::Result<Page> {
        let filter = doc! {
            "room": room.as_str(),
            "_id": {"$lte": up_to.to_string()},
            "published_at": {"$gt": bson::DateTime::from_millis(published_after.timestamp_millis())},
        };
        let (sort, what) = (doc! {"_id": 1}, "reading messages published late");
        let (documents, has_more) = self.read_page(filter, sort, limit, deadline, what).await?;
        Page::of(documents, has_more, reader)
    }

    /// Fills in the excerpt (or `deleted`) of every reply in `messages` from the messages they
    /// answer, read with one `$in`.
    pub async fn resolve_replies(
        &self,
        messages: &mut [ChatMessage],
        deadline: Deadline,
    ) -> anyhow::Result<()> {
        let mut ids: Vec<String> = messages
            .iter()
            .filter_map(|m| m.reply_to.as_ref().map(|r| r.id.to_string()))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort();
        ids.dedup();
        let answered: HashMap<String, MessageDocument> = self
            .messages
            .find(doc! {"_id": {"$in": &ids}})
            .limit(ids.len() as i64)
            .max_time(deadline.max_time())
            .await?
            .map_ok(|m| (m.id.clone(), m))
            .try_collect()
            .await
            .context("reading the messages replies answer")?;
        for message in messages.iter_mut() {
            let room = message.room.as_str();
            let Some(reply) = message.reply_to.as_mut() else {
                continue;
            };
            match answered
                .get(&reply.id.to_string())
                .filter(|m| m.room == room)
            {
                Some(m) if !m.deleted => {
                    reply.excerpt = m.body.as_deref().map(ReplyRef::excerpt_of);
                }
                _ => {
                    reply.excerpt = None;
                    reply.deleted = true;
                }
            }
        }
        Ok(())
    }

    pub async fn count_in_room(&self, room: &RoomId) -> anyhow::Result<u64> {
        Ok(self
            .messages
            .count_documents(doc! {"room": room.as_str()})
            .await?)
    }
}
