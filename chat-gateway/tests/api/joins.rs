//! Joins of one room share their history reads, and a room whose messages the gateway holds
//! completely is joined without reading history at all.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Client, Cluster, SlowHistory, TestGateway};

async fn gateway(cluster: &Cluster, history: &str, grace_ms: u64) -> TestGateway {
    let history = history.to_string();
    cluster
        .gateway_with(move |settings| {
            settings.history.url = history;
            settings.history.timeout_ms = 5_000;
            settings.history.memory_grace_ms = grace_ms;
        })
        .await
}

/// Connects `n` users and sends their joins of `room` at once (with `since` when given);
/// returns them unanswered.
async fn join_together(
    gateway: &TestGateway,
    room: &str,
    n: usize,
    since: Option<&str>,
) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..n {
        clients.push(
            gateway
                .connect(&format!("u-{i}"), &format!("user{i}"))
                .await,
        );
    }
    for client in &mut clients {
        let mut join = json!({"type": "join", "room": room});
        if let Some(since) = since {
            join["since"] = since.into();
        }
        client.send_json(join).await;
    }
    clients
}

fn bodies(joined: &Value) -> Vec<String> {
    joined["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn simultaneous_joins_of_a_room_make_one_history_read_and_later_joins_none() {
    let cluster = Cluster::new().await;
    let (history, url) = SlowHistory::start().await;
    let gateway = gateway(&cluster, &url, 0).await;

    let mut clients = join_together(&gateway, "storm", 20, None).await;
    // Every join is waiting on the one read (given time to arrive), then it answers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    history.open();
    for client in &mut clients {
        let joined = client.next_of("joined").await;
        assert_eq!(bodies(&joined), vec!["stored before"]);
    }
    assert_eq!(history.reads(), 1, "the joins shared one read");

    // The room's memory is complete now: a message sent meanwhile and the stored one are what
    // a later join gets, without another read.
    clients[0]
        .send_message("storm", "c-live", "sent live")
        .await;
    clients[0].next_of("ack").await;
    let mut late = gateway.connect("u-late", "late").await;
    let joined = late.join("storm").await;
    assert_eq!(bodies(&joined), vec!["stored before", "sent live"]);
    assert_eq!(history.reads(), 1, "a complete room is joined from memory");
}

#[tokio::test]
async fn joins_within_the_grace_share_the_first_read_and_get_what_was_stored_after_it() {
    let cluster = Cluster::new().await;
    let (history, url) = SlowHistory::start().await;
    let gateway = gateway(&cluster, &url, 2_500).await;
    history.open();

    let mut first = gateway.connect("u-1", "one").await;
    let joined = first.join("fresh").await;
    assert_eq!(bodies(&joined), vec!["stored before"]);
    let mut second = gateway.connect("u-2", "two").await;
    let joined = second.join("fresh").await;
    assert_eq!(bodies(&joined), vec!["stored before"]);
    assert_eq!(
        history.reads(),
        1,
        "the second join is answered from the first read"
    );

    // A message that never came through the binding (published just before it), stored only
    // after the first read.
    history.store("stored late");
    for client in [&mut first, &mut second] {
        let late = client.next_of("message").await;
        assert_eq!(late["body"], "stored late", "brought by the settling read");
    }
    assert_eq!(
        history.reads(),
        2,
        "one settling read once the grace has passed"
    );

    let mut third = gateway.connect("u-3", "three").await;
    let joined = third.join("fresh").await;
    assert_eq!(bodies(&joined), vec!["stored before", "stored late"]);
    assert_eq!(history.reads(), 2, "a settled room is joined from memory");
}

#[tokio::test]
async fn simultaneous_catch_ups_from_the_same_message_make_one_history_read() {
    let cluster = Cluster::new().await;
    let (history, url) = SlowHistory::start().await;
    let gateway = gateway(&cluster, &url, 0).await;
    // A first member keeps the room bound, so every catch-up below is of one binding.
    let mut first = gateway.connect("u-first", "first").await;
    first
        .send_json(json!({"type": "join", "room": "back"}))
        .await;
    history.open();
    first.next_of("joined").await;
    let reads_before = history.reads();
    history.close();

    // Later than every id the room holds, so only the read's answer is newer.
    let later = |n: u128| {
        let ms = u64::try_from(chrono::Utc::now().timestamp_millis()).expect("after 1970");
        ulid::Ulid::from_parts(ms + 3_600_000, n).to_string()
    };
    let since = later(1);
    let mut clients = join_together(&gateway, "back", 10, Some(&since)).await;
    let other = later(2);
    let mut stray = gateway.connect("u-stray", "stray").await;
    stray
        .send_json(json!({"type": "join", "room": "back", "since": other}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    history.open();
    for client in clients.iter_mut().chain([&mut stray]) {
        let joined = client.next_of("joined").await;
        assert_eq!(bodies(&joined), vec!["stored before"]);
    }
    assert_eq!(
        history.reads() - reads_before,
        2,
        "one read for the ten catch-ups from the same message, one for the other"
    );
}
