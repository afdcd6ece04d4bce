//! Room list: how long `GET /api/rooms` takes for a user in many rooms whose rooms already
//! hold history, against a user in one room on the same store at the same time.
//!
//! Ours only: the socket.io peer has no rooms to list. Per target:
//! 1. **Rooms** (not timed): the *member* creates `rooms` public rooms through the gateway's
//!    HTTP API; the *reference* user creates one.
//! 2. **Activity** (not timed): other users join every room over the WebSocket and send one
//!    message each, acknowledged, so each room has a last message and the member an unread count;
//!    then the member's list is polled until history-service has stored them all.
//! 3. **History** (not timed): `messages_per_room` older messages per room are inserted
//!    straight into the `messages` collection (as in the storm), so the store is as large as
//!    a busy deployment's. They bypass the consumer, so they move no unread counter: the list
//!    reads room documents, not messages, and this shows that a large store does not slow it.
//! 4. **Lists**: `requests` lists of the member and of the reference user, alternating, one at
//!    a time; the latency of each from request to the whole body read.
//! 5. The inserted history is removed again.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Ws};
use crate::measure::{Latency, SharedHistogram, histogram, record};
use crate::report::{Table, num, ratio};
use crate::scenario::storm::Fill;
use crate::scenario::{Ctx, clear, messages};
use crate::target::Target;
use crate::wire::Protocol;

/// Longest wait for history-service to store the activity messages.
const STORED_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for one frame while sending the activity messages.
const FRAME_TIMEOUT: Duration = Duration::from_secs(15);
/// Tries of one room creation (or join) that history-service sheds.
const CREATE_ATTEMPTS: usize = 30;
/// Connections that send the activity messages, each as a user of its own.
const WRITERS: usize = 16;
/// Pause after each room a writer spoke in: three frames every quarter second stay under the
/// gateway's 20 frames a second per connection.
const WRITER_PAUSE: Duration = Duration::from_millis(250);

pub async fn run(ctx: &mut Ctx, targets: &[&Target]) -> anyhow::Result<()> {
    let plan = ctx.plan.rooms.clone();
    let mut table = Table::new(
        "rooms",
        "Room list: GET /api/rooms for a user in many rooms and for a user in one",
        &[
            "target",
            "user",
            "rooms listed",
            "messages stored",
            "requests",
            "p50 ms",
            "p99 ms",
            "max ms",
            "p99 / reference p99",
        ],
    );
    for target in targets.iter().filter(|t| t.protocol == Protocol::Ours) {
        let outcome = run_target(ctx, target).await?;
        let stored = num((plan.rooms * plan.messages_per_room) as f64, 0);
        table.push(vec![
            target.name.clone(),
            format!("member of {}", plan.rooms),
            outcome.member_rooms.to_string(),
            stored.clone(),
            outcome.member.count.to_string(),
            num(outcome.member.p50, 2),
            num(outcome.member.p99, 2),
            num(outcome.member.max, 2),
            ratio(outcome.member.p99, outcome.reference.p99),
        ]);
        table.push(vec![
            target.name.clone(),
            "reference: member of 1".to_string(),
            outcome.reference_rooms.to_string(),
            stored,
            outcome.reference.count.to_string(),
            num(outcome.reference.p50, 2),
            num(outcome.reference.p99, 2),
            num(outcome.reference.max, 2),
            "1.00".to_string(),
        ]);
    }
    ctx.reporter.emit(&table)?;
    ctx.reporter.note(
        "Room list: the socket.io peer has no room list, so only ours is measured; the \
         reference is a user in one room, listed alternately with the member on the same store.",
    )?;
    Ok(())
}

struct Outcome {
    member: Latency,
    reference: Latency,
    member_rooms: usize,
    reference_rooms: usize,
}

/// Room ids of this run: `[A-Za-z0-9_-]`, short enough for the room id's 64 characters.
fn room_prefix(run_prefix: &str) -> String {
    let clean: String = run_prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .take(40)
        .collect();
    format!("{clean}-list-")
}

