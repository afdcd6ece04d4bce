//! Rooms as users meet them through the gateways: the permission table of docs/rooms.md as an
//! authorization matrix (role × kind × action against the real services), and removals that
//! cut live delivery on another gateway.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Client, System, SystemOptions};

/// Who acts, relative to the room the action is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    Owner,
    Admin,
    Member,
    /// Signed in, never a member.
    Outsider,
    /// Was a member, then banned.
    Banned,
}

const ACTORS: [Actor; 5] = [
    Actor::Owner,
    Actor::Admin,
    Actor::Member,
    Actor::Outsider,
    Actor::Banned,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Public,
    Private,
    Dm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// `GET /api/rooms/directory?q=<room>` lists it.
    SeeInDirectory,
    /// WebSocket `join`.
    Join,
    /// `GET /api/rooms/{room}/messages`.
    ReadHistory,
    /// `GET /api/rooms/{room}/members`.
    SeeMembers,
    /// `POST /api/rooms/{room}/members` with a user who is in no room.
    AddMember,
    /// `DELETE /api/rooms/{room}/members/{target}` of a plain member.
    Kick,
    /// `POST /api/rooms/{room}/bans/{target}` of a plain member.
    Ban,
    /// `PATCH /api/rooms/{room}` with a new name.
    Rename,
    /// `PUT /api/rooms/{room}/members/{target}` making a plain member admin.
    ChangeRole,
    /// `DELETE /api/rooms/{room}`.
    Archive,
    /// `DELETE /api/rooms/{room}/members/{self}`.
    Leave,
}

const ACTIONS: [Action; 11] = [
    Action::SeeInDirectory,
    Action::Join,
    Action::ReadHistory,
    Action::SeeMembers,
    Action::AddMember,
    Action::Kick,
    Action::Ban,
    Action::Rename,
    Action::ChangeRole,
    Action::Archive,
    Action::Leave,
];

/// What an action answers: allowed, or refused with this HTTP status and error code (a
/// WebSocket join refusal carries the same code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Allowed,
    Refused(u16, &'static str),
}

const NOT_FOUND: Answer = Answer::Refused(404, "not_found");
const FORBIDDEN: Answer = Answer::Refused(403, "forbidden");
const BANNED: Answer = Answer::Refused(403, "banned");

/// The permission table of docs/rooms.md, written out once more, independently of the code.
fn expected(kind: Kind, actor: Actor, action: Action) -> Answer {
    use Action::*;
    use Actor::*;
    use Answer::Allowed;
    // Private rooms and DMs do not exist for those who are not in them.
    let member = matches!(actor, Owner | Admin | Member);
    if kind != Kind::Public && !member {
        return if action == SeeInDirectory {
            Answer::Refused(0, "not listed")
        } else {
            NOT_FOUND
        };
    }
    let manager = matches!(actor, Owner | Admin);
    match (kind, action) {
        (Kind::Public, SeeInDirectory) => Allowed,
        (_, SeeInDirectory) => Answer::Refused(0, "not listed"),
        (Kind::Public, Join) if actor == Banned => BANNED,
        (Kind::Public, Join) => Allowed,
        (_, Join) => Allowed,
        // Leaving a room one is not in changes nothing: answered like a leave.
        (Kind::Public, Leave) if !member => Allowed,
        _ if actor == Banned => BANNED,
        (Kind::Public, ReadHistory | SeeMembers) if actor == Outsider => FORBIDDEN,
        (_, ReadHistory | SeeMembers) => Allowed,
        _ if actor == Outsider => FORBIDDEN,
        // A DM has no powers, but either side may hide it.
        (Kind::Dm, Leave) => Allowed,
        (Kind::Dm, _) => FORBIDDEN,
        (Kind::Public, AddMember) => Allowed,
        (Kind::Private, AddMember) | (_, Kick | Ban | Rename) => {
            if manager {
                Allowed
            } else {
                FORBIDDEN
            }
        }
        (_, ChangeRole | Archive) => {
            if actor == Owner {
                Allowed
            } else {
                FORBIDDEN
            }
        }
        // The only owner cannot leave without handing over.
        (_, Leave) if actor == Owner => Answer::Refused(409, "last_owner"),
        (_, Leave) => Allowed,
    }
}

/// A signed-in user.
struct User {
    name: String,
    id: String,
    token: String,
}

