//! The consumer's batched writes: numbering a batch's messages in their rooms, recording
//! each room's last message, and storing the batch with one unordered `insert_many`.

use std::collections::HashMap;

use anyhow::Context;
use chrono::Utc;
use common::event::{ChatMessage, MessageEvent};
use mongodb::bson::{self, doc};
use mongodb::options::ReturnDocument;

use super::{MessageDocument, MessageStore, PREVIEW_CHARS};

/// What a batch insert did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    pub inserted: usize,
    /// Messages that were already stored (redeliveries).
    pub duplicates: usize,
}

impl MessageStore {
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
}
