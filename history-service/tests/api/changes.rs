//! Message changes: applied if newer whatever the order, announced to the room, erased on
//! delete, served in history and in the catch-up's change feed; the check gateways ask.

use std::time::Duration;

use chrono::Utc;
use common::domain::{
    ClientMessageId, Emoji, MessageBody, MessageId, RoomId, UserId, UserRef, Username,
};
use common::event::{Change, ChangeEvent, ChatMessage, ReplyRef};
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with, user_token};

fn user(name: &str) -> UserRef {
    UserRef {
        id: UserId::parse(format!("u-{name}")).expect("user id"),
        username: Username::parse(name.to_string()).expect("username"),
    }
}

fn message_by(name: &str, room: &str, body: &str) -> ChatMessage {
    ChatMessage::new(
        MessageId::from_ulid(ulid::Ulid::new()),
        RoomId::parse(room.to_string()).expect("room"),
        ClientMessageId::parse(ulid::Ulid::new().to_string()).expect("client id"),
        user(name),
        MessageBody::parse(body.to_string()).expect("body"),
        Utc::now(),
    )
}

/// A change of `message` by `name`; `order` orders the changes of a test (a greater one is
/// newer).
fn change(message: &ChatMessage, name: &str, change: Change, order: u64) -> ChangeEvent {
    ChangeEvent {
        v: 1,
        room: message.room.clone(),
        id: message.id,
        change_id: MessageId::from_ulid(ulid::Ulid::from_parts(
            1_800_000_000_000 + order,
            u128::from(order),
        )),
        client_id: ClientMessageId::parse(ulid::Ulid::new().to_string()).expect("client id"),
        by: user(name),
        at: Utc::now(),
        change,
    }
}

fn edit(body: &str) -> Change {
    Change::Edit {
        body: MessageBody::parse(body.to_string()).expect("body"),
    }
}

fn react(emoji: &str, on: bool) -> Change {
    Change::React {
        emoji: Emoji::parse(emoji.to_string()).expect("emoji"),
        on,
    }
}

/// `GET /api/rooms/{room}/messages/{id}` as `name`.
async fn read_message(app: &TestApp, room: &str, id: MessageId, name: &str) -> Value {
    app.http
        .get(format!("{}/api/rooms/{room}/messages/{id}", app.address))
        .bearer_auth(user_token(name))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json")
}

