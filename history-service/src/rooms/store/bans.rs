//! Bans: the one document per banned (room, user) that refuses the user everywhere.

use anyhow::Context;
use mongodb::bson::doc;

use super::documents::now;
use super::{RoomStore, membership_id};

impl RoomStore {
    pub async fn banned(&self, room: &str, user: &str) -> anyhow::Result<bool> {
        Ok(self
            .bans
            .find_one(doc! {"_id": membership_id(room, user)})
            .projection(doc! {"_id": 1})
            .await
            .context("reading a ban")?
            .is_some())
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
}