async fn user(system: &System, name: &str) -> User {
    let token = system.user(0, name).await;
    let me: Value = http()
        .get(format!("{}/api/auth/me", system.gateways[0].url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me sent")
        .json()
        .await
        .expect("me body");
    User {
        name: name.to_string(),
        id: me["user"]["id"].as_str().expect("user id").to_string(),
        token,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// The answer of a request, as the matrix compares them.
async fn answer_of(response: reqwest::Response) -> (Answer, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return (Answer::Allowed, body);
    }
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    // Leaked on purpose: a handful of short codes per test run.
    (
        Answer::Refused(status, Box::leak(code.into_boxed_str())),
        body,
    )
}

struct Api<'a> {
    base: &'a str,
}

impl Api<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (Answer, Value) {
        let mut request = http()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer_of(request.send().await.expect("request sent")).await
    }

    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Value {
        let (answer, body) = self.call(method.clone(), path, token, body).await;
        assert_eq!(answer, Answer::Allowed, "{method} {path}: {body}");
        body
    }
}

/// The people of one matrix row and the room they act in.
struct Cast<'a> {
    owner: &'a User,
    admin: &'a User,
    member: &'a User,
    outsider: &'a User,
    banned: &'a User,
    /// A plain member that kicks, bans and role changes aim at.
    target: &'a User,
    /// In no room: the one an add brings in.
    newcomer: &'a User,
}

impl Cast<'_> {
    fn actor(&self, actor: Actor) -> &User {
        match actor {
            Actor::Owner => self.owner,
            Actor::Admin => self.admin,
            Actor::Member => self.member,
            Actor::Outsider => self.outsider,
            Actor::Banned => self.banned,
        }
    }
}

/// A fresh room of `kind` for `cast`: the owner creates it, the admin, the member, the target
/// and the soon-banned user are added, the admin promoted and the banned user banned. A DM is
/// between the owner and the member (the only two actors it has).
async fn set_up(api: &Api<'_>, cast: &Cast<'_>, kind: Kind, n: usize) -> String {
    use reqwest::Method;
    let owner = &cast.owner.token;
    if kind == Kind::Dm {
        let view = api
            .ok(
                Method::POST,
                "/api/dms",
                owner,
                Some(json!({"username": cast.member.name})),
            )
            .await;
        return view["id"].as_str().expect("dm id").to_string();
    }
    let kind_name = if kind == Kind::Public {
        "public"
    } else {
        "private"
    };
    let id = format!("matrix-{kind_name}-{n}");
    api.ok(
        Method::POST,
        "/api/rooms",
        owner,
        Some(json!({"id": id, "kind": kind_name, "name": format!("Matrix {n}")})),
    )
    .await;
    for user in [cast.admin, cast.member, cast.target, cast.banned] {
        api.ok(
            Method::POST,
            &format!("/api/rooms/{id}/members"),
            owner,
            Some(json!({"username": user.name})),
        )
        .await;
    }
    api.ok(
        Method::PUT,
        &format!("/api/rooms/{id}/members/{}", cast.admin.id),
        owner,
        Some(json!({"role": "admin"})),
    )
    .await;
    api.ok(
        Method::POST,
        &format!("/api/rooms/{id}/bans/{}", cast.banned.id),
        owner,
        None,
    )
    .await;
    id
}

/// What `actor` gets when trying `action` in `room`.
async fn attempt(
    system: &System,
    api: &Api<'_>,
    cast: &Cast<'_>,
    room: &str,
    actor: Actor,
    action: Action,
) -> (Answer, Value) {
    use reqwest::Method;
    let who = cast.actor(actor);
    let token = &who.token;
    let target = &cast.target.id;
    match action {
        Action::SeeInDirectory => {
            let (answer, body) = api
                .call(
                    Method::GET,
                    &format!("/api/rooms/directory?q={room}"),
                    token,
                    None,
                )
                .await;
            assert_eq!(
                answer,
                Answer::Allowed,
                "the directory answers everyone: {body}"
            );
            let listed = body["rooms"]
                .as_array()
                .is_some_and(|rooms| rooms.iter().any(|r| r["id"] == room));
            let answer = if listed {
                Answer::Allowed
            } else {
                Answer::Refused(0, "not listed")
            };
            (answer, body)
        }
        Action::Join => {
            let mut client = system.connect(0, token).await;
            client
                .send_json(json!({"type": "join", "room": room}))
                .await;
            join_answer(&mut client).await
        }
        Action::ReadHistory => {
            api.call(
                Method::GET,
                &format!("/api/rooms/{room}/messages"),
                token,
                None,
            )
            .await
        }
        Action::SeeMembers => {
            api.call(
                Method::GET,
                &format!("/api/rooms/{room}/members"),
                token,
                None,
            )
            .await
        }
        Action::AddMember => {
            api.call(
                Method::POST,
                &format!("/api/rooms/{room}/members"),
                token,
                Some(json!({"username": cast.newcomer.name})),
            )
            .await
        }
        Action::Kick => {
            api.call(
                Method::DELETE,
                &format!("/api/rooms/{room}/members/{target}"),
                token,
                None,
            )
            .await
        }
        Action::Ban => {
            api.call(
                Method::POST,
                &format!("/api/rooms/{room}/bans/{target}"),
                token,
                None,
            )
            .await
        }
        Action::Rename => {
            api.call(
                Method::PATCH,
                &format!("/api/rooms/{room}"),
                token,
                Some(json!({"name": "Renamed"})),
            )
            .await
        }
        Action::ChangeRole => {
            api.call(
                Method::PUT,
                &format!("/api/rooms/{room}/members/{target}"),
                token,
                Some(json!({"role": "admin"})),
            )
            .await
        }
        Action::Archive => {
            api.call(Method::DELETE, &format!("/api/rooms/{room}"), token, None)
                .await
        }
        Action::Leave => {
            api.call(
                Method::DELETE,
                &format!("/api/rooms/{room}/members/{}", who.id),
                token,
                None,
            )
            .await
        }
    }
}

