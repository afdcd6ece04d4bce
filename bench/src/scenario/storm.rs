//! Join storm: many clients join rooms that already hold history, all within seconds, the way
//! every client of a restarted gateway rejoins at once.
//!
//! Per target:
//! 1. **Fill** (not timed): `rooms` rooms of `messages_per_room` messages each are inserted
//!    straight into the target's `messages` collection, as the target itself stores them
//!    ([`Fill::ours_document`], [`Fill::peer_document`]), with unordered `insert_many` calls.
//! 2. **Connect** (not timed): `clients` authenticated connections are opened. Each is handed
//!    at once to its own task, which keeps it alive (answers socket.io pings) until its turn.
//! 3. **Storm**: join frames go out open loop at `rate` per second, client `k` joining room
//!    `k % rooms`. For ours, every other round of clients rejoins with `since` (an id
//!    `since_back` messages from the end of its room, so the catch-up is small); socket.io has
//!    no `since`, so all of the peer's joins are plain. A join's latency runs from its intended
//!    send time to the answer (ours: `joined`; the peer: `room_history`); an `error` frame
//!    counts as refused, and no answer within `deadline` as unanswered. An answer with fewer
//!    messages than the join asked for (a plain join: the room's last `recent`; a `since`
//!    join: the `since_back` after its id) counts as short: ours answers a plain join with
//!    what the gateway saw when history-service does not answer in time. Answered clients
//!    keep reading (ours tells members about each other) until the storm ends.
//! 4. Meanwhile history-service's `/health/ready` is polled (ours); its requests on the
//!    messages route and the gateway's join counters are read from their Prometheus metrics
//!    before and after, which gives history reads per join.
//! 5. The collection is emptied and the target's own processes are given time to go quiet
//!    before the next target.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt, stream};
use mongodb::bson::{self, Document, doc, oid::ObjectId};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Ws};
use crate::measure::{CpuMeter, Latency, histogram, paced, record};
use crate::plan::StormPlan;
use crate::report::{Table, num};
use crate::scenario::{Better, Ctx, clear, indexes_to_restore, messages, restore_indexes};
use crate::target::Target;
use crate::wire::{Incoming, Protocol};

/// Time between two stored messages of a room. More than the gateway's late window (1 s), so
/// a catch-up after message `k` carries no earlier message as published late.
const SPACING_MS: i64 = 2_000;
/// How long after its send time a stored message was published.
const PUBLISH_DELAY_MS: i64 = 2;
/// Bytes of a stored message's body, as in the other scenarios.
const BODY_BYTES: usize = 64;
/// A readiness poll that takes longer counts as not ready: the timeout of the deployment's
/// readiness probe (`deploy/k8s/base/history-service.yaml`).
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// The route label of history-service's page-of-messages requests (joins' reads).
const MESSAGES_ROUTE: &str = "/api/rooms/{room}/messages";

/// The room storm client `k` joins (rooms of [`Fill::new`]).
pub fn room_name(room: usize) -> String {
    format!("storm-{room}")
}

/// The history a storm starts from: `per_room` messages in each of `rooms` rooms, sent one every
/// [`SPACING_MS`] and ending just before `now_ms`, with the documents each target stores.
pub struct Fill {
    pub rooms: usize,
    pub per_room: usize,
    now_ms: i64,
    /// Makes our ids differ between runs (the random part of a ULID).
    salt: u16,
    /// Room `k` is `<room_prefix><k>`.
    room_prefix: String,
}

impl Fill {
    pub fn new(rooms: usize, per_room: usize, now_ms: i64, salt: u16) -> Self {
        Self {
            rooms,
            per_room,
            now_ms,
            salt,
            room_prefix: "storm-".to_string(),
        }
    }

    /// The same fill for rooms named `<prefix><k>` instead of the storm's.
    pub fn with_room_prefix(mut self, prefix: &str) -> Self {
        self.room_prefix = prefix.to_string();
        self
    }

    /// The id of room `room` of this fill.
    pub fn room(&self, room: usize) -> String {
        format!("{}{room}", self.room_prefix)
    }

