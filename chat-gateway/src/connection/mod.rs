//! One WebSocket connection: a reader that handles client frames and a writer that owns the
//! socket's sending half.
//!
//! Everything for the client goes through one bounded queue to the writer, in order. Fan-out
//! never waits on it: a full queue is stopped with [`Outbound::Lagged`] and the writer closes
//! the connection with [`close_code::LAGGED`] after a `lagged` frame, so memory stays bounded
//! however many clients stop reading. The reader ends the writer the same way
//! ([`Outbound::Close`]), and learns that the writer ended when the queue's receiver is gone.
//! The writer also stitches each join's history to its live messages: live messages arriving
//! while the history is fetched are held, and the ones already in the history are dropped, so
//! the client sees no gap and no duplicate at the seam.
//!
//! Where the parts live:
//! - this file: what a connection is ([`Session`], [`serve`]) and the reader's loop (idle
//!   timeout, token expiry, pings, rate limit) up to the closing handshake;
//! - `hub.rs`: what every connection shares ([`Hub`]) and the per-user connection limit
//!   ([`ConnectionSlot`]);
//! - `writer.rs`: the writer task, and the seam between a join's history and its live
//!   messages.

mod hub;
mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::num::NonZeroU32;

use common::domain::{ClientMessageId, MessageBody, MessageId, RoomId, UserRef};
use common::event::{ChatMessage, PresenceState, RoomEvent};
use futures_util::StreamExt;
use futures_util::stream::{SplitSink, SplitStream};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::accounts::revoked_close;
use crate::history::HistoryPage;
use crate::protocol::{self, ClientFrame, FrameError, ServerFrame, close_code};
use crate::queue;
use crate::receipts::Reservation;
use crate::rooms::{ConnId, JoinedFrame, Member, Outbound};

pub use hub::{ConnectionSlot, Hub};
use writer::write_loop;

/// A verified user's connection, after the upgrade.
pub struct Session {
    pub user: UserRef,
    /// Forwarded to history-service on joins.
    pub token: String,
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
    let (tx, rx) = queue::bounded(hub.limits.outbound_queue);
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
                        let error = FrameError::new("rate_limited", "too many frames; slow down");
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
                        "unsupported_frame",
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

struct Reader {
    conn: ConnId,
    hub: Arc<Hub>,
    session: Session,
    tx: queue::Sender<Outbound>,
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

impl Reader {
    async fn send(&self, frame: ServerFrame<'_>) -> Result<(), Gone> {
        self.enqueue(Outbound::Frame(Arc::new(frame.to_text().into())))
            .await
    }

    /// Queues `item` for the writer, waiting for room at most `limits.reply_wait_ms`: a client
    /// that sends but does not read would otherwise hold its reader here forever, past every
    /// timer of the read loop. Then the connection closes with [`close_code::LAGGED`].
    async fn enqueue(&self, item: Outbound) -> Result<(), Gone> {
        let wait = Duration::from_millis(self.hub.limits.reply_wait_ms);
        match tokio::time::timeout(wait, self.tx.send(item)).await {
            Ok(sent) => sent.map_err(|_| Gone),
            Err(_) => {
                self.tx.stop(Outbound::Close(Some(Box::new(CloseFrame {
                    code: CloseCode::from(close_code::LAGGED),
                    reason: "the client does not read".into(),
                }))));
                Err(Gone)
            }
        }
    }

    /// Queues an error without waiting, dropping it when the queue is full: for refusals a
    /// client can provoke as fast as it sends, which must neither wait on a client that does
    /// not read nor hold more than the queue's bound.
    fn try_reply_error(&self, error: &FrameError) -> Result<(), Gone> {
        let frame = ServerFrame::Error {
            code: error.code,
            message: &error.message,
            client_id: error.client_id.as_deref(),
        }
        .to_text();
        match self.tx.try_send(Outbound::Frame(Arc::new(frame.into()))) {
            Ok(()) | Err(queue::TrySendError::Full) => Ok(()),
            Err(queue::TrySendError::Closed) => Err(Gone),
        }
    }

