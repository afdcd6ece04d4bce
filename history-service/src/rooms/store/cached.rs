//! The reads of room lists and joins that go through the caches (see [`crate::rooms::cache`]):
//! room documents, inboxes and members, and the task that reads the aging ones again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::{InboxDoc, InboxEntry, MembershipDoc, RoomDoc, RoomStore, membership_id};
use crate::reads::Deadline;
use crate::rooms::cache::Member;

/// What [`RoomStore::members_cached`] found: memberships by id, inbox entries by
/// (user, room).
pub struct JoinReads {
    pub memberships: HashMap<String, MembershipDoc>,
    pub entries: HashMap<(String, String), InboxEntry>,
}

impl RoomStore {
    /// The user's inbox for room lists: from the cache (see [`InboxCache`]) when read
    /// recently, else read (and kept).
    ///
    /// [`InboxCache`]: crate::rooms::cache::InboxCache
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

    /// The memberships and inbox entries of joins' (user, room) `pairs`, by membership id and
    /// by pair: a member's from the cache (see [`MemberCache`]) when read recently, the rest
    /// read (those found both ways are kept).
    ///
    /// [`MemberCache`]: crate::rooms::cache::MemberCache
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
    /// [`MemberCache`]): no read.
    ///
    /// [`MemberCache`]: crate::rooms::cache::MemberCache
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
    ///
    /// [`RoomCache`]: crate::rooms::cache::RoomCache
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

    /// Reads again the room documents and inboxes the caches mark as aging (see
    /// [`RoomCache`]), up to `batch` at a time and one batch per `pause`, until `shutdown`.
    ///
    /// [`RoomCache`]: crate::rooms::cache::RoomCache
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
}