    /// A fill ending now.
    pub fn now(rooms: usize, per_room: usize) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self::new(
            rooms,
            per_room,
            i64::try_from(now.as_millis()).unwrap_or(i64::MAX),
            now.subsec_nanos() as u16,
        )
    }

    pub fn total(&self) -> usize {
        self.rooms * self.per_room
    }

    /// When message `index` of every room was sent (Unix ms); the last one a spacing ago.
    pub fn sent_ms(&self, index: usize) -> i64 {
        self.now_ms - (self.per_room - index) as i64 * SPACING_MS
    }

    /// Our id of message `index` of `room`: a ULID of its send time, so `_id` order is time
    /// order, as the gateway makes them.
    pub fn ours_id(&self, room: usize, index: usize) -> String {
        let random = (u128::from(self.salt) << 64) | ((room as u128) << 32) | index as u128;
        ulid::Ulid::from_parts(self.sent_ms(index) as u64, random).to_string()
    }

    /// The id a `since` join of `room` uses: `back` messages from the end.
    pub fn since_id(&self, room: usize, back: usize) -> String {
        self.ours_id(room, self.per_room.saturating_sub(back + 1))
    }

    fn body(room: usize, index: usize) -> String {
        let mut body = format!("storm history {room}:{index} ");
        while body.len() < BODY_BYTES {
            body.push('x');
        }
        body
    }

    /// Message `index` of `room` as history-service stores it (`MessageDocument` in
    /// `history-service/src/message_store/document.rs`), written by `author`.
    pub fn ours_document(&self, room: usize, index: usize, author: &str) -> Document {
        let sent = self.sent_ms(index);
        doc! {
            "_id": self.ours_id(room, index),
            "room": self.room(room),
            "client_id": format!("storm_{room}_{index}"),
            "author_id": format!("storm-author-{author}"),
            "author_name": author,
            "body": Self::body(room, index),
            "sent_at": bson::DateTime::from_millis(sent),
            "published_at": bson::DateTime::from_millis(sent + PUBLISH_DELAY_MS),
        }
    }

    /// Message `index` of `room` as the peer's Mongoose model saves it (`models/Message.js`,
    /// with Mongoose's `__v`); the ObjectId carries the send time, as Mongoose's would.
    pub fn peer_document(&self, room: usize, index: usize, author: &str) -> Document {
        let sent = self.sent_ms(index);
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&((sent / 1000) as u32).to_be_bytes());
        id[4..8].copy_from_slice(&(room as u32).to_be_bytes());
        id[8..].copy_from_slice(&(index as u32).to_be_bytes());
        doc! {
            "_id": ObjectId::from_bytes(id),
            "room": self.room(room),
            "clientId": format!("storm_{room}_{index}"),
            "author": {"id": format!("storm-author-{author}"), "username": author},
            "body": Self::body(room, index),
            "sentAt": bson::DateTime::from_millis(sent),
            "__v": 0,
        }
    }

    /// Inserts every document of the fill into `target`'s `messages`, `batch` per call.
    pub async fn store(
        &self,
        messages: &mongodb::Collection<Document>,
        target: &Target,
        authors: &[String],
        batch: usize,
    ) -> anyhow::Result<()> {
        let mut documents = self.documents(target.protocol, authors).peekable();
        while documents.peek().is_some() {
            let part: Vec<Document> = documents.by_ref().take(batch.max(1)).collect();
            messages
                .insert_many(part)
                .ordered(false)
                .await
                .with_context(|| format!("{}: filling the rooms", target.name))?;
        }
        Ok(())
    }

    /// Every document for `protocol`'s target, room by room, oldest first.
    pub fn documents<'a>(
        &'a self,
        protocol: Protocol,
        authors: &'a [String],
    ) -> impl Iterator<Item = Document> + 'a {
        (0..self.rooms).flat_map(move |room| {
            (0..self.per_room).map(move |index| {
                let author = &authors[(room + index) % authors.len()];
                match protocol {
                    Protocol::Ours => self.ours_document(room, index, author),
                    Protocol::SocketIo => self.peer_document(room, index, author),
                }
            })
        })
    }
}

/// Which kind of join a storm client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plain,
    Since,
}

/// Client `k` of a storm over `rooms` rooms: every other round of clients (`k / rooms` odd)
/// rejoins with `since` where the protocol has it, so each room sees both kinds.
pub fn kind_of(k: usize, rooms: usize, protocol: Protocol) -> Kind {
    if protocol == Protocol::Ours && (k / rooms.max(1)) % 2 == 1 {
        Kind::Since
    } else {
        Kind::Plain
    }
}

/// How one join went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Answered this long after its intended send time, with this many messages.
    Answered { latency: Duration, messages: usize },
    /// Answered with an `error` frame (ours), e.g. `unavailable`.
    Refused(String),
    /// No answer within the deadline, or the connection ended first (why, then).
    Unanswered(Option<String>),
    /// The storm never got to it (its connection ended before its turn).
    NotSent(String),
}

/// The joins of one kind (or all of them), summed up.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: usize,
    pub answered: usize,
    /// Answered with fewer messages than the join asked for.
    pub short: usize,
    pub refused: usize,
    pub unanswered: usize,
    pub latency: Latency,
    pub first_refusal: Option<String>,
    pub first_loss: Option<String>,
}

impl Tally {
    /// Sums up the outcomes whose kind `keep` accepts; an answer with fewer messages than
    /// `expected` says for its kind counts as short.
    pub fn of(
        outcomes: &[(Kind, JoinOutcome)],
        keep: impl Fn(Kind) -> bool,
        expected: impl Fn(Kind) -> usize,
    ) -> Self {
        let mut tally = Self::default();
        let mut latencies = histogram();
        for (kind, outcome) in outcomes {
            if !keep(*kind) {
                continue;
            }
            match outcome {
                JoinOutcome::NotSent(_) => continue,
                JoinOutcome::Answered { latency, messages } => {
                    tally.answered += 1;
                    if *messages < expected(*kind) {
                        tally.short += 1;
                    }
                    record(&mut latencies, *latency);
                }
                JoinOutcome::Refused(frame) => {
                    tally.refused += 1;
                    tally.first_refusal.get_or_insert_with(|| frame.clone());
                }
                JoinOutcome::Unanswered(why) => {
                    tally.unanswered += 1;
                    if let Some(why) = why {
                        tally.first_loss.get_or_insert_with(|| why.clone());
                    }
                }
            }
            tally.sent += 1;
        }
        tally.latency = Latency::of(&latencies);
        tally
    }
}

