//! A chat client that behaves as a careful real one does when things fail, and records what it
//! sees so a test can tell what was lost or duplicated.
//!
//! - It reconnects with backoff (100 ms doubling to 2 s), moving on to the next gateway when
//!   one refuses connections or closes with 1001 (going away).
//! - It rejoins each room with `since` = the newest message id it has seen there (or the
//!   `last_id` of a `lagged` frame, when older), and pages the rest from the history API when
//!   `joined` says `truncated`.
//! - It resends every message not yet acknowledged, with its original `client_id`, on each new
//!   connection and after an `unavailable` (or `rate_limited`) refusal, until it is acked.
//! - It records every message id received, per connection (a second copy on one connection is
//!   a duplicate), and the union over all its connections and pages (what it is missing at the
//!   end is a gap).
//!
//! The client runs as its own task; [`ResilientClient`] is the handle a test drives it with.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

use super::message_ids;

/// Who the client is and where it connects.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Shown in the figures.
    pub name: String,
    pub token: String,
    /// Gateway ports, tried in turn starting at `first`.
    pub gateways: Vec<u16>,
    pub first: usize,
    pub rooms: Vec<String>,
    /// Most sends awaiting their answer at once on one connection.
    pub window: usize,
}

/// One WebSocket connection's deliveries.
#[derive(Debug, Clone, Default)]
pub struct ConnectionLog {
    pub gateway: u16,
    /// Message ids in arrival order, from `joined` and `message` frames.
    pub ids: Vec<String>,
    /// Ids that arrived again on this connection.
    pub duplicates: Vec<String>,
    /// The close code the server sent, if it sent one.
    pub close: Option<u16>,
}

/// A `joined` answer: what a (re)join caught up.
#[derive(Debug, Clone)]
pub struct JoinRecord {
    pub gateway: u16,
    /// When `joined` arrived (microseconds on the clock of [`stamped`]).
    pub at_us: u64,
    pub since: Option<String>,
    /// Ids of the messages in `joined`.
    pub ids: Vec<String>,
    pub truncated: bool,
}

/// An `ack`: the id and time the server gave the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub id: String,
    pub sent_at: String,
    pub room: String,
    /// When the ack arrived (microseconds on the clock of [`stamped`]).
    pub at_us: u64,
}

/// Everything the client did and saw.
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    pub name: String,
    pub rooms: Vec<String>,
    /// Messages the test asked it to send.
    pub queued: usize,
    /// Their `client_id`s.
    pub client_ids: BTreeSet<String>,
    /// `send` frames written, retries included.
    pub attempts: usize,
    /// Refusals by error code (`unavailable`, …); each was retried.
    pub refused: BTreeMap<String, usize>,
    /// First ack per `client_id`.
    pub acks: BTreeMap<String, Ack>,
    /// Acks for a `client_id` that disagree with its first ack.
    pub ack_conflicts: Vec<String>,
    /// Messages still waiting for their ack.
    pub pending: usize,
    pub connections: Vec<ConnectionLog>,
    pub joins: Vec<JoinRecord>,
    /// Every message id seen on any connection or history page.
    pub received: HashSet<String>,
    /// Ids fetched from the history API after a truncated `joined`.
    pub paged: usize,
    pub truncated_joins: usize,
    pub lagged: usize,
    pub failed_connects: usize,
    /// Anything a well-behaved client should never see (an unknown error, an ack nobody
    /// asked for, …).
    pub unexpected: Vec<String>,
    /// Times from the test asking for a send to the `message` frame arriving live, in
    /// microseconds: a message waiting in the sender's queue (window full, broker down)
    /// counts.
    pub latencies_us: Vec<u64>,
    /// Whether the current connection has joined every room.
    pub ready: bool,
}

impl ClientReport {
    pub fn duplicates(&self) -> usize {
        self.connections.iter().map(|c| c.duplicates.len()).sum()
    }

    /// Frames of type `message` or history entries received, duplicates included.
    pub fn deliveries(&self) -> usize {
        self.connections.iter().map(|c| c.ids.len()).sum()
    }
}

/// Microseconds since the first call in this process: the send time stamped into bodies.
fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The send time stamped at the end of a body by [`ResilientClient::send`].
fn stamp_of(body: &str) -> Option<u64> {
    body.rsplit_once(" @")?.1.parse().ok()
}

enum Command {
    Send {
        room: String,
        client_id: String,
        body: String,
    },
    Stop,
}