    async fn reply_error(&self, error: &FrameError) -> Result<(), Gone> {
        self.send(ServerFrame::Error {
            code: error.code,
            message: &error.message,
            client_id: error.client_id.as_deref(),
        })
        .await
    }

    async fn handle(&mut self, text: &str) -> Result<(), Gone> {
        let frame = match protocol::parse(text) {
            Ok(frame) => frame,
            Err(error) => return self.reply_error(&error).await,
        };
        let outcome = match frame {
            ClientFrame::Ping => return self.send(ServerFrame::Pong).await,
            ClientFrame::Auth { token } => self.reauthenticate(token).await?,
            ClientFrame::Join { room, since } => self.join(room, since).await?,
            ClientFrame::Leave { room } => self.leave(room).await?,
            ClientFrame::Send {
                room,
                client_id,
                body,
            } => self.send_message(room, client_id, body).await?,
            ClientFrame::Typing { room } => {
                if !self.joined.contains(&room) {
                    Err(not_joined(&room))
                } else {
                    // At most one typing event per room every two seconds per connection.
                    let now = Instant::now();
                    let recent = self
                        .last_typing
                        .get(&room)
                        .is_some_and(|at| now.duration_since(*at) < Duration::from_secs(2));
                    if !recent {
                        self.last_typing.insert(room.clone(), now);
                        self.hub.broker.publish_room_event(RoomEvent::Typing {
                            v: common::event::EVENT_VERSION,
                            origin: self.hub.broker.origin().to_string(),
                            room,
                            user: self.session.user.clone(),
                        });
                    }
                    Ok(())
                }
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(error) => self.reply_error(&error).await,
        }
    }

    /// Publishes a message and acknowledges it once the broker confirmed it. A `client_id`
    /// this user already used is answered with the original id (see [`crate::receipts`]) and
    /// published again only when history-service has not stored it.
    async fn send_message(
        &mut self,
        room: RoomId,
        client_id: ClientMessageId,
        body: MessageBody,
    ) -> Result<Result<(), FrameError>, Gone> {
        let cid = client_id.to_string();
        let refuse = |code: &'static str, message: String| {
            Ok(Err(FrameError {
                code,
                message,
                client_id: Some(cid.clone()),
            }))
        };
        if !self.joined.contains(&room) {
            let error = not_joined(&room);
            return refuse(error.code, error.message);
        }
        let id = self.hub.next_message_id();
        let sent_at = chrono::DateTime::from_timestamp_millis(id.timestamp_ms() as i64)
            .unwrap_or_else(chrono::Utc::now);
        let user = &self.session.user.id;
        let reservation = match self
            .hub
            .receipts
            .reserve(user, &client_id, &room, id, sent_at)
            .await
        {
            Ok(reservation) => reservation,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "send receipts unavailable");
                return refuse(
                    "unavailable",
                    "the message store is unavailable; retry with the same client_id".into(),
                );
            }
        };
        let (id, sent_at, publish) = match reservation {
            Reservation::New => (id, sent_at, true),
            Reservation::Existing { room: earlier, .. } if earlier != room.as_str() => {
                return refuse(
                    "duplicate_client_id",
                    format!("client_id was already used for a message in room `{earlier}`"),
                );
            }
            Reservation::Existing { id, sent_at, .. } => {
                // Publish again unless it is known to be stored: the first attempt may never
                // have reached the broker. When history cannot tell, publishing is the safe
                // side, as copies of one id are de-duplicated.
                let stored = self
                    .hub
                    .history
                    .is_stored(&room, id, &self.session.token)
                    .await;
                if let Err(error) = &stored {
                    tracing::debug!(
                        error = format!("{error:#}"),
                        "cannot tell whether a retried message is stored"
                    );
                }
                (id, sent_at, !stored.unwrap_or(false))
            }
        };
        let message = ChatMessage {
            id,
            room,
            client_id,
            author: self.session.user.clone(),
            body,
            sent_at,
        };
        let started = Instant::now();
        let published = if publish {
            let result = self.hub.broker.publish_message(&message).await;
            match &result {
                Ok(()) => {
                    self.hub.metrics.messages_published.inc();
                    self.hub
                        .metrics
                        .publish_confirm_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                Err(_) => self.hub.metrics.publish_failures.inc(),
            }
            result
        } else {
            Ok(())
        };
        if let Err(error) = published {
            return refuse(
                "unavailable",
                format!("{error}; retry with the same client_id"),
            );
        }
        self.send(ServerFrame::Ack {
            client_id: &message.client_id,
            id: message.id,
            sent_at: &message.sent_at,
        })
        .await?;
        Ok(Ok(()))
    }

