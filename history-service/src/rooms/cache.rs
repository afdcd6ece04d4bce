//! Documents recently read for room lists and joins (room documents and users' inboxes), so
//! that `GET /api/rooms` of a user in many rooms reads only what changed instead of all of it
//! on every call.
//!
//! Every write of this instance to a cached document forgets it (the room routes through
//! [`crate::rooms::store::RoomStore`], the consumer after numbering a batch and moving
//! `last_message`), so with one history-service instance a list is never stale. Documents
//! changed by *another* instance's consumer or routes are seen once their entry is older than
//! `rooms.list_cache_ttl_ms`: that is how stale a list can be with several instances.
//!
//! A read that started before a write must not put the older document back after the write
//! forgot it: each room has a generation, bumped by every forget, and a document read under an
//! older generation is not kept.
//!
//! A document served past half its time to live is marked for refreshing: one task
//! ([`crate::rooms::store::RoomStore::refresh_cached`]) reads those again in the background, so
//! a user whose list is read often does not wait for the whole list to expire and be read at
//! once (for a user in 500 rooms, one `$in` that FerretDB answers only after decoding every
//! room document).
//!
//! Joins keep a third kind: a member's [`Member`] pair (membership and inbox entry) of one
//! room, so that a member's repeat join reads nothing. It lives longer
//! (`rooms.join_cache_ttl_ms`): the instance that writes keeps or forgets it as it writes
//! (`put`, `modify`, `forget`), every other one forgets it on the writer's member event
//! (`member.<user>`, [`Caches::member_changed`]), and an instance forgets everything after its
//! broker connection was lost ([`Caches::forget_all`]), when events may have been missed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use common::event::MemberEvent;

use super::store::{InboxDoc, InboxEntry, MembershipDoc, RoomDoc, membership_id};

/// A document kept by a [`DocCache`], known by its `_id`.
pub trait Cached: Clone {
    fn id(&self) -> &str;
}

impl Cached for RoomDoc {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Cached for InboxDoc {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Cached for Member {
    fn id(&self) -> &str {
        &self.membership.id
    }
}

/// What a member's join reads for one room, both present.
#[derive(Debug, Clone)]
pub struct Member {
    pub membership: MembershipDoc,
    pub entry: InboxEntry,
}

/// Room documents, by room id.
pub type RoomCache = DocCache<RoomDoc>;
/// Users' inboxes, by user id.
pub type InboxCache = DocCache<InboxDoc>;
/// Members' memberships with their inbox entries, by membership id (`<room>/<user>`).
pub type MemberCache = DocCache<Member>;

/// The three caches of rooms, shared by the room store, the message store and the consumer.
#[derive(Clone)]
pub struct Caches {
    pub rooms: Arc<RoomCache>,
    pub inboxes: Arc<InboxCache>,
    pub members: Arc<MemberCache>,
}

impl Caches {
    /// Forgets what another instance's member event says changed.
    pub fn member_changed(&self, event: &MemberEvent) {
        self.inboxes.forget(event.user.as_str());
        self.members
            .forget(&membership_id(event.room.as_str(), event.user.as_str()));
    }

