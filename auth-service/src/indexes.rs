//! Index creation at start that also works when the indexes already exist (every restart).
//!
//! One `createIndexes` command per index: FerretDB 1.24 drops the connection when a single
//! command names several indexes that all exist already, while re-creating one existing index
//! is a no-op there as on MongoDB.

use anyhow::Context;
use mongodb::bson::Document;
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};

/// An index on `keys` named `name`, unique or not.
pub fn index(keys: Document, name: &str, unique: bool) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(
            IndexOptions::builder()
                .unique(unique)
                .name(name.to_string())
                .build(),
        )
        .build()
}

/// Creates each index unless it exists.
pub async fn ensure<T: Send + Sync>(
    collection: &Collection<T>,
    indexes: impl IntoIterator<Item = IndexModel>,
) -> anyhow::Result<()> {
    for model in indexes {
        let name = model
            .options
            .as_ref()
            .and_then(|o| o.name.clone())
            .unwrap_or_default();
        collection
            .create_index(model)
            .await
            .with_context(|| format!("creating index {name} on {}", collection.name()))?;
    }
    Ok(())
}