    /// Replaces the connection's token with a fresh one of the same user.
    async fn reauthenticate(&mut self, token: String) -> Result<Result<(), FrameError>, Gone> {
        let verified = match self.hub.verifier.verify(&token).await {
            Ok(verified) => verified,
            Err(common::token::TokenError::KeysUnavailable(_)) => {
                return Ok(Err(FrameError::new(
                    "unavailable",
                    "tokens cannot be verified right now; retry shortly",
                )));
            }
            Err(error) => {
                tracing::debug!(%error, "in-band token refused");
                return Ok(Err(FrameError::new(
                    "unauthorized",
                    "the token is invalid or expired",
                )));
            }
        };
        if verified.user.id != self.session.user.id {
            return Ok(Err(FrameError::new(
                "unauthorized",
                "the token belongs to another user",
            )));
        }
        self.session.token = token;
        self.session.expires_at = verified.expires_at;
        self.session.issued_at = verified.issued_at;
        self.send(ServerFrame::Authenticated {
            expires_at: verified.expires_at,
        })
        .await?;
        Ok(Ok(()))
    }

    /// The room's recent messages from history-service (a read shared with the other joins of
    /// the room in flight), filling the room's memory when the read can complete it.
    async fn read_recent(&self, room: &RoomId) -> anyhow::Result<HistoryPage> {
        let ticket = self
            .hub
            .rooms
            .read_ticket(room, self.hub.broker.is_connected());
        let (page, ticket) = self
            .hub
            .history
            .recent(room, &self.session.token, ticket)
            .await
            .map_err(|error| anyhow::anyhow!("{error:#}"))?;
        if let Some(ticket) = ticket {
            self.hub.rooms.fill(room, &page.messages, ticket);
        }
        Ok(HistoryPage::clone(&page))
    }

