//! Send receipts: what makes a retried `send` idempotent across reconnects and gateway
//! instances.
//!
//! Before publishing, the gateway records `(user, client_id) → (message id, sent_at, room)` in
//! MongoDB under a unique `_id`. A retry of the same `client_id` by the same user finds the
//! receipt and is answered with the original id and `sent_at`; if the first attempt never got
//! its broker confirm, the retry publishes the message again under the original id, which the
//! history store and the clients de-duplicate. Receipts are kept for
//! [`ReceiptSettings::retention_hours`](crate::settings::ReceiptSettings) and then swept (a
//! periodic delete: TTL indexes are not available on every MongoDB-compatible server).

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use common::domain::{ClientMessageId, MessageId, RoomId, UserId};
use mongodb::bson::{self, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Receipt {
    /// `<user id>:<client id>`; neither part can contain `:`.
    #[serde(rename = "_id")]
    key: String,
    id: String,
    room: String,
    sent_at: bson::DateTime,
    published: bool,
}

/// The outcome of reserving a `client_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// First use: publish the new message.
    New,
    /// A retry: answer with the original id; publish again only if it never was confirmed.
    Existing {
        id: MessageId,
        sent_at: DateTime<Utc>,
        room: String,
        published: bool,
    },
}

#[derive(Clone)]
pub struct Receipts {
    receipts: Collection<Receipt>,
}

fn key(user: &UserId, client_id: &ClientMessageId) -> String {
    format!("{user}:{client_id}")
}

fn from_bson(at: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or_default()
}

impl Receipts {
    pub async fn open(db: &Database) -> anyhow::Result<Self> {
        let receipts = db.collection::<Receipt>("send_receipts");
        receipts
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"sent_at": 1})
                    .options(IndexOptions::builder().name("sent_at".to_string()).build())
                    .build(),
            )
            .await
            .context("creating the send_receipts index")?;
        Ok(Self { receipts })
    }

    /// Records the first use of `client_id` by `user`, or returns the earlier one.
    pub async fn reserve(
        &self,
        user: &UserId,
        client_id: &ClientMessageId,
        room: &RoomId,
        id: MessageId,
        sent_at: DateTime<Utc>,
    ) -> anyhow::Result<Reservation> {
        let receipt = Receipt {
            key: key(user, client_id),
            id: id.to_string(),
            room: room.to_string(),
            sent_at: bson::DateTime::from_millis(sent_at.timestamp_millis()),
            published: false,
        };
        match self.receipts.insert_one(&receipt).await {
            Ok(_) => Ok(Reservation::New),
            Err(error) if common::mongo::is_duplicate_key(&error) => {
                let existing = self
                    .receipts
                    .find_one(doc! {"_id": &receipt.key})
                    .await?
                    .context("a receipt vanished between insert and read")?;
                let id = MessageId::parse(&existing.id)
                    .map_err(|e| anyhow::anyhow!("stored receipt: {e}"))?;
                Ok(Reservation::Existing {
                    id,
                    sent_at: from_bson(existing.sent_at),
                    room: existing.room,
                    published: existing.published,
                })
            }
            Err(error) => Err(anyhow::Error::from(error).context("recording a send receipt")),
        }
    }

    /// Marks the message as confirmed by the broker, so later retries need not publish.
    pub async fn mark_published(
        &self,
        user: &UserId,
        client_id: &ClientMessageId,
    ) -> anyhow::Result<()> {
        self.receipts
            .update_one(
                doc! {"_id": key(user, client_id)},
                doc! {"$set": {"published": true}},
            )
            .await?;
        Ok(())
    }

    /// Deletes receipts older than `retention`.
    pub async fn sweep(&self, retention: Duration) -> anyhow::Result<u64> {
        let cutoff = Utc::now() - chrono::Duration::from_std(retention)?;
        let result = self
            .receipts
            .delete_many(
                doc! {"sent_at": {"$lt": bson::DateTime::from_millis(cutoff.timestamp_millis())}},
            )
            .await?;
        Ok(result.deleted_count)
    }

    /// Sweeps once an hour until `stop`.
    pub async fn sweep_periodically(
        self,
        retention: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => match self.sweep(retention).await {
                    Ok(deleted) if deleted > 0 => tracing::info!(deleted, "swept old send receipts"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(error = format!("{error:#}"), "sweeping send receipts failed"),
                },
            }
        }
    }

    /// Whether MongoDB answers (readiness).
    pub async fn ping(&self) -> bool {
        matches!(
            tokio::time::timeout(
                Duration::from_secs(2),
                self.receipts.find_one(doc! {"_id": "health-check"})
            )
            .await,
            Ok(Ok(_))
        )
    }
}
