//! One WebSocket connection: a reader that handles client frames and a writer that owns the
//! socket's sending half.
//!
//! Everything for the client goes through one bounded queue, the connection's [`outbox`], to
//! the writer, in order. Fan-out never waits on it: a full queue is stopped with
//! [`Outbound::Lagged`] and the writer closes the connection with [`close_code::LAGGED`] after
//! a `lagged` frame, so memory stays bounded however many clients stop reading. The reader ends
//! the writer the same way ([`Outbound::Close`]), and learns that the writer ended when the
//! queue's receiver is gone.
//! The writer also stitches each join's history to its live messages: live messages arriving
//! while the history is fetched are held, and the ones already in the history are dropped, so
//! the client sees no gap and no duplicate at the seam.
//!
//! Where the parts live:
//! - this file: what a connection is ([`Session`], [`serve`]) and the reader's loop (idle
//!   timeout, token expiry, pings, rate limit) up to the closing handshake;
//! - `hub.rs`: what every connection shares ([`Hub`]) and the per-user connection limit
//!   ([`ConnectionSlot`]);
//! - `commands/`: what the reader does with each client frame (send, change, auth, join,
//!   leave, typing, read, ping), a file a frame or concept;
//! - `writer.rs`: the writer task, and the seam between a join's history and its live
//!   messages.

mod commands;
mod hub;
mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use common::domain::{RoomId, UserRef};
use futures_util::StreamExt;
use futures_util::stream::{SplitSink, SplitStream};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::accounts::revoked_close;
use crate::outbox::{self, Outbound};
use crate::protocol::{ErrorCode, FrameError, close_code};

pub use hub::{ConnectionSlot, Hub};
use writer::write_loop;

/// Identifies one WebSocket connection of this gateway.
pub type ConnId = u64;

/// A connection's current access token, shared: an `auth` frame replaces it, and the
/// requests made for the user read it, those of the connection and those the gateway makes
/// for the rooms the connection is in (see [`crate::recovery`]).
#[derive(Clone)]
pub struct SessionToken(Arc<RwLock<Arc<str>>>);

impl SessionToken {
    pub fn new(token: String) -> Self {
        Self(Arc::new(RwLock::new(token.into())))
    }

    pub fn get(&self) -> Arc<str> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, token: String) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = token.into();
    }
}

/// A verified user's connection, after the upgrade.
pub struct Session {
    pub user: UserRef,
    /// Forwarded to history-service on joins.
    pub token: SessionToken,
    /// When the token expires (seconds since the Unix epoch): the connection closes then
    /// unless an `auth` frame brings a fresh token.
    pub expires_at: u64,
    /// When the token was issued (seconds since the Unix epoch).
    pub issued_at: u64,
    pub slot: ConnectionSlot,
}

/// Serves one upgraded connection until either side closes it.
///
/// The returned future is what an idle connection costs in memory, so it is kept small:
/// everything that can be set up before it is (an argument moved out inside an async body
/// still takes its room for the whole connection), and rare or large steps are boxed.
pub fn serve<S>(
    socket: WebSocketStream<S>,
    session: Session,
    hub: Arc<Hub>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hub
        .next_conn
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (sink, stream) = socket.split();
    let (tx, rx) = outbox::bounded(hub.limits.outbound_queue);
    if !hub
        .accounts
        .register(&session.user.id, session.issued_at, conn, &tx)
    {
        // Revoked between the token check and now: the writer sends the close and ends.
        tx.stop(revoked_close());
    }
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        hub.shutdown.clone(),
        hub.limits.outbound_queue,
    ));
    let quota = Quota::per_second(
        NonZeroU32::new(hub.limits.messages_per_second.max(1)).unwrap_or(NonZeroU32::MIN),
    )
    .allow_burst(NonZeroU32::new(hub.limits.message_burst.max(1)).unwrap_or(NonZeroU32::MIN));
    let reader = Reader {
        conn,
        hub,
        session,
        tx,
        joined: Vec::new(),
        last_typing: HashMap::new(),
        limiter: RateLimiter::direct(quota),
        rate_limited: 0,
    };
    read_loop(reader, stream, writer)
}

/// The connection's writer task: it hands back the sink for the closing handshake.
type WriterTask<S> = tokio::task::JoinHandle<SplitSink<WebSocketStream<S>, Message>>;

