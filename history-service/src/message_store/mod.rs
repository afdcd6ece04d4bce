//! Chat messages in MongoDB: `_id` is the message id (a ULID, so `_id` order is time order and
//! a redelivered message collides with its stored copy instead of being stored twice), with an
//! index on `(room, _id)` for paging a room's history, and one on `(room, published_at)` for
//! catch-ups that look for messages published late (see [`MessageStore::page_after`]).
//!
//! Each stored message also carries its number in its room (`seq`), allocated per batch with
//! one `$inc` on the room document, which unread counts are computed from.
//!
//! This file holds the store and its indexes; `document.rs` the stored shape of a message,
//! `inserts.rs` the consumer's batched writes, `reads.rs` the history's pages and lookups,
//! `changes.rs` the change feed and the writes of applied changes.

mod changes;
mod document;
mod inserts;
mod reads;

use std::sync::Arc;

use anyhow::Context;
use mongodb::bson::{Document, doc};
use mongodb::{Collection, Database, IndexModel};

pub(crate) use document::{MessageDocument, ReactionDocument, UserDocument, to_chrono};
pub use inserts::InsertOutcome;
pub use reads::Page;

use crate::doc_locks::DocLocks;
use crate::rooms::cache::RoomCache;

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
}
