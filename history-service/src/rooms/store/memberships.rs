//! Memberships: reading them (one, many by id, a page of a room's members, another owner)
//! and the write sequences that add a member, remove one and change a role, with the room's
//! member count kept next to them.

use std::collections::HashMap;

use anyhow::Context;
use common::domain::{Role, UserRef};
use mongodb::bson::{self, doc};

use super::documents::now;
use super::inbox::MemberNow;
use super::queries::page;
use super::{InboxEntry, MembershipDoc, RoomDoc, RoomStore, membership_id};
use crate::reads::Deadline;
use crate::rooms::cache::Member;

impl RoomStore {
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

    /// A page of the room's members, oldest first, from `offset`; `limit + 1` are read to
    /// tell whether there are more.
    pub async fn members(
        &self,
        room: &str,
        offset: u64,
        limit: u32,
        deadline: Deadline,
    ) -> anyhow::Result<Vec<MembershipDoc>> {
        let (filter, sort) = (doc! {"room": room}, doc! {"joined_at": 1, "_id": 1});
        let what = "reading members";
        page(
            &self.memberships,
            filter,
            sort,
            offset,
            limit,
            deadline,
            what,
        )
        .await
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
}