/// How many messages a join's answer carries: `messages` of our `joined` frame, or of the
/// peer's `room_history` event.
pub fn history_len(protocol: Protocol, text: &str) -> Option<usize> {
    let value: serde_json::Value = match protocol {
        Protocol::Ours => serde_json::from_str(text).ok()?,
        Protocol::SocketIo => {
            let event: serde_json::Value = serde_json::from_str(text.strip_prefix("42")?).ok()?;
            event.get(1)?.clone()
        }
    };
    Some(value.get("messages")?.as_array()?.len())
}

/// The sum of the samples of `name` in a Prometheus text exposition whose labels include
/// every `label="value"` pair of `labels`; `None` when no sample matches.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(rest) = rest.strip_prefix('{') {
            // Values may hold braces (route templates); the value follows the last one.
            let Some((inside, value)) = rest.rsplit_once('}') else {
                continue;
            };
            (inside, value)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            // Another metric whose name starts with `name`.
            continue;
        };
        let wanted = labels.iter().all(|(label, value)| {
            let pair = format!("{label}=\"{value}\"");
            label_text.starts_with(&pair) || label_text.contains(&format!(",{pair}"))
        });
        if !wanted {
            continue;
        }
        if let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *sum.get_or_insert(0.0) += value;
        }
    }
    sum
}

/// The counters the storm reads before and after.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    /// history-service: requests on the messages route (any status).
    history_reads: Option<f64>,
    /// The gateway's `gateway_joins_total`, `gateway_joins_from_memory_total` and
    /// `gateway_history_reads_total`.
    gateway_joins: Option<f64>,
    from_memory: Option<f64>,
    gateway_reads: Option<f64>,
}

impl Counters {
    async fn read(http: &reqwest::Client, target: &Target) -> Self {
        let mut counters = Self::default();
        if let Some(url) = &target.history_metrics {
            match fetch(http, url).await {
                Ok(text) => {
                    counters.history_reads = Some(
                        metric_sum(
                            &text,
                            "http_request_duration_seconds_count",
                            &[("route", MESSAGES_ROUTE)],
                        )
                        .unwrap_or(0.0),
                    );
                }
                Err(error) => eprintln!(
                    "chat-bench: {}: history-service's metrics at {url}: {error:#}",
                    target.name
                ),
            }
        }
        if let Some(url) = &target.gateway_metrics {
            match fetch(http, url).await {
                Ok(text) => {
                    counters.gateway_joins = metric_sum(&text, "gateway_joins_total", &[]);
                    counters.from_memory =
                        metric_sum(&text, "gateway_joins_from_memory_total", &[]);
                    counters.gateway_reads = metric_sum(&text, "gateway_history_reads_total", &[]);
                }
                Err(error) => eprintln!(
                    "chat-bench: {}: the gateway's metrics at {url}: {error:#}",
                    target.name
                ),
            }
        }
        counters
    }
}

pub async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    Ok(http
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// `after - before`, when both were read.
fn difference(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

/// Readiness polls during the storm: how many, how many did not answer 200 in time, and the
/// first of those.
#[derive(Debug, Default)]
struct Readiness {
    polls: u64,
    not_ready: u64,
    first: Option<String>,
}

/// One readiness poll: `None` when `url` answered 200 within [`READY_TIMEOUT`], else why not.
async fn poll_once(http: &reqwest::Client, url: &str) -> Option<String> {
    match tokio::time::timeout(READY_TIMEOUT, http.get(url).send()).await {
        Ok(Ok(response)) if response.status() == reqwest::StatusCode::OK => None,
        Ok(Ok(response)) => Some(format!("answered {}", response.status())),
        Ok(Err(error)) => Some(format!("{error}")),
        Err(_) => Some(format!("no answer within {READY_TIMEOUT:?}")),
    }
}

/// Polls `url` every `every` until `stop`, each poll on its own so that a slow answer does not
/// delay the next (at most `READY_TIMEOUT / every` are in flight).
async fn poll_ready(
    http: reqwest::Client,
    url: String,
    every: Duration,
    stop: CancellationToken,
) -> Readiness {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut polls = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (http, url) = (http.clone(), url.clone());
        polls.spawn(async move { poll_once(&http, &url).await });
    }
    let mut readiness = Readiness::default();
    while let Some(poll) = polls.join_next().await {
        readiness.polls += 1;
        if let Some(problem) = poll.unwrap_or_else(|error| Some(error.to_string())) {
            readiness.not_ready += 1;
            readiness.first.get_or_insert(problem);
        }
    }
    readiness
}

/// One storm client: keeps its connection alive until told to join (with the intended send
/// time), joins, waits for the answer until the deadline, then keeps reading until `stop`.
struct Client {
    protocol: Protocol,
    room: String,
    frame: String,
    deadline: Duration,
    /// Joins answered, refused or timed out so far, for the storm's end.
    settled: Arc<AtomicUsize>,
}

impl Client {
    async fn run(
        self,
        mut ws: Ws,
        go: oneshot::Receiver<Instant>,
        stop: CancellationToken,
    ) -> JoinOutcome {
        let intended = tokio::select! {
            go = go => match go {
                Ok(at) => at,
                Err(_) => return JoinOutcome::NotSent("the storm ended first".into()),
            },
            ended = keep_alive(&mut ws, self.protocol) => {
                return JoinOutcome::NotSent(format!("before its join: {ended}"));
            }
        };
        let outcome = tokio::time::timeout_at(
            (intended + self.deadline).into(),
            self.join(&mut ws, intended),
        )
        .await
        .unwrap_or(JoinOutcome::Unanswered(None));
        self.settled.fetch_add(1, Ordering::Relaxed);
        if matches!(outcome, JoinOutcome::Answered { .. }) {
            // Members hear about each other (ours); a connection that stopped reading would
            // be closed as lagging.
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = keep_alive(&mut ws, self.protocol) => {}
            }
        }
        outcome
    }

    async fn join(&self, ws: &mut Ws, intended: Instant) -> JoinOutcome {
        if let Err(error) = ws.send(Message::text(self.frame.as_str())).await {
            return JoinOutcome::Unanswered(Some(format!("sending the join: {error}")));
        }
        loop {
            let text = match next_text(ws).await {
                Ok(text) => text,
                Err(why) => return JoinOutcome::Unanswered(Some(why)),
            };
            match self.protocol.classify(&text) {
                Incoming::Joined(room) if room == self.room => {
                    return JoinOutcome::Answered {
                        latency: intended.elapsed(),
                        messages: history_len(self.protocol, &text).unwrap_or(0),
                    };
                }
                Incoming::Refused(frame) => {
                    return JoinOutcome::Refused(frame.chars().take(300).collect());
                }
                Incoming::Ping => {
                    if let Some(pong) = self.protocol.pong()
                        && let Err(error) = ws.send(Message::text(pong)).await
                    {
                        return JoinOutcome::Unanswered(Some(format!("answering a ping: {error}")));
                    }
                }
                _ => {}
            }
        }
    }
}

