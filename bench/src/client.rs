//! WebSocket clients: opening an authenticated connection, joining a room, and keeping many
//! connections alive in the background while scenarios send through them.
//!
//! A connection is opened and joined in the foreground (so the scenario can time each step),
//! then handed to [`Fleet`], which runs one task per connection: it answers pings, writes
//! queued frames and reports chat messages to an [`Observer`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::wire::{Incoming, Protocol};

pub type Ws = WebSocketStream<TcpStream>;

/// How long one handshake or join may take before it counts as failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Connections opened from one loopback source address before moving to the next. One address
/// has about 28k ephemeral ports; moving on early also keeps clear of ports still in
/// TIME_WAIT from earlier scenarios.
const PER_SOURCE_ADDRESS: u64 = 10_000;

static OPENED: AtomicU64 = AtomicU64::new(0);

/// The next source address in 127.0.0.2..=127.0.0.251 (all of 127.0.0.0/8 is loopback).
fn next_source() -> IpAddr {
    let n = OPENED.fetch_add(1, Ordering::Relaxed);
    let bucket = ((n / PER_SOURCE_ADDRESS) % 250) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + bucket))
}

fn config() -> WebSocketConfig {
    // The default 128 KiB read buffer per connection would make the load generator, not the
    // server, the memory hog of the idle scenario.
    WebSocketConfig::default().read_buffer_size(8 * 1024)
}

/// An authenticated connection and how long getting there took.
pub struct Opened {
    pub ws: Ws,
    /// From the start of the TCP connect until the session is authenticated and usable: ours
    /// verifies the token before answering 101; socket.io verifies it in `io.use` after the
    /// WebSocket is up, answering `40`.
    pub ready: Duration,
}

/// Opens a connection to `addr` and authenticates it with `token`.
pub async fn open(protocol: Protocol, addr: SocketAddr, token: &str) -> anyhow::Result<Opened> {
    let start = Instant::now();
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(next_source(), 0))?;
    let handshake = async {
        let stream = socket.connect(addr).await.context("TCP connect")?;
        stream.set_nodelay(true)?;
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(
            protocol.url(addr, token),
            stream,
            Some(config()),
        )
        .await
        .context("WebSocket handshake")?;
        if protocol == Protocol::SocketIo {
            loop {
                match protocol.classify(&next_text(&mut ws).await?) {
                    Incoming::Open => break,
                    Incoming::Refused(reason) => bail!("refused: {reason}"),
                    _ => {}
                }
            }
            ws.send(Message::text("40")).await?;
            loop {
                let text = next_text(&mut ws).await?;
                match protocol.classify(&text) {
                    Incoming::Connected => break,
                    Incoming::Ping => ws.send(Message::text("3")).await?,
                    Incoming::Refused(reason) => bail!("refused: {reason}"),
                    _ => {}
                }
            }
        }
        anyhow::Ok(ws)
    };
    let ws = tokio::time::timeout(STEP_TIMEOUT, handshake)
        .await
        .context("connect timed out")??;
    Ok(Opened {
        ws,
        ready: start.elapsed(),
    })
}

/// Joins `room` and waits for the server to confirm it; returns how long that took.
pub async fn join(ws: &mut Ws, protocol: Protocol, room: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let joined = async {
        ws.send(Message::text(protocol.join(room))).await?;
        loop {
            let text = next_text(ws).await?;
            match protocol.classify(&text) {
                Incoming::Joined(r) if r == room => return anyhow::Ok(()),
                Incoming::Ping => {
                    if let Some(pong) = protocol.pong() {
                        ws.send(Message::text(pong)).await?;
                    }
                }
                Incoming::Refused(reason) => bail!("join refused: {reason}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, joined)
        .await
        .context("join timed out")??;
    Ok(start.elapsed())
}

/// The next text frame; WebSocket pings are answered by the library as it reads.
async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Close(frame))) => bail!("closed by the server: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error.into()),
            None => bail!("connection ended"),
        }
    }
}

/// Told about what live connections receive.
pub trait Observer: Send + Sync + 'static {
    /// A chat message with `body` reached connection `receiver` at `at`.
    fn on_message(&self, receiver: u32, body: &str, at: Instant);

    /// Ours accepted the send (or change) with `client_id` of message `id` from connection
    /// `sender` at `at`.
    fn on_ack(&self, _sender: u32, _client_id: &str, _id: &str, _at: Instant) {}

    /// Ours told connection `receiver` at `at` that a message's reactions changed.
    fn on_reactions(&self, _receiver: u32, _at: Instant) {}
}