    /// Forgets everything: member events may have been missed (the broker connection was
    /// lost).
    pub fn forget_all(&self) {
        self.rooms.forget_all();
        self.inboxes.forget_all();
        self.members.forget_all();
    }
}

struct Slot<T> {
    doc: Option<(Arc<T>, Instant)>,
    generation: u64,
}

struct Slots<T> {
    map: HashMap<String, Slot<T>>,
    /// Bumped whenever slots are dropped with their generations (evicted, or all forgotten):
    /// a read that started under an earlier epoch is not kept.
    epoch: u64,
}

pub struct DocCache<T> {
    slots: Mutex<Slots<T>>,
    /// Rooms served past half their time to live, to read again (at most `capacity`).
    aging: Mutex<HashSet<String>>,
    /// Woken when `aging` gains a room.
    refresh: Notify,
    ttl: Duration,
    /// Most rooms remembered; beyond, forgotten and expired ones are dropped, then any.
    capacity: usize,
}

/// What a list needs to read: the rooms not in the cache, with their generation when the read
/// started.
pub struct Misses {
    pub ids: Vec<String>,
    generations: HashMap<String, u64>,
    epoch: u64,
}

impl<T: Cached> DocCache<T> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            slots: Mutex::new(Slots {
                map: HashMap::new(),
                epoch: 0,
            }),
            aging: Mutex::new(HashSet::new()),
            refresh: Notify::new(),
            ttl,
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots<T>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fresh documents of `ids` and the rest to read.
    pub fn lookup(&self, ids: Vec<String>) -> (Vec<Arc<T>>, Misses) {
        let now = Instant::now();
        let slots = self.lock();
        let mut hits = Vec::with_capacity(ids.len());
        let mut aging = Vec::new();
        let mut misses = Misses {
            ids: Vec::new(),
            generations: HashMap::new(),
            epoch: slots.epoch,
        };
        for id in ids {
            let slot = slots.map.get(&id);
            match slot.and_then(|slot| slot.doc.as_ref()) {
                Some((doc, read_at)) if now.duration_since(*read_at) < self.ttl => {
                    if now.duration_since(*read_at) >= self.ttl / 2 {
                        aging.push(id.clone());
                    }
                    hits.push(doc.clone());
                }
                _ => {
                    misses
                        .generations
                        .insert(id.clone(), slot.map_or(0, |slot| slot.generation));
                    misses.ids.push(id);
                }
            }
        }
        drop(slots);
        if !aging.is_empty() {
            let mut marked = self.aging.lock().unwrap_or_else(PoisonError::into_inner);
            let before = marked.len();
            for id in aging {
                if marked.len() >= self.capacity {
                    break;
                }
                marked.insert(id);
            }
            if marked.len() > before {
                self.refresh.notify_one();
            }
        }
        (hits, misses)
    }

    /// Waits until some rooms are marked for refreshing, then takes up to `most` of them with
    /// their generations (to [`RoomCache::keep`] what is read for them).
    pub async fn aging(&self, most: usize) -> Misses {
        loop {
            let notified = self.refresh.notified();
            let taken: Vec<String> = {
                let mut marked = self.aging.lock().unwrap_or_else(PoisonError::into_inner);
                let taken: Vec<String> = marked.iter().take(most).cloned().collect();
                for id in &taken {
                    marked.remove(id);
                }
                taken
            };
            if !taken.is_empty() {
                let slots = self.lock();
                let generations = taken
                    .iter()
                    .map(|id| {
                        let generation = slots.map.get(id).map_or(0, |slot| slot.generation);
                        (id.clone(), generation)
                    })
                    .collect();
                return Misses {
                    ids: taken,
                    generations,
                    epoch: slots.epoch,
                };
            }
            notified.await;
        }
    }

    /// Keeps the documents read for `misses`, unless their room was written since.
    pub fn keep(&self, misses: &Misses, docs: &[T]) -> Vec<Arc<T>> {
        let now = Instant::now();
        let mut slots = self.lock();
        let current = slots.epoch == misses.epoch;
        if slots.map.len() + docs.len() > self.capacity {
            // Dropped slots take their generations with them: later reads that started
            // before are not kept (a new epoch).
            slots.epoch += 1;
            slots.map.retain(|_, slot| {
                slot.doc
                    .as_ref()
                    .is_some_and(|(_, read_at)| now.duration_since(*read_at) < self.ttl)
            });
            if slots.map.len() + docs.len() > self.capacity {
                slots.map.clear();
            }
        }
        docs.iter()
            .map(|doc| {
                let doc = Arc::new(doc.clone());
                let read_under = misses.generations.get(doc.id()).copied().unwrap_or(0);
                let slot = slots.map.entry(doc.id().to_string()).or_insert(Slot {
                    doc: None,
                    generation: 0,
                });
                if current && slot.generation == read_under {
                    slot.doc = Some((doc.clone(), now));
                }
                doc
            })
            .collect()
    }

