//! Rooms, members, bans, read markers and their events, through the real service.

use std::time::Duration;

use common::event::MessageEvent;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, message, spawn_app, spawn_app_with, user_token};

/// Sends `method path` as `user` (a name the auth stub knows as `u-<name>`), with a JSON
/// body when given; the status and the JSON answer (`null` when there is none).
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    user: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(user_token(user));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = match request.try_clone().expect("no streamed body").send().await {
        Ok(response) => response,
        // A connection the server reset under load (seen with dozens of joins at once on a
        // busy machine): sent again once, as the gateway's client would retry a join.
        Err(error) if error.is_request() => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            request.send().await.expect("request sent")
        }
        Err(error) => panic!("request not sent: {error}"),
    };
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, value)
}

async fn create(app: &TestApp, user: &str, body: Value) -> (u16, Value) {
    call(app, Method::POST, "/api/rooms", user, Some(body)).await
}

async fn create_room(app: &TestApp, user: &str, id: &str, kind: &str) -> Value {
    let (status, view) = create(app, user, json!({"id": id, "kind": kind, "name": id})).await;
    assert_eq!(status, 201, "{view}");
    view
}

async fn join(app: &TestApp, room: &str, user: &str) -> (u16, Value) {
    call(
        app,
        Method::POST,
        &format!("/api/rooms/{room}/join"),
        user,
        None,
    )
    .await
}

async fn history(app: &TestApp, room: &str, user: &str) -> (u16, Value) {
    let response = app.read_history(room, "", Some(&user_token(user))).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn my_rooms(app: &TestApp, user: &str) -> Vec<Value> {
    let (status, body) = call(app, Method::GET, "/api/rooms", user, None).await;
    assert_eq!(status, 200, "{body}");
    body["rooms"].as_array().expect("rooms").clone()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Publishes `n` messages to `room` through the broker and waits until `total` are stored.
async fn send(app: &TestApp, room: &str, n: usize, total: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let m = message(room, &format!("message {i}"));
        ids.push(m.id.to_string());
        app.publish(&m).await;
    }
    app.wait_for_stored(total).await;
    ids.sort();
    ids
}

#[tokio::test]
async fn a_created_room_is_owned_by_its_creator_listed_and_shown() {
    let app = spawn_app().await;
    let (status, view) = create(
        &app,
        "alice",
        json!({"id": "general", "kind": "public", "name": "General", "topic": "hello"}),
    )
    .await;
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["id"], "general");
    assert_eq!(view["kind"], "public");
    assert_eq!(view["name"], "General");
    assert_eq!(view["topic"], "hello");
    assert_eq!(view["created_by"], "u-alice");
    assert_eq!(view["role"], "owner");
    assert_eq!(view["member_count"], 1);
    assert_eq!(view["unread"], 0);
    assert_eq!(view["unread_capped"], false);
    assert_eq!(view["archived"], false);

    let rooms = my_rooms(&app, "alice").await;
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0]["id"], "general");
    let (status, shown) = call(&app, Method::GET, "/api/rooms/general", "alice", None).await;
    assert_eq!(status, 200);
    assert_eq!(shown["role"], "owner");
    // A public room's view is no secret; the stranger sees no role of theirs.
    let (status, seen) = call(&app, Method::GET, "/api/rooms/general", "bob", None).await;
    assert_eq!(status, 200);
    assert!(seen.get("role").is_none(), "{seen}");

    let (status, body) = create(
        &app,
        "bob",
        json!({"id": "general", "kind": "private", "name": "Mine"}),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "room_exists"));

    // Without an id, a random one of 22 characters.
    let (status, view) = create(&app, "alice", json!({"kind": "private", "name": "Secret"})).await;
    assert_eq!(status, 201);
    assert_eq!(view["id"].as_str().expect("id").len(), 22);
}

