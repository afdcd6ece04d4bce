//! Send receipts: what makes a retried `send` idempotent across reconnects and gateway
//! instances.
//!
//! Before publishing, the gateway records `(user, client_id) → (message id, sent_at, room)` in
//! MongoDB under a unique `_id`. A retry of the same `client_id` by the same user finds the
//! receipt and is answered with the original id and `sent_at`; unless history-service already
//! stored that id, the retry publishes the message again under the original id (the first
//! attempt may never have reached the broker), which the history store and the clients
//! de-duplicate. Receipts are kept for
//! [`ReceiptSettings::retention_hours`](crate::settings::ReceiptSettings) and then swept (a
//! periodic delete: TTL indexes are not available on every MongoDB-compatible server).
//!
//! Writes are grouped: one task takes every reservation waiting and makes one unordered
//! `insert_many`, so the database sees one write per batch rather than one per message. While
//! a batch is being written the next one gathers; under light load a batch is a single
//! receipt and costs no extra wait. A receipt is written once and never updated.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use common::domain::{ClientMessageId, MessageId, RoomId, UserId};
use futures_util::TryStreamExt;
use mongodb::bson::{self, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Most receipts written by one database call.
const MAX_BATCH: usize = 512;
/// Requests waiting for a batch; senders wait (backpressure) beyond this.
const QUEUE: usize = 4096;
/// How long a send waits for its reservation before it is answered `unavailable`.
const RESERVE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Receipt {
    /// `<user id>:<client id>`; neither part can contain `:`.
    #[serde(rename = "_id")]
    key: String,
    id: String,
    room: String,
    sent_at: bson::DateTime,
    /// For a message change: what it changes, `<edit|delete|react>:<message id>` (`id` is
    /// then the change id, `sent_at` the time of the change). Never the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

/// The outcome of reserving a `client_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// First use: publish the new message.
    New,
    /// A retry: answer with the original id; publish again unless it is stored.
    Existing {
        id: MessageId,
        sent_at: DateTime<Utc>,
        room: String,
        /// What the earlier use changed (none for a send).
        target: Option<String>,
    },
}

struct ReserveRequest {
    receipt: Receipt,
    reply: oneshot::Sender<Result<Reservation, String>>,
}

#[derive(Clone)]
pub struct Receipts {
    receipts: Collection<Receipt>,
    reserve: mpsc::Sender<ReserveRequest>,
}

fn key(user: &UserId, client_id: &ClientMessageId) -> String {
    format!("{user}:{client_id}")
}

fn from_bson(at: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or_default()
}

impl Receipts {
    /// Creates the index and starts the batch writer; it stops when the last clone of the
    /// returned value is dropped.
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
        let (reserve, reserve_rx) = mpsc::channel(QUEUE);
        tokio::spawn(reserve_batches(receipts.clone(), reserve_rx));
        Ok(Self { receipts, reserve })
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
        self.reserve_for(user, client_id, room, id, sent_at, None)
            .await
    }

    /// [`Receipts::reserve`] for a send (`target` none) or a message change (`target`
    /// `<kind>:<message id>`, `id` the change id).
    pub async fn reserve_for(
        &self,
        user: &UserId,
        client_id: &ClientMessageId,
        room: &RoomId,
        id: MessageId,
        sent_at: DateTime<Utc>,
        target: Option<String>,
    ) -> anyhow::Result<Reservation> {
        let receipt = Receipt {
            key: key(user, client_id),
            id: id.to_string(),
            room: room.to_string(),
            sent_at: bson::DateTime::from_millis(sent_at.timestamp_millis()),
            target,
        };
        let (reply, answer) = oneshot::channel();
        let request = async {
            self.reserve
                .send(ReserveRequest { receipt, reply })
                .await
                .map_err(|_| anyhow::anyhow!("the receipt writer stopped"))?;
            answer
                .await
                .map_err(|_| anyhow::anyhow!("the receipt writer stopped"))?
                .map_err(anyhow::Error::msg)
        };
        tokio::time::timeout(RESERVE_TIMEOUT, request)
            .await
            .map_err(|_| anyhow::anyhow!("recording a send receipt timed out"))?
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
}

/// Writes reservations in batches until every sender is gone.
async fn reserve_batches(
    receipts: Collection<Receipt>,
    mut requests: mpsc::Receiver<ReserveRequest>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let documents: Vec<&Receipt> = batch.iter().map(|r| &r.receipt).collect();
        let outcomes = reserve_all(&receipts, &documents).await;
        for (request, outcome) in batch.drain(..).zip(outcomes) {
            let _ = request.reply.send(outcome);
        }
    }
}

/// One outcome per receipt, in order.
async fn reserve_all(
    receipts: &Collection<Receipt>,
    documents: &[&Receipt],
) -> Vec<Result<Reservation, String>> {
    let mut outcomes: Vec<Result<Reservation, String>> =
        vec![Ok(Reservation::New); documents.len()];
    let mut duplicates = Vec::new();
    if let Err(error) = receipts
        .insert_many(documents.iter().copied())
        .ordered(false)
        .await
    {
        let Some(failures) = common::mongo::insert_many_write_errors(&error) else {
            let message = format!("recording send receipts: {error}");
            return vec![Err(message); documents.len()];
        };
        for failed in failures {
            let Some(outcome) = outcomes.get_mut(failed.index) else {
                continue;
            };
            if failed.code == common::mongo::DUPLICATE_KEY {
                duplicates.push(failed.index);
            } else {
                *outcome = Err(format!("recording a send receipt: {}", failed.message));
            }
        }
    }
    if duplicates.is_empty() {
        return outcomes;
    }
    let keys: Vec<&str> = duplicates
        .iter()
        .map(|&i| documents[i].key.as_str())
        .collect();
    let existing: Result<HashMap<String, Receipt>, String> = async {
        receipts
            .find(doc! {"_id": {"$in": &keys}})
            .await?
            .map_ok(|receipt| (receipt.key.clone(), receipt))
            .try_collect()
            .await
    }
    .await
    .map_err(|error: mongodb::error::Error| format!("reading send receipts: {error}"));
    for index in duplicates {
        outcomes[index] = match &existing {
            Err(error) => Err(error.clone()),
            Ok(found) => match found.get(&documents[index].key) {
                None => Err("a receipt vanished between insert and read".to_string()),
                Some(receipt) => MessageId::parse(&receipt.id)
                    .map(|id| Reservation::Existing {
                        id,
                        sent_at: from_bson(receipt.sent_at),
                        room: receipt.room.clone(),
                        target: receipt.target.clone(),
                    })
                    .map_err(|e| format!("stored receipt: {e}")),
            },
        };
    }
    outcomes
}
