//! Message changes (edit, delete, react, reply) through the real services: every refusal
//! with its code, live fan-out across gateways, and a client that was offline while messages
//! it holds changed, catching up with `join … since` on another gateway.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, System, SystemOptions};

/// The `ack` or `error` answering the frame with `client_id`.
async fn answer(client: &mut Client, client_id: &str) -> Value {
    client
        .next_matching(|frame| {
            (frame["type"] == "ack" || frame["type"] == "error") && frame["client_id"] == client_id
        })
        .await
        .unwrap_or_else(|| panic!("no answer to {client_id} within 10 s"))
}

/// The error code answering the frame with `client_id`, or `"ack"`.
async fn outcome(client: &mut Client, client_id: &str) -> String {
    let frame = answer(client, client_id).await;
    if frame["type"] == "ack" {
        "ack".to_string()
    } else {
        frame["code"].as_str().unwrap_or("?").to_string()
    }
}

async fn send(client: &mut Client, room: &str, client_id: &str, body: &str) -> String {
    client.send_message(room, client_id, body).await;
    let ack = answer(client, client_id).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    ack["id"].as_str().expect("id").to_string()
}

fn edit(room: &str, id: &str, body: &str, client_id: &str) -> Value {
    json!({"type": "edit", "room": room, "id": id, "body": body, "client_id": client_id})
}

fn delete(room: &str, id: &str, client_id: &str) -> Value {
    json!({"type": "delete", "room": room, "id": id, "client_id": client_id})
}

fn react(room: &str, id: &str, emoji: &str, on: bool, client_id: &str) -> Value {
    json!({"type": "react", "room": room, "id": id, "emoji": emoji, "on": on, "client_id": client_id})
}

