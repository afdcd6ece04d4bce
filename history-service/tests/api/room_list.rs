//! The room list of a user in many rooms.

use std::time::{Duration, Instant};

use history_service::rooms::store::RoomStore;
use mongodb::bson::{Document, doc};
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app, user_token};

/// Stores `n` public rooms with `user` in each, straight in the database (quick to fill).
async fn fill_rooms(app: &TestApp, user: &str, n: usize) -> Vec<String> {
    let now = mongodb::bson::DateTime::now();
    let ids: Vec<String> = (0..n).map(|i| format!("room-{i:04}")).collect();
    let rooms: Vec<Document> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            doc! {
                "_id": id, "kind": "public", "name": id, "topic": "", "created_by": user,
                "created_at": now, "archived": false, "member_count": 1_i64, "seq": 5_i64,
                "last_activity": mongodb::bson::DateTime::from_millis(now.timestamp_millis() - i as i64),
            }
        })
        .collect();
    app.db
        .collection::<Document>("rooms")
        .insert_many(rooms)
        .await
        .expect("rooms stored");
    let mut entries = Document::new();
    for id in &ids {
        entries.insert(
            id.as_str(),
            doc! {"role": "member", "joined_at": now, "read_seq": 2_i64, "hidden": false},
        );
    }
    app.db
        .collection::<Document>("inboxes")
        .insert_one(doc! {"_id": user, "rooms": entries})
        .await
        .expect("inbox stored");
    ids
}

#[tokio::test]
async fn a_user_in_500_rooms_gets_all_of_them_most_recent_first() {
    let app = spawn_app().await;
    let ids = fill_rooms(&app, "u-alice", 500).await;
    let mut took = Vec::new();
    let mut body = Value::Null;
    for _ in 0..5 {
        let started = Instant::now();
        let response = app
            .http
            .get(format!("{}/api/rooms", app.address))
            .bearer_auth(user_token("alice"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        body = response.json().await.expect("json");
        took.push(started.elapsed());
    }
    let rooms = body["rooms"].as_array().expect("rooms");
    let listed: Vec<&str> = rooms
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(rooms[0]["unread"], 3);
    took.sort();
    println!(
        "GET /api/rooms with 500 rooms: median {:?}, max {:?}",
        took[2], took[4]
    );
    // The benchmark measures the real figure; this bound only catches a pathological path.
    assert!(took[2] < Duration::from_secs(5), "{took:?}");
}

/// Compares one `_id: {$in: …}` query with parallel lookups by `_id` for 500 rooms; run with
/// `cargo test -p history-service --test api measure_room_lookups -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn measure_room_lookups() {
    let app = spawn_app().await;
    let ids = fill_rooms(&app, "u-alice", 500).await;
    use history_service::rooms::cache::{Caches, DocCache};
    let caches = Caches {
        rooms: std::sync::Arc::new(DocCache::new(Duration::ZERO, 1)),
        inboxes: std::sync::Arc::new(DocCache::new(Duration::ZERO, 1)),
        members: std::sync::Arc::new(DocCache::new(Duration::ZERO, 1)),
    };
    let store = RoomStore::open(&app.db, caches, Default::default())
        .await
        .expect("store");
    let median = |mut runs: Vec<Duration>| {
        runs.sort();
        runs[runs.len() / 2]
    };
    let mut by_in = Vec::new();
    for _ in 0..11 {
        let started = Instant::now();
        let found = store.rooms_by_id_in(ids.clone()).await.expect("read");
        by_in.push(started.elapsed());
        assert_eq!(found.len(), 500);
    }
    println!("$in of 500 ids: median {:?}", median(by_in));
    // Does the cost grow with the collection (a scan) or with the ids (lookups)?
    let others: Vec<Document> = (0..5000)
        .map(|i| doc! {"_id": format!("other-{i}"), "kind": "public", "name": "other"})
        .collect();
    app.db
        .collection::<Document>("rooms")
        .insert_many(others)
        .await
        .expect("others stored");
    let mut by_in = Vec::new();
    for _ in 0..11 {
        let started = Instant::now();
        let found = store.rooms_by_id_in(ids.clone()).await.expect("read");
        by_in.push(started.elapsed());
        assert_eq!(found.len(), 500);
    }
    println!(
        "$in of 500 ids among 5500 rooms: median {:?}",
        median(by_in)
    );
    for concurrency in [1, 8, 32] {
        let mut parallel = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let found = store
                .rooms_one_by_one(ids.clone(), concurrency)
                .await
                .expect("read");
            parallel.push(started.elapsed());
            assert_eq!(found.len(), 500);
        }
        println!(
            "500 lookups by _id, {concurrency} at once: median {:?}",
            median(parallel)
        );
    }
}