async fn run_target(ctx: &Ctx, target: &Target) -> anyhow::Result<Outcome> {
    let plan = &ctx.plan.rooms;
    if ctx.usernames.len() < 2 + WRITERS {
        bail!("the room list needs {} users", 2 + WRITERS);
    }
    let log_in = crate::accounts::log_in;
    let member = log_in(&ctx.http, &target.auth, &ctx.usernames[0]).await?;
    let reference = log_in(&ctx.http, &target.auth, &ctx.usernames[1]).await?;
    let mut writers = Vec::with_capacity(WRITERS);
    for name in &ctx.usernames[2..2 + WRITERS] {
        writers.push(log_in(&ctx.http, &target.auth, name).await?);
    }
    let base = format!("http://{}", target.gateway(0));
    let prefix = room_prefix(&ctx.prefix);
    let fill = Fill::now(plan.rooms, plan.messages_per_room).with_room_prefix(&prefix);
    let reference_room = format!("{prefix}ref");

    let start = Instant::now();
    stream::iter(0..plan.rooms)
        .map(|k| create_room(ctx, &base, &member, fill.room(k)))
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    create_room(ctx, &base, &reference, reference_room.clone()).await?;
    println!(
        "chat-bench: {}: {} rooms created in {:.1} s",
        target.name,
        plan.rooms + 1,
        start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let rooms: Vec<String> = (0..plan.rooms)
        .map(|k| fill.room(k))
        .chain([reference_room])
        .collect();
    // Writer `w` says one thing in rooms `w`, `w + WRITERS`, ..., paced under the gateway's
    // frame rate limit (three frames a room).
    let rooms = &rooms;
    stream::iter(writers.iter().enumerate())
        .map(|(w, token)| async move {
            let mut ws = client::open(Protocol::Ours, target.gateway(0), token)
                .await?
                .ws;
            for (k, room) in rooms.iter().enumerate().skip(w).step_by(WRITERS) {
                say_once(&mut ws, room, &format!("list-{k}")).await?;
                tokio::time::sleep(WRITER_PAUSE).await;
            }
            let _ = ws.close(None).await;
            anyhow::Ok(())
        })
        .buffer_unordered(WRITERS)
        .try_collect::<Vec<()>>()
        .await?;
    wait_until_listed(ctx, &base, &member, plan.rooms).await?;
    println!(
        "chat-bench: {}: a message in each room sent and stored in {:.1} s",
        target.name,
        start.elapsed().as_secs_f64()
    );

    let messages = messages(ctx, target);
    let start = Instant::now();
    fill.store(&messages, target, &ctx.usernames[..3], plan.insert_batch)
        .await?;
    println!(
        "chat-bench: {}: {} older messages stored in {:.1} s",
        target.name,
        fill.total(),
        start.elapsed().as_secs_f64()
    );

    let (mut member_latency, mut reference_latency) = (histogram(), histogram());
    let (mut member_rooms, mut reference_rooms) = (0, 0);
    for _ in 0..plan.requests {
        let (latency, rooms) = list(ctx, &base, &member).await?;
        record(&mut member_latency, latency);
        member_rooms = rooms.len();
        let (latency, rooms) = list(ctx, &base, &reference).await?;
        record(&mut reference_latency, latency);
        reference_rooms = rooms.len();
    }
    clear(&messages).await?;
    Ok(Outcome {
        member: Latency::of(&member_latency),
        reference: Latency::of(&reference_latency),
        member_rooms,
        reference_rooms,
    })
}

/// Creates public room `id` (already there from an earlier attempt is fine). Setting up is not
/// measured: a creation shed by history-service (503) is tried again after its `Retry-After`.
async fn create_room(ctx: &Ctx, base: &str, token: &str, id: String) -> anyhow::Result<()> {
    let body = json!({"id": id, "kind": "public", "name": format!("Room {id}")});
    post_retrying(ctx, &format!("{base}/api/rooms"), token, &body, &[201, 409])
        .await
        .with_context(|| format!("creating room {id}"))
}

/// First joins [`become_members`] asks for at once.
pub const MEMBER_JOINS_AT_ONCE: usize = 16;

/// Makes the token's user a member of `room` (`POST /api/rooms/{room}/join`), for set-ups
/// that are not measured: tried again while history-service sheds it.
pub async fn become_member(ctx: &Ctx, base: &str, token: &str, room: &str) -> anyhow::Result<()> {
    let url = format!("{base}/api/rooms/{room}/join");
    post_retrying(ctx, &url, token, &json!({}), &[200])
        .await
        .with_context(|| format!("joining room {room}"))
}

/// Makes each user (an index into `tokens`) a member of its room, [`MEMBER_JOINS_AT_ONCE`] at
/// a time, through `target`'s first gateway; answers the time each first join took. Only ours
/// has memberships: for the peer this does nothing.
pub async fn become_members(
    ctx: &Ctx,
    target: &Target,
    tokens: &[String],
    pairs: &BTreeSet<(usize, String)>,
) -> anyhow::Result<SharedHistogram> {
    let took = SharedHistogram::default();
    if target.protocol != Protocol::Ours {
        return Ok(took);
    }
    let base = format!("http://{}", target.gateway(0));
    let _: Vec<()> = stream::iter(pairs)
        .map(|(user, room)| {
            let (base, took) = (&base, &took);
            async move {
                let began = Instant::now();
                become_member(ctx, base, &tokens[*user], room).await?;
                took.record(began.elapsed());
                anyhow::Ok(())
            }
        })
        .buffer_unordered(MEMBER_JOINS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(took)
}

/// POSTs `body` until it is answered with one of `done`; a 503 is tried again after its
/// `Retry-After`, up to [`CREATE_ATTEMPTS`] times.
async fn post_retrying(
    ctx: &Ctx,
    url: &str,
    token: &str,
    body: &Value,
    done: &[u16],
) -> anyhow::Result<()> {
    for _ in 0..CREATE_ATTEMPTS {
        let response = ctx
            .http
            .post(url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        if done.contains(&status.as_u16()) {
            return Ok(());
        }
        if status.as_u16() != 503 {
            let body = response.text().await.unwrap_or_default();
            bail!("{status} {body}")
        }
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    bail!("still refused after {CREATE_ATTEMPTS} attempts")
}

/// Joins `room`, sends one message, waits for its acknowledgement, and leaves.
async fn say_once(ws: &mut Ws, room: &str, client_id: &str) -> anyhow::Result<()> {
    // Set-up, not measured: a join history-service cannot authorize now is tried again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match client::join(ws, Protocol::Ours, room).await {
            Ok(_) => break,
            Err(error)
                if attempts < CREATE_ATTEMPTS && format!("{error:#}").contains("unavailable") =>
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error),
        }
    }
    ws.send(Message::text(Protocol::Ours.send(
        room,
        client_id,
        "the latest message of this room",
    )))
    .await?;
    let acked = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                    match frame["type"].as_str() {
                        Some("ack") if frame["client_id"] == client_id => return anyhow::Ok(()),
                        Some("error") => bail!("send refused: {text}"),
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error.into()),
                None => bail!("connection ended"),
            }
        }
    };
    tokio::time::timeout(FRAME_TIMEOUT, acked)
        .await
        .context("no ack")??;
    ws.send(Message::text(
        json!({"type": "leave", "room": room}).to_string(),
    ))
    .await?;
    Ok(())
}

/// Polls the member's list until `rooms` rooms show a last message.
async fn wait_until_listed(ctx: &Ctx, base: &str, token: &str, rooms: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + STORED_TIMEOUT;
    loop {
        let (_, listed) = list(ctx, base, token).await?;
        let with_message = listed
            .iter()
            .filter(|room| room.get("last_message").is_some_and(|m| !m.is_null()))
            .count();
        if with_message >= rooms {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("after {STORED_TIMEOUT:?}, {with_message} of {rooms} rooms show their message");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One `GET /api/rooms`: its latency and the rooms it listed.
async fn list(ctx: &Ctx, base: &str, token: &str) -> anyhow::Result<(Duration, Vec<Value>)> {
    let start = Instant::now();
    let response = ctx
        .http
        .get(format!("{base}/api/rooms"))
        .bearer_auth(token)
        .send()
        .await
        .context("listing rooms")?;
    let status = response.status();
    let body: Value = response.json().await.context("reading the room list")?;
    let latency = start.elapsed();
    if !status.is_success() {
        bail!("listing rooms: {status} {body}");
    }
    let rooms = body["rooms"].as_array().cloned().unwrap_or_default();
    Ok((latency, rooms))
}
