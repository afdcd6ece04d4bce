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

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use common::domain::{Role, RoomId, RoomKind, UserId, UserRef};
use futures_util::{StreamExt, TryStreamExt};

use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;

use super::cache::{Caches, Member};
use crate::doc_locks::DocLocks;
use crate::reads::Deadline;
use crate::rooms::policy::RoomFacts;

/// A user as stored next to a membership, ban or DM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    pub id: String,
    pub username: String,
}

impl From<&UserRef> for StoredUser {
    fn from(user: &UserRef) -> Self {
        Self {
            id: user.id.to_string(),
            username: user.username.to_string(),
        }
    }
}

/// The room's latest stored message, as the room list shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastMessage {
    pub id: String,
    pub author: StoredUser,
    pub preview: String,
    pub sent_at: bson::DateTime,
}

/// A `rooms` document. Every field but `_id` may be missing: the consumer numbers the messages
/// of rooms nobody created (stored before rooms existed) in a document of its own making,
/// which holds only `seq`, `last_message` and `last_activity` until someone joins.
#[derive(Debug, Clone, Deserialize)]
pub struct RoomDoc {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub kind: Option<RoomKind>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub topic: String,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub created_at: Option<bson::DateTime>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub member_count: i64,
    #[serde(default)]
    pub seq: i64,
    #[serde(default)]
    pub last_message: Option<LastMessage>,
    #[serde(default)]
    pub last_activity: Option<bson::DateTime>,
    #[serde(default)]
    pub dm_users: Option<Vec<StoredUser>>,
}

impl RoomDoc {
    /// What the permission table needs; `None` for a room nobody created yet.
    pub fn facts(&self) -> Option<RoomFacts> {
        self.kind.map(|kind| RoomFacts {
            kind,
            archived: self.archived,
        })
    }
}

/// A `memberships` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub room: String,
    pub user: StoredUser,
    pub role: Role,
    pub joined_at: bson::DateTime,
}

/// One room of a user's inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxEntry {
    pub role: Role,
    pub joined_at: bson::DateTime,
    #[serde(default)]
    pub read_id: Option<String>,
    #[serde(default)]
    pub read_seq: i64,
    #[serde(default)]
    pub hidden: bool,
}

/// An `inboxes` document: the rooms a user is in, keyed by room id (room ids contain neither
/// `.` nor `$`, so they are safe field names).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InboxDoc {
    /// The user's id (empty in a document read with a projection that left it out).
    #[serde(rename = "_id", default)]
    pub id: String,
    #[serde(default)]
    pub rooms: HashMap<String, InboxEntry>,
}

/// What [`RoomStore::members_cached`] found: memberships by id, inbox entries by
/// (user, room).
pub struct JoinReads {
    pub memberships: HashMap<String, MembershipDoc>,
    pub entries: HashMap<(String, String), InboxEntry>,
}

/// A room to create.
pub struct NewRoom<'a> {
    pub id: &'a RoomId,
    pub kind: RoomKind,
    pub name: &'a str,
    pub topic: &'a str,
    pub created_by: &'a UserId,
    /// The two users of a DM.
    pub dm_users: Option<[&'a UserRef; 2]>,
}

/// Whether [`RoomStore::create`] made the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    Exists,
}

pub fn membership_id(room: &str, user: &str) -> String {
    format!("{room}/{user}")
}

fn now() -> bson::DateTime {
    bson::DateTime::now()
}

pub fn to_chrono(at: bson::DateTime) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(at.timestamp_millis()).unwrap_or(DateTime::UNIX_EPOCH)
}

/// A write to one user's inbox entry for one room in progress: holds the user's inbox lock,
/// and when dropped (after the write) forgets their cached inbox and brings that room's
/// cached member up to date: forgotten unless the write said what it is now. Every write of
/// a member's entry holds the lock, so a member kept here is never older than the entry.
struct InboxWrite<'a> {
    _lock: tokio::sync::MutexGuard<'a, ()>,
    caches: &'a Caches,
    user: String,
    member: String,
    now: MemberNow,
}

/// What a write made of the cached member of an [`InboxWrite`].
enum MemberNow {
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
    /// Most ids [`RoomStore::by_ids`] looks up one by one; beyond, one `$in` query.
    const LOOKUPS_MAX: usize = 16;
    /// Lookups by `_id` [`RoomStore::by_ids`] runs at once.
    pub const LOOKUPS_CONCURRENCY: usize = 4;
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