#[tokio::test]
async fn room_input_is_validated() {
    let app = spawn_app().await;
    let long_name = "n".repeat(81);
    let long_topic = "t".repeat(251);
    let cases = [
        json!({"kind": "public", "name": ""}),
        json!({"kind": "public", "name": "   "}),
        json!({"kind": "public", "name": long_name}),
        json!({"kind": "public", "name": "bell\u{7}"}),
        json!({"kind": "public", "name": "new\nline"}),
        json!({"kind": "public", "name": "ok", "topic": long_topic}),
        json!({"kind": "dm", "name": "ok"}),
        json!({"kind": "secret", "name": "ok"}),
        json!({"id": "a.b", "kind": "public", "name": "ok"}),
        json!({"name": "no kind"}),
    ];
    for body in cases {
        let (status, answer) = create(&app, "alice", body.clone()).await;
        assert_eq!(
            (status, code(&answer)),
            (422, "validation_failed"),
            "{body}"
        );
    }
    assert!(my_rooms(&app, "alice").await.is_empty());

    create_room(&app, "alice", "valid", "public").await;
    for body in [
        json!({"name": "x\u{1b}[31m"}),
        json!({"topic": long_topic}),
        json!({"kind": "dm"}),
    ] {
        let (status, answer) = call(
            &app,
            Method::PATCH,
            "/api/rooms/valid",
            "alice",
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (status, code(&answer)),
            (422, "validation_failed"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn creating_more_rooms_than_allowed_per_hour_is_429_with_retry_after() {
    let app = spawn_app_with(|settings| settings.rooms.create_per_hour = 2).await;
    create_room(&app, "alice", "one", "public").await;
    create_room(&app, "alice", "two", "private").await;
    let response = app
        .http
        .post(format!("{}/api/rooms", app.address))
        .bearer_auth(user_token("alice"))
        .json(&json!({"id": "three", "kind": "public", "name": "three"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=3600).contains(&retry_after));
    let body: Value = response.json().await.expect("json");
    assert_eq!(code(&body), "rate_limited");
    // Someone else may still create.
    create_room(&app, "bob", "three", "public").await;
}

#[tokio::test]
async fn anyone_joins_a_public_room_and_only_members_read_its_history() {
    let app = spawn_app().await;
    create_room(&app, "alice", "lounge", "public").await;
    send(&app, "lounge", 2, 2).await;

    let (status, body) = history(&app, "lounge", "bob").await;
    assert_eq!((status, code(&body)), (403, "forbidden"));

    let (status, view) = join(&app, "lounge", "bob").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["role"], "member");
    assert_eq!(view["member_count"], 2);
    // History from before the join is not unread.
    assert_eq!(view["unread"], 0);
    let (status, again) = join(&app, "lounge", "bob").await;
    assert_eq!(status, 200);
    assert_eq!(again["member_count"], 2, "joining twice counts once");

    let (status, body) = history(&app, "lounge", "bob").await;
    assert_eq!(status, 200);
    assert_eq!(body["messages"].as_array().expect("messages").len(), 2);

    let (status, body) = call(&app, Method::GET, "/api/rooms/lounge/members", "bob", None).await;
    assert_eq!(status, 200);
    let members: Vec<(&str, &str)> = body["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["user"]["username"].as_str().expect("name"),
                m["role"].as_str().expect("role"),
            )
        })
        .collect();
    assert_eq!(members, vec![("alice", "owner"), ("bob", "member")]);
    assert!(body.get("next_cursor").is_none());
    let (status, body) = call(
        &app,
        Method::GET,
        "/api/rooms/lounge/members",
        "carol",
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
}

#[tokio::test]
async fn a_private_room_answers_a_non_member_exactly_as_a_missing_room() {
    let app = spawn_app_with(|settings| settings.rooms.create_on_join = false).await;
    create_room(&app, "alice", "hideout", "private").await;
    send(&app, "hideout", 1, 1).await;
    for room in ["hideout", "nowhere"] {
        for (method, path) in [
            (Method::GET, format!("/api/rooms/{room}")),
            (Method::POST, format!("/api/rooms/{room}/join")),
            (Method::GET, format!("/api/rooms/{room}/members")),
            (Method::PATCH, format!("/api/rooms/{room}")),
            (Method::DELETE, format!("/api/rooms/{room}")),
        ] {
            let body = (method == Method::PATCH).then(|| json!({"name": "x"}));
            let (status, answer) = call(&app, method.clone(), &path, "bob", body).await;
            assert_eq!(
                (status, code(&answer)),
                (404, "not_found"),
                "{method} {path}"
            );
        }
    }
    let (status, body) = history(&app, "hideout", "bob").await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/rooms/hideout/members",
        "bob",
        Some(json!({"username": "bob"})),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, _) = history(&app, "hideout", "alice").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn joining_an_unknown_room_creates_it_unless_turned_off() {
    let app = spawn_app().await;
    let (status, view) = join(&app, "fresh", "alice").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["kind"], "public");
    assert_eq!(view["role"], "owner");
    assert_eq!(view["name"], "fresh");
    let (_, view) = join(&app, "fresh", "bob").await;
    assert_eq!(view["role"], "member");

    let app = spawn_app_with(|settings| settings.rooms.create_on_join = false).await;
    let (status, body) = join(&app, "fresh", "alice").await;
    assert_eq!((status, code(&body)), (404, "not_found"));
}

#[tokio::test]
async fn history_stored_before_rooms_existed_is_served_once_the_room_is_joined() {
    let app = spawn_app().await;
    let old: Vec<MessageEvent> = (0..3)
        .map(|i| MessageEvent::new(message("seeded", &format!("old {i}"))))
        .collect();
    app.store_directly(&old).await;

    let (status, body) = history(&app, "seeded", "bob").await;
    assert_eq!(
        (status, code(&body)),
        (404, "not_found"),
        "not a room until someone joins it"
    );
    let (status, view) = join(&app, "seeded", "bob").await;
    assert_eq!(status, 200);
    assert_eq!(
        view["role"], "owner",
        "created on join, owned by the joiner"
    );
    let (status, body) = history(&app, "seeded", "bob").await;
    assert_eq!(status, 200);
    assert_eq!(body["messages"].as_array().expect("messages").len(), 3);

    // A room the consumer numbered before anyone joined it is taken over the same way.
    send(&app, "numbered", 2, 5).await;
    let (status, view) = join(&app, "numbered", "carol").await;
    assert_eq!(status, 200);
    assert_eq!(view["role"], "owner");
    assert!(
        view["last_message"]["preview"]
            .as_str()
            .is_some_and(|p| p.starts_with("message ")),
        "{view}"
    );
}

#[tokio::test]
async fn members_are_added_by_username_and_unknown_names_are_404() {
    let app = spawn_app().await;
    create_room(&app, "alice", "team", "private").await;
    let add = |who: &'static str, name: &'static str| {
        let app = &app;
        async move {
            call(
                app,
                Method::POST,
                "/api/rooms/team/members",
                who,
                Some(json!({"username": name})),
            )
            .await
        }
    };
    let (status, membership) = add("alice", "bob").await;
    assert_eq!(status, 201, "{membership}");
    assert_eq!(
        membership["user"],
        json!({"id": "u-bob", "username": "bob"})
    );
    assert_eq!(membership["role"], "member");
    assert!(membership["joined_at"].is_string());
    let (status, _) = add("alice", "bob").await;
    assert_eq!(status, 200, "adding a member again changes nothing");
    let (status, body) = add("alice", "ghost").await;
    assert_eq!((status, code(&body)), (404, "user_not_found"));
    let (status, body) = add("alice", "no such name!").await;
    assert_eq!((status, code(&body)), (404, "user_not_found"));
    // A plain member of a private room may not invite.
    let (status, body) = add("bob", "carol").await;
    assert_eq!((status, code(&body)), (403, "forbidden"));

    let rooms = my_rooms(&app, "bob").await;
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0]["role"], "member");
    let (status, _) = join(&app, "team", "bob").await;
    assert_eq!(status, 200, "a member joins the private room");

    // In a public room any member may add.
    create_room(&app, "alice", "open", "public").await;
    join(&app, "open", "bob").await;
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/rooms/open/members",
        "bob",
        Some(json!({"username": "carol"})),
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn kicks_roles_and_leaving_follow_the_rules_of_owners() {
    let app = spawn_app().await;
    create_room(&app, "alice", "club", "public").await;
    for user in ["bob", "carol", "dave"] {
        join(&app, "club", user).await;
    }
    let put_role = |who: &'static str, target: &'static str, role: Value| {
        let app = &app;
        async move {
            call(
                app,
                Method::PUT,
                &format!("/api/rooms/club/members/u-{target}"),
                who,
                Some(json!({"role": role})),
            )
            .await
        }
    };
    let kick = |who: &'static str, target: &'static str| {
        let app = &app;
        async move {
            call(
                app,
                Method::DELETE,
                &format!("/api/rooms/club/members/u-{target}"),
                who,
                None,
            )
            .await
        }
    };

    let (status, body) = put_role("alice", "bob", json!("king")).await;
    assert_eq!((status, code(&body)), (422, "validation_failed"));
    let (status, body) = put_role("bob", "carol", json!("admin")).await;
    assert_eq!(
        (status, code(&body)),
        (403, "forbidden"),
        "only the owner changes roles"
    );
    let (status, membership) = put_role("alice", "bob", json!("admin")).await;
    assert_eq!(status, 200);
    assert_eq!(membership["role"], "admin");

    let (status, body) = kick("bob", "alice").await;
    assert_eq!(
        (status, code(&body)),
        (409, "owner"),
        "the owner cannot be kicked"
    );
    let (status, body) = kick("carol", "dave").await;
    assert_eq!(
        (status, code(&body)),
        (403, "forbidden"),
        "members do not kick"
    );
    let (status, _) = kick("bob", "carol").await;
    assert_eq!(status, 204);
    let (status, body) = history(&app, "club", "carol").await;
    assert_eq!(
        (status, code(&body)),
        (403, "forbidden"),
        "kicked: no longer a member"
    );
    let (status, body) = kick("bob", "carol").await;
    assert_eq!(
        (status, code(&body)),
        (404, "not_found"),
        "not a member any more"
    );

    let (status, body) = kick("alice", "alice").await;
    assert_eq!((status, code(&body)), (409, "last_owner"));
    let (status, body) = put_role("alice", "alice", json!("member")).await;
    assert_eq!((status, code(&body)), (409, "last_owner"));
    put_role("alice", "bob", json!("owner")).await;
    let (status, _) = kick("alice", "alice").await;
    assert_eq!(status, 204, "another owner exists: the owner may leave");
    let (status, _) = kick("dave", "dave").await;
    assert_eq!(status, 204, "a member leaves");
    assert!(my_rooms(&app, "dave").await.is_empty());
    let (_, view) = call(&app, Method::GET, "/api/rooms/club", "bob", None).await;
    assert_eq!(view["member_count"], 1);
}

#[tokio::test]
async fn a_banned_user_is_refused_by_every_route_until_unbanned() {
    let app = spawn_app().await;
    create_room(&app, "alice", "pub", "public").await;
    join(&app, "pub", "bob").await;
    join(&app, "pub", "carol").await;
    let (status, _) = call(
        &app,
        Method::PUT,
        "/api/rooms/pub/members/u-carol",
        "alice",
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(status, 200);

    let (status, body) = call(
        &app,
        Method::POST,
        "/api/rooms/pub/bans/u-alice",
        "carol",
        None,
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (409, "owner"),
        "the owner cannot be banned"
    );
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/rooms/pub/bans/u-bob",
        "carol",
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = join(&app, "pub", "bob").await;
    assert_eq!((status, code(&body)), (403, "banned"));
    let (status, body) = history(&app, "pub", "bob").await;
    assert_eq!((status, code(&body)), (403, "banned"));
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/rooms/pub/members",
        "alice",
        Some(json!({"username": "bob"})),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (403, "banned"),
        "a member cannot add a banned user"
    );
    assert!(my_rooms(&app, "bob").await.is_empty());

    let (status, _) = call(
        &app,
        Method::DELETE,
        "/api/rooms/pub/bans/u-bob",
        "alice",
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, view) = join(&app, "pub", "bob").await;
    assert_eq!(status, 200);
    assert_eq!(view["role"], "member");

    // A ban on an id that has no room yet also stops the join from creating it.
    app.db
        .collection::<mongodb::bson::Document>("bans")
        .insert_one(mongodb::bson::doc! {"_id": "unmade/u-bob", "room": "unmade", "user": "u-bob"})
        .await
        .expect("ban stored");
    let (status, body) = join(&app, "unmade", "bob").await;
    assert_eq!((status, code(&body)), (403, "banned"));
}

#[tokio::test]
async fn a_dm_is_the_same_room_from_both_sides_and_private_to_them() {
    let app = spawn_app().await;
    let (status, view) = call(
        &app,
        Method::POST,
        "/api/dms",
        "alice",
        Some(json!({"username": "bob"})),
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["kind"], "dm");
    assert_eq!(view["role"], "member");
    assert_eq!(view["dm_user"], json!({"id": "u-bob", "username": "bob"}));
    let room = view["id"].as_str().expect("id").to_string();
    assert!(room.starts_with("dm-"));
    let (status, theirs) = call(
        &app,
        Method::POST,
        "/api/dms",
        "bob",
        Some(json!({"username": "alice"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(theirs["id"], room.as_str());
    assert_eq!(theirs["dm_user"]["username"], "alice");

    let (status, body) = call(
        &app,
        Method::POST,
        "/api/dms",
        "alice",
        Some(json!({"username": "alice"})),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (422, "validation_failed"),
        "no DM with yourself"
    );
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/dms",
        "alice",
        Some(json!({"username": "ghost"})),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "user_not_found"));

    let (status, body) = history(&app, &room, "carol").await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = join(&app, &room, "carol").await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = call(
        &app,
        Method::POST,
        &format!("/api/rooms/{room}/members"),
        "alice",
        Some(json!({"username": "carol"})),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (403, "forbidden"),
        "nobody joins a DM"
    );

    // Leaving a DM hides it; opening it again shows it.
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/rooms/{room}/members/u-alice"),
        "alice",
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert!(my_rooms(&app, "alice").await.is_empty());
    assert_eq!(my_rooms(&app, "bob").await.len(), 1);
    call(
        &app,
        Method::POST,
        "/api/dms",
        "alice",
        Some(json!({"username": "bob"})),
    )
    .await;
    assert_eq!(my_rooms(&app, "alice").await.len(), 1);
}

#[tokio::test]
async fn unread_counts_follow_read_markers_forward_only_and_are_capped() {
    let app = spawn_app().await;
    create_room(&app, "alice", "news", "public").await;
    create_room(&app, "alice", "other", "public").await;
    join(&app, "news", "bob").await;
    let ids = send(&app, "news", 3, 3).await;
    let elsewhere = send(&app, "other", 1, 4).await;

    let unread = |rooms: &[Value], room: &str| {
        rooms
            .iter()
            .find(|r| r["id"] == room)
            .map(|r| {
                (
                    r["unread"].as_i64().expect("unread"),
                    r["unread_capped"].as_bool().expect("capped"),
                )
            })
            .expect("room listed")
    };
    let rooms = my_rooms(&app, "bob").await;
    assert_eq!(unread(&rooms, "news"), (3, false));
    let news = rooms.iter().find(|r| r["id"] == "news").expect("listed");
    assert_eq!(news["last_message"]["id"], ids[2].as_str());
    assert_eq!(news["last_message"]["author"]["username"], "alice");

    let mark = |id: &str| {
        let app = &app;
        let body = json!({"id": id});
        async move { call(app, Method::PUT, "/api/rooms/news/read", "bob", Some(body)).await }
    };
    assert_eq!(mark(&ids[1]).await.0, 204);
    let rooms = my_rooms(&app, "bob").await;
    assert_eq!(unread(&rooms, "news"), (1, false));
    assert_eq!(
        rooms.iter().find(|r| r["id"] == "news").expect("listed")["read_id"],
        ids[1].as_str()
    );
    assert_eq!(mark(&ids[0]).await.0, 204, "an older marker is accepted");
    assert_eq!(
        unread(&my_rooms(&app, "bob").await, "news"),
        (1, false),
        "and ignored"
    );

    let (status, body) = mark(&elsewhere[0]).await;
    assert_eq!(
        (status, code(&body)),
        (422, "invalid_marker"),
        "a message of another room"
    );
    let (status, body) = mark(&ulid::Ulid::new().to_string()).await;
    assert_eq!(
        (status, code(&body)),
        (422, "invalid_marker"),
        "a message never stored"
    );
    let (status, body) = mark("not-an-id").await;
    assert_eq!((status, code(&body)), (422, "invalid_marker"));
    let (status, body) = call(
        &app,
        Method::PUT,
        "/api/rooms/news/read",
        "carol",
        Some(json!({"id": ids[2]})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "not a member");

    let events: Vec<MessageEvent> = (0..105)
        .map(|i| MessageEvent::new(message("news", &format!("flood {i}"))))
        .collect();
    for event in &events {
        app.publish(&event.message).await;
    }
    app.wait_for_stored(4 + 105).await;
    assert_eq!(unread(&my_rooms(&app, "bob").await, "news"), (100, true));
}

#[tokio::test]
async fn the_room_list_shows_the_most_recently_active_room_first() {
    let app = spawn_app().await;
    for room in ["first", "second", "third"] {
        create_room(&app, "alice", room, "public").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let order = |rooms: Vec<Value>| -> Vec<String> {
        rooms
            .iter()
            .map(|r| r["id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(
        order(my_rooms(&app, "alice").await),
        ["third", "second", "first"]
    );
    send(&app, "first", 1, 1).await;
    assert_eq!(
        order(my_rooms(&app, "alice").await),
        ["first", "third", "second"]
    );
}

#[tokio::test]
async fn the_directory_lists_public_rooms_by_members_and_filters_by_name() {
    let app = spawn_app().await;
    create_room(&app, "alice", "small-talk", "public").await;
    let (status, _) = create(
        &app,
        "alice",
        json!({"id": "big", "kind": "public", "name": "Big Talk"}),
    )
    .await;
    assert_eq!(status, 201);
    create_room(&app, "alice", "secret-talk", "private").await;
    create_room(&app, "alice", "quiet", "public").await;
    join(&app, "big", "bob").await;

    let (status, body) = call(
        &app,
        Method::GET,
        "/api/rooms/directory?q=TALK",
        "carol",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["big", "small-talk"]);
    assert!(body.get("next_cursor").is_none());
    let (_, body) = call(&app, Method::GET, "/api/rooms/directory", "carol", None).await;
    assert_eq!(body["rooms"].as_array().expect("rooms").len(), 3);
    let (status, body) = call(
        &app,
        Method::GET,
        "/api/rooms/directory?q=.*",
        "carol",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body["rooms"].as_array().expect("rooms").is_empty(),
        "q is literal text"
    );
}

#[tokio::test]
async fn every_change_is_announced_on_the_exchange() {
    let app = spawn_app().await;
    let mut events = app.listen_to_room_events().await;
    create_room(&app, "alice", "stage", "public").await;
    let added = events
        .expect("member.u-alice", |e| e["room"] == "stage")
        .await;
    assert_eq!(added["v"], 1);
    assert_eq!(added["change"], "added");
    assert_eq!(added["view"]["role"], "owner");

    join(&app, "stage", "bob").await;
    let added = events
        .expect("member.u-bob", |e| e["change"] == "added")
        .await;
    assert_eq!(added["user"], "u-bob");
    assert_eq!(added["view"]["id"], "stage");
    assert_eq!(added["view"]["role"], "member");

    call(
        &app,
        Method::PUT,
        "/api/rooms/stage/members/u-bob",
        "alice",
        Some(json!({"role": "admin"})),
    )
    .await;
    let role = events
        .expect("member.u-bob", |e| e["change"] == "role")
        .await;
    assert_eq!(role["role"], "admin");

    let ids = send(&app, "stage", 1, 1).await;
    call(
        &app,
        Method::PUT,
        "/api/rooms/stage/read",
        "bob",
        Some(json!({"id": ids[0]})),
    )
    .await;
    let read = events
        .expect("member.u-bob", |e| e["change"] == "read")
        .await;
    assert_eq!(read["id"], ids[0].as_str());
    assert_eq!(read["seq"], 1);

    call(
        &app,
        Method::PATCH,
        "/api/rooms/stage",
        "bob",
        Some(json!({"name": "Main Stage", "topic": "shows"})),
    )
    .await;
    let updated = events
        .expect("msg.stage.evt", |e| e["kind"] == "room_updated")
        .await;
    assert_eq!(updated["room"], "stage");
    assert_eq!(updated["view"]["name"], "Main Stage");
    assert_eq!(updated["view"]["topic"], "shows");
    assert!(
        updated["view"].get("role").is_none(),
        "no caller-specific fields"
    );

    join(&app, "stage", "carol").await;
    call(
        &app,
        Method::DELETE,
        "/api/rooms/stage/members/u-carol",
        "bob",
        None,
    )
    .await;
    let removed = events
        .expect("member.u-carol", |e| e["change"] == "removed")
        .await;
    assert_eq!(removed["reason"], "kicked");
    join(&app, "stage", "dave").await;
    call(
        &app,
        Method::POST,
        "/api/rooms/stage/bans/u-dave",
        "alice",
        None,
    )
    .await;
    let removed = events
        .expect("member.u-dave", |e| e["change"] == "removed")
        .await;
    assert_eq!(removed["reason"], "banned");
    call(
        &app,
        Method::DELETE,
        "/api/rooms/stage/members/u-bob",
        "bob",
        None,
    )
    .await;
    let removed = events
        .expect("member.u-bob", |e| e["change"] == "removed")
        .await;
    assert_eq!(removed["reason"], "left");

    let (status, _) = call(&app, Method::DELETE, "/api/rooms/stage", "alice", None).await;
    assert_eq!(status, 204);
    events
        .expect("msg.stage.evt", |e| e["kind"] == "room_archived")
        .await;
    // Archived: read-only.
    let (status, body) = join(&app, "stage", "erin").await;
    assert_eq!((status, code(&body)), (409, "archived"));
    let (status, body) = join(&app, "stage", "alice").await;
    assert_eq!((status, code(&body)), (409, "archived"));
    let (status, _) = history(&app, "stage", "alice").await;
    assert_eq!(status, 200, "members still read an archived room");
    let (status, body) = call(
        &app,
        Method::PATCH,
        "/api/rooms/stage",
        "alice",
        Some(json!({"name": "again"})),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "archived"));
}

#[tokio::test]
async fn room_routes_need_a_valid_token() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/api/rooms"),
        (Method::POST, "/api/rooms/x/join"),
        (Method::POST, "/api/dms"),
        (Method::PUT, "/api/rooms/x/read"),
    ] {
        let response = app
            .http
            .request(method.clone(), format!("{}{path}", app.address))
            .bearer_auth("not-a-token")
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 401, "{method} {path}");
    }
}

#[tokio::test]
async fn a_new_user_creating_many_rooms_at_once_gets_every_one_in_their_list() {
    let app = spawn_app().await;
    // Room routes run a few at a time and may shed the rest: tried again as a client would.
    let app = &app;
    let created = futures_util::future::join_all((0..8).map(|k| async move {
        let body = json!({"id": format!("burst-{k}"), "kind": "public", "name": "Burst"});
        loop {
            match create(app, "u-eager", body.clone()).await {
                (503, _) => tokio::time::sleep(Duration::from_millis(200)).await,
                answer => return answer,
            }
        }
    }))
    .await;
    for (status, body) in &created {
        assert_eq!(*status, 201, "{body}");
    }
    let (status, list) = call(app, Method::GET, "/api/rooms", "u-eager", None).await;
    assert_eq!(status, 200);
    let listed = list["rooms"].as_array().expect("rooms").len();
    assert_eq!(listed, 8, "each room's inbox entry was written: {list}");
}

/// The value of counter `name` in the metrics text.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_storm_of_joins_is_read_in_batches_and_each_join_is_decided_on_its_own() {
    use futures_util::StreamExt;
    // Requests in flight at once (more would overflow the listener's accept queue).
    const AT_ONCE: usize = 32;
    let app = spawn_app().await;
    create_room(&app, "u-host", "storm", "public").await;
    create_room(&app, "u-host", "locked", "private").await;
    let users: Vec<String> = (0..60).map(|k| format!("u-crowd{k}")).collect();

    // First joins, many at once: each becomes a member, counted once. They write, so they run
    // a few at a time and the rest may be shed: tried again as a client would.
    let first: Vec<(u16, Value)> = futures_util::stream::iter(&users)
        .map(|u| async {
            loop {
                match join(&app, "storm", u).await {
                    (503, _) => tokio::time::sleep(Duration::from_millis(200)).await,
                    answer => return answer,
                }
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    for (status, view) in &first {
        assert_eq!(*status, 200, "{view}");
        assert_eq!(view["role"], "member", "{view}");
    }

    // Repeat joins of members and joins of a private room by non-members, mixed in the same
    // batches: each answered as the table says for its own caller.
    let before = app.metrics().await;
    let answers: Vec<(&str, (u16, Value))> = futures_util::stream::iter(
        users
            .iter()
            .flat_map(|u| [("storm", u.as_str()), ("locked", u.as_str())]),
    )
    .map(|(room, u)| {
        let app = &app;
        async move {
            loop {
                match join(app, room, u).await {
                    // Shed on a busy machine: tried again, as the gateway does.
                    (503, _) => tokio::time::sleep(Duration::from_millis(200)).await,
                    answer => return (room, answer),
                }
            }
        }
    })
    .buffer_unordered(AT_ONCE)
    .collect()
    .await;
    for (room, (status, body)) in &answers {
        if *room == "storm" {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body["role"], "member", "{body}");
            assert_eq!(body["member_count"], 61, "{body}");
        } else {
            assert_eq!(*status, 404, "{body}");
            assert_eq!(code(body), "not_found");
        }
    }
    let (status, owner) = join(&app, "storm", "u-host").await;
    assert_eq!((status, owner["role"].as_str()), (200, Some("owner")));

    let after = app.metrics().await;
    let joins = counter(&after, "history_join_lookups_total")
        - counter(&before, "history_join_lookups_total");
    let batches = counter(&after, "history_join_batches_total")
        - counter(&before, "history_join_batches_total");
    // Members' repeat joins may be answered from memory without a batch; the non-members'
    // are not in memory.
    assert!(
        joins >= 60,
        "every non-member's join was read through the batches: {joins}"
    );
    assert!(
        batches < joins,
        "joins in flight together share reads: {batches} batches for {joins} joins"
    );
}

#[tokio::test]
async fn a_members_join_with_everything_in_memory_waits_for_no_batch() {
    let app = spawn_app().await;
    create_room(&app, "u-host", "warm", "public").await;
    // The first join reads the room and writes the membership and the member count.
    let (status, view) = join(&app, "warm", "ben").await;
    assert_eq!((status, view["member_count"].as_i64()), (200, Some(2)));

    let before = app.metrics().await;
    let (status, view) = join(&app, "warm", "ben").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(
        (view["role"].as_str(), view["member_count"].as_i64()),
        (Some("member"), Some(2)),
        "the kept room counted the member it added: {view}"
    );
    let after = app.metrics().await;
    assert_eq!(
        counter(&after, "history_join_lookups_total"),
        counter(&before, "history_join_lookups_total"),
        "the repeat join was answered without queueing for the batch reader"
    );
}

#[tokio::test]
async fn a_members_repeat_join_reads_nothing_until_a_write_or_a_member_event_forgets_it() {
    use common::domain::{RemovalReason, RoomId, UserId};
    use common::event::{MemberChange, MemberEvent};
    use mongodb::bson::{Document, doc};
    let app = spawn_app().await;
    create_room(&app, "u-host", "kept", "public").await;
    // The first join writes the membership; the second reads it, and keeps it.
    for _ in 0..2 {
        let (status, view) = join(&app, "kept", "ben").await;
        assert_eq!((status, view["role"].as_str()), (200, Some("member")));
    }

    // This instance's own writes forget it at once.
    let (status, _) = call(
        &app,
        Method::PUT,
        "/api/rooms/kept/members/u-ben",
        "u-host",
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, view) = join(&app, "kept", "ben").await;
    assert_eq!((status, view["role"].as_str()), (200, Some("admin")));

    // Another instance bans ben: its writes reach the database, not this instance's memory,
    // so ben's repeat join is still answered from memory (the cache is what serves it)…
    app.db
        .collection::<Document>("bans")
        .insert_one(doc! {"_id": "kept/u-ben", "room": "kept", "user": "u-ben"})
        .await
        .expect("ban stored");
    app.db
        .collection::<Document>("memberships")
        .delete_one(doc! {"_id": "kept/u-ben"})
        .await
        .expect("membership deleted");
    app.db
        .collection::<Document>("inboxes")
        .update_one(doc! {"_id": "u-ben"}, doc! {"$unset": {"rooms.kept": ""}})
        .await
        .expect("inbox entry deleted");
    let (status, _) = join(&app, "kept", "ben").await;
    assert_eq!(status, 200, "answered from the cache");
    // So are the checks gateways make of a member (the room's view) and history reads.
    let (status, view) = call(&app, Method::GET, "/api/rooms/kept", "ben", None).await;
    assert_eq!(
        (status, view["role"].as_str()),
        (200, Some("admin")),
        "{view}"
    );
    let (status, _) = call(&app, Method::GET, "/api/rooms/kept/messages", "ben", None).await;
    assert_eq!(status, 200, "a history read of a member in memory");

    // …until the member event that instance publishes arrives here.
    app.publish_member_event(&MemberEvent::new(
        UserId::parse("u-ben".to_string()).expect("user id"),
        RoomId::parse("kept".to_string()).expect("room id"),
        MemberChange::Removed {
            reason: RemovalReason::Banned,
        },
    ))
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = join(&app, "kept", "ben").await;
        if status == 403 {
            assert_eq!(code(&body), "banned");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the member event did not reach the join cache"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = call(&app, Method::GET, "/api/rooms/kept/messages", "ben", None).await;
    assert_eq!(status, 403, "{body}");
    let (_, view) = call(&app, Method::GET, "/api/rooms/kept", "ben", None).await;
    assert!(view["role"].is_null(), "no longer a member: {view}");
}

#[tokio::test]
async fn a_member_added_here_is_answered_from_memory_with_the_read_marker_moved_here() {
    use mongodb::bson::{Document, doc};
    let app = spawn_app().await;
    create_room(&app, "u-host", "warm", "public").await;
    let (status, view) = join(&app, "warm", "ben").await;
    assert_eq!((status, view["unread"].as_i64()), (200, Some(0)), "{view}");
    let ids = send(&app, "warm", 3, 3).await;
    let (status, _) = call(
        &app,
        Method::PUT,
        "/api/rooms/warm/read",
        "ben",
        Some(json!({"id": ids[1]})),
    )
    .await;
    assert_eq!(status, 204);
    // Gone from the database behind this instance's back: only its memory answers now.
    app.db
        .collection::<Document>("memberships")
        .delete_one(doc! {"_id": "warm/u-ben"})
        .await
        .expect("membership deleted");
    let (status, view) = join(&app, "warm", "ben").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["role"], "member", "{view}");
    assert_eq!(view["read_id"], ids[1], "{view}");
    assert_eq!(view["unread"], 1, "{view}");
}

#[tokio::test]
async fn joins_beyond_the_queue_are_answered_503_with_retry_after_at_once() {
    let app = spawn_app_with(|settings| {
        settings.rooms.join_queue = 1;
        settings.rooms.join_batch = 1;
        // Every batch reads the room too, as a cold instance's do: the reader stays busy
        // long enough for joins to pile up.
        settings.rooms.list_cache_ttl_ms = 0;
    })
    .await;
    create_room(&app, "u-host", "narrow", "public").await;
    // Joins arriving together overflow a queue of one unless the reader happens to keep up
    // with each arrival (a busy machine can spread them out): waves until one is shed.
    let mut shed = 0;
    for wave in 0..10 {
        let answers = futures_util::future::join_all((0..40).map(|k| {
            app.http
                .post(format!("{}/api/rooms/narrow/join", app.address))
                .bearer_auth(user_token(&format!("u-queue{wave}-{k}")))
                .send()
        }))
        .await;
        for answer in answers {
            let answer = answer.expect("answered");
            match answer.status().as_u16() {
                200 => {}
                503 => {
                    shed += 1;
                    assert_eq!(
                        answer.headers().get("retry-after").map(|v| v.as_bytes()),
                        Some(&b"1"[..])
                    );
                    let body: Value = answer.json().await.expect("JSON");
                    assert_eq!(code(&body), "unavailable", "{body}");
                }
                other => panic!("unexpected status {other}"),
            }
        }
        if shed > 0 {
            break;
        }
    }
    assert!(
        shed > 0,
        "10 waves of 40 joins at once never overflowed a queue of one"
    );
    let (status, view) = join(&app, "narrow", "u-later").await;
    assert_eq!((status, view["role"].as_str()), (200, Some("member")));
}
