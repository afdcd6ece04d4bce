//! Write locks per document, for the documents several tasks of this process update.
//!
//! MongoDB applies each update to a document atomically. FerretDB (the local and test server)
//! reads, changes and writes the whole document, so two concurrent updates of one document can
//! lose one of them: measured on FerretDB 1.24, forty tasks each making ten `$inc`s of one
//! field (`update_one` or `find_one_and_update`) left it at 3 to 19 instead of 200; a user
//! creating eight rooms at once kept seven inbox entries. Writes to one document within this
//! process therefore take its lock first. Several instances on FerretDB can still race; on
//! MongoDB nothing does.

use std::hash::{Hash, Hasher};

use tokio::sync::{Mutex, MutexGuard};

/// Locks by document id, striped: writes to documents in the same stripe wait for each other;
/// a few dozen stripes make waiting on an unrelated document rare.
pub struct DocLocks {
    stripes: Vec<Mutex<()>>,
}

impl DocLocks {
    pub fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Holds writes to document `id` until the guard is dropped.
    pub async fn lock(&self, id: &str) -> MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        let stripe = (hasher.finish() % self.stripes.len() as u64) as usize;
        self.stripes[stripe].lock().await
    }
}

impl Default for DocLocks {
    fn default() -> Self {
        Self::new(64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_document_is_held_until_its_guard_drops_and_others_are_not_held_forever() {
        let locks = DocLocks::new(4);
        let held = locks.lock("a").await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("a"));
        assert!(waiting.await.is_err(), "a second writer of `a` waits");
        drop(held);
        let _again = locks.lock("a").await;
    }
}
