//! Chat messages in MongoDB: `_id` is the message id (a ULID, so `_id` order is time order and
//! a redelivered message collides with its stored copy instead of being stored twice), with an
//! index on `(room, _id)` for paging a room's history, and one on `(room, published_at)` for
//! catch-ups that look for messages published late (see [`MessageStore::page_after`]).
//!
//! Each stored message also carries its number in its room (`seq`), allocated per batch with
//! one `$inc` on the room document, which unread counts are computed from.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use common::domain::{
    ClientMessageId, Emoji, MessageBody, MessageId, RoomId, UserId, UserRef, Username,
};
use common::event::{ChatMessage, MessageEvent, MessageState, ReactionCount, ReplyRef};
use futures_util::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::doc_locks::DocLocks;
use crate::reads::Deadline;
use crate::rooms::cache::RoomCache;

/// A stored message in its current state. Changes (see [`crate::changes`]) add the fields
/// after `seq`; a delete removes `body` and everything derived from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MessageDocument {
    #[serde(rename = "_id")]
    pub(crate) id: String,
    pub(crate) room: String,
    client_id: String,
    pub(crate) author_id: String,
    author_name: String,
    /// Absent once deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<String>,
    pub(crate) sent_at: bson::DateTime,
    /// When the stored copy was published (absent on messages from older gateways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    published_at: Option<bson::DateTime>,
    /// The message's number in its room (1, 2, …; see [`MessageStore::number`]); absent on
    /// messages stored before rooms counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    /// The message this one answers: its id and author only (the excerpt is read when served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<ReplyDocument>,
    /// 1 when sent (absent on documents never changed), one more per applied change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<i64>,
    /// The change id of the edit the body comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) edit_change: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) edited_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deleted_change: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deleted_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deleted_by: Option<UserDocument>,
    /// One register per (user, emoji), "off" ones kept so that an older "on" cannot revive
    /// them; in the order the emoji were first used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) reactions: Vec<ReactionDocument>,
    /// When history-service last applied a change (the change feed's cursor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) changed_at: Option<bson::DateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReplyDocument {
    id: String,
    author_id: String,
    author_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserDocument {
    pub(crate) id: String,
    pub(crate) username: String,
}

impl From<&UserRef> for UserDocument {
    fn from(user: &UserRef) -> Self {
        Self {
            id: user.id.to_string(),
            username: user.username.to_string(),
        }
    }
}

impl UserDocument {
    pub(crate) fn to_user(&self) -> anyhow::Result<UserRef> {
        Ok(UserRef {
            id: UserId::parse(self.id.clone()).map_err(|e| anyhow::anyhow!("stored user: {e}"))?,
            username: Username::parse(self.username.clone())
                .map_err(|e| anyhow::anyhow!("stored user: {e}"))?,
        })
    }
}

/// A user's reaction with one emoji: on or off, and the change that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReactionDocument {
    pub(crate) emoji: String,
    pub(crate) user: String,
    pub(crate) on: bool,
    pub(crate) change: String,
}

impl From<&MessageEvent> for MessageDocument {
    fn from(event: &MessageEvent) -> Self {
        let m = &event.message;
        Self {
            id: m.id.to_string(),
            room: m.room.to_string(),
            client_id: m.client_id.to_string(),
            author_id: m.author.id.to_string(),
            author_name: m.author.username.to_string(),
            body: m.body.as_ref().map(ToString::to_string),
            sent_at: bson::DateTime::from_millis(m.sent_at.timestamp_millis()),
            published_at: event
                .published_at
                .map(|at| bson::DateTime::from_millis(at.timestamp_millis())),
            seq: None,
            reply_to: m.reply_to.as_ref().map(|reply| ReplyDocument {
                id: reply.id.to_string(),
                author_id: reply.author.id.to_string(),
                author_name: reply.author.username.to_string(),
            }),
            version: None,
            edit_change: None,
            edited_at: None,
            deleted: false,
            deleted_change: None,
            deleted_at: None,
            deleted_by: None,
            reactions: Vec::new(),
            changed_at: None,
        }
    }
}

