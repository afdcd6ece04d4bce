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
use common::domain::{ClientMessageId, MessageBody, MessageId, RoomId, UserId, UserRef, Username};
use common::event::{ChatMessage, MessageEvent};
use futures_util::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::doc_locks::DocLocks;
use crate::reads::Deadline;
use crate::rooms::cache::RoomCache;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MessageDocument {
    #[serde(rename = "_id")]
    id: String,
    room: String,
    client_id: String,
    author_id: String,
    author_name: String,
    body: String,
    sent_at: bson::DateTime,
    /// When the stored copy was published (absent on messages from older gateways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    published_at: Option<bson::DateTime>,
    /// The message's number in its room (1, 2, …; see [`MessageStore::number`]); absent on
    /// messages stored before rooms counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
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
            body: m.body.to_string(),
            sent_at: bson::DateTime::from_millis(m.sent_at.timestamp_millis()),
            published_at: event
                .published_at
                .map(|at| bson::DateTime::from_millis(at.timestamp_millis())),
            seq: None,
        }
    }
}

impl MessageDocument {
    /// Stored documents were validated on the way in; a document that no longer parses (edited
    /// by hand, say) is reported rather than served.
    fn into_message(self) -> anyhow::Result<ChatMessage> {
        let invalid =
            |e: common::domain::InvalidValue| anyhow::anyhow!("stored message {}: {e}", self.id);
        Ok(ChatMessage {
            id: MessageId::parse(&self.id).map_err(invalid)?,
            room: RoomId::parse(self.room.clone()).map_err(invalid)?,
            client_id: ClientMessageId::parse(self.client_id.clone()).map_err(invalid)?,
            author: UserRef {
                id: UserId::parse(self.author_id.clone()).map_err(invalid)?,
                username: Username::parse(self.author_name.clone()).map_err(invalid)?,
            },
            body: MessageBody::parse(self.body.clone()).map_err(invalid)?,
            sent_at: DateTime::<Utc>::from_timestamp_millis(self.sent_at.timestamp_millis())
                .context("stored timestamp out of range")?,
        })
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
            let preview: String = m.body.as_str().chars().take(PREVIEW_CHARS).collect();
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
    ) -> anyhow::Result<Page> {
        let mut filter = doc! {"room": room.as_str()};
        if let Some(before) = before {
            filter.insert("_id", doc! {"$lt": before.to_string()});
        }
        let mut documents: Vec<MessageDocument> = self
            .messages
            .find(filter)
            .sort(doc! {"_id": -1})
            .limit(i64::from(limit) + 1)
            .max_time(deadline.max_time())
            .await?
            .try_collect()
            .await
            .context("reading a page of history")?;
        let has_more = documents.len() > limit as usize;
        documents.truncate(limit as usize);
        documents.reverse();
        let messages = documents
            .into_iter()
            .map(MessageDocument::into_message)
            .collect::<anyhow::Result<_>>()?;
        Ok(Page { messages, has_more })
    }

    /// The first `limit` messages of `room` after `after`, oldest first (catching up). With
    /// `limit` 0 the page is empty and `has_more` says whether there is any.
    pub async fn page_after(
        &self,
        room: &RoomId,
        after: MessageId,
        limit: u32,
        deadline: Deadline,
    ) -> anyhow::Result<Page> {
        let filter = doc! {"room": room.as_str(), "_id": {"$gt": after.to_string()}};
        let mut documents: Vec<MessageDocument> = self
            .messages
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(i64::from(limit) + 1)
            .max_time(deadline.max_time())
            .await?
            .try_collect()
            .await
            .context("reading messages after a cursor")?;
        let has_more = documents.len() > limit as usize;
        documents.truncate(limit as usize);
        let messages = documents
            .into_iter()
            .map(MessageDocument::into_message)
            .collect::<anyhow::Result<_>>()?;
        Ok(Page { messages, has_more })
    }

    /// The stored message `id` of `room`, if stored.
    pub async fn find(
        &self,
        room: &RoomId,
        id: MessageId,
        deadline: Deadline,
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
            .map(MessageDocument::into_message)
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
    ) -> anyhow::Result<Page> {
        let filter = doc! {
            "room": room.as_str(),
            "_id": {"$lte": up_to.to_string()},
            "published_at": {"$gt": bson::DateTime::from_millis(published_after.timestamp_millis())},
        };
        // One more than asked tells whether there are more; it also keeps the limit off 0,
        // which MongoDB reads as no limit at all.
        let mut documents: Vec<MessageDocument> = self
            .messages
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(i64::from(limit) + 1)
            .max_time(deadline.max_time())
            .await?
            .try_collect()
            .await
            .context("reading messages published late")?;
        let has_more = documents.len() > limit as usize;
        documents.truncate(limit as usize);
        let messages = documents
            .into_iter()
            .map(MessageDocument::into_message)
            .collect::<anyhow::Result<_>>()?;
        Ok(Page { messages, has_more })
    }

    pub async fn count_in_room(&self, room: &RoomId) -> anyhow::Result<u64> {
        Ok(self
            .messages
            .count_documents(doc! {"room": room.as_str()})
            .await?)
    }
}