/// Handle of a running client.
pub struct ResilientClient {
    name: String,
    commands: mpsc::UnboundedSender<Command>,
    record: Arc<Mutex<ClientReport>>,
    task: JoinHandle<()>,
}

/// `text` with the current time appended, as [`ResilientClient::send`] sends it: receivers
/// measure latency from it.
pub fn stamped(text: &str) -> String {
    format!("{text} @{}", now_us())
}

impl ResilientClient {
    pub fn spawn(spec: ClientSpec) -> Self {
        let record = Arc::new(Mutex::new(ClientReport {
            name: spec.name.clone(),
            rooms: spec.rooms.clone(),
            ..ClientReport::default()
        }));
        let (commands, inbox) = mpsc::unbounded_channel();
        let name = spec.name.clone();
        let task = tokio::spawn(
            Driver {
                spec,
                record: record.clone(),
                inbox,
                pending: Pending::default(),
                last_seen: HashMap::new(),
                http: reqwest::Client::new(),
            }
            .run(),
        );
        Self {
            name,
            commands,
            record,
            task,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn record(&self) -> MutexGuard<'_, ClientReport> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a message; it is sent (and resent) until acknowledged. The body gets the send
    /// time appended, from which receivers measure latency.
    pub fn send(&self, room: &str, client_id: &str, text: &str) {
        self.send_body(room, client_id, &stamped(text));
    }

    /// Queues a message with exactly this body (a retry must repeat the original body).
    pub fn send_body(&self, room: &str, client_id: &str, body: &str) {
        {
            let mut record = self.record();
            record.queued += 1;
            record.client_ids.insert(client_id.to_string());
        }
        let _ = self.commands.send(Command::Send {
            room: room.to_string(),
            client_id: client_id.to_string(),
            body: body.to_string(),
        });
    }

    /// A copy of what it recorded so far.
    pub fn report(&self) -> ClientReport {
        self.record().clone()
    }

    /// (acked, pending, distinct ids received) without copying the record.
    pub fn progress(&self) -> (usize, usize, usize) {
        let record = self.record();
        (record.acks.len(), record.pending, record.received.len())
    }

    pub fn is_ready(&self) -> bool {
        self.record().ready
    }

    /// Whether every message it was asked to send has been acked.
    pub fn all_acked(&self) -> bool {
        let record = self.record();
        record.acks.len() == record.client_ids.len()
    }

    pub fn is_acked(&self, client_id: &str) -> bool {
        self.record().acks.contains_key(client_id)
    }

    /// Message ids delivered so far over all connections, duplicates included.
    pub fn deliveries(&self) -> usize {
        self.record().deliveries()
    }

    /// Whether every id of `ids` was received.
    pub fn has_received_all<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> bool {
        let record = self.record();
        ids.into_iter().all(|id| record.received.contains(id))
    }

    /// Closes the connection (within a few seconds) and returns the final record.
    pub async fn stop(&self) -> ClientReport {
        let _ = self.commands.send(Command::Stop);
        for _ in 0..100 {
            if self.task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.task.abort();
        self.report()
    }
}

impl Drop for ResilientClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a message stands on the current connection.
#[derive(Debug, Clone, Copy)]
enum SendState {
    /// To be sent when its room is joined and the window allows.
    Ready,
    /// Written; waiting for `ack` or `error`.
    InFlight,
    /// Refused as unavailable: send again at this time.
    RetryAt(Instant),
}

struct Outgoing {
    room: String,
    body: String,
    state: SendState,
    refusals: u32,
}

/// Unacknowledged messages in the order they were queued.
#[derive(Default)]
struct Pending {
    order: VecDeque<String>,
    messages: HashMap<String, Outgoing>,
}

impl Pending {
    fn remove(&mut self, client_id: &str) -> Option<Outgoing> {
        let message = self.messages.remove(client_id)?;
        self.order.retain(|c| c != client_id);
        Some(message)
    }
}

/// How a connection ended.
enum Ended {
    Stopped,
    /// Closed by the server (with its close code) or dropped.
    Lost(Option<u16>),
}

struct Driver {
    spec: ClientSpec,
    record: Arc<Mutex<ClientReport>>,
    inbox: mpsc::UnboundedReceiver<Command>,
    pending: Pending,
    /// Newest id seen per room: the `since` of the next join.
    last_seen: HashMap<String, String>,
    http: reqwest::Client,
}

/// Per-connection state.
struct Session {
    port: u16,
    socket: WebSocketStream<TcpStream>,
    joined: HashSet<String>,
    /// Joins sent and not yet answered, with their `since`, in order (an `unavailable`
    /// refusal names no room).
    joining: VecDeque<(String, Option<String>)>,
    /// Joins refused as unavailable, to be sent again at the given time.
    rejoin: Vec<(String, Instant)>,
    seen: HashSet<String>,
    log: usize,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Driver {
    fn record(&self) -> MutexGuard<'_, ClientReport> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn accept(&mut self, command: Command) -> bool {
        match command {
            Command::Send {
                room,
                client_id,
                body,
            } => {
                if !self.pending.messages.contains_key(&client_id) {
                    self.pending.order.push_back(client_id.clone());
                }
                self.pending.messages.insert(
                    client_id,
                    Outgoing {
                        room,
                        body,
                        state: SendState::Ready,
                        refusals: 0,
                    },
                );
                self.record().pending = self.pending.messages.len();
                true
            }
            Command::Stop => false,
        }
    }

    /// Waits `delay`, still taking commands; false when told to stop.
    async fn pause(&mut self, delay: Duration) -> bool {
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                command = self.inbox.recv() => match command {
                    Some(command) => if !self.accept(command) { return false },
                    None => return false,
                },
            }
        }
    }

    async fn run(mut self) {
        let mut gateway = self.spec.first % self.spec.gateways.len();
        let mut delay = BACKOFF_FIRST;
        loop {
            let port = self.spec.gateways[gateway];
            let socket = match tokio::time::timeout(
                Duration::from_secs(5),
                open(port, &self.spec.token, None),
            )
            .await
            {
                Ok(Ok(socket)) => socket,
                _ => {
                    self.record().failed_connects += 1;
                    gateway = (gateway + 1) % self.spec.gateways.len();
                    if !self.pause(delay).await {
                        return;
                    }
                    delay = (delay * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let log = {
                let mut record = self.record();
                record.connections.push(ConnectionLog {
                    gateway: port,
                    ..ConnectionLog::default()
                });
                record.connections.len() - 1
            };
            let session = Session {
                port,
                socket,
                joined: HashSet::new(),
                joining: VecDeque::new(),
                rejoin: Vec::new(),
                seen: HashSet::new(),
                log,
            };
            let (ended, joined_all) = self.serve(session).await;
            self.record().ready = false;
            for message in self.pending.messages.values_mut() {
                message.state = SendState::Ready;
            }
            match ended {
                Ended::Stopped => return,
                Ended::Lost(code) => {
                    if joined_all {
                        delay = BACKOFF_FIRST;
                    }
                    // The server is going away (a deploy): try another instance first.
                    if code == Some(1001) {
                        gateway = (gateway + 1) % self.spec.gateways.len();
                    }
                    if !self.pause(delay).await {
                        return;
                    }
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Serves one connection until it is lost or the client is stopped; also says whether
    /// every room got joined on it.
    async fn serve(&mut self, mut session: Session) -> (Ended, bool) {
        for room in self.spec.rooms.clone() {
            if self.join(&mut session, &room).await.is_err() {
                return (Ended::Lost(None), false);
            }
        }
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut joined_all = false;
        loop {
            if self.flush(&mut session).await.is_err() {
                return (Ended::Lost(None), joined_all);
            }
            joined_all |= session.joined.len() == self.spec.rooms.len();
            tokio::select! {
                frame = session.socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                            self.record().unexpected.push(format!("not JSON: {text}"));
                            continue;
                        };
                        self.handle(&mut session, frame).await;
                    }
                    Some(Ok(Message::Close(close))) => {
                        let code = close.map(|c| u16::from(c.code));
                        self.record().connections[session.log].close = code;
                        return (Ended::Lost(code), joined_all);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return (Ended::Lost(None), joined_all),
                },
                command = self.inbox.recv() => {
                    let keep_going = match command {
                        Some(command) => self.accept(command),
                        None => false,
                    };
                    if !keep_going {
                        let _ = tokio::time::timeout(Duration::from_secs(1), session.socket.close(None)).await;
                        return (Ended::Stopped, joined_all);
                    }
                }
                _ = tick.tick() => {}
            }
        }
    }

    async fn join(&mut self, session: &mut Session, room: &str) -> Result<(), ()> {
        let since = self.last_seen.get(room).cloned();
        let frame = match &since {
            Some(since) => json!({"type": "join", "room": room, "since": since}),
            None => json!({"type": "join", "room": room}),
        };
        session.joining.push_back((room.to_string(), since));
        session
            .socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .map_err(|_| ())
    }

    /// Writes what can be written: joins due again, then queued messages of joined rooms,
    /// oldest first, up to the window.
    async fn flush(&mut self, session: &mut Session) -> Result<(), ()> {
        let now = Instant::now();
        let due: Vec<String> = session
            .rejoin
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(room, _)| room.clone())
            .collect();
        session.rejoin.retain(|(_, at)| *at > now);
        for room in due {
            self.join(session, &room).await?;
        }
        let mut in_flight = self
            .pending
            .messages
            .values()
            .filter(|m| matches!(m.state, SendState::InFlight))
            .count();
        let mut written = 0;
        for client_id in &self.pending.order {
            if in_flight >= self.spec.window {
                break;
            }
            let Some(message) = self.pending.messages.get_mut(client_id) else {
                continue;
            };
            let due = match message.state {
                SendState::Ready => true,
                SendState::RetryAt(at) => at <= now,
                SendState::InFlight => false,
            };
            if !due || !session.joined.contains(&message.room) {
                continue;
            }
            let frame = json!({
                "type": "send",
                "room": message.room,
                "client_id": client_id,
                "body": message.body,
            });
            session
                .socket
                .feed(Message::Text(frame.to_string().into()))
                .await
                .map_err(|_| ())?;
            message.state = SendState::InFlight;
            in_flight += 1;
            written += 1;
        }
        if written > 0 {
            session.socket.flush().await.map_err(|_| ())?;
            self.record().attempts += written;
        }
        Ok(())
    }

    async fn handle(&mut self, session: &mut Session, frame: Value) {
        match frame["type"].as_str().unwrap_or_default() {
            "message" => {
                let (Some(room), Some(id)) = (frame["room"].as_str(), frame["id"].as_str()) else {
                    self.record()
                        .unexpected
                        .push(format!("bad message: {frame}"));
                    return;
                };
                let latency = frame["body"]
                    .as_str()
                    .and_then(stamp_of)
                    .map(|sent| now_us().saturating_sub(sent));
                self.delivered(session, room, id);
                if let Some(latency) = latency {
                    self.record().latencies_us.push(latency);
                }
            }
            "joined" => {
                let room = frame["room"].as_str().unwrap_or_default().to_string();
                let since = session
                    .joining
                    .iter()
                    .position(|(r, _)| *r == room)
                    .and_then(|at| session.joining.remove(at))
                    .and_then(|(_, since)| since);
                session.joined.insert(room.clone());
                let ids = message_ids(&frame);
                for id in &ids {
                    self.delivered(session, &room, id);
                }
                let last = ids.last().cloned();
                self.record().joins.push(JoinRecord {
                    gateway: session.port,
                    at_us: now_us(),
                    since,
                    ids,
                    truncated: frame["truncated"] == true,
                });
                if frame["truncated"] == true
                    && let Some(last) = last
                {
                    self.record().truncated_joins += 1;
                    self.page_after(session.port, &room, last).await;
                }
                let ready = session.joined.len() == self.spec.rooms.len();
                self.record().ready = ready;
            }
            "ack" => {
                let client_id = frame["client_id"].as_str().unwrap_or_default().to_string();
                let ack = Ack {
                    id: frame["id"].as_str().unwrap_or_default().to_string(),
                    sent_at: frame["sent_at"].as_str().unwrap_or_default().to_string(),
                    room: String::new(),
                    at_us: now_us(),
                };
                let sent = self.pending.remove(&client_id);
                let mut record = self.record();
                record.pending = self.pending.messages.len();
                match (record.acks.get(&client_id), sent) {
                    (Some(first), _) => {
                        if first.id != ack.id || first.sent_at != ack.sent_at {
                            let conflict = format!("{client_id}: {} then {}", first.id, ack.id);
                            record.ack_conflicts.push(conflict);
                        }
                    }
                    (None, Some(sent)) => {
                        record.acks.insert(
                            client_id,
                            Ack {
                                room: sent.room,
                                ..ack
                            },
                        );
                    }
                    (None, None) => record
                        .unexpected
                        .push(format!("ack for an unknown client_id: {frame}")),
                }
            }
            "error" => {
                let code = frame["code"].as_str().unwrap_or_default().to_string();
                match frame["client_id"].as_str() {
                    Some(client_id) => self.refused(client_id, &code, &frame),
                    None if code == "unavailable" && !session.joining.is_empty() => {
                        // A `since` join while history is unreachable: join again shortly.
                        if let Some((room, _)) = session.joining.pop_front() {
                            session
                                .rejoin
                                .push((room, Instant::now() + Duration::from_millis(250)));
                        }
                        *self
                            .record()
                            .refused
                            .entry("unavailable (join)".into())
                            .or_default() += 1;
                    }
                    None => self.record().unexpected.push(format!("error: {frame}")),
                }
            }
            "lagged" => {
                self.record().lagged += 1;
                // The next join starts at the earlier of the two: after a broker outage the
                // gateway's `last_id` can be older than messages received live since.
                if let (Some(room), Some(resume)) =
                    (frame["room"].as_str(), frame["last_id"].as_str())
                    && self
                        .last_seen
                        .get(room)
                        .is_some_and(|seen| resume < seen.as_str())
                {
                    self.last_seen.insert(room.to_string(), resume.to_string());
                }
            }
            // Room list news: a public room's first join adds the user to it (`room_added`).
            "presence" | "typing" | "pong" | "left" | "room_added" | "room_updated" | "read" => {}
            _ => self
                .record()
                .unexpected
                .push(format!("unknown frame: {frame}")),
        }
    }

    fn refused(&mut self, client_id: &str, code: &str, frame: &Value) {
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        *record.refused.entry(code.to_string()).or_default() += 1;
        let Some(message) = self.pending.messages.get_mut(client_id) else {
            record
                .unexpected
                .push(format!("refusal of a message not pending: {frame}"));
            return;
        };
        if code == "unavailable" || code == "rate_limited" {
            message.refusals += 1;
            let delay = (BACKOFF_FIRST * message.refusals.min(20)).min(BACKOFF_MAX);
            message.state = SendState::RetryAt(Instant::now() + delay);
        } else {
            record.unexpected.push(format!("send refused: {frame}"));
            drop(record);
            self.pending.remove(client_id);
            self.record().pending = self.pending.messages.len();
        }
    }

    /// Moves the room's newest seen id (the next `since`) forward to `id` if it is newer.
    fn saw(&mut self, room: &str, id: &str) {
        let newer = self
            .last_seen
            .get(room)
            .is_none_or(|last| id > last.as_str());
        if newer {
            self.last_seen.insert(room.to_string(), id.to_string());
        }
    }

    fn delivered(&mut self, session: &mut Session, room: &str, id: &str) {
        self.saw(room, id);
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        let log = &mut record.connections[session.log];
        log.ids.push(id.to_string());
        if !session.seen.insert(id.to_string()) {
            log.duplicates.push(id.to_string());
        }
        record.received.insert(id.to_string());
    }

    /// After a truncated `joined`: the rest of the missed messages from the history API, as
    /// the protocol asks (`after=<the last id in joined>`, 100 at a time). That id can sort
    /// before `since`: a catch-up starts with the messages published late.
    async fn page_after(&mut self, port: u16, room: &str, mut after: String) {
        for _ in 0..1000 {
            let page = self
                .http
                .get(format!("http://127.0.0.1:{port}/api/rooms/{room}/messages"))
                .query(&[("after", after.as_str()), ("limit", "100")])
                .bearer_auth(&self.spec.token)
                .send()
                .await;
            let page: Value = match page {
                Ok(response) if response.status().is_success() => {
                    response.json().await.unwrap_or_default()
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let ids = message_ids(&page);
            let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
            record.paged += ids.len();
            for id in &ids {
                record.received.insert(id.clone());
            }
            drop(record);
            for id in &ids {
                self.saw(room, id);
            }
            let Some(last) = ids.last() else {
                return;
            };
            after = last.clone();
            if page["has_more"] != true {
                return;
            }
        }
        self.record()
            .unexpected
            .push(format!("could not page the history of {room}"));
    }
}

/// Opens a WebSocket to the gateway on `port`. `recv_buffer` sets SO_RCVBUF before connecting
/// (a small one makes a client that stops reading stall the server quickly).
pub async fn open(
    port: u16,
    token: &str,
    recv_buffer: Option<u32>,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    let stream = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await?;
    stream.set_nodelay(true)?;
    let (socket, _) =
        client_async(format!("ws://127.0.0.1:{port}/ws?token={token}"), stream).await?;
    Ok(socket)
}