#[allow(clippy::manual_async_fn)] // see writer::write_loop
fn read_loop<S>(
    mut reader: Reader,
    mut stream: SplitStream<WebSocketStream<S>>,
    writer: WriterTask<S>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let hub = reader.hub.clone();
        let conn = reader.conn;
        hub.metrics.connections.inc();
        let _open = scopeguard_dec(&hub.metrics.connections);
        tracing::debug!(conn, user = %reader.session.user.username, "connection open");

        let idle = Duration::from_secs(hub.limits.idle_timeout_secs);
        let ping_every = Duration::from_secs(hub.limits.ping_interval_secs);
        let mut idle_until = tokio::time::Instant::now() + idle;
        let mut next_ping = tokio::time::Instant::now() + ping_every;
        let close = loop {
            // One timer for the idle timeout, the token's expiry and the next ping.
            let expiry = expiry_instant(reader.session.expires_at);
            let next = tokio::select! {
                _ = hub.shutdown.cancelled() => break Some((close_code::GOING_AWAY, "server shutting down")),
                // The writer ended (lagged, socket failed).
                _ = reader.tx.closed() => break None,
                _ = tokio::time::sleep_until(expiry.min(idle_until).min(next_ping)) => {
                    let now = tokio::time::Instant::now();
                    if expiry <= now && expiry <= idle_until {
                        break Some((close_code::TOKEN_EXPIRED, "access token expired"));
                    }
                    if idle_until <= now {
                        break Some((close_code::IDLE_TIMEOUT, "idle timeout"));
                    }
                    // A full queue means the writer is busy anyway: skip this ping.
                    let _ = reader.tx.try_send(Outbound::Ping);
                    next_ping = now + ping_every;
                    continue;
                }
                next = stream.next() => next,
            };
            idle_until = tokio::time::Instant::now() + idle;
            match next {
                None | Some(Ok(Message::Close(_))) => break None,
                Some(Err(WsError::Capacity(_))) => {
                    break Some((close_code::MESSAGE_TOO_BIG, "message too big"));
                }
                Some(Err(error)) => {
                    tracing::debug!(conn, %error, "connection failed");
                    break None;
                }
                Some(Ok(Message::Text(text))) => {
                    hub.metrics.frames_received.inc();
                    if reader.limiter.check().is_err() {
                        reader.rate_limited += 1;
                        if reader.rate_limited >= hub.limits.rate_limited_close_after {
                            const REASON: &str = "rate limit exceeded repeatedly";
                            // Queued after the refusals, so the client reads why before the
                            // close; at once (dropping what is queued) when the queue is full.
                            let close = Outbound::Close(Some(Box::new(CloseFrame {
                                code: CloseCode::from(close_code::POLICY_VIOLATION),
                                reason: REASON.into(),
                            })));
                            match reader.tx.try_send(close) {
                                Ok(()) => break None,
                                Err(_) => break Some((close_code::POLICY_VIOLATION, REASON)),
                            }
                        }
                        let error =
                            FrameError::new(ErrorCode::RateLimited, "too many frames; slow down");
                        if reader.try_reply_error(&error).is_err() {
                            break None;
                        }
                        continue;
                    }
                    // Boxed: handling a frame needs a large future (history requests, receipts,
                    // publishing) that an idle connection should not carry in its task.
                    if Box::pin(reader.handle(text.as_str())).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let error = FrameError::new(
                        ErrorCode::UnsupportedFrame,
                        "binary frames are not supported; send JSON text",
                    );
                    if Box::pin(reader.reply_error(&error)).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(_)) => {}
            }
        };
        reader.leave_all();
        hub.accounts.unregister(&reader.session.user.id, conn);
        if let Some((code, reason)) = close {
            reader.tx.stop(Outbound::Close(Some(Box::new(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            }))));
        }
        // The writer writes what is queued, then ends: no sender is left.
        drop(reader);
        Box::pin(finish_closing(writer, stream)).await;
        tracing::debug!(conn, "connection closed");
    }
}

/// Finishes the closing handshake: waits (briefly) for the writer, then for the client to
/// close its side, reading and discarding what it still sends, so the socket is not reset
/// with unread data and the close frame reaches the client.
async fn finish_closing<S>(mut writer: WriterTask<S>, stream: SplitStream<WebSocketStream<S>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let written = tokio::time::timeout(Duration::from_secs(5), &mut writer).await;
    if written.is_err() {
        // Still writing to a client that does not read: nothing ends that write otherwise.
        writer.abort();
    }
    if let Ok(Ok(sink)) = written
        && let Ok(mut socket) = stream.reunite(sink)
    {
        use tokio::io::AsyncReadExt;
        let raw = socket.get_mut();
        let mut discard = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while matches!(raw.read(&mut discard).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// The writer hung up: the connection is over.
struct Gone;

/// A connection's reading side and what it keeps: the session, its sender to the writer, the
/// rooms it joined, its rate limit. What it does with each frame is in `commands/`.
struct Reader {
    conn: ConnId,
    hub: Arc<Hub>,
    session: Session,
    tx: outbox::Sender<Outbound>,
    /// Rooms joined, in join order (a handful: a set costs more than it saves).
    joined: Vec<RoomId>,
    last_typing: HashMap<RoomId, Instant>,
    /// Token bucket of this connection's frames.
    limiter: DefaultDirectRateLimiter,
    /// Frames refused by the limiter so far.
    rate_limited: u32,
}

/// Decrements the gauge when dropped (the connection ended, however it ended).
fn scopeguard_dec(gauge: &prometheus::IntGauge) -> impl Drop + '_ {
    struct Dec<'a>(&'a prometheus::IntGauge);
    impl Drop for Dec<'_> {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    Dec(gauge)
}

/// The instant of a Unix-epoch expiry on tokio's clock.
fn expiry_instant(expires_at: u64) -> tokio::time::Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    tokio::time::Instant::now() + Duration::from_secs(expires_at.saturating_sub(now))
}