    /// Keeps `doc`, just written by this instance as it is now; reads in flight are not kept.
    pub fn put(&self, doc: T) {
        let now = Instant::now();
        let mut slots = self.lock();
        if let Some(slot) = self.written(&mut slots, doc.id()) {
            slot.doc = Some((Arc::new(doc), now));
        }
    }

    /// Changes a kept document `id` as this instance just changed it (`change` gets the kept
    /// one); reads in flight are not kept. Nothing kept, nothing to change.
    pub fn modify(&self, id: &str, change: impl FnOnce(&T) -> T) {
        let mut slots = self.lock();
        if let Some(slot) = self.written(&mut slots, id) {
            slot.doc = slot
                .doc
                .take()
                .map(|(doc, read_at)| (Arc::new(change(&doc)), read_at));
        }
    }

    /// Moves document `id` to its next generation, so that reads in flight are not kept: its
    /// slot, or none when there is no room for one (then no read in flight is kept at all).
    fn written<'s>(&self, slots: &'s mut Slots<T>, id: &str) -> Option<&'s mut Slot<T>> {
        if !slots.map.contains_key(id) {
            if slots.map.len() >= self.capacity {
                slots.epoch += 1;
                return None;
            }
            // A read in flight took generation 0: the slot starts at 1.
            slots.map.insert(
                id.to_string(),
                Slot {
                    doc: None,
                    generation: 0,
                },
            );
        }
        let slot = slots.map.get_mut(id)?;
        slot.generation += 1;
        Some(slot)
    }

    /// Forgets every document; reads in flight are not kept.
    pub fn forget_all(&self) {
        let mut slots = self.lock();
        slots.epoch += 1;
        slots.map.clear();
        drop(slots);
        self.aging
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Forgets document `id`: it was just written.
    pub fn forget(&self, id: &str) {
        let mut slots = self.lock();
        if let Some(slot) = self.written(&mut slots, id) {
            slot.doc = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, seq: i64) -> RoomDoc {
        let mut doc: RoomDoc = mongodb::bson::from_document(mongodb::bson::doc! {"_id": id})
            .expect("a minimal room document");
        doc.seq = seq;
        doc
    }

    #[test]
    fn a_kept_document_is_served_until_it_expires_or_is_forgotten() {
        let cache = RoomCache::new(Duration::from_secs(60), 100);
        let (hits, misses) = cache.lookup(vec!["a".into(), "b".into()]);
        assert!(hits.is_empty());
        assert_eq!(misses.ids, vec!["a", "b"]);
        cache.keep(&misses, &[doc("a", 1), doc("b", 2)]);

        let (hits, misses) = cache.lookup(vec!["a".into(), "b".into()]);
        assert_eq!(hits.len(), 2);
        assert!(misses.ids.is_empty());

        cache.forget("a");
        let (hits, misses) = cache.lookup(vec!["a".into(), "b".into()]);
        assert_eq!(
            hits.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(misses.ids, vec!["a"]);

        let expired = RoomCache::new(Duration::ZERO, 100);
        let (_, misses) = expired.lookup(vec!["a".into()]);
        expired.keep(&misses, &[doc("a", 1)]);
        assert_eq!(expired.lookup(vec!["a".into()]).1.ids, vec!["a"]);
    }

    #[test]
    fn a_read_that_started_before_a_write_is_not_kept() {
        let cache = RoomCache::new(Duration::from_secs(60), 100);
        for known in [false, true] {
            if known {
                let (_, misses) = cache.lookup(vec!["a".into()]);
                cache.keep(&misses, &[doc("a", 1)]);
                cache.forget("a");
            }
            let (_, misses) = cache.lookup(vec!["a".into()]);
            // The write lands and forgets the room while the read is in flight.
            cache.forget("a");
            let served = cache.keep(&misses, &[doc("a", 1)]);
            assert_eq!(served.len(), 1, "the read still answers its own request");
            assert_eq!(
                cache.lookup(vec!["a".into()]).1.ids,
                vec!["a"],
                "but the older document is not kept (room known before: {known})"
            );
        }
    }

    #[tokio::test]
    async fn a_document_served_past_half_its_life_is_marked_for_refreshing_once() {
        let cache = RoomCache::new(Duration::from_millis(200), 100);
        let (_, misses) = cache.lookup(vec!["a".into(), "b".into()]);
        cache.keep(&misses, &[doc("a", 1), doc("b", 1)]);
        cache.lookup(vec!["a".into()]);
        assert!(
            cache.aging.lock().expect("not poisoned").is_empty(),
            "young documents are not marked"
        );

        std::thread::sleep(Duration::from_millis(120));
        let (hits, _) = cache.lookup(vec!["a".into()]);
        assert_eq!(hits.len(), 1, "an aging document is still served");
        cache.lookup(vec!["a".into()]);
        let marked = cache.aging(10).await;
        assert_eq!(marked.ids, vec!["a"], "marked once, `b` was not served");
        // Refreshed: served fresh again, not marked.
        cache.keep(&marked, &[doc("a", 2)]);
        let (hits, _) = cache.lookup(vec!["a".into()]);
        assert_eq!(hits[0].seq, 2);
        assert!(cache.aging.lock().expect("not poisoned").is_empty());
    }

    #[test]
    fn nothing_read_before_everything_was_forgotten_is_kept() {
        let cache = RoomCache::new(Duration::from_secs(60), 100);
        let (_, kept) = cache.lookup(vec!["a".into()]);
        cache.keep(&kept, &[doc("a", 1)]);
        let (_, in_flight) = cache.lookup(vec!["b".into()]);
        cache.forget_all();
        assert_eq!(cache.lookup(vec!["a".into()]).1.ids, vec!["a"]);
        let served = cache.keep(&in_flight, &[doc("b", 1)]);
        assert_eq!(served.len(), 1, "the read still answers its own request");
        assert_eq!(cache.lookup(vec!["b".into()]).1.ids, vec!["b"]);
    }

    #[test]
    fn a_write_forgotten_in_a_full_cache_keeps_no_read_in_flight() {
        let cache = RoomCache::new(Duration::from_secs(60), 2);
        let (_, misses) = cache.lookup(vec!["a".into(), "b".into()]);
        cache.keep(&misses, &[doc("a", 1), doc("b", 1)]);
        let (_, in_flight) = cache.lookup(vec!["c".into()]);
        // Full: `c`'s generation cannot be remembered.
        cache.forget("c");
        cache.keep(&in_flight, &[doc("c", 1)]);
        assert_eq!(cache.lookup(vec!["c".into()]).1.ids, vec!["c"]);
    }

    #[test]
    fn a_document_written_here_is_served_and_reads_from_before_are_not_kept() {
        let cache = RoomCache::new(Duration::from_secs(60), 100);
        let (_, in_flight) = cache.lookup(vec!["a".into()]);
        cache.put(doc("a", 2));
        cache.keep(&in_flight, &[doc("a", 1)]);
        let (hits, _) = cache.lookup(vec!["a".into()]);
        assert_eq!(hits[0].seq, 2, "the older read did not replace the write");

        let (_, in_flight) = cache.lookup(vec!["b".into()]);
        cache.modify("a", |a| {
            let mut a = a.clone();
            a.seq += 1;
            a
        });
        cache.modify("b", |_| unreachable!("nothing kept, nothing changed"));
        cache.keep(&in_flight, &[doc("b", 1)]);
        let (hits, misses) = cache.lookup(vec!["a".into(), "b".into()]);
        assert_eq!(hits.iter().map(|d| d.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(
            misses.ids,
            vec!["b"],
            "a read from before a change is not kept"
        );
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = RoomCache::new(Duration::from_secs(60), 10);
        for round in 0..5 {
            let ids: Vec<String> = (0..8).map(|k| format!("r{round}-{k}")).collect();
            let (_, misses) = cache.lookup(ids.clone());
            let docs: Vec<RoomDoc> = ids.iter().map(|id| doc(id, 0)).collect();
            cache.keep(&misses, &docs);
            assert!(cache.lock().map.len() <= 10);
        }
    }
}