/// The next text frame, or why the connection ended.
async fn next_text(ws: &mut Ws) -> Result<String, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Close(frame))) => {
                return Err(format!("closed by the server: {frame:?}"));
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.to_string()),
            None => return Err("connection ended".into()),
        }
    }
}

/// Reads and drops frames, answering socket.io pings, until the connection ends; returns why.
async fn keep_alive(ws: &mut Ws, protocol: Protocol) -> String {
    loop {
        let text = match next_text(ws).await {
            Ok(text) => text,
            Err(why) => return why,
        };
        if protocol.classify(&text) == Incoming::Ping
            && let Some(pong) = protocol.pong()
            && let Err(error) = ws.send(Message::text(pong)).await
        {
            return format!("answering a ping: {error}");
        }
    }
}

/// How many messages a full answer to each kind of join carries.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    pub plain: usize,
    pub since: usize,
}

impl Expected {
    pub fn of(plan: &StormPlan) -> Self {
        Self {
            plain: plan.recent.min(plan.messages_per_room),
            since: plan
                .since_back
                .min(plan.messages_per_room.saturating_sub(1)),
        }
    }

    pub fn of_kind(&self, kind: Kind) -> usize {
        match kind {
            Kind::Plain => self.plain,
            Kind::Since => self.since,
        }
    }
}

/// What one target's storm measured.
struct Outcome {
    target: String,
    stored: usize,
    fill: Duration,
    /// Storm clients that connected.
    clients: usize,
    outcomes: Vec<(Kind, JoinOutcome)>,
    readiness: Option<Readiness>,
    expected: Expected,
    before: Counters,
    after: Counters,
    cpu: f64,
}

impl Outcome {
    fn joins(&self) -> Tally {
        self.tally(|_| true)
    }

    fn tally(&self, keep: impl Fn(Kind) -> bool) -> Tally {
        Tally::of(&self.outcomes, keep, |kind| self.expected.of_kind(kind))
    }

    /// history-service's requests on the messages route per join sent.
    fn reads_per_join(&self) -> Option<f64> {
        let reads = difference(self.before.history_reads, self.after.history_reads)?;
        let sent = self.joins().sent;
        (sent > 0).then(|| reads / sent as f64)
    }
}