    /// Holds writes to `user`'s inbox (see [`RoomStore::inbox_locks`]) until the guard drops,
    /// which also forgets the cached inbox and the user's cached member of `room`.
    async fn lock_inbox(&self, user: &str, room: &str) -> InboxWrite<'_> {
        InboxWrite {
            _lock: self.inbox_locks.lock(user).await,
            caches: &self.caches,
            member: membership_id(room, user),
            user: user.to_string(),
            now: MemberNow::Unknown,
        }
    }

    pub async fn room(&self, room: &str) -> anyhow::Result<Option<RoomDoc>> {
        self.rooms
            .find_one(doc! {"_id": room})
            .await
            .context("reading a room")
    }

    pub async fn membership(
        &self,
        room: &str,
        user: &str,
    ) -> anyhow::Result<Option<MembershipDoc>> {
        self.memberships
            .find_one(doc! {"_id": membership_id(room, user)})
            .await
            .context("reading a membership")
    }

    pub async fn banned(&self, room: &str, user: &str) -> anyhow::Result<bool> {
        Ok(self
            .bans
            .find_one(doc! {"_id": membership_id(room, user)})
            .projection(doc! {"_id": 1})
            .await
            .context("reading a ban")?
            .is_some())
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

    /// The user's inbox for room lists: from the cache (see [`InboxCache`]) when read
    /// recently, else read (and kept).
    pub async fn inbox_cached(&self, user: &str) -> anyhow::Result<Arc<InboxDoc>> {
        let (hits, misses) = self.caches.inboxes.lookup(vec![user.to_string()]);
        if let Some(hit) = hits.into_iter().next() {
            return Ok(hit);
        }
        let read = self.inbox(user).await?;
        let kept = self
            .caches
            .inboxes
            .keep(&misses, std::slice::from_ref(&read));
        Ok(kept.into_iter().next().unwrap_or_else(|| Arc::new(read)))
    }

    /// Documents of `collection` by `_id`: one lookup each (`concurrency` at once) for a few
    /// ids, one `_id: {$in: …}` query for more. FerretDB answers a lookup of one `_id` inside
    /// SQLite (≈ 6 ms among 3,000 small documents on a busy machine) but an `$in` only after
    /// decoding every document of the collection (≈ 130 ms among the same 3,000, whatever the
    /// number of ids), so the `$in` pays off from about twenty ids; MongoDB answers both from
    /// the `_id` index.
    async fn by_ids<T>(
        &self,
        collection: &Collection<T>,
        ids: Vec<String>,
        projection: Option<Document>,
        deadline: Deadline,
    ) -> anyhow::Result<Vec<T>>
    where
        T: serde::de::DeserializeOwned + Send + Sync + Unpin,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if ids.len() <= Self::LOOKUPS_MAX {
            let found: Vec<Option<T>> = futures_util::stream::iter(ids)
                .map(|id| {
                    let projection = projection.clone();
                    async move {
                        collection
                            .find_one(doc! {"_id": id})
                            .with_options(
                                mongodb::options::FindOneOptions::builder()
                                    .projection(projection)
                                    .max_time(deadline.max_time())
                                    .build(),
                            )
                            .await
                    }
                })
                .buffer_unordered(Self::LOOKUPS_CONCURRENCY)
                .try_collect()
                .await?;
            return Ok(found.into_iter().flatten().collect());
        }
        Ok(collection
            .find(doc! {"_id": {"$in": ids}})
            .with_options(
                mongodb::options::FindOptions::builder()
                    .projection(projection)
                    .max_time(deadline.max_time())
                    .build(),
            )
            .await?
            .try_collect()
            .await?)
    }

    /// The memberships among `ids` (`<room>/<user_id>`) that exist, by id.
    pub async fn memberships_by_id(
        &self,
        ids: Vec<String>,
        deadline: Deadline,
    ) -> anyhow::Result<HashMap<String, MembershipDoc>> {
        let found = self
            .by_ids(&self.memberships, ids, None, deadline)
            .await
            .context("reading memberships")?;
        Ok(found.into_iter().map(|m| (m.id.clone(), m)).collect())
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

    /// The memberships and inbox entries of joins' (user, room) `pairs`, by membership id and
    /// by pair: a member's from the cache (see [`super::cache::MemberCache`]) when read
    /// recently, the rest read (those found both ways are kept).
    pub async fn members_cached(
        &self,
        pairs: &[(String, String)],
        deadline: Deadline,
    ) -> anyhow::Result<JoinReads> {
        let mut ids: Vec<String> = pairs
            .iter()
            .map(|(user, room)| membership_id(room, user))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let (hits, misses) = self.caches.members.lookup(ids);
        tracing::debug!(
            hits = hits.len(),
            misses = misses.ids.len(),
            "members cached"
        );
        let missed: std::collections::HashSet<&str> =
            misses.ids.iter().map(String::as_str).collect();
        let unread_pairs: Vec<(String, String)> = pairs
            .iter()
            .filter(|(user, room)| missed.contains(membership_id(room, user).as_str()))
            .cloned()
            .collect();
        let (mut memberships, mut entries) = tokio::try_join!(
            self.memberships_by_id(misses.ids.clone(), deadline),
            self.inbox_entries(&unread_pairs, deadline),
        )?;
        let read: Vec<Member> = memberships
            .values()
            .filter_map(|membership| {
                let key = (membership.user.id.clone(), membership.room.clone());
                let entry = entries.get(&key)?.clone();
                Some(Member {
                    membership: membership.clone(),
                    entry,
                })
            })
            .collect();
        self.caches.members.keep(&misses, &read);
        for hit in hits {
            let key = (hit.membership.user.id.clone(), hit.membership.room.clone());
            entries.insert(key, hit.entry.clone());
            memberships.insert(hit.membership.id.clone(), hit.membership.clone());
        }
        Ok(JoinReads {
            memberships,
            entries,
        })
    }

    /// `user`'s membership and inbox entry in `room` when the member cache holds them (see
    /// [`super::cache::MemberCache`]): no read.
    pub fn cached_member(&self, room: &str, user: &str) -> Option<Arc<Member>> {
        self.caches
            .members
            .lookup(vec![membership_id(room, user)])
            .0
            .pop()
    }

    /// The room document of `room` when the room cache holds it fresh: no read.
    pub fn cached_room(&self, room: &str) -> Option<Arc<RoomDoc>> {
        self.caches.rooms.lookup(vec![room.to_string()]).0.pop()
    }

    /// The room documents of `ids` for room lists and joins: those read recently from the
    /// cache (see [`RoomCache`]), the rest by [`RoomStore::by_ids`].
    pub async fn rooms_cached(
        &self,
        ids: Vec<String>,
        deadline: Deadline,
    ) -> anyhow::Result<Vec<Arc<RoomDoc>>> {
        let (mut rooms, misses) = self.caches.rooms.lookup(ids);
        tracing::debug!(
            hits = rooms.len(),
            misses = misses.ids.len(),
            "rooms cached"
        );
        let read = self
            .by_ids(&self.rooms, misses.ids.clone(), None, deadline)
            .await
            .context("reading rooms")?;
        rooms.extend(self.caches.rooms.keep(&misses, &read));
        Ok(rooms)
    }

    /// The room documents of `ids`, read by `_id` one at a time, `concurrency` at once: kept
    /// to compare with [`RoomStore::rooms_by_id_in`] (tests/api/room_list.rs).
    pub async fn rooms_one_by_one(
        &self,
        ids: Vec<String>,
        concurrency: usize,
    ) -> anyhow::Result<Vec<RoomDoc>> {
        let found: Vec<Option<RoomDoc>> = futures_util::stream::iter(ids)
            .map(|id| async move { self.room(&id).await })
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// The room documents of `ids` with one `_id: {$in: …}` query: what `GET /api/rooms`
    /// uses. On FerretDB (measured with 500 ids, debug build, 2 busy cores) it takes about
    /// 100 ms among 500 rooms and 320 ms among 5,500 (it scans the collection), against
    /// 1.1–1.4 s for 500 lookups by `_id` at any concurrency from 1 to 32 (each costs a
    /// fixed ~2.5 ms that concurrency does not spread) and more for `$in` split in parallel
    /// parts (each part scans). MongoDB answers it from the `_id` index.
    pub async fn rooms_by_id_in(&self, ids: Vec<String>) -> anyhow::Result<Vec<RoomDoc>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.rooms
            .find(doc! {"_id": {"$in": ids}})
            .await?
            .try_collect()
            .await
            .context("reading rooms")
    }

    /// Reads again the room documents and inboxes the caches mark as aging (see
    /// [`RoomCache`]), up to `batch` at a time and one batch per `pause`, until `shutdown`.
    pub async fn refresh_cached(
        &self,
        batch: usize,
        pause: Duration,
        timeout: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let batch = batch.max(1);
        loop {
            let deadline = Deadline::after(timeout);
            let refreshed = tokio::select! {
                () = shutdown.cancelled() => return,
                aging = self.caches.rooms.aging(batch) => {
                    self.by_ids(&self.rooms, aging.ids.clone(), None, deadline)
                        .await
                        .map(|docs| drop(self.caches.rooms.keep(&aging, &docs)))
                }
                aging = self.caches.inboxes.aging(batch) => {
                    self.by_ids(&self.inbox_docs, aging.ids.clone(), None, deadline)
                        .await
                        .map(|docs| drop(self.caches.inboxes.keep(&aging, &docs)))
                }
            };
            if let Err(error) = refreshed {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "refreshing cached documents failed"
                );
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Creates the room, or takes over the document the consumer made for a room nobody
    /// created yet. `Exists` when it was created already (by anyone).
    pub async fn create(&self, new: &NewRoom<'_>) -> anyhow::Result<Created> {
        let created = self.write_room(new).await;
        self.caches.rooms.forget(new.id.as_str());
        created
    }

    async fn write_room(&self, new: &NewRoom<'_>) -> anyhow::Result<Created> {
        let at = now();
        let mut fields = doc! {
            "kind": bson::to_bson(&new.kind)?,
            "name": new.name,
            "topic": new.topic,
            "created_by": new.created_by.as_str(),
            "created_at": at,
            "archived": false,
        };
        if let Some(users) = new.dm_users {
            let users: Vec<StoredUser> = users.iter().map(|u| StoredUser::from(*u)).collect();
            fields.insert("dm_users", bson::to_bson(&users)?);
        }
        let mut document = fields.clone();
        document.insert("_id", new.id.as_str());
        document.insert("member_count", 0_i64);
        document.insert("seq", 0_i64);
        document.insert("last_activity", at);
        match self.room_docs.insert_one(document).await {
            Ok(_) => return Ok(Created::Created),
            Err(error) if common::mongo::is_duplicate_key(&error) => {}
            Err(error) => return Err(anyhow::Error::from(error).context("creating a room")),
        }
        let _room = self.room_locks.lock(new.id.as_str()).await;
        let claimed = self
            .room_docs
            .update_one(
                doc! {"_id": new.id.as_str(), "kind": {"$exists": false}},
                doc! {"$set": fields, "$max": {"last_activity": at}},
            )
            .await
            .context("creating a room over its message counter")?;
        Ok(if claimed.modified_count == 1 {
            Created::Created
        } else {
            Created::Exists
        })
    }

    /// Adds `user` with `role`, their read marker at the room's latest message. Idempotent:
    /// `false` when they were a member already (their inbox entry is written again if it
    /// went missing).
    pub async fn add_member(
        &self,
        room: &RoomDoc,
        user: &UserRef,
        role: Role,
    ) -> anyhow::Result<(MembershipDoc, InboxEntry, bool)> {
        let (store, room, user) = (self.clone(), room.clone(), user.clone());
        self.complete(async move { store.write_member(&room, &user, role).await })
            .await
    }

    async fn write_member(
        &self,
        room: &RoomDoc,
        user: &UserRef,
        role: Role,
    ) -> anyhow::Result<(MembershipDoc, InboxEntry, bool)> {
        let at = now();
        let membership = MembershipDoc {
            id: membership_id(&room.id, user.id.as_str()),
            room: room.id.clone(),
            user: user.into(),
            role,
            joined_at: at,
        };
        let inserted = self.memberships.insert_one(&membership).await;
        self.caches.members.forget(&membership.id);
        let (membership, added) = match inserted {
            Ok(_) => (membership, true),
            Err(error) if common::mongo::is_duplicate_key(&error) => {
                let existing = self
                    .membership(&room.id, user.id.as_str())
                    .await?
                    .context("a membership vanished while it was added")?;
                (existing, false)
            }
            Err(error) => return Err(anyhow::Error::from(error).context("adding a membership")),
        };
        let entry = InboxEntry {
            role: membership.role,
            joined_at: membership.joined_at,
            read_id: room.last_message.as_ref().map(|m| m.id.clone()),
            read_seq: room.seq,
            hidden: false,
        };
        let field = format!("rooms.{}", room.id);
        let filter = if added {
            doc! {"_id": user.id.as_str()}
        } else {
            // A repair: never overwrite an entry (and its read marker) that is there.
            doc! {"_id": user.id.as_str(), field.clone(): {"$exists": false}}
        };
        let update = doc! {"$set": {field: bson::to_bson(&entry)?}};
        let mut inbox = self.lock_inbox(user.id.as_str(), &room.id).await;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let written = self
                .inboxes
                .update_one(filter.clone(), update.clone())
                .upsert(true)
                .await;
            match written {
                Ok(_) => break,
                // The repair filter did not match an inbox that exists: the entry is there.
                Err(error) if !added && common::mongo::is_duplicate_key(&error) => break,
                // Two first entries of one user at once (rooms added in parallel): both
                // upserts inserted, one lost; the inbox exists now, so the retry updates it.
                // MongoDB retries such an upsert itself; FerretDB does not.
                Err(error) if attempts < 2 && common::mongo::is_duplicate_key(&error) => {}
                Err(error) => {
                    return Err(anyhow::Error::from(error).context("writing an inbox entry"));
                }
            }
        }
        if added {
            // Both written here, whole (a repair leaves an entry that is there as it is).
            inbox.now = MemberNow::Written(Member {
                membership: membership.clone(),
                entry: entry.clone(),
            });
        }
        drop(inbox);
        if added {
            self.count_members(&room.id, 1).await?;
        }
        Ok((membership, entry, added))
    }

    async fn count_members(&self, room: &str, by: i64) -> anyhow::Result<()> {
        let _room = self.room_locks.lock(room).await;
        let counted = self
            .room_docs
            .update_one(doc! {"_id": room}, doc! {"$inc": {"member_count": by}})
            .await;
        match &counted {
            // The kept document, counted as the database just did (a wave of first joins
            // of one room would otherwise leave it uncached for every join in between).
            Ok(result) if result.matched_count == 1 => {
                self.caches.rooms.modify(room, |kept| RoomDoc {
                    member_count: kept.member_count + by,
                    ..kept.clone()
                });
            }
            _ => self.caches.rooms.forget(room),
        }
        counted.context("counting members")?;
        Ok(())
    }

    /// Removes `user` from `room`; `false` when they were not a member.
    pub async fn remove_member(&self, room: &str, user: &str) -> anyhow::Result<bool> {
        let (store, room, user) = (self.clone(), room.to_string(), user.to_string());
        self.complete(async move { store.delete_member(&room, &user).await })
            .await
    }

    async fn delete_member(&self, room: &str, user: &str) -> anyhow::Result<bool> {
        let id = membership_id(room, user);
        let deleted = self.memberships.delete_one(doc! {"_id": &id}).await;
        self.caches.members.forget(&id);
        let deleted = deleted.context("deleting a membership")?;
        let inbox = self.lock_inbox(user, room).await;
        self.inboxes
            .update_one(
                doc! {"_id": user},
                doc! {"$unset": {format!("rooms.{room}"): ""}},
            )
            .await
            .context("deleting an inbox entry")?;
        drop(inbox);
        let removed = deleted.deleted_count == 1;
        if removed {
            self.count_members(room, -1).await?;
        }
        Ok(removed)
    }

    pub async fn set_role(&self, room: &str, user: &str, role: Role) -> anyhow::Result<()> {
        let (store, room, user) = (self.clone(), room.to_string(), user.to_string());
        self.complete(async move { store.write_role(&room, &user, role).await })
            .await
    }

    async fn write_role(&self, room: &str, user: &str, role: Role) -> anyhow::Result<()> {
        let role = bson::to_bson(&role)?;
        let id = membership_id(room, user);
        let changed = self
            .memberships
            .update_one(doc! {"_id": &id}, doc! {"$set": {"role": role.clone()}})
            .await;
        self.caches.members.forget(&id);
        changed.context("changing a role")?;
        self.set_entry_field(user, room, "role", role)
            .await
            .context("changing a role in an inbox")
    }

    /// Hides (or shows again) a DM in the user's list.
    pub async fn set_hidden(&self, room: &str, user: &str, hidden: bool) -> anyhow::Result<()> {
        self.set_entry_field(user, room, "hidden", hidden.into())
            .await
            .context("hiding a DM")
    }

    /// Sets `field` of the user's inbox entry for `room`, if the entry exists.
    async fn set_entry_field(
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

    /// Whether a member other than `user` is an owner (bounded: the room's index narrows it).
    pub async fn has_other_owner(
        &self,
        room: &str,
        user: &str,
        deadline: Deadline,
    ) -> anyhow::Result<bool> {
        let found = self
            .memberships
            .find_one(doc! {"room": room, "role": "owner", "user.id": {"$ne": user}})
            .max_time(deadline.max_time())
            .await
            .context("looking for another owner")?;
        Ok(found.is_some())
    }

    pub async fn ban(&self, room: &str, user: &str, by: &str) -> anyhow::Result<()> {
        let result = self
            .bans
            .update_one(
                doc! {"_id": membership_id(room, user)},
                doc! {"$setOnInsert": {"room": room, "user": user, "by": by, "at": now()}},
            )
            .upsert(true)
            .await;
        match result {
            Ok(_) => Ok(()),
            // Two bans at once: the other one wrote it.
            Err(error) if common::mongo::is_duplicate_key(&error) => Ok(()),
            Err(error) => Err(anyhow::Error::from(error).context("writing a ban")),
        }
    }

    pub async fn unban(&self, room: &str, user: &str) -> anyhow::Result<()> {
        self.bans
            .delete_one(doc! {"_id": membership_id(room, user)})
            .await
            .context("deleting a ban")?;
        Ok(())
    }

    /// Sets fields of a room; the room as it is afterwards.
    pub async fn update_room(&self, room: &str, set: Document) -> anyhow::Result<Option<RoomDoc>> {
        let _room = self.room_locks.lock(room).await;
        let updated = self
            .rooms
            .find_one_and_update(doc! {"_id": room}, doc! {"$set": set})
            .return_document(ReturnDocument::After)
            .await;
        self.caches.rooms.forget(room);
        updated.context("updating a room")
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

    /// A page of the room's members, oldest first, from `offset`; `limit + 1` are read to
    /// tell whether there are more.
    pub async fn members(
        &self,
        room: &str,
        offset: u64,
        limit: u32,
        deadline: Deadline,
    ) -> anyhow::Result<Vec<MembershipDoc>> {
        self.memberships
            .find(doc! {"room": room})
            .sort(doc! {"joined_at": 1, "_id": 1})
            .skip(offset)
            .limit(i64::from(limit) + 1)
            .max_time(deadline.max_time())
            .await?
            .try_collect()
            .await
            .context("reading members")
    }

    /// A page of public, unarchived rooms whose id or name contains `q` (any case), most
    /// members first.
    pub async fn directory(
        &self,
        q: &str,
        offset: u64,
        limit: u32,
        deadline: Deadline,
    ) -> anyhow::Result<Vec<RoomDoc>> {
        let mut filter = doc! {"kind": "public", "archived": false};
        if !q.is_empty() {
            let pattern = regex_escape(q);
            filter.insert(
                "$or",
                vec![
                    doc! {"_id": {"$regex": pattern.clone(), "$options": "i"}},
                    doc! {"name": {"$regex": pattern, "$options": "i"}},
                ],
            );
        }
        self.rooms
            .find(filter)
            .sort(doc! {"member_count": -1, "_id": 1})
            .skip(offset)
            .limit(i64::from(limit) + 1)
            .max_time(deadline.max_time())
            .await?
            .try_collect()
            .await
            .context("reading the directory")
    }
}

/// `text` as a regular expression that matches it literally.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\^$.|?*+()[]{}-/".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    #[test]
    fn regex_escape_makes_metacharacters_literal() {
        assert_eq!(super::regex_escape("a.b*(c)"), "a\\.b\\*\\(c\\)");
    }
}