/// `GET /api/rooms/{room}/messages/{id}` through gateway `via`, once it is stored.
async fn stored(system: &System, via: usize, token: &str, room: &str, id: &str) -> Value {
    let http = reqwest::Client::new();
    let url = format!(
        "{}/api/rooms/{room}/messages/{id}",
        system.gateways[via].url()
    );
    for _ in 0..100 {
        if let Ok(response) = http.get(&url).bearer_auth(token).send().await
            && response.status() == 200
        {
            return response.json().await.expect("json");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("message {id} never stored");
}

/// The stored message once its version reaches `version` (changes are stored within
/// milliseconds; the bound only keeps a failing test from hanging).
async fn at_version(system: &System, token: &str, room: &str, id: &str, version: u64) -> Value {
    for _ in 0..100 {
        let message = stored(system, 0, token, room, id).await;
        if message["version"].as_u64() >= Some(version) {
            return message;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("message {id} never reached version {version}");
}

#[tokio::test]
async fn each_bad_change_is_refused_with_its_code() {
    let mut options = SystemOptions::new(1);
    options.history_env = vec![("HISTORY__MESSAGES__EDIT_WINDOW_SECS".into(), "1".into())];
    let system = System::start_with(&options).await;
    let alice_token = system.user(0, "alice").await;
    let bob_token = system.user(0, "bob").await;
    let mut alice = system.connect(0, &alice_token).await;
    let mut bob = system.connect(0, &bob_token).await;
    // alice joins first: the room is created with her as its owner.
    alice.join("lobby").await;
    bob.join("lobby").await;
    alice.join("other").await;

    let alices = send(&mut alice, "lobby", "a-1", "alice's words").await;
    let bobs = send(&mut bob, "lobby", "b-1", "bob's words").await;
    let elsewhere = send(&mut alice, "other", "a-2", "in another room").await;
    stored(&system, 0, &alice_token, "lobby", &alices).await;
    stored(&system, 0, &bob_token, "lobby", &bobs).await;
    stored(&system, 0, &alice_token, "other", &elsewhere).await;

    // Someone else's message, without the role.
    bob.send_json(edit("lobby", &alices, "mine now", "b-2"))
        .await;
    assert_eq!(outcome(&mut bob, "b-2").await, "forbidden");
    bob.send_json(delete("lobby", &alices, "b-3")).await;
    assert_eq!(outcome(&mut bob, "b-3").await, "forbidden");
    // Unknown id.
    let unknown = ulid::Ulid::new().to_string();
    bob.send_json(edit("lobby", &unknown, "x", "b-4")).await;
    assert_eq!(outcome(&mut bob, "b-4").await, "not_found");
    bob.send_json(react("lobby", &unknown, "👍", true, "b-5"))
        .await;
    assert_eq!(outcome(&mut bob, "b-5").await, "not_found");
    // A reply to a message of another room.
    bob.send_json(json!({"type": "send", "room": "lobby", "client_id": "b-6", "body": "re", "reply_to": elsewhere}))
        .await;
    assert_eq!(outcome(&mut bob, "b-6").await, "invalid_reply_to");
    // Bodies and emoji that break their rule.
    bob.send_json(edit("lobby", &bobs, " ", "b-7")).await;
    assert_eq!(outcome(&mut bob, "b-7").await, "invalid_body");
    bob.send_json(edit("lobby", &bobs, &"x".repeat(4001), "b-8"))
        .await;
    assert_eq!(outcome(&mut bob, "b-8").await, "invalid_body");
    bob.send_json(react("lobby", &bobs, "👍👍", true, "b-9"))
        .await;
    assert_eq!(outcome(&mut bob, "b-9").await, "invalid_emoji");
    // After the edit window (1 s here).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    alice
        .send_json(edit("lobby", &alices, "too late", "a-3"))
        .await;
    assert_eq!(outcome(&mut alice, "a-3").await, "edit_window_passed");

    // The owner deletes bob's message; edits and reactions of it are refused from then on.
    alice.send_json(delete("lobby", &bobs, "a-4")).await;
    assert_eq!(outcome(&mut alice, "a-4").await, "ack");
    let tombstone = at_version(&system, &bob_token, "lobby", &bobs, 2).await;
    assert_eq!(tombstone["deleted"], true);
    assert!(tombstone.get("body").is_none());
    bob.send_json(react("lobby", &bobs, "👍", true, "b-10"))
        .await;
    assert_eq!(outcome(&mut bob, "b-10").await, "message_deleted");
    bob.send_json(edit("lobby", &bobs, "back", "b-11")).await;
    assert_eq!(outcome(&mut bob, "b-11").await, "message_deleted");

    // Twenty distinct emoji, then no twenty-first (paced under the rate limit).
    let twenty = [
        "😀", "😁", "😂", "🤣", "😃", "😄", "😅", "😆", "😉", "😊", "😋", "😎", "😍", "😘", "🥰",
        "😗", "😙", "😚", "🙂", "🤗",
    ];
    for (n, emoji) in twenty.iter().enumerate() {
        let client_id = format!("r-{n}");
        bob.send_json(react("lobby", &alices, emoji, true, &client_id))
            .await;
        assert_eq!(outcome(&mut bob, &client_id).await, "ack");
    }
    at_version(&system, &bob_token, "lobby", &alices, 21).await;
    bob.send_json(react("lobby", &alices, "🤩", true, "r-20"))
        .await;
    assert_eq!(outcome(&mut bob, "r-20").await, "too_many_reactions");
    // One of the twenty again (by someone else) is fine.
    alice
        .send_json(react("lobby", &alices, "😀", true, "a-5"))
        .await;
    assert_eq!(outcome(&mut alice, "a-5").await, "ack");
}

#[tokio::test]
async fn a_flood_of_reactions_meets_the_per_connection_rate_limit() {
    let mut options = SystemOptions::new(1);
    // A rate below what the gateway can process, so that the limit is what stops the flood.
    options.gateway_env = vec![
        ("GATEWAY__LIMITS__MESSAGES_PER_SECOND".into(), "5".into()),
        ("GATEWAY__LIMITS__MESSAGE_BURST".into(), "10".into()),
    ];
    let system = System::start_with(&options).await;
    let token = system.user(0, "alice").await;
    let mut alice = system.connect(0, &token).await;
    alice.join("lobby").await;
    let id = send(&mut alice, "lobby", "a-1", "react to me").await;
    stored(&system, 0, &token, "lobby", &id).await;
    for n in 0..40 {
        alice
            .send_json(react("lobby", &id, "👍", n % 2 == 0, &format!("f-{n}")))
            .await;
    }
    let (mut acked, mut limited) = (0, 0);
    while let Some(frame) = alice.next_json(Duration::from_secs(2)).await {
        match (frame["type"].as_str(), frame["code"].as_str()) {
            (Some("ack"), _) => acked += 1,
            (Some("error"), Some("rate_limited")) => limited += 1,
            _ => {}
        }
    }
    assert!(limited > 0, "no react of the flood was rate limited");
    // Refused frames are not processed (and 20 refusals close the connection with 1008).
    assert!(acked < 40, "every react of the flood was taken: {acked}");
}

#[tokio::test]
async fn a_client_offline_while_its_messages_change_sees_the_final_state_after_a_since_join() {
    let mut options = SystemOptions::new(2);
    // A small catch-up: the change of a message far older than the missed new messages
    // must come back all the same.
    options.gateway_env = vec![("GATEWAY__HISTORY__CATCH_UP_LIMIT".into(), "3".into())];
    let system = System::start_with(&options).await;
    let alice_token = system.user(0, "alice").await;
    let bob_token = system.user(1, "bob").await;
    let carol_token = system.user(1, "carol").await;
    let mut alice = system.connect(0, &alice_token).await;
    let mut bob = system.connect(1, &bob_token).await;
    let mut carol = system.connect(1, &carol_token).await;
    alice.join("lobby").await;
    bob.join("lobby").await;
    carol.join("lobby").await;

    let oldest = send(&mut alice, "lobby", "a-0", "said last week").await;
    let mut held = vec![oldest.clone()];
    for n in 1..=3 {
        held.push(
            send(
                &mut alice,
                "lobby",
                &format!("a-{n}"),
                &format!("message {n}"),
            )
            .await,
        );
    }
    // Past the late window (1 s): the catch-up does not send these again as late ones.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    held.push(send(&mut alice, "lobby", "a-4", "message 4").await);
    let last_seen = held.last().expect("held").clone();
    // Bob has them all, then goes offline.
    loop {
        let message = bob.next_of("message").await;
        if message["id"] == last_seen.as_str() {
            break;
        }
    }
    for id in &held {
        stored(&system, 0, &alice_token, "lobby", id).await;
    }
    drop(bob);

    // Meanwhile: new messages (more than the catch-up limit), and changes to messages bob
    // holds, the oldest included.
    let mut missed = Vec::new();
    for n in 5..=8 {
        missed.push(
            send(
                &mut alice,
                "lobby",
                &format!("a-{n}"),
                &format!("message {n}"),
            )
            .await,
        );
    }
    alice
        .send_json(edit("lobby", &oldest, "said last week, corrected", "e-1"))
        .await;
    assert_eq!(outcome(&mut alice, "e-1").await, "ack");
    alice.send_json(delete("lobby", &held[2], "d-1")).await;
    assert_eq!(outcome(&mut alice, "d-1").await, "ack");
    carol
        .send_json(react("lobby", &held[3], "🎉", true, "c-1"))
        .await;
    assert_eq!(outcome(&mut carol, "c-1").await, "ack");
    alice
        .send_json(react("lobby", &held[3], "🎉", true, "r-1"))
        .await;
    assert_eq!(outcome(&mut alice, "r-1").await, "ack");
    // A retry of a change on the other gateway changes nothing more.
    let mut alice_again = system.connect(1, &alice_token).await;
    alice_again.join("lobby").await;
    alice_again
        .send_json(react("lobby", &held[3], "🎉", true, "r-1"))
        .await;
    assert_eq!(outcome(&mut alice_again, "r-1").await, "ack");
    let final_reacted = at_version(&system, &alice_token, "lobby", &held[3], 3).await;
    assert_eq!(final_reacted["reactions"][0]["count"], 2);
    at_version(&system, &alice_token, "lobby", &oldest, 2).await;
    at_version(&system, &alice_token, "lobby", &held[2], 2).await;
    // A reply to the edited message.
    alice
        .send_json(json!({"type": "send", "room": "lobby", "client_id": "a-9", "body": "see above", "reply_to": oldest}))
        .await;
    let reply = answer(&mut alice, "a-9").await;
    assert_eq!(reply["type"], "ack");

    // Carol, connected on the other gateway throughout, saw each change live.
    let edited = carol.next_of("edited").await;
    assert_eq!(edited["id"], oldest.as_str());
    assert_eq!(edited["body"], "said last week, corrected");
    assert_eq!(edited["version"], 2);
    let deleted = carol.next_of("deleted").await;
    assert_eq!(deleted["id"], held[2].as_str());
    assert_eq!(deleted["by"]["username"], "alice");
    let mut counts = Vec::new();
    while counts.len() < 2 {
        let reactions = carol.next_of("reactions").await;
        counts.push(reactions["reactions"][0]["count"].as_u64().unwrap_or(0));
    }
    assert_eq!(counts.iter().max(), Some(&2));
    let reply_frame = loop {
        let message = carol.next_of("message").await;
        if message["client_id"] == "a-9" {
            break message;
        }
    };
    assert_eq!(reply_frame["reply_to"]["id"], oldest.as_str());
    assert_eq!(
        reply_frame["reply_to"]["excerpt"],
        "said last week, corrected"
    );

    // Bob comes back on the other gateway, with `since` = the last message he saw.
    let mut bob = system.connect(0, &bob_token).await;
    bob.send_json(json!({"type": "join", "room": "lobby", "since": last_seen}))
        .await;
    let joined = bob.next_of("joined").await;
    assert_eq!(
        joined["truncated"], true,
        "more missed than the catch-up limit"
    );
    let changes = joined["changes"].as_array().expect("changes");
    let change = |id: &str| {
        changes
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no change of {id} in {joined}"))
    };
    let old = change(&oldest);
    assert_eq!(old["body"], "said last week, corrected");
    assert_eq!(old["version"], 2);
    assert!(old["edited_at"].is_string());
    let gone = change(&held[2]);
    assert_eq!(gone["deleted"], true);
    assert!(gone.get("body").is_none());
    let reacted = change(&held[3]);
    assert_eq!(reacted["reactions"], json!([{"emoji": "🎉", "count": 2}]));
    assert_eq!(reacted["version"], 3);
    // Unchanged messages bob holds are not sent again.
    assert!(changes.iter().all(|m| m["id"] != held[1].as_str()));
    assert!(changes.iter().all(|m| m["id"] != held[4].as_str()));
    // The new messages begin where bob left off (after his cursor again, as published late
    // within the window).
    let ids = support::message_ids(&joined);
    assert!(ids.contains(&missed[0]), "{joined}");
    assert!(
        ids.iter().all(|id| *id == last_seen || missed.contains(id)),
        "{joined}"
    );
}
