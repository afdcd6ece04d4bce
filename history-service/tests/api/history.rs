use common::event::MessageEvent;
use common::testing;
use secrecy::SecretString;
use serde_json::Value;

use crate::helpers::{TestApp, message, spawn_app, spawn_app_unready_with, spawn_app_with};

async fn broker_proxy() -> testing::BrokerProxy {
    let settings = history_service::settings::Settings::load().expect("settings load");
    testing::BrokerProxy::start(&settings.amqp.connection).await
}

/// The ids of the lobby's first history page.
async fn lobby_ids(app: &TestApp) -> Vec<String> {
    let token = testing::token("user-1", "alice");
    let body: Value = app
        .get_history("lobby", "", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    ids(&body)
}

fn ids(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .expect("messages array")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn consumed_messages_are_stored_and_paged_oldest_first() {
    let app = spawn_app().await;
    let token = testing::token("user-1", "alice");
    let sent: Vec<_> = (0..5)
        .map(|i| message("lobby", &format!("hello {i}")))
        .collect();
    for m in &sent {
        app.publish(m).await;
    }
    app.publish(&message("elsewhere", "other room")).await;
    app.wait_for_stored(6).await;

    let response = app.get_history("lobby", "", Some(&token)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    // Ids of one millisecond are not ordered among themselves; id order is the served order.
    let mut expected: Vec<String> = sent.iter().map(|m| m.id.to_string()).collect();
    expected.sort();
    assert_eq!(ids(&body), expected);
    assert_eq!(body["has_more"], false);
    let first = sent
        .iter()
        .find(|m| m.id.to_string() == expected[0])
        .expect("sent");
    assert_eq!(
        body["messages"][0]["body"],
        first.body.as_ref().expect("body").as_str()
    );
    assert_eq!(body["messages"][0]["author"]["username"], "alice");
    assert!(body["messages"][0]["sent_at"].is_string());

    let latest: Value = app
        .get_history("lobby", "?limit=2", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&latest), expected[3..].to_vec());
    assert_eq!(latest["has_more"], true);

    let older: Value = app
        .get_history(
            "lobby",
            &format!("?limit=2&before={}", expected[3]),
            Some(&token),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&older), expected[1..3].to_vec());

    let newer: Value = app
        .get_history("lobby", &format!("?after={}", expected[2]), Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&newer), expected[3..].to_vec());
}

#[tokio::test]
async fn a_redelivered_message_is_stored_once() {
    let app = spawn_app().await;
    let m = message("lobby", "only once");
    app.publish(&m).await;
    app.publish(&m).await;
    let marker = message("lobby", "marker");
    app.publish(&marker).await;
    app.wait_for_stored(2).await;
    // The marker was published after both copies on one channel, so both were consumed.
    let body: Value = app
        .get_history("lobby", "", Some(&testing::token("u", "alice")))
        .await
        .json()
        .await
        .expect("json");
    let mut expected = vec![m.id.to_string(), marker.id.to_string()];
    expected.sort();
    assert_eq!(ids(&body), expected);
}

