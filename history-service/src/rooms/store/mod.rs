//! Rooms, memberships, inboxes and bans in MongoDB.
//!
//! | collection | `_id` | read by |
//! |---|---|---|
//! | `rooms` | room id | `_id` (a join, a view), `(kind, member_count)` for the directory |
//! | `memberships` | `<room>/<user_id>` | `_id` (every permission check), `(room, joined_at)` for the members list |
//! | `inboxes` | user id | `_id` (a user's room list, their read markers) |
//! | `bans` | `<room>/<user_id>` | `_id` |
//!
//! There are no transactions (FerretDB and a standalone MongoDB have none), so each change is
//! a fixed sequence of single-document writes, each idempotent, and a change interrupted
//! half-way is completed by doing it again:
//! - **adding** a member writes the membership first (the authority for every permission
//!   check), then the inbox entry (what the user's room list shows), then counts the member in
//!   the room when the membership was new. A join of a member whose inbox entry is missing
//!   writes it again;
//! - **removing** a member (kick, ban, leave) deletes the membership first, so the user loses
//!   access with the first write, then the inbox entry, then uncounts the member when the
//!   membership was still there. A ban writes the ban before either: the ban alone already
//!   refuses the user everywhere;
//! - **a role change** writes the membership, then the inbox entry.
//!
//! `member_count` is maintained with `$inc` next to the membership writes, so a crash between
//! the two leaves it off by one; nothing depends on it but the directory's order.
//!
//! This file holds the store, its indexes and how its write sequences run to their end;
//! `documents.rs` the documents' shapes, `rooms.rs` room documents (creation, updates, the
//! directory), `memberships.rs` membership reads and the add, remove and role sequences,
//! `inbox.rs` inbox entries and read markers, `bans.rs` bans, `cached.rs` the reads that go
//! through the caches, `queries.rs` the reads several collections share (by `_id`, a page).

mod bans;
mod cached;
mod documents;
mod inbox;
mod memberships;
mod queries;
mod rooms;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mongodb::bson::{Document, doc};
use mongodb::{Collection, Database, IndexModel};
use tokio_util::task::TaskTracker;

pub use cached::JoinReads;
pub use documents::{
    InboxDoc, InboxEntry, LastMessage, MembershipDoc, RoomDoc, StoredUser, membership_id, to_chrono,
};
pub use rooms::{Created, NewRoom};

use super::cache::Caches;
use crate::doc_locks::DocLocks;

#[derive(Clone)]
pub struct RoomStore {
    /// Serializes this instance's writes to one user's inbox (see [`DocLocks`]).
    inbox_locks: Arc<DocLocks>,
    /// Serializes this instance's writes to one room document, shared with the consumer's
    /// [`crate::message_store::MessageStore`] (see [`DocLocks`]).
    room_locks: Arc<DocLocks>,
    /// Room documents and inboxes of room lists, members of joins; every write here forgets
    /// what it changed.
    caches: Caches,
    /// Write sequences running to their end (see [`RoomStore::complete`]), and their turns.
    writes: TaskTracker,
    write_turns: Arc<tokio::sync::Semaphore>,
    rooms: Collection<RoomDoc>,
    room_docs: Collection<Document>,
    memberships: Collection<MembershipDoc>,
    inboxes: Collection<Document>,
    inbox_docs: Collection<InboxDoc>,
    bans: Collection<Document>,
}

impl RoomStore {
    /// Write sequences [`RoomStore::complete`] runs at once.
    pub const WRITES: usize = 16;

    pub async fn open(
        db: &Database,
        caches: Caches,
        room_locks: Arc<DocLocks>,
    ) -> anyhow::Result<Self> {
        let store = Self {
            inbox_locks: Arc::default(),
            room_locks,
            writes: TaskTracker::new(),
            write_turns: Arc::new(tokio::sync::Semaphore::new(Self::WRITES)),
            caches,
            rooms: db.collection("rooms"),
            room_docs: db.collection("rooms"),
            memberships: db.collection("memberships"),
            inboxes: db.collection("inboxes"),
            inbox_docs: db.collection("inboxes"),
            bans: db.collection("bans"),
        };
        // One index per call: FerretDB drops the connection when one call creates several.
        let index = |name: &str, keys: Document| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    mongodb::options::IndexOptions::builder()
                        .name(name.to_string())
                        .build(),
                )
                .build()
        };
        store
            .memberships
            .create_index(index("room_joined_at", doc! {"room": 1, "joined_at": 1}))
            .await
            .context("creating the memberships index")?;
        store
            .room_docs
            .create_index(index(
                "kind_member_count",
                doc! {"kind": 1, "member_count": -1},
            ))
            .await
            .context("creating the rooms index")?;
        Ok(store)
    }

    /// Runs a sequence of writes to its end even when its caller stops waiting (a request
    /// past its deadline, a client gone): a membership written without its inbox entry and
    /// member count would otherwise stay so, since doing the change again finds the membership
    /// there. At most [`RoomStore::WRITES`] run at once; the others wait for a turn.
    async fn complete<T: Send + 'static>(
        &self,
        writes: impl Future<Output = anyhow::Result<T>> + Send + 'static,
    ) -> anyhow::Result<T> {
        let turn = Arc::clone(&self.write_turns)
            .acquire_owned()
            .await
            .context("the store is closed")?;
        let task = self.writes.spawn(async move {
            let _turn = turn;
            writes.await
        });
        task.await.context("a room write stopped")?
    }

    /// Waits (at most `patience`) for the writes [`RoomStore::complete`] runs.
    pub async fn close(&self, patience: Duration) -> bool {
        self.writes.close();
        tokio::time::timeout(patience, self.writes.wait())
            .await
            .is_ok()
    }
}