/// An observer for scenarios that only need connections kept alive.
pub struct Ignore;

impl Observer for Ignore {
    fn on_message(&self, _: u32, _: &str, _: Instant) {}
}

/// Frames queued for one connection before [`Fleet::send`] reports it as backed up.
const OUTBOUND_QUEUE: usize = 256;

/// Many live connections, each run by its own task until the fleet is shut down.
pub struct Fleet {
    protocol: Protocol,
    observer: Arc<dyn Observer>,
    senders: Vec<mpsc::Sender<String>>,
    tasks: JoinSet<()>,
    stop: CancellationToken,
    /// Connections the server closed (or that failed) while the fleet was running.
    closed: Arc<AtomicUsize>,
    /// `error` frames received (ours), e.g. a send refused as `unavailable`.
    refused: Arc<AtomicUsize>,
    /// The first of them, to say why.
    first_refusal: Arc<Mutex<Option<String>>>,
}

impl Fleet {
    /// An empty fleet whose connections will speak `protocol` and report to `observer`.
    pub fn new(protocol: Protocol, observer: Arc<dyn Observer>) -> Self {
        Self {
            protocol,
            observer,
            senders: Vec::new(),
            tasks: JoinSet::new(),
            stop: CancellationToken::new(),
            closed: Arc::new(AtomicUsize::new(0)),
            refused: Arc::new(AtomicUsize::new(0)),
            first_refusal: Arc::default(),
        }
    }

    /// Takes over `ws`; returns its index (0, 1, … in the order added).
    pub fn add(&mut self, ws: Ws) -> usize {
        let index = self.senders.len();
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        self.senders.push(tx);
        self.tasks.spawn(live(
            LiveConnection {
                protocol: self.protocol,
                index: index as u32,
                observer: self.observer.clone(),
                closed: self.closed.clone(),
                refused: self.refused.clone(),
                first_refusal: self.first_refusal.clone(),
            },
            ws,
            rx,
            self.stop.clone(),
        ));
        index
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Queues `frame` on connection `index`; false when its queue is full or it is gone.
    pub fn send(&self, index: usize, frame: String) -> bool {
        self.senders
            .get(index)
            .is_some_and(|tx| tx.try_send(frame).is_ok())
    }

    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::Relaxed)
    }

    /// How many frames the server refused, and the first of them.
    pub fn refusals(&self) -> (usize, Option<String>) {
        let first = self
            .first_refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (self.refused.load(Ordering::Relaxed), first)
    }

    /// Stops every connection task and waits (bounded) for them to finish; dropping the
    /// sockets closes them.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        let drained = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(30), drained)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

struct LiveConnection {
    protocol: Protocol,
    index: u32,
    observer: Arc<dyn Observer>,
    closed: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    first_refusal: Arc<Mutex<Option<String>>>,
}

async fn live(
    conn: LiveConnection,
    mut ws: Ws,
    mut outbound: mpsc::Receiver<String>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            frame = outbound.recv() => {
                let Some(frame) = frame else { return };
                if ws.send(Message::text(frame)).await.is_err() {
                    break;
                }
            }
            received = ws.next() => {
                let at = Instant::now();
                match received {
                    Some(Ok(Message::Text(text))) => match conn.protocol.classify(&text) {
                        Incoming::Message { body } => conn.observer.on_message(conn.index, body, at),
                        Incoming::Ack { client_id, id } => conn.observer.on_ack(conn.index, client_id, id, at),
                        Incoming::Reactions => conn.observer.on_reactions(conn.index, at),
                        Incoming::Ping => {
                            if let Some(pong) = conn.protocol.pong()
                                && ws.send(Message::text(pong)).await.is_err()
                            {
                                break;
                            }
                        }
                        Incoming::Refused(text) => {
                            let first = conn.refused.fetch_add(1, Ordering::Relaxed) == 0;
                            if first {
                                conn.first_refusal
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .get_or_insert_with(|| text.chars().take(300).collect());
                            }
                        }
                        _ => {}
                    },
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
    if !stop.is_cancelled() {
        conn.closed.fetch_add(1, Ordering::Relaxed);
    }
}