pub(crate) fn to_chrono(at: bson::DateTime) -> anyhow::Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(at.timestamp_millis())
        .context("stored timestamp out of range")
}

impl MessageDocument {
    /// The stored version (1 for a document never changed).
    pub(crate) fn current_version(&self) -> i64 {
        self.version.unwrap_or(1)
    }

    /// The reaction counts, in the order the emoji were first used; `me` set for `reader`.
    pub(crate) fn reaction_counts(&self, reader: Option<&str>) -> Vec<ReactionCount> {
        let mut counts: Vec<ReactionCount> = Vec::new();
        for reaction in self.reactions.iter().filter(|r| r.on) {
            let Ok(emoji) = Emoji::parse(reaction.emoji.clone()) else {
                continue;
            };
            let mine = reader == Some(reaction.user.as_str());
            match counts.iter_mut().find(|c| c.emoji == emoji) {
                Some(count) => {
                    count.count += 1;
                    if mine {
                        count.me = Some(true);
                    }
                }
                None => counts.push(ReactionCount {
                    emoji,
                    count: 1,
                    me: (reader.is_some()).then_some(mine),
                }),
            }
        }
        counts
    }

    /// Stored documents were validated on the way in; a document that no longer parses (edited
    /// by hand, say) is reported rather than served. `reader` sets `me` in the reactions
    /// (none: counts only); a reply's excerpt is filled in by [`MessageStore::resolve_replies`].
    pub(crate) fn into_message(self, reader: Option<&str>) -> anyhow::Result<ChatMessage> {
        let invalid =
            |e: common::domain::InvalidValue| anyhow::anyhow!("stored message {}: {e}", self.id);
        let reply_to = match &self.reply_to {
            None => None,
            Some(reply) => Some(ReplyRef {
                id: MessageId::parse(&reply.id).map_err(invalid)?,
                author: UserRef {
                    id: UserId::parse(reply.author_id.clone()).map_err(invalid)?,
                    username: Username::parse(reply.author_name.clone()).map_err(invalid)?,
                },
                excerpt: None,
                deleted: false,
            }),
        };
        let state = MessageState {
            version: self.current_version().max(1) as u64,
            edited_at: self.edited_at.map(to_chrono).transpose()?,
            deleted: self.deleted,
            deleted_at: self.deleted_at.map(to_chrono).transpose()?,
            deleted_by: self
                .deleted_by
                .as_ref()
                .map(UserDocument::to_user)
                .transpose()?,
            reactions: self.reaction_counts(reader),
            changed_at: self.changed_at.map(to_chrono).transpose()?,
        };
        Ok(ChatMessage {
            id: MessageId::parse(&self.id).map_err(invalid)?,
            room: RoomId::parse(self.room.clone()).map_err(invalid)?,
            client_id: ClientMessageId::parse(self.client_id.clone()).map_err(invalid)?,
            author: UserRef {
                id: UserId::parse(self.author_id.clone()).map_err(invalid)?,
                username: Username::parse(self.author_name.clone()).map_err(invalid)?,
            },
            body: match (&self.body, self.deleted) {
                (Some(body), false) => Some(MessageBody::parse(body.clone()).map_err(invalid)?),
                _ => None,
            },
            sent_at: to_chrono(self.sent_at)?,
            reply_to,
            state,
        })
    }

    pub(crate) fn author(&self) -> anyhow::Result<UserRef> {
        UserDocument {
            id: self.author_id.clone(),
            username: self.author_name.clone(),
        }
        .to_user()
    }
}

/// What a batch insert did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    pub inserted: usize,
    /// Messages that were already stored (redeliveries).
    pub duplicates: usize,
}

/// A page of a room's history, oldest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub messages: Vec<ChatMessage>,
    pub has_more: bool,
}