pub async fn run(ctx: &mut Ctx, targets: &[&Target]) -> anyhow::Result<()> {
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(run_target(ctx, target).await?);
        // Let the server notice the closes before the next target or scenario.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let plan = &ctx.plan.storm;
    let mut table = Table::new(
        "storm",
        &format!(
            "Join storm: {} joins at {}/s into {} rooms of {} stored messages (latencies in ms)",
            plan.clients,
            num(plan.rate, 0),
            plan.rooms,
            plan.messages_per_room
        ),
        &[
            "target",
            "joins",
            "sent",
            "answered",
            "short",
            "errors",
            "unanswered",
            "join_p50",
            "join_p99",
            "join_max",
            "clients",
            "ready_polls",
            "not_ready",
            "history_reads",
            "reads_per_join",
            "joins_from_memory",
            "server_cpu_pct",
        ],
    );
    let dash = || "-".to_string();
    for o in &outcomes {
        let has_since = o.outcomes.iter().any(|(kind, _)| *kind == Kind::Since);
        let mut kinds: Vec<(&str, Tally)> = vec![("all", o.joins())];
        if has_since {
            kinds.push(("plain", o.tally(|k| k == Kind::Plain)));
            kinds.push(("since", o.tally(|k| k == Kind::Since)));
        }
        for (i, (kind, tally)) in kinds.iter().enumerate() {
            let mut row = vec![
                o.target.clone(),
                kind.to_string(),
                tally.sent.to_string(),
                tally.answered.to_string(),
                tally.short.to_string(),
                tally.refused.to_string(),
                tally.unanswered.to_string(),
                latency_cell(tally, |l| l.p50),
                latency_cell(tally, |l| l.p99),
                latency_cell(tally, |l| l.max),
            ];
            if i == 0 {
                let reads = difference(o.before.history_reads, o.after.history_reads);
                let from_memory = difference(o.before.from_memory, o.after.from_memory);
                row.extend([
                    o.clients.to_string(),
                    o.readiness
                        .as_ref()
                        .map_or_else(dash, |r| r.polls.to_string()),
                    o.readiness
                        .as_ref()
                        .map_or_else(dash, |r| r.not_ready.to_string()),
                    reads.map_or_else(dash, |r| num(r, 0)),
                    o.reads_per_join().map_or_else(dash, |r| num(r, 3)),
                    from_memory.map_or_else(dash, |r| num(r, 0)),
                    num(o.cpu, 0),
                ]);
            } else {
                row.extend(std::iter::repeat_with(dash).take(7));
            }
            table.push(row);
        }
    }
    ctx.reporter.emit(&table)?;
    let fills: Vec<String> = outcomes
        .iter()
        .map(|o| {
            format!(
                "{}: {} messages in {:.1} s ({:.0}/s)",
                o.target,
                o.stored,
                o.fill.as_secs_f64(),
                o.stored as f64 / o.fill.as_secs_f64().max(1e-3)
            )
        })
        .collect();
    ctx.reporter.note(&format!(
        "Storm: each target's rooms were filled first, straight into its `messages` \
         collection ({}). Ours: every other round of clients rejoins with `since` ({} \
         messages from the end of its room); the peer has no `since`, so all its joins are \
         plain. Latency runs from a join's intended send time to its answer. `short`: \
         answered with fewer messages than asked for (a plain join: the room's last {}; a \
         `since` join: the {} after its id). `unanswered`: no answer within {} s. \
         `not_ready`: history-service's `/health/ready` polls (every {} ms) that did not \
         answer 200 within {} s. `history_reads`: history-service's requests on \
         `{MESSAGES_ROUTE}` during the storm; the peer reads MongoDB once per join (its \
         code), which no counter here shows.",
        fills.join("; "),
        plan.since_back,
        plan.recent,
        plan.since_back,
        plan.deadline.as_secs(),
        plan.ready_poll.as_millis(),
        READY_TIMEOUT.as_secs()
    ))?;

    if let [ours, peer] = outcomes.as_slice() {
        let (o, p) = (ours.joins(), peer.joins());
        if o.answered > 0 && p.answered > 0 {
            ctx.summary.add(
                "storm",
                &format!(
                    "join p99 ms, {} joins at {}/s, {} msgs stored",
                    plan.clients,
                    num(plan.rate, 0),
                    ours.stored
                ),
                Better::Lower,
                o.latency.p99,
                None,
                p.latency.p99,
            );
        }
        ctx.summary.add(
            "storm",
            &format!(
                "joins refused or unanswered in {} s",
                plan.deadline.as_secs()
            ),
            Better::Lower,
            (o.refused + o.unanswered) as f64,
            None,
            (p.refused + p.unanswered) as f64,
        );
        ctx.summary.add(
            "storm",
            "joins answered without their full history",
            Better::Lower,
            o.short as f64,
            None,
            p.short as f64,
        );
        if let Some(reads) = ours.reads_per_join() {
            ctx.summary.add(
                "storm",
                "history reads per join (peer: 1, by its code)",
                Better::Lower,
                reads,
                None,
                1.0,
            );
        }
    }
    Ok(())
}

fn latency_cell(tally: &Tally, value: impl Fn(&Latency) -> f64) -> String {
    if tally.answered == 0 {
        "-".to_string()
    } else {
        num(value(&tally.latency), 1)
    }
}