    async fn join(
        &mut self,
        room: RoomId,
        since: Option<MessageId>,
    ) -> Result<Result<(), FrameError>, Gone> {
        if self.joined.contains(&room) {
            return Ok(Err(FrameError::new(
                "already_joined",
                format!("already in room `{room}`"),
            )));
        }
        if self.joined.len() >= self.hub.limits.max_rooms_per_connection {
            return Ok(Err(FrameError::new(
                "too_many_rooms",
                format!(
                    "at most {} rooms per connection",
                    self.hub.limits.max_rooms_per_connection
                ),
            )));
        }
        self.hub.metrics.joins.inc();
        // Hold live messages from the moment this connection is a member.
        self.enqueue(Outbound::BeginJoin(Box::new(room.clone())))
            .await?;
        let member = Member {
            user: self.session.user.clone(),
            tx: self.tx.clone(),
        };
        let joined = self.hub.rooms.join(&room, self.conn, member);
        joined.bound.cancelled().await;
        self.joined.push(room.clone());
        if joined.first_local {
            self.hub
                .broker
                .publish_room_event(RoomEvent::PresenceQuery {
                    v: common::event::EVENT_VERSION,
                    origin: self.hub.broker.origin().to_string(),
                    room: room.clone(),
                });
        }
        if joined.first_for_user {
            self.hub
                .broker
                .presence(&room, &self.session.user, PresenceState::Online, false);
        }

        // Messages published after `since` can have earlier ids (an id is made before the
        // message is published, and a retry keeps it): those published from a little before
        // `since` was are sent too, and the client drops the ones it already has.
        let known = since.and_then(|since| self.hub.rooms.published_at(&room, since));
        let page = match since {
            Some(since) => {
                let published_after = known.map(|at| self.hub.history.late_from(at));
                self.hub
                    .history
                    .after(&room, since, published_after, &self.session.token)
                    .await
            }
            None => match self
                .hub
                .rooms
                .complete_recent(&room, self.hub.history.recent_limit())
            {
                Some(messages) => {
                    self.hub.metrics.joins_from_memory.inc();
                    Ok(HistoryPage {
                        messages,
                        has_more: false,
                        published_after: None,
                    })
                }
                None => self.read_recent(&room).await,
            },
        };
        let (messages, truncated) = match page {
            Ok(page) if page.has_more && since.is_some() => (page.messages, true),
            Ok(page) => {
                // Add what this gateway saw but history-service may not have stored yet.
                let limit = if since.is_some() {
                    usize::MAX
                } else {
                    self.hub.history.recent_limit()
                };
                (
                    merge_recent(
                        page.messages,
                        self.hub.rooms.recent_after(
                            &room,
                            since,
                            page.published_after
                                .and_then(chrono::DateTime::from_timestamp_millis),
                        ),
                        limit,
                    ),
                    false,
                )
            }
            Err(error) if since.is_none() => {
                tracing::warn!(error = format!("{error:#}"), %room, "history unavailable; joining with what this gateway saw");
                let limit = self.hub.history.recent_limit();
                (
                    merge_recent(
                        Vec::new(),
                        self.hub.rooms.recent_after(&room, None, None),
                        limit,
                    ),
                    false,
                )
            }
            Err(error) => {
                // A catch-up without its history would be a silent gap: refuse the join.
                tracing::warn!(error = format!("{error:#}"), %room, "history unavailable for a catch-up join");
                self.leave_room(&room);
                self.enqueue(Outbound::Forget(Box::new(room.clone())))
                    .await?;
                return Ok(Err(FrameError::new(
                    "unavailable",
                    "history is unavailable; retry the join",
                )));
            }
        };
        let members = self.hub.rooms.members(&room);
        let frame = ServerFrame::Joined {
            room: &room,
            members: &members,
            messages: &messages,
            truncated,
        }
        .to_text();
        self.enqueue(Outbound::Joined(Box::new(JoinedFrame {
            room,
            frame: frame.into(),
            history: messages.iter().map(|m| m.id).collect(),
        })))
        .await?;
        Ok(Ok(()))
    }

    async fn leave(&mut self, room: RoomId) -> Result<Result<(), FrameError>, Gone> {
        if !self.joined.contains(&room) {
            return Ok(Err(not_joined(&room)));
        }
        self.leave_room(&room);
        self.enqueue(Outbound::Forget(Box::new(room.clone())))
            .await?;
        self.send(ServerFrame::Left { room: &room }).await?;
        Ok(Ok(()))
    }

    fn leave_room(&mut self, room: &RoomId) {
        self.joined.retain(|joined| joined != room);
        self.last_typing.remove(room);
        if self.hub.rooms.leave(room, self.conn) == Some(true) {
            self.hub
                .broker
                .presence(room, &self.session.user, PresenceState::Offline, false);
        }
    }

    fn leave_all(&mut self) {
        for room in std::mem::take(&mut self.joined) {
            self.leave_room(&room);
        }
    }
}

/// History plus the messages this gateway remembers, by id without duplicates, keeping the
/// `limit` latest.
fn merge_recent(
    history: Vec<ChatMessage>,
    recent: Vec<ChatMessage>,
    limit: usize,
) -> Vec<ChatMessage> {
    if recent.is_empty() {
        return history;
    }
    let mut merged: std::collections::BTreeMap<MessageId, ChatMessage> =
        history.into_iter().map(|m| (m.id, m)).collect();
    for message in recent {
        merged.entry(message.id).or_insert(message);
    }
    let skip = merged.len().saturating_sub(limit);
    merged.into_values().skip(skip).collect()
}

fn not_joined(room: &RoomId) -> FrameError {
    FrameError::new("not_joined", format!("join room `{room}` first"))
}