impl Page {
    /// The page of `documents` (in the order given); `reader` as in
    /// [`MessageDocument::into_message`].
    fn of(
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

#[derive(Clone)]
pub struct MessageStore {
    messages: Collection<MessageDocument>,
    /// The room documents, whose message counter (`seq`), `last_message` and
    /// `last_activity` the consumer keeps (see [`crate::rooms::store`]).
    rooms: Collection<Document>,
    /// The room lists' cache, told about every room document written here.
    room_cache: Option<Arc<RoomCache>>,
    /// Serializes writes to one room document with the room routes' (see [`DocLocks`]).
    room_locks: Arc<DocLocks>,
}

/// How many characters of a message the room list shows.
const PREVIEW_CHARS: usize = 100;

impl MessageStore {
    pub async fn open(db: &Database) -> anyhow::Result<Self> {
        let messages = db.collection::<MessageDocument>("messages");
        // One index per call: FerretDB drops the connection when one call re-creates several.
        for (name, keys) in [
            ("room_id", doc! {"room": 1, "_id": 1}),
            ("room_published_at", doc! {"room": 1, "published_at": 1}),
            ("room_changed_at", doc! {"room": 1, "changed_at": 1}),
        ] {
            let options = mongodb::options::IndexOptions::builder()
                .name(name.to_string())
                .build();
            messages
                .create_index(IndexModel::builder().keys(keys).options(options).build())
                .await
                .with_context(|| format!("creating the messages index {name}"))?;
        }
        Ok(Self {
            messages,
            rooms: db.collection("rooms"),
            room_cache: None,
            room_locks: Arc::default(),
        })
    }

    /// The same store, forgetting in `cache` each room whose document it writes and taking
    /// `locks` (shared with the room routes) to write it.
    pub fn with_rooms(mut self, cache: Arc<RoomCache>, locks: Arc<DocLocks>) -> Self {
        self.room_cache = Some(cache);
        self.room_locks = locks;
        self
    }

    fn forget_room(&self, room: &str) {
        if let Some(cache) = &self.room_cache {
            cache.forget(room);
        }
    }

    /// Numbers a batch's messages within their rooms: one `$inc` of the room document's
    /// `seq` per room (upserted, so that rooms nobody created get numbered too), the numbers
    /// taken in id order. Also moves the rooms' `last_activity` forward. Returns one number
    /// per message, in batch order.
    pub async fn number(&self, batch: &[MessageEvent]) -> anyhow::Result<Vec<i64>> {
        let mut by_room: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, event) in batch.iter().enumerate() {
            by_room
                .entry(event.message.room.as_str())
                .or_default()
                .push(index);
        }
        let mut numbers = vec![0_i64; batch.len()];
        for (room, mut indexes) in by_room {
            indexes.sort_by_key(|&i| batch[i].message.id);
            let latest = indexes
                .iter()
                .map(|&i| batch[i].message.sent_at)
                .max()
                .unwrap_or_else(Utc::now);
            let count = indexes.len() as i64;
            let room_lock = self.room_locks.lock(room).await;
            let updated = self
                .rooms
                .find_one_and_update(
                    doc! {"_id": room},
                    doc! {
                        "$inc": {"seq": count},
                        "$max": {"last_activity": bson::DateTime::from_millis(latest.timestamp_millis())},
                    },
                )
                .upsert(true)
                // No projection: FerretDB does not implement it on findAndModify.
                .return_document(ReturnDocument::After)
                .await;
            drop(room_lock);
            self.forget_room(room);
            let updated = updated
                .context("numbering a room's messages")?
                .context("an upserted room came back empty")?;
            let last = updated
                .get_i64("seq")
                .or_else(|_| updated.get_i32("seq").map(i64::from))
                .context("a room's seq is not a number")?;
            for (offset, index) in indexes.into_iter().enumerate() {
                numbers[index] = last - count + 1 + offset as i64;
            }
        }
        Ok(numbers)
    }

    /// Sets each room's `last_message` to the batch's latest message of that room, unless the
    /// room already shows a later one.
    pub async fn record_last_messages(&self, batch: &[MessageEvent]) -> anyhow::Result<()> {
        let mut latest: HashMap<&str, &ChatMessage> = HashMap::new();
        for event in batch {
            let m = &event.message;
            let entry = latest.entry(m.room.as_str()).or_insert(m);
            if m.id > entry.id {
                *entry = m;
            }
        }
        for (room, m) in latest {
            let id = m.id.to_string();
            let preview: String = m
                .body
                .as_ref()
                .map(|body| body.as_str().chars().take(PREVIEW_CHARS).collect())
                .unwrap_or_default();
            let room_lock = self.room_locks.lock(room).await;
            let recorded = self
                .rooms
                .update_one(
                    doc! {"_id": room, "$or": [
                        {"last_message.id": {"$exists": false}},
                        {"last_message.id": {"$lt": id.as_str()}},
                    ]},
                    doc! {"$set": {"last_message": {
                        "id": id.as_str(),
                        "author": {"id": m.author.id.as_str(), "username": m.author.username.as_str()},
                        "preview": preview,
                        "sent_at": bson::DateTime::from_millis(m.sent_at.timestamp_millis()),
                    }}},
                )
                .await;
            drop(room_lock);
            self.forget_room(room);
            recorded.context("recording a room's last message")?;
        }
        Ok(())
    }

    /// Stores a batch with one unordered `insert_many`, unnumbered (tests fill rooms so).
    pub async fn insert_batch(&self, batch: &[MessageEvent]) -> anyhow::Result<InsertOutcome> {
        self.insert_numbered(batch, None).await
    }

    /// Stores a batch with one unordered `insert_many`, each message with its number from
    /// [`MessageStore::number`] when given. Messages already stored (same `_id`) count as
    /// done; any other failure fails the whole call so the caller retries the batch.
    pub async fn insert_numbered(
        &self,
        batch: &[MessageEvent],
        numbers: Option<&[i64]>,
    ) -> anyhow::Result<InsertOutcome> {
        if batch.is_empty() {
            return Ok(InsertOutcome::default());
        }
        let documents: Vec<MessageDocument> = batch
            .iter()
            .enumerate()
            .map(|(index, event)| MessageDocument {
                seq: numbers.and_then(|numbers| numbers.get(index).copied()),
                ..MessageDocument::from(event)
            })
            .collect();
        match self.messages.insert_many(&documents).ordered(false).await {
            Ok(result) => Ok(InsertOutcome {
                inserted: result.inserted_ids.len(),
                duplicates: 0,
            }),
            Err(error) => {
                if let Some(write_errors) = common::mongo::insert_many_write_errors(&error)
                    && write_errors
                        .iter()
                        .all(|e| e.code == common::mongo::DUPLICATE_KEY)
                {
                    return Ok(InsertOutcome {
                        inserted: documents.len() - write_errors.len(),
                        duplicates: write_errors.len(),
                    });
                }
                Err(anyhow::Error::from(error).context("inserting a batch of messages"))
            }
        }
    }

    /// The first `limit` messages matching `filter` in `sort` order, and whether there are
    /// more. One more than asked tells whether there are more; it also keeps the limit off 0,
    /// which MongoDB reads as no limit at all. `what` names the read in its error.
    async fn read_page(
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

    /// The room and number of the stored message `id` (by `_id`), if stored.
    pub async fn locate(
        &self,
        id: MessageId,
        deadline: Deadline,
    ) -> anyhow::Result<Option<(String, Option<i64>)>> {
        let stored = self
            .messages
            .find_one(doc! {"_id": id.to_string()})
            .max_time(deadline.max_time())
            .await
            .context("reading a message")?;
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
        let stored = self
            .messages
            .find_one(doc! {"_id": id.to_string()})
            .max_time(deadline.max_time())
            .await
            .context("reading a message")?;
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
        let stored = self
            .messages
            .find_one(doc! {"_id": id.to_string()})
            .max_time(deadline.max_time())
            .await
            .context("reading a message")?;
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
        let mut find = self.messages.find_one(doc! {"_id": id.to_string()});
        if let Some(deadline) = deadline {
            find = find.max_time(deadline.max_time());
        }
        let stored = find.await.context("reading a message")?;
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

    pub async fn count_in_room(&self, room: &RoomId) -> anyhow::Result<u64> {
        Ok(self
            .messages
            .count_documents(doc! {"room": room.as_str()})
            .await?)
    }
}