async fn run_target(ctx: &Ctx, target: &Target) -> anyhow::Result<Outcome> {
    let plan = &ctx.plan.storm;
    let tokens = ctx.tokens(target).await?;
    let messages = messages(ctx, target);
    clear(&messages).await?;

    let fill = Fill::now(plan.rooms, plan.messages_per_room);
    let fill_start = Instant::now();
    fill.store(&messages, target, &ctx.usernames, plan.insert_batch)
        .await?;
    let fill_time = fill_start.elapsed();
    println!(
        "chat-bench: {}: {} messages in {} rooms stored in {:.1} s",
        target.name,
        fill.total(),
        fill.rooms,
        fill_time.as_secs_f64()
    );

    // Connections first, each kept alive by its own task until its turn.
    let settled = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let mut turns: Vec<Option<oneshot::Sender<Instant>>> = Vec::with_capacity(plan.clients);
    let mut waiting = Vec::with_capacity(plan.clients);
    let mut kinds = Vec::with_capacity(plan.clients);
    for k in 0..plan.clients {
        let (tx, rx) = oneshot::channel();
        turns.push(Some(tx));
        waiting.push(rx);
        kinds.push(kind_of(k, plan.rooms, target.protocol));
    }
    let mut tasks: JoinSet<(usize, JoinOutcome)> = JoinSet::new();
    let (mut connect_failed, mut first_error) = (0, None);
    let connect_start = Instant::now();
    let mut opening = stream::iter(waiting.into_iter().enumerate())
        .map(|(k, go)| {
            let token = &tokens[k % tokens.len()];
            async move {
                let opened = client::open(target.protocol, target.gateway(k), token).await;
                (k, go, opened)
            }
        })
        .buffer_unordered(ctx.plan.connect_concurrency.max(1));
    while let Some((k, go, opened)) = opening.next().await {
        match opened {
            Ok(opened) => {
                let room = k % plan.rooms.max(1);
                let frame = match kinds[k] {
                    Kind::Plain => target.protocol.join(&room_name(room)),
                    Kind::Since => target
                        .protocol
                        .join_since(&room_name(room), &fill.since_id(room, plan.since_back)),
                };
                let client = Client {
                    protocol: target.protocol,
                    room: room_name(room),
                    frame,
                    deadline: plan.deadline,
                    settled: settled.clone(),
                };
                let stop = stop.clone();
                tasks.spawn(async move { (k, client.run(opened.ws, go, stop).await) });
            }
            Err(error) => {
                connect_failed += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    drop(opening);
    if let Some(error) = &first_error {
        eprintln!(
            "chat-bench: {}: {connect_failed} of the storm's connections failed; first error: \
             {error}",
            target.name
        );
    }
    let clients = plan.clients - connect_failed;
    anyhow::ensure!(
        clients > 0,
        "{}: no storm client could connect",
        target.name
    );
    println!(
        "chat-bench: {}: {clients} storm clients connected in {:.1} s",
        target.name,
        connect_start.elapsed().as_secs_f64()
    );

    let before = Counters::read(&ctx.http, target).await;
    let poller = target.history.as_ref().map(|history| {
        tokio::spawn(poll_ready(
            ctx.http.clone(),
            format!("{history}/health/ready"),
            plan.ready_poll,
            stop.child_token(),
        ))
    });
    let cpu = CpuMeter::start(&target.pids());
    let mut sent = 0;
    paced(
        plan.rate,
        Duration::from_secs_f64(plan.clients as f64 / plan.rate),
        |k, intended| {
            if let Some(turn) = turns.get_mut(k as usize).and_then(Option::take)
                && turn.send(intended).is_ok()
            {
                sent += 1;
            }
        },
    )
    .await;
    let deadline = Instant::now() + plan.deadline;
    while settled.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu.percent();
    stop.cancel();
    let readiness = match poller {
        Some(poller) => Some(poller.await?),
        None => None,
    };
    let mut outcomes: Vec<(usize, JoinOutcome)> = Vec::with_capacity(clients);
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done?);
    }
    outcomes.sort_by_key(|(k, _)| *k);
    let outcomes: Vec<(Kind, JoinOutcome)> = outcomes
        .into_iter()
        .map(|(k, outcome)| (kinds[k], outcome))
        .collect();
    let not_sent: Vec<&String> = outcomes
        .iter()
        .filter_map(|(_, o)| match o {
            JoinOutcome::NotSent(why) => Some(why),
            _ => None,
        })
        .collect();
    if let Some(first) = not_sent.first() {
        eprintln!(
            "chat-bench: {}: {} storm connections ended before their join; first: {first}",
            target.name,
            not_sent.len()
        );
    }
    let expected = Expected::of(plan);
    let all = Tally::of(&outcomes, |_| true, |kind| expected.of_kind(kind));
    if let Some(first) = &all.first_refusal {
        eprintln!(
            "chat-bench: {}: {} joins refused; first: {first}",
            target.name, all.refused
        );
    }
    if let Some(first) = &all.first_loss {
        eprintln!(
            "chat-bench: {}: {} joins unanswered; first connection lost: {first}",
            target.name, all.unanswered
        );
    }
    let after_storm = Counters::read(&ctx.http, target).await;
    if let (Some(joins), Some(reads), Some(from_memory)) = (
        difference(before.gateway_joins, after_storm.gateway_joins),
        difference(before.gateway_reads, after_storm.gateway_reads),
        difference(before.from_memory, after_storm.from_memory),
    ) {
        println!(
            "chat-bench: {}: the gateway counted {joins} joins, {reads} history reads and \
             {from_memory} joins answered from memory during the storm",
            target.name
        );
    }
    if let Some(first) = readiness.as_ref().and_then(|r| r.first.as_ref()) {
        eprintln!(
            "chat-bench: {}: history-service not ready at some polls; first: {first}",
            target.name
        );
    }

    // Work still queued for the storm finds nothing to scan once its rooms are gone. The
    // indexes come back once the target is quiet: FerretDB fails index builds that race
    // with queries on a dropped collection. The storm is measured by now, so a failure here
    // is reported and not fatal.
    let dropped = async {
        let indexes = indexes_to_restore(&messages).await?;
        messages.drop().await?;
        anyhow::Ok(indexes)
    }
    .await;
    settle(&ctx.http, target, plan.settle).await;
    let emptied = match dropped {
        Ok(Some(indexes)) => restore_indexes(&messages, indexes).await,
        Ok(None) => Ok(()),
        Err(error) => Err(error),
    };
    if let Err(error) = emptied {
        eprintln!(
            "chat-bench: {}: emptying the messages collection after the storm: {error:#}",
            target.name
        );
    }
    let after = Counters::read(&ctx.http, target).await;
    Ok(Outcome {
        target: target.name.clone(),
        stored: fill.total(),
        fill: fill_time,
        clients,
        outcomes,
        readiness,
        expected,
        before,
        after,
        cpu,
    })
}

/// Waits (at most `limit`) until the target is done with the storm: its own processes use
/// less than a tenth of a core over a second and, for ours, history-service answers ready and
/// has answered no read for a second (the gateway gives up on a read after its timeout;
/// history-service still serves it, waiting on the database, at little CPU). The shared
/// processes (the database, the broker) are left out: other work on the machine may keep
/// them busy.
async fn settle(http: &reqwest::Client, target: &Target, limit: Duration) {
    let own: Vec<u32> = target
        .processes
        .iter()
        .filter(|p| p.name != "ferretdb" && p.name != "rabbitmq")
        .map(|p| p.pid)
        .collect();
    let start = Instant::now();
    let mut last_reads = None;
    loop {
        let meter = CpuMeter::start(&own);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = meter.percent();
        let history_busy = match &target.history {
            None => None,
            Some(history) => {
                let ready = poll_once(http, &format!("{history}/health/ready")).await;
                let reads = Counters::read(http, target).await.history_reads;
                let reading = reads.is_some() && reads != last_reads;
                last_reads = reads;
                match (ready, reading) {
                    (Some(problem), _) => Some(format!("not ready ({problem})")),
                    (None, true) => Some("still answering reads".to_string()),
                    (None, false) => None,
                }
            }
        };
        if busy < 10.0 && history_busy.is_none() {
            return;
        }
        if start.elapsed() >= limit {
            eprintln!(
                "chat-bench: {}: {:.0} s after the storm, still at {busy:.0}% CPU{}",
                target.name,
                start.elapsed().as_secs_f64(),
                history_busy.map_or_else(String::new, |h| format!("; history-service {h}"))
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Profile;
    use crate::plan::Plan;

    fn fill() -> Fill {
        Fill::new(3, 100, 1_700_000_000_000, 7)
    }

    #[test]
    fn our_documents_are_what_history_service_stores() {
        let fill = fill();
        let doc = fill.ours_document(2, 99, "bench7");
        let id = doc.get_str("_id").expect("_id");
        assert_eq!(id, fill.ours_id(2, 99));
        let ulid = ulid::Ulid::from_string(id).expect("a ULID");
        assert_eq!(ulid.timestamp_ms(), 1_700_000_000_000 - 2_000);
        assert_eq!(doc.get_str("room"), Ok("storm-2"));
        assert_eq!(doc.get_str("client_id"), Ok("storm_2_99"));
        assert_eq!(doc.get_str("author_name"), Ok("bench7"));
        assert!(!doc.get_str("author_id").expect("author_id").is_empty());
        assert_eq!(doc.get_str("body").expect("body").len(), BODY_BYTES);
        let sent = doc.get_datetime("sent_at").expect("sent_at");
        let published = doc.get_datetime("published_at").expect("published_at");
        assert_eq!(sent.timestamp_millis(), ulid.timestamp_ms() as i64);
        assert!(published > sent);
        let keys: Vec<&str> = doc.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "_id",
                "room",
                "client_id",
                "author_id",
                "author_name",
                "body",
                "sent_at",
                "published_at"
            ]
        );
    }

    #[test]
    fn our_ids_are_unique_and_in_time_order_within_a_room() {
        let fill = fill();
        let ids: Vec<String> = (0..fill.per_room).map(|k| fill.ours_id(1, k)).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        let mut all: Vec<String> = (0..fill.rooms)
            .flat_map(|room| (0..fill.per_room).map(move |k| (room, k)))
            .map(|(room, k)| fill.ours_id(room, k))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), fill.total());
        // `since` leaves the last 20 messages to catch up on.
        let since = fill.since_id(1, 20);
        assert_eq!(ids.iter().filter(|id| **id > since).count(), 20);
    }

    #[test]
    fn peer_documents_are_what_mongoose_saves() {
        let fill = fill();
        let doc = fill.peer_document(1, 5, "bench3");
        assert_eq!(doc.get_str("room"), Ok("storm-1"));
        assert_eq!(doc.get_str("clientId"), Ok("storm_1_5"));
        let author = doc.get_document("author").expect("author");
        assert_eq!(author.get_str("username"), Ok("bench3"));
        assert!(author.get_str("id").is_ok());
        assert!(doc.get_str("body").is_ok());
        assert_eq!(doc.get_i32("__v"), Ok(0));
        let sent = doc.get_datetime("sentAt").expect("sentAt");
        let id = doc.get_object_id("_id").expect("an ObjectId");
        assert_eq!(
            id.timestamp().timestamp_millis() / 1000,
            sent.timestamp_millis() / 1000
        );
        let ids: std::collections::HashSet<ObjectId> = fill
            .documents(Protocol::SocketIo, &["a".into(), "b".into()])
            .map(|d| d.get_object_id("_id").expect("_id"))
            .collect();
        assert_eq!(ids.len(), fill.total());
    }

    #[test]
    fn documents_cover_every_room_and_rotate_authors() {
        let fill = fill();
        let authors = vec!["a".to_string(), "b".to_string()];
        let docs: Vec<Document> = fill.documents(Protocol::Ours, &authors).collect();
        assert_eq!(docs.len(), 300);
        assert_eq!(docs[0].get_str("room"), Ok("storm-0"));
        assert_eq!(docs[299].get_str("room"), Ok("storm-2"));
        assert_eq!(docs[0].get_str("author_name"), Ok("a"));
        assert_eq!(docs[1].get_str("author_name"), Ok("b"));
    }

    #[test]
    fn every_room_gets_both_kinds_of_join_on_ours_only() {
        let rooms = 10;
        for room in 0..rooms {
            let kinds: Vec<Kind> = (0..100)
                .filter(|k| k % rooms == room)
                .map(|k| kind_of(k, rooms, Protocol::Ours))
                .collect();
            let since = kinds.iter().filter(|k| **k == Kind::Since).count();
            assert_eq!(since, kinds.len() / 2, "room {room}");
        }
        assert!((0..100).all(|k| kind_of(k, rooms, Protocol::SocketIo) == Kind::Plain));
    }

    #[test]
    fn a_tally_counts_each_outcome_and_times_only_answers() {
        let ms = Duration::from_millis;
        let answered = |latency, messages| JoinOutcome::Answered { latency, messages };
        let outcomes = vec![
            (Kind::Plain, answered(ms(10), 50)),
            (Kind::Plain, answered(ms(30), 0)),
            (Kind::Since, answered(ms(200), 20)),
            (Kind::Since, JoinOutcome::Refused("unavailable".into())),
            (Kind::Since, JoinOutcome::Unanswered(None)),
            (Kind::Plain, JoinOutcome::Unanswered(Some("closed".into()))),
            (Kind::Plain, JoinOutcome::NotSent("gone".into())),
        ];
        let expected = |kind| match kind {
            Kind::Plain => 50,
            Kind::Since => 20,
        };
        let all = Tally::of(&outcomes, |_| true, expected);
        assert_eq!(
            (
                all.sent,
                all.answered,
                all.short,
                all.refused,
                all.unanswered
            ),
            (6, 3, 1, 1, 2)
        );
        assert_eq!(all.latency.count, 3);
        assert!((all.latency.max - 200.0).abs() < 0.5, "{:?}", all.latency);
        assert_eq!(all.first_refusal.as_deref(), Some("unavailable"));
        assert_eq!(all.first_loss.as_deref(), Some("closed"));
        let plain = Tally::of(&outcomes, |k| k == Kind::Plain, expected);
        assert_eq!(
            (plain.sent, plain.answered, plain.short, plain.unanswered),
            (3, 2, 1, 1)
        );
        assert!(
            (plain.latency.p50 - 10.0).abs() < 0.1,
            "{:?}",
            plain.latency
        );
        let none = Tally::of(&[], |_| true, expected);
        assert_eq!(none.sent, 0);
        assert_eq!(none.latency.count, 0);
    }

    #[test]
    fn an_answer_is_measured_by_the_messages_it_carries() {
        let ours = r#"{"type":"joined","room":"storm-1","members":[{"id":"u","username":"a"}],"messages":[{"id":"1"},{"id":"2"}]}"#;
        assert_eq!(history_len(Protocol::Ours, ours), Some(2));
        let peer = r#"42["room_history",{"room":"storm-1","messages":[{"_id":"x"},{"_id":"y"},{"_id":"z"}]}]"#;
        assert_eq!(history_len(Protocol::SocketIo, peer), Some(3));
        assert_eq!(history_len(Protocol::SocketIo, "2"), None);
        assert_eq!(history_len(Protocol::Ours, r#"{"type":"joined"}"#), None);
    }

    #[test]
    fn a_full_answer_is_the_recent_page_or_the_catch_up() {
        let plan = Plan::new(Profile::Quick, 20_000).storm;
        let expected = Expected::of(&plan);
        assert_eq!((expected.plain, expected.since), (50, 20));
        let tiny = StormPlan {
            messages_per_room: 10,
            ..plan
        };
        let expected = Expected::of(&tiny);
        assert_eq!((expected.plain, expected.since), (10, 9));
    }

    #[test]
    fn metric_sums_pick_the_route_across_statuses() {
        let text = r#"# HELP http_request_duration_seconds HTTP request latency
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{method="GET",route="/api/rooms/{room}/messages",status="200",le="0.5"} 7
http_request_duration_seconds_count{method="GET",route="/api/rooms/{room}/messages",status="200"} 12
http_request_duration_seconds_count{method="GET",route="/api/rooms/{room}/messages",status="503"} 3
http_request_duration_seconds_count{method="GET",route="/api/rooms/{room}/messages/{id}",status="200"} 40
http_request_duration_seconds_count{method="GET",route="/health/ready",status="200"} 5
http_request_duration_seconds_count{method="GET",other_route="/api/rooms/{room}/messages",status="200"} 9
gateway_joins_total 120
gateway_joins_from_memory_total 80
"#;
        assert_eq!(
            metric_sum(
                text,
                "http_request_duration_seconds_count",
                &[("route", MESSAGES_ROUTE)]
            ),
            Some(15.0)
        );
        assert_eq!(metric_sum(text, "gateway_joins_total", &[]), Some(120.0));
        assert_eq!(
            metric_sum(text, "gateway_joins_from_memory_total", &[]),
            Some(80.0)
        );
        assert_eq!(metric_sum(text, "gateway_joins", &[]), None);
        assert_eq!(
            metric_sum(
                text,
                "http_request_duration_seconds_count",
                &[("route", "/nowhere")]
            ),
            None
        );
        assert_eq!(difference(Some(3.0), Some(10.0)), Some(7.0));
        assert_eq!(difference(None, Some(10.0)), None);
    }
}
