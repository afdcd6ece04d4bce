//! The shapes of read that several of the store's collections share: many documents by
//! `_id` (lookups one by one for a few ids, one `$in` query for more) and a page of a query.

use anyhow::Context;
use futures_util::{StreamExt, TryStreamExt};
use mongodb::Collection;
use mongodb::bson::{Document, doc};

use super::RoomStore;
use crate::reads::Deadline;

impl RoomStore {
    /// Most ids [`RoomStore::by_ids`] looks up one by one; beyond, one `$in` query.
    const LOOKUPS_MAX: usize = 16;
    /// Lookups by `_id` [`RoomStore::by_ids`] runs at once.
    pub const LOOKUPS_CONCURRENCY: usize = 4;

    /// Documents of `collection` by `_id`: one lookup each (`concurrency` at once) for a few
    /// ids, one `_id: {$in: …}` query for more. FerretDB answers a lookup of one `_id` inside
    /// SQLite (≈ 6 ms among 3,000 small documents on a busy machine) but an `$in` only after
    /// decoding every document of the collection (≈ 130 ms among the same 3,000, whatever the
    /// number of ids), so the `$in` pays off from about twenty ids; MongoDB answers both from
    /// the `_id` index.
    pub(super) async fn by_ids<T>(
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
}

/// The documents of `collection` matching `filter` in `sort` order from `offset`: `limit + 1`
/// of them, the last one read telling whether there are more. `what` names the read in its
/// error.
pub(super) async fn page<T>(
    collection: &Collection<T>,
    filter: Document,
    sort: Document,
    offset: u64,
    limit: u32,
    deadline: Deadline,
    what: &'static str,
) -> anyhow::Result<Vec<T>>
where
    T: serde::de::DeserializeOwned + Send + Sync + Unpin,
{
    collection
        .find(filter)
        .sort(sort)
        .skip(offset)
        .limit(i64::from(limit) + 1)
        .max_time(deadline.max_time())
        .await?
        .try_collect()
        .await
        .context(what)
}