/// A join's answer: `joined`, or the `error` frame's code (as a 403/404 like the HTTP side).
async fn join_answer(client: &mut Client) -> (Answer, Value) {
    loop {
        let frame = client
            .next_json(Duration::from_secs(10))
            .await
            .expect("an answer to the join within 10 s");
        match frame["type"].as_str() {
            Some("joined") => return (Answer::Allowed, frame),
            Some("error") => {
                let code = frame["code"].as_str().unwrap_or("").to_string();
                let status = match code.as_str() {
                    "not_found" => 404,
                    _ => 403,
                };
                return (
                    Answer::Refused(status, Box::leak(code.into_boxed_str())),
                    frame,
                );
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn the_permission_table_holds_for_every_role_kind_and_action() {
    // Every cell gets a room of its own: far more rooms than one user may create per hour.
    let mut options = SystemOptions::new(1);
    options
        .history_env
        .push(("HISTORY__ROOMS__CREATE_PER_HOUR".into(), "10000".into()));
    let system = System::start_with(&options).await;
    let base = system.gateways[0].url();
    let api = Api { base: &base };
    let mut users = Vec::new();
    for name in [
        "owner", "admin", "member", "outsider", "banned", "target", "newcomer",
    ] {
        users.push(user(&system, name).await);
    }
    let cast = Cast {
        owner: &users[0],
        admin: &users[1],
        member: &users[2],
        outsider: &users[3],
        banned: &users[4],
        target: &users[5],
        newcomer: &users[6],
    };

    let mut n = 0;
    let mut failures = Vec::new();
    let mut checked = 0;
    for kind in [Kind::Public, Kind::Private, Kind::Dm] {
        for action in ACTIONS {
            for actor in ACTORS {
                // A DM has two sides and outsiders; no admin, no bans.
                if kind == Kind::Dm && matches!(actor, Actor::Admin | Actor::Banned) {
                    continue;
                }
                // Every attempt gets a room of its own: many of them change it.
                n += 1;
                let room = set_up(&api, &cast, kind, n).await;
                let (got, body) = attempt(&system, &api, &cast, &room, actor, action).await;
                let want = expected(kind, actor, action);
                checked += 1;
                if got != want {
                    failures.push(format!(
                        "{kind:?} {actor:?} {action:?}: expected {want:?}, got {got:?} {body}"
                    ));
                }
                if kind == Kind::Dm {
                    // The DM is the same room for every attempt: put back what the attempt changed.
                    let _ = api
                        .call(
                            reqwest::Method::POST,
                            "/api/dms",
                            &cast.member.token,
                            Some(json!({"username": cast.owner.name})),
                        )
                        .await;
                }
            }
        }
    }
    assert!(checked > 100, "{checked} cells checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} cells differ from docs/rooms.md:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The next frame of `client` that concerns `room` and is not presence or typing, within `wait`.
async fn next_about(client: &mut Client, room: &str, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let frame = client.next_json(left).await?;
        if frame["room"] == room && !matches!(frame["type"].as_str(), Some("presence" | "typing")) {
            return Some(frame);
        }
    }
}

/// Kicked or banned on one gateway while connected to another: the removal arrives within a
/// second, no message sent afterwards reaches the removed user, their sends are refused, and
/// they cannot come back by any route.
async fn removal_cuts_live_delivery_across_gateways(kind: &str, removal: &str) {
    use reqwest::Method;
    let system = System::start(2).await;
    let owner = user(&system, "olivia").await;
    let removed = user(&system, "rick").await;
    let base = system.gateways[0].url();
    let api = Api { base: &base };
    let room = format!("cut-{kind}");
    api.ok(
        Method::POST,
        "/api/rooms",
        &owner.token,
        Some(json!({"id": room, "kind": kind, "name": "Cut"})),
    )
    .await;
    api.ok(
        Method::POST,
        &format!("/api/rooms/{room}/members"),
        &owner.token,
        Some(json!({"username": removed.name})),
    )
    .await;

    let mut olivia = system.connect(0, &owner.token).await;
    let mut rick = system.connect(1, &removed.token).await;
    olivia.join(&room).await;
    rick.join(&room).await;
    olivia
        .send_message(&room, "before", "before the removal")
        .await;
    olivia.next_of("ack").await;
    let before = next_about(&mut rick, &room, Duration::from_secs(10))
        .await
        .expect("the message before");
    assert_eq!(before["type"], "message");
    assert_eq!(before["body"], "before the removal");

    let path = match removal {
        "kicked" => format!("/api/rooms/{room}/members/{}", removed.id),
        _ => format!("/api/rooms/{room}/bans/{}", removed.id),
    };
    let method = if removal == "kicked" {
        Method::DELETE
    } else {
        Method::POST
    };
    let start = Instant::now();
    api.ok(method, &path, &owner.token, None).await;
    let frame = next_about(&mut rick, &room, Duration::from_secs(5))
        .await
        .expect("a removal within 5 s");
    let took = start.elapsed();
    assert_eq!(
        frame,
        json!({"type": "removed", "room": room, "reason": removal})
    );
    println!("{removal} from a {kind} room: removal seen on the other gateway after {took:?}");
    // The issue asks for 1 s; shared CI machines get a margin.
    assert!(took < Duration::from_secs(3), "removal took {took:?}");

    // Sent after the removal: never delivered to the removed user.
    olivia
        .send_message(&room, "after", "after the removal")
        .await;
    olivia.next_of("ack").await;
    // Their own sends are refused, not acknowledged; nothing of the room arrives meanwhile.
    rick.send_message(&room, "sneaky", "still here?").await;
    let mut refusal = None;
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(frame) = rick.next_json(left).await else {
            break;
        };
        match frame["type"].as_str() {
            Some("error") if frame["client_id"] == "sneaky" => refusal = Some(frame),
            Some("ack") => panic!("a removed user's send was acknowledged: {frame}"),
            Some("message") if frame["room"] == room => {
                panic!("a message sent after the removal arrived: {frame}")
            }
            _ => {}
        }
    }
    let refusal = refusal.expect("the removed user's send is refused");
    assert!(
        matches!(
            refusal["code"].as_str(),
            Some("not_joined" | "forbidden" | "not_found" | "banned")
        ),
        "{refusal}"
    );

    // No way back for a banned user (or into a private room): WebSocket, history, an add.
    let (again, _) = {
        rick.send_json(json!({"type": "join", "room": room})).await;
        join_answer(&mut rick).await
    };
    let history = api
        .call(
            Method::GET,
            &format!("/api/rooms/{room}/messages"),
            &removed.token,
            None,
        )
        .await
        .0;
    match (kind, removal) {
        ("public", "kicked") => {
            assert_eq!(
                again,
                Answer::Allowed,
                "a kicked user may rejoin a public room"
            );
        }
        ("public", _) => {
            assert_eq!(again, BANNED);
            assert_eq!(history, BANNED);
            let (add, _) = api
                .call(
                    Method::POST,
                    &format!("/api/rooms/{room}/members"),
                    &owner.token,
                    Some(json!({"username": removed.name})),
                )
                .await;
            assert_eq!(add, BANNED, "a member cannot add a banned user back");
        }
        _ => {
            assert_eq!(again, NOT_FOUND);
            assert_eq!(history, NOT_FOUND);
        }
    }
}

#[tokio::test]
async fn a_kick_from_a_private_room_cuts_delivery_on_the_other_gateway_within_a_second() {
    removal_cuts_live_delivery_across_gateways("private", "kicked").await;
}

#[tokio::test]
async fn a_ban_from_a_public_room_cuts_delivery_on_the_other_gateway_and_keeps_them_out() {
    removal_cuts_live_delivery_across_gateways("public", "banned").await;
}