#[tokio::test]
async fn an_unreadable_message_is_dropped_without_blocking_the_queue() {
    let app = spawn_app().await;
    app.publish_raw("lobby", b"{not json").await;
    app.publish_raw("lobby", br#"{"v":1,"id":"x","room":"lobby"}"#)
        .await;
    let good = message("lobby", "after garbage");
    app.publish(&good).await;
    app.wait_for_stored(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.stored_count().await, 1);
}

#[tokio::test]
async fn history_requires_a_valid_token() {
    let app = spawn_app().await;
    let mut expired = testing::claims("u", "alice");
    expired.exp = expired.iat - 3600;
    let mut wrong_audience = testing::claims("u", "alice");
    wrong_audience.aud = "someone-else".into();
    let valid = testing::token("u", "alice");
    let tampered = format!("{}x", &valid[..valid.len() - 1]);
    for token in [
        None,
        Some("garbage".to_string()),
        Some(testing::sign(&expired, testing::TEST_KID)),
        Some(testing::sign(&wrong_audience, testing::TEST_KID)),
        Some(testing::sign(&testing::claims("u", "alice"), "unknown-kid")),
        Some(tampered),
    ] {
        let response = app.get_history("lobby", "", token.as_deref()).await;
        assert_eq!(response.status(), 401, "{token:?}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    assert_eq!(
        app.get_history("lobby", "", Some(&valid)).await.status(),
        200
    );
}

fn after_with(published_after: &str) -> String {
    format!(
        "?after={}&published_after={published_after}",
        ulid::Ulid::new()
    )
}

#[tokio::test]
async fn a_catch_up_also_returns_earlier_ids_published_after_the_given_time() {
    let app = spawn_app().await;
    let token = testing::token("user-1", "alice");
    // `late` gets its id first but is published last, after `cursor` and `newer`.
    // Ids of one millisecond are not ordered among themselves: a few milliseconds apart.
    let mut made = Vec::new();
    for body in [
        "id made early, published late",
        "published early",
        "the client saw this one",
        "after the cursor",
    ] {
        made.push(message("lobby", body));
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let [late, old, cursor, newer] = <[_; 4]>::try_from(made).expect("four messages");
    for m in [&old, &cursor, &newer] {
        app.publish(m).await;
    }
    let cutoff = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    app.publish(&late).await;
    app.wait_for_stored(4).await;

    let plain: Value = app
        .get_history("lobby", &format!("?after={}", cursor.id), Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&plain), vec![newer.id.to_string()]);

    let with_late: Value = app
        .get_history(
            "lobby",
            &format!(
                "?after={}&published_after={}",
                cursor.id,
                cutoff.timestamp_millis()
            ),
            Some(&token),
        )
        .await
        .json()
        .await
        .expect("json");
    let expected = vec![late.id.to_string(), newer.id.to_string()];
    assert_eq!(
        ids(&with_late),
        expected,
        "the late message, in id order, then the newer one; not the old one"
    );
    assert_eq!(with_late["published_after"], cutoff.timestamp_millis());

    // Relative to when the cursor was published: `old` was published before it, `late` after.
    let window: Value = app
        .get_history(
            "lobby",
            &format!("?after={}&late_window_ms=0", cursor.id),
            Some(&token),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ids(&window), expected);
    let cursor_published = window["published_after"].as_i64().expect("time used");
    assert!(cursor_published <= cutoff.timestamp_millis());
    assert!(cursor_published >= cursor.sent_at.timestamp_millis());
}

/// `n` messages of `room` in id order, published at the given Unix milliseconds.
fn published(room: &str, at_ms: impl Fn(usize) -> i64, n: usize) -> Vec<MessageEvent> {
    let mut events: Vec<MessageEvent> = (0..n)
        .map(|i| MessageEvent::new(message(room, &format!("m{i}"))))
        .collect();
    events.sort_by_key(|e| e.message.id);
    for (i, event) in events.iter_mut().enumerate() {
        event.published_at = chrono::DateTime::from_timestamp_millis(at_ms(i));
    }
    events
}

fn event_ids(events: &[MessageEvent]) -> Vec<String> {
    events.iter().map(|e| e.message.id.to_string()).collect()
}

#[tokio::test]
async fn a_catch_up_counts_messages_published_late_inside_its_limit() {
    let app = spawn_app().await;
    let token = testing::token("user-1", "alice");
    let get = |query: String| {
        let (app, token) = (&app, &token);
        async move {
            let response = app.get_history("lobby", &query, Some(token)).await;
            assert_eq!(response.status(), 200, "{query}");
            response.json::<Value>().await.expect("json")
        }
    };
    // 50 messages up to the cursor (itself included), every one published after time 0,
    // and 20 after it.
    let events = published("lobby", |_| 1_000, 70);
    app.store_directly(&events).await;
    let all = event_ids(&events);
    let cursor = &all[49];

    let page = get(format!("?after={cursor}&published_after=0&limit=10")).await;
    assert_eq!(
        ids(&page),
        all[..10].to_vec(),
        "the first 10 late ones only"
    );
    assert_eq!(page["has_more"], true);
    assert_eq!(page["published_after"], 0);

    // Paging on from the last id, as a client told `truncated` does, reaches everything.
    let mut seen = ids(&page);
    for _ in 0..10 {
        let last = seen.last().expect("a message").clone();
        let page = get(format!("?after={last}&limit=10")).await;
        seen.extend(ids(&page));
        if page["has_more"] != true {
            break;
        }
    }
    assert_eq!(seen, all, "nothing skipped, nothing twice");

    // Three late ones among ten up to the cursor: they come first, then the messages after
    // the cursor fill the page.
    let late = [3, 5, 7];
    let events = published(
        "mixed",
        |i| match i {
            i if late.contains(&i) => 5_000,
            0..=9 => 1_000,
            _ => 2_000,
        },
        23,
    );
    app.store_directly(&events).await;
    let all = event_ids(&events);
    let response = app
        .get_history(
            "mixed",
            &format!("?after={}&published_after=3000&limit=10", all[9]),
            Some(&token),
        )
        .await;
    let page: Value = response.json().await.expect("json");
    let expected: Vec<String> = late
        .iter()
        .map(|&i| all[i].clone())
        .chain(all[10..17].iter().cloned())
        .collect();
    assert_eq!(ids(&page), expected);
    assert_eq!(page["has_more"], true);
}

#[tokio::test]
async fn bad_room_ids_limits_and_cursors_are_422() {
    let app = spawn_app().await;
    let token = testing::token("u", "alice");
    for (room, query) in [
        ("bad.room", String::new()),
        ("lobby", "?limit=0".into()),
        ("lobby", "?limit=101".into()),
        ("lobby", "?limit=ten".into()),
        ("lobby", "?before=not-an-id".into()),
        ("lobby", "?published_after=0".into()),
        ("lobby", after_with("soon")),
        ("lobby", after_with("-1")),
        ("lobby", format!("{}&late_window_ms=5", after_with("1"))),
        ("lobby", "?late_window_ms=5".into()),
    ] {
        let response = app.get_history(room, &query, Some(&token)).await;
        assert_eq!(response.status(), 422, "{room}{query}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "validation_failed");
    }
}

#[tokio::test]
async fn metrics_count_stored_messages_duplicates_and_requests() {
    let app = spawn_app().await;
    let m = message("lobby", "counted");
    app.publish(&m).await;
    app.publish(&m).await;
    app.publish(&message("lobby", "second")).await;
    app.wait_for_stored(2).await;
    let token = testing::token("u", "alice");
    assert_eq!(
        app.get_history("lobby", "", Some(&token)).await.status(),
        200
    );
    let metrics = |text: &str, needle: &str| text.contains(needle);
    let mut text = String::new();
    for _ in 0..50 {
        text = app.metrics().await;
        if metrics(&text, "history_messages_stored_total 2")
            && metrics(&text, "history_duplicates_total 1")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(metrics(&text, "history_messages_stored_total 2"), "{text}");
    assert!(metrics(&text, "history_duplicates_total 1"), "{text}");
    assert!(metrics(&text, "history_batch_size_count"), "{text}");
    assert!(metrics(&text, "history_lag_seconds_count"), "{text}");
    assert!(
        metrics(
            &text,
            r#"http_request_duration_seconds_count{method="GET",route="/api/rooms/{room}/messages",status="200"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn the_public_port_does_not_serve_metrics() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json error body");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn one_message_is_found_by_id_in_its_room_only() {
    let app = spawn_app().await;
    let token = testing::token("user-1", "alice");
    let stored = message("lobby", "look me up");
    app.publish(&stored).await;
    app.wait_for_stored(1).await;

    let found = app
        .get_history("lobby", &format!("/{}", stored.id), Some(&token))
        .await;
    assert_eq!(found.status(), 200);
    let body: Value = found.json().await.expect("json");
    assert_eq!(body["id"], stored.id.to_string());
    assert_eq!(body["body"], "look me up");

    let cases = [
        ("elsewhere", stored.id.to_string(), 404, "not_found"),
        ("lobby", ulid::Ulid::new().to_string(), 404, "not_found"),
        ("lobby", "not-an-id".to_string(), 422, "validation_failed"),
    ];
    for (room, id, status, code) in cases {
        let response = app.get_history(room, &format!("/{id}"), Some(&token)).await;
        assert_eq!(response.status(), status, "{room}/{id}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], code);
    }
    let anonymous = app
        .get_history("lobby", &format!("/{}", stored.id), None)
        .await;
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn a_broker_that_accepts_but_never_answers_is_given_up_on_and_consuming_starts_on_a_new_connection()
 {
    let proxy = broker_proxy().await;
    proxy.silence_next();
    // Ready only once a connection attempt after the silent one is consuming.
    let app = spawn_app_with(|settings| {
        settings.amqp.connection.uri = SecretString::from(proxy.uri());
        settings.amqp.connection.setup_timeout_ms = 300;
    })
    .await;

    let sent = message("lobby", "stored through the second connection");
    app.publish(&sent).await;
    app.wait_for_stored(1).await;
    assert_eq!(lobby_ids(&app).await, vec![sent.id.to_string()]);
}

#[tokio::test]
async fn a_delivery_lost_with_its_connection_is_stored_after_the_consumer_reconnects() {
    let proxy = broker_proxy().await;
    let app = spawn_app_with(|settings| {
        settings.amqp.connection.uri = SecretString::from(proxy.uri());
    })
    .await;

    // The broker sends the delivery, the consumer never receives it, the connection is cut.
    proxy.hold();
    let sent = message("lobby", "sent while the wire was cut");
    app.publish(&sent).await;
    proxy.cut_once_held().await;

    app.wait_for_stored(1).await;
    assert_eq!(lobby_ids(&app).await, vec![sent.id.to_string()]);
}

#[tokio::test]
async fn a_valid_token_is_answered_503_not_401_while_the_token_keys_cannot_be_fetched() {
    let app = spawn_app_unready_with(|settings| {
        settings.auth.url = "http://127.0.0.1:9".to_string();
    })
    .await;
    // Not ready while it cannot check a token.
    let ready = app
        .http
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .expect("readiness answered");
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["keys"], false);
    let token = testing::token("user-1", "alice");
    // The first request fetches and fails; the second comes before the next fetch is due.
    for attempt in 0..2 {
        let response = app.get_history("lobby", "", Some(&token)).await;
        assert_eq!(response.status(), 503, "attempt {attempt}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "unavailable", "attempt {attempt}");
    }
}