/// Waits until the stored message reaches `version` (changes are stored within
/// milliseconds; the bound only keeps a failing test from hanging).
async fn wait_for_version(app: &TestApp, room: &str, id: MessageId, version: u64) -> Value {
    for _ in 0..100 {
        let message = read_message(app, room, id, "alice").await;
        if message["version"].as_u64() >= Some(version) {
            return message;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("message {id} never reached version {version}");
}

async fn check(app: &TestApp, room: &str, id: MessageId, name: &str, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(format!(
            "{}/api/rooms/{room}/messages/{id}/check",
            app.address
        ))
        .bearer_auth(user_token(name))
        .json(&body)
        .send()
        .await
        .expect("answered");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A room `room` created by alice (its owner) with bob as a member.
async fn room_with_alice_and_bob(app: &TestApp, room: &str) {
    assert_eq!(app.join(room, &user_token("alice")).await.status(), 200);
    assert_eq!(app.join(room, &user_token("bob")).await.status(), 200);
}

#[tokio::test]
async fn changes_in_any_order_and_twice_end_in_the_newest_state() {
    let app = spawn_app().await;
    room_with_alice_and_bob(&app, "lobby").await;
    let mut events = app.listen_to_room_events().await;
    let m = message_by("alice", "lobby", "first words");
    app.publish(&m).await;
    app.wait_for_stored(1).await;

    let older_edit = change(&m, "alice", edit("older edit"), 1);
    let newer_edit = change(&m, "alice", edit("newer edit"), 2);
    let bob_on = change(&m, "bob", react("👍", true), 3);
    // Newest first, then the older edit, then a redelivery.
    app.publish_change(&newer_edit).await;
    app.publish_change(&older_edit).await;
    app.publish_change(&bob_on).await;
    app.publish_change(&newer_edit).await;

    let state = wait_for_version(&app, "lobby", m.id, 3).await;
    assert_eq!(state["body"], "newer edit");
    assert!(state["edited_at"].is_string());
    assert_eq!(
        state["reactions"],
        json!([{"emoji": "👍", "count": 1, "me": false}])
    );
    let bobs = read_message(&app, "lobby", m.id, "bob").await;
    assert_eq!(bobs["reactions"][0]["me"], true);

    let edited = events
        .expect("msg.lobby.evt", |e| {
            e["kind"] == "message_changed" && e["change"]["type"] == "edited"
        })
        .await;
    assert_eq!(edited["change"]["body"], "newer edit");
    assert_eq!(edited["change"]["version"], 2);
    let reactions = events
        .expect("msg.lobby.evt", |e| e["change"]["type"] == "reactions")
        .await;
    assert_eq!(
        reactions["change"]["reactions"],
        json!([{"emoji": "👍", "count": 1}])
    );
    assert_eq!(reactions["change"]["by"]["id"], "u-bob");
    assert_eq!(reactions["change"]["on"], true);

    // An "off" older than the "on" it would undo changes nothing.
    let stale_off = change(&m, "bob", react("👍", false), 0);
    app.publish_change(&stale_off).await;
    let final_edit = change(&m, "alice", edit("last"), 9);
    app.publish_change(&final_edit).await;
    let state = wait_for_version(&app, "lobby", m.id, 4).await;
    assert_eq!(state["body"], "last");
    assert_eq!(state["reactions"][0]["count"], 1);
    assert_eq!(state["version"], 4);
}

#[tokio::test]
async fn a_delete_erases_the_text_from_every_collection_and_leaves_a_tombstone() {
    let app = spawn_app().await;
    room_with_alice_and_bob(&app, "lobby").await;
    let secret = "my password is hunter2";
    let m = message_by("alice", "lobby", secret);
    app.publish(&m).await;
    let mut reply = message_by("bob", "lobby", "what did you say?");
    reply.reply_to = Some(ReplyRef {
        id: m.id,
        author: m.author.clone(),
        excerpt: Some(secret.to_string()),
        deleted: false,
    });
    app.publish(&reply).await;
    app.wait_for_stored(2).await;
    app.publish_change(&change(&m, "alice", edit("my password is hunter3"), 1))
        .await;
    let edited = wait_for_version(&app, "lobby", m.id, 2).await;
    assert_eq!(edited["body"], "my password is hunter3");
    let reply_state = read_message(&app, "lobby", reply.id, "bob").await;
    assert_eq!(reply_state["reply_to"]["excerpt"], "my password is hunter3");
    assert_eq!(reply_state["reply_to"]["author"]["id"], "u-alice");

    app.publish_change(&change(&m, "alice", Change::Delete, 2))
        .await;
    let tombstone = wait_for_version(&app, "lobby", m.id, 3).await;
    assert_eq!(tombstone["deleted"], true);
    assert_eq!(tombstone["deleted_by"]["id"], "u-alice");
    assert!(tombstone.get("body").is_none(), "{tombstone}");
    assert!(tombstone.get("edited_at").is_none());
    // Edits and reactions after the delete change nothing.
    app.publish_change(&change(&m, "alice", edit("back again"), 3))
        .await;
    app.publish_change(&change(&m, "bob", react("👍", true), 4))
        .await;
    let marker = message_by("alice", "lobby", "marker");
    app.publish(&marker).await;
    app.wait_for_stored(3).await;
    let still = read_message(&app, "lobby", m.id, "alice").await;
    assert_eq!(still["version"], 3);
    assert!(still.get("body").is_none());

    let reply_state = read_message(&app, "lobby", reply.id, "bob").await;
    assert_eq!(reply_state["reply_to"]["deleted"], true);
    assert!(reply_state["reply_to"].get("excerpt").is_none());

    // No document of any collection holds the text.
    for collection in app.db.list_collection_names().await.expect("collections") {
        let documents: Vec<Document> = {
            use futures_util::TryStreamExt;
            app.db
                .collection::<Document>(&collection)
                .find(doc! {})
                .await
                .expect("find")
                .try_collect()
                .await
                .expect("documents")
        };
        for document in documents {
            let text = document.to_string();
            assert!(
                !text.contains("hunter"),
                "{collection} still holds the text: {text}"
            );
        }
    }
}

#[tokio::test]
async fn the_check_answers_each_refusal_with_its_code() {
    let app = spawn_app_with(|settings| settings.messages.edit_window_secs = 60).await;
    room_with_alice_and_bob(&app, "lobby").await;
    let mine = message_by("bob", "lobby", "bob's");
    let mut old = message_by("bob", "lobby", "old");
    old.sent_at = Utc::now() - chrono::Duration::minutes(5);
    let gone = message_by("bob", "lobby", "gone");
    let elsewhere = message_by("alice", "other", "elsewhere");
    for m in [&mine, &old, &gone, &elsewhere] {
        app.publish(m).await;
    }
    app.wait_for_stored(4).await;
    app.publish_change(&change(&gone, "bob", Change::Delete, 1))
        .await;
    wait_for_version(&app, "lobby", gone.id, 2).await;

    let code = |answer: &(u16, Value)| {
        (
            answer.0,
            answer.1["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    };
    let edit = json!({"action": "edit"});
    assert_eq!(
        check(&app, "lobby", mine.id, "bob", edit.clone()).await.0,
        200
    );
    assert_eq!(
        code(&check(&app, "lobby", mine.id, "alice", edit.clone()).await),
        (403, "forbidden".into())
    );
    assert_eq!(
        code(&check(&app, "lobby", old.id, "bob", edit.clone()).await),
        (409, "edit_window_passed".into())
    );
    assert_eq!(
        code(&check(&app, "lobby", gone.id, "bob", edit.clone()).await),
        (409, "message_deleted".into())
    );
    let unknown = MessageId::from_ulid(ulid::Ulid::new());
    assert_eq!(
        code(&check(&app, "lobby", unknown, "bob", edit.clone()).await),
        (404, "not_found".into())
    );
    // A message of another room is not found in this one.
    assert_eq!(
        code(
            &check(
                &app,
                "lobby",
                elsewhere.id,
                "bob",
                json!({"action": "reply"})
            )
            .await
        ),
        (404, "not_found".into())
    );
    let reply = check(&app, "lobby", mine.id, "alice", json!({"action": "reply"})).await;
    assert_eq!(reply.0, 200);
    assert_eq!(reply.1["excerpt"], "bob's");
    assert_eq!(reply.1["author"]["id"], "u-bob");

    // Deleting: the author, or the owner (alice created the room); not another member.
    let carol = user_token("carol");
    assert_eq!(app.join("lobby", &carol).await.status(), 200);
    assert_eq!(
        code(&check(&app, "lobby", mine.id, "carol", json!({"action": "delete"})).await),
        (403, "forbidden".into())
    );
    assert_eq!(
        check(&app, "lobby", mine.id, "alice", json!({"action": "delete"}))
            .await
            .0,
        200
    );

    let react = |emoji: &str| json!({"action": "react", "emoji": emoji, "on": true});
    assert_eq!(
        code(&check(&app, "lobby", mine.id, "bob", react("xx")).await),
        (422, "invalid_emoji".into())
    );
    assert_eq!(
        code(&check(&app, "lobby", gone.id, "bob", react("👍")).await),
        (409, "message_deleted".into())
    );
    let twenty = [
        "😀", "😁", "😂", "🤣", "😃", "😄", "😅", "😆", "😉", "😊", "😋", "😎", "😍", "😘", "🥰",
        "😗", "😙", "😚", "🙂", "🤗",
    ];
    for (n, emoji) in twenty.iter().enumerate() {
        app.publish_change(&change(&mine, "bob", react_change(emoji), n as u64 + 1))
            .await;
    }
    wait_for_version(&app, "lobby", mine.id, 21).await;
    assert_eq!(
        code(&check(&app, "lobby", mine.id, "alice", react("🤩")).await),
        (409, "too_many_reactions".into())
    );
    assert_eq!(
        check(&app, "lobby", mine.id, "alice", react("😀")).await.0,
        200
    );
    // Someone who is not a member of a public room is refused like for history.
    let outsider = check(&app, "other", elsewhere.id, "dave", edit).await;
    assert_ne!(outsider.0, 200);
}

fn react_change(emoji: &str) -> Change {
    react(emoji, true)
}

#[tokio::test]
async fn a_catch_up_carries_the_changes_of_messages_before_its_cursor() {
    let app = spawn_app().await;
    room_with_alice_and_bob(&app, "lobby").await;
    // Ids of one millisecond do not sort by creation: a millisecond apart, they do.
    let old = message_by("alice", "lobby", "last week");
    tokio::time::sleep(Duration::from_millis(2)).await;
    let untouched = message_by("alice", "lobby", "untouched");
    tokio::time::sleep(Duration::from_millis(2)).await;
    let cursor = message_by("bob", "lobby", "the last one bob saw");
    for m in [&old, &untouched, &cursor] {
        app.publish(m).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.wait_for_stored(3).await;
    // Changes before the cursor's window do not come back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.publish_change(&change(&old, "alice", edit("last week, edited"), 1))
        .await;
    app.publish_change(&change(&old, "bob", react("🎉", true), 2))
        .await;
    wait_for_version(&app, "lobby", old.id, 3).await;

    let token = user_token("bob");
    let page: Value = app
        .read_history(
            "lobby",
            &format!("?after={}&late_window_ms=100&changes=true", cursor.id),
            Some(&token),
        )
        .await
        .json()
        .await
        .expect("json");
    let changes = page["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{page}");
    assert_eq!(changes[0]["id"], old.id.to_string());
    assert_eq!(changes[0]["body"], "last week, edited");
    assert_eq!(changes[0]["version"], 3);
    assert_eq!(changes[0]["reactions"][0]["me"], true);
    assert_eq!(page["changes_truncated"], false);

    // A later changes_since leaves them out.
    let later = Utc::now().timestamp_millis() + 1000;
    let page: Value = app
        .read_history(
            "lobby",
            &format!(
                "?after={}&late_window_ms=100&changes=true&changes_since={later}",
                cursor.id
            ),
            Some(&token),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(page["changes"], json!([]));

    // The change feed pages the same.
    let feed: Value = app
        .http
        .get(format!(
            "{}/api/rooms/lobby/changes?after={}",
            app.address,
            Utc::now().timestamp_millis() - 60_000
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(feed["changes"][0]["id"], old.id.to_string());
    assert_eq!(feed["has_more"], false);
}
