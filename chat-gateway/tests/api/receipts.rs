//! The batched receipt writer against the real database: concurrent reservations of one
//! `client_id` land in one batch and must still resolve to one first use.

use std::collections::HashMap;
use std::time::Duration;

use chat_gateway::receipts::{Receipts, Reservation};
use chat_gateway::settings::Settings;
use common::domain::{ClientMessageId, MessageId, RoomId, UserId};

async fn open() -> Receipts {
    let settings = Settings::load().expect("settings load");
    let database = format!(
        "gateway_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let db = settings
        .mongodb
        .client("chat-gateway-test")
        .await
        .expect("client")
        .database(&database);
    Receipts::open(&db).await.expect("receipts open")
}

fn ids(n: usize) -> Vec<ClientMessageId> {
    (0..n)
        .map(|i| ClientMessageId::parse(format!("c{i}")).expect("client id"))
        .collect()
}

#[tokio::test]
async fn concurrent_reservations_of_one_client_id_resolve_to_one_first_use() {
    let receipts = open().await;
    let user = UserId::parse("u1".to_string()).expect("user id");
    let room = RoomId::parse("r".to_string()).expect("room");
    let client_ids = ids(300);
    // Every client id twice, all at once: many land in the same batch as their twin.
    let mut tasks = Vec::new();
    for attempt in 0..2 {
        for client_id in &client_ids {
            let (receipts, user, room, client_id) = (
                receipts.clone(),
                user.clone(),
                room.clone(),
                client_id.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let id = MessageId::from_ulid(ulid::Ulid::new());
                let sent_at = chrono::Utc::now();
                let reservation = receipts
                    .reserve(&user, &client_id, &room, id, sent_at)
                    .await
                    .expect("reserve");
                (client_id, attempt, id, reservation)
            }));
        }
    }
    let mut by_client: HashMap<ClientMessageId, Vec<(MessageId, Reservation)>> = HashMap::new();
    for task in tasks {
        let (client_id, _, id, reservation) = task.await.expect("task");
        by_client
            .entry(client_id)
            .or_default()
            .push((id, reservation));
    }
    assert_eq!(by_client.len(), 300);
    for (client_id, outcomes) in &by_client {
        let firsts: Vec<&MessageId> = outcomes
            .iter()
            .filter(|(_, r)| *r == Reservation::New)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(firsts.len(), 1, "{client_id}: {outcomes:?}");
        for (_, reservation) in outcomes {
            if let Reservation::Existing { id, .. } = reservation {
                assert_eq!(id, firsts[0], "{client_id}: the retry sees the first id");
            }
        }
    }
}

#[tokio::test]
async fn a_later_retry_gets_the_first_attempts_id_time_and_room() {
    let receipts = open().await;
    let user = UserId::parse("u1".to_string()).expect("user id");
    let room = RoomId::parse("r".to_string()).expect("room");
    let mut first = HashMap::new();
    for client_id in ids(50) {
        let id = MessageId::from_ulid(ulid::Ulid::new());
        let sent_at =
            chrono::DateTime::from_timestamp_millis(id.timestamp_ms() as i64).expect("time");
        let reservation = receipts
            .reserve(&user, &client_id, &room, id, sent_at)
            .await
            .expect("reserve");
        assert_eq!(reservation, Reservation::New);
        first.insert(client_id, (id, sent_at));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    for (client_id, (id, sent_at)) in &first {
        let retry = receipts
            .reserve(
                &user,
                client_id,
                &room,
                MessageId::from_ulid(ulid::Ulid::new()),
                chrono::Utc::now(),
            )
            .await
            .expect("reserve");
        assert_eq!(
            retry,
            Reservation::Existing {
                id: *id,
                sent_at: *sent_at,
                room: "r".to_string(),
                target: None,
            }
        );
    }
    // Another user's identical client ids are first uses of their own.
    let other = UserId::parse("u2".to_string()).expect("user id");
    let client_id = ids(1).remove(0);
    let reservation = receipts
        .reserve(
            &other,
            &client_id,
            &room,
            MessageId::from_ulid(ulid::Ulid::new()),
            chrono::Utc::now(),
        )
        .await
        .expect("reserve");
    assert_eq!(reservation, Reservation::New);
}
