//! What the reader does with each client frame: `send` publishes a message and acknowledges
//! it once the broker confirmed it, `auth` replaces the connection's token, `join` asks
//! history-service (or the cached decision) whether the user may be in the room, makes the
//! connection a member and sends the room's history, `leave` ends that, `typing` is passed on
//! to the room, `read` records a read marker, `ping` is answered. `send` and `typing` check
//! the room registry (a removal takes connections out of it) and the cached decision. Replies
//! go to the writer through the connection's outbox like everything else for the client.
//!
//! A handler answers `Result<Result<(), FrameError>, Gone>`: the inner error is a refusal,
//! answered to the client with an `error` frame; the outer one means the writer is gone and
//! the connection is over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::domain::{ClientMessageId, MessageBody, MessageId, RemovalReason, RoomId};
use common::event::{Change, ChangeEvent, ChatMessage, PresenceState, ReplyRef, RoomEvent};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::history::{ChangeRefusal, HistoryPage, Refusal};
use crate::outbox::{self, JoinedFrame, Outbound};
use crate::protocol::{self, ClientFrame, ErrorCode, FrameError, ServerFrame, close_code};
use crate::receipts::Reservation;
use crate::rooms::{Member, ReadTicket};

use super::{Gone, Reader};

/// Settling reads asked before joins go back to reading (see [`Reader::settle_later`]).
const SETTLE_ATTEMPTS: u32 = 4;

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
    pub(super) fn try_reply_error(&self, error: &FrameError) -> Result<(), Gone> {
        let frame = ServerFrame::Error {
            code: error.code,
            message: &error.message,
            client_id: error.client_id.as_deref(),
            room: error.room.as_ref(),
        }
        .to_text();
        match self.tx.try_send(Outbound::Frame(Arc::new(frame.into()))) {
            Ok(()) | Err(outbox::TrySendError::Full) => Ok(()),
            Err(outbox::TrySendError::Closed) => Err(Gone),
        }
    }

    pub(super) async fn reply_error(&self, error: &FrameError) -> Result<(), Gone> {
        self.send(ServerFrame::Error {
            code: error.code,
            message: &error.message,
            client_id: error.client_id.as_deref(),
            room: error.room.as_ref(),
        })
        .await
    }

    pub(super) async fn handle(&mut self, text: &str) -> Result<(), Gone> {
        let frame = match protocol::parse(text) {
            Ok(frame) => frame,
            Err(error) => return self.reply_error(&error).await,
        };
        let room = frame.room().cloned();
        let outcome = match frame {
            ClientFrame::Ping => return self.send(ServerFrame::Pong).await,
            ClientFrame::Auth { token } => self.reauthenticate(token).await?,
            ClientFrame::Join {
                room,
                since,
                changes_since,
            } => self.join(room, since, changes_since).await?,
            ClientFrame::Leave { room } => self.leave(room).await?,
            ClientFrame::Send {
                room,
                client_id,
                body,
                reply_to,
            } => self.send_message(room, client_id, body, reply_to).await?,
            ClientFrame::Change {
                room,
                id,
                client_id,
                change,
            } => self.change_message(room, id, client_id, change).await?,
            ClientFrame::Typing { room } => self.typing(room).await?,
            ClientFrame::Read { room, id } => self.read_marker(room, id),
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(error) => self.reply_error(&error.about(room.as_ref())).await,
        }
    }

    /// Tells the room the user is typing, at most once every two seconds per room and
    /// connection.
    async fn typing(&mut self, room: RoomId) -> Result<Result<(), FrameError>, Gone> {
        if !self.in_room(&room) {
            return Ok(Err(not_joined(&room)));
        }
        let now = Instant::now();
        let recent = self
            .last_typing
            .get(&room)
            .is_some_and(|at| now.duration_since(*at) < Duration::from_secs(2));
        if recent {
            return Ok(Ok(()));
        }
        if let Err(error) = self.still_allowed(&room).await? {
            return Ok(Err(error));
        }
        self.last_typing.insert(room.clone(), now);
        self.hub.broker.publish_room_event(RoomEvent::Typing {
            v: common::event::EVENT_VERSION,
            origin: self.hub.broker.origin().to_string(),
            room,
            user: self.session.user.clone(),
        });
        Ok(Ok(()))
    }

    /// Records a read marker for the next coalesced write (see [`crate::read_markers`]).
    fn read_marker(&mut self, room: RoomId, id: MessageId) -> Result<(), FrameError> {
        if !self.in_room(&room) {
            return Err(not_joined(&room));
        }
        self.hub
            .read_markers
            .record(
                &self.session.user.id,
                &room,
                id,
                &self.session.token.get(),
                self.conn,
            )
            .map_err(|_| {
                FrameError::new(
                    ErrorCode::Unavailable,
                    "too many read markers are waiting to be written; retry shortly",
                )
            })
    }

    /// Whether this connection is in `room`, by the registry that fan-out reads: a removal
    /// takes a connection out of it (and tells the writer) before the reader hears of it, so
    /// the connection's own list is brought in line here.
    fn in_room(&mut self, room: &RoomId) -> bool {
        if !self.joined.contains(room) {
            return false;
        }
        if self.hub.rooms.is_member(room, self.conn) {
            return true;
        }
        self.joined.retain(|joined| joined != room);
        self.last_typing.remove(room);
        false
    }

    /// Whether the user may still act in `room`: free while the cached decision holds, else
    /// history-service is asked. A refusal takes the connection out of the room (events may
    /// have been missed); `unavailable` leaves it in.
    async fn still_allowed(&mut self, room: &RoomId) -> Result<Result<(), FrameError>, Gone> {
        let allowed = self
            .hub
            .membership
            .authorize_stay(&self.session.user.id, room, &self.session.token.get())
            .await;
        match allowed {
            Ok(()) if self.in_room(room) => Ok(Ok(())),
            Ok(()) => Ok(Err(not_joined(room))),
            Err(Refusal::Unavailable) => Ok(Err(refused(room, Refusal::Unavailable))),
            Err(Refusal::Denied(code)) => {
                if self.in_room(room) {
                    self.leave_room(room);
                    self.enqueue(Outbound::Forget(Box::new(room.clone())))
                        .await?;
                    let reason = match code {
                        ErrorCode::Banned => RemovalReason::Banned,
                        ErrorCode::Archived => RemovalReason::Archived,
                        _ => RemovalReason::Kicked,
                    };
                    self.send(ServerFrame::Removed { room, reason }).await?;
                }
                Ok(Err(refused(room, Refusal::Denied(code))))
            }
        }
    }

    /// Publishes a message and acknowledges it once the broker confirmed it. A `client_id`
    /// this user already used is answered with the original id (see [`crate::receipts`]) and
    /// published again when the first attempt is recent (`receipts.republish_within_ms`) or
    /// history-service has not stored it.
    async fn send_message(
        &mut self,
        room: RoomId,
        client_id: ClientMessageId,
        body: MessageBody,
        reply_to: Option<MessageId>,
    ) -> Result<Result<(), FrameError>, Gone> {
        let cid = client_id.to_string();
        let refuse = |code: ErrorCode, message: String| {
            Ok(Err(FrameError {
                code,
                message,
                client_id: Some(cid.clone()),
                room: None,
            }))
        };
        if !self.in_room(&room) {
            let error = not_joined(&room);
            return refuse(error.code, error.message);
        }
        if let Err(error) = self.still_allowed(&room).await? {
            return refuse(error.code, error.message);
        }
        // A reply names a message of the same room: stable once true (messages are never
        // removed, a deleted one stays as a tombstone), so a retry gets the same answer.
        let reply = match reply_to {
            None => None,
            Some(answered) => {
                let action = serde_json::json!({"action": "reply"});
                match self
                    .hub
                    .history
                    .check_change(&room, answered, action, &self.session.token.get())
                    .await
                {
                    Ok(check) => Some(ReplyRef {
                        id: answered,
                        author: check.author,
                        excerpt: check.excerpt.filter(|_| !check.deleted),
                        deleted: check.deleted,
                    }),
                    Err(ChangeRefusal::Denied(ErrorCode::NotFound)) => {
                        return refuse(
                            ErrorCode::InvalidReplyTo,
                            "`reply_to` is not a message of this room".into(),
                        );
                    }
                    Err(ChangeRefusal::Denied(code)) => {
                        let error = change_refused(code);
                        return refuse(error.code, error.message);
                    }
                    Err(ChangeRefusal::Unavailable) => {
                        return refuse(
                            ErrorCode::Unavailable,
                            "history is unavailable; retry with the same client_id".into(),
                        );
                    }
                }
            }
        };
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
                    ErrorCode::Unavailable,
                    "the message store is unavailable; retry with the same client_id".into(),
                );
            }
        };
        let (id, sent_at, publish) = match reservation {
            Reservation::New => (id, sent_at, true),
            Reservation::Existing { room: earlier, .. } if earlier != room.as_str() => {
                return refuse(
                    ErrorCode::DuplicateClientId,
                    format!("client_id was already used for a message in room `{earlier}`"),
                );
            }
            Reservation::Existing { id, sent_at, .. } if self.hub.republish_soon(sent_at) => {
                // A first attempt cut off by the loss of a broker node may have reached some
                // queues only (history-service's, not another gateway's): a stored message
                // may still be missing on a gateway, so a prompt retry publishes again.
                (id, sent_at, true)
            }
            Reservation::Existing { id, sent_at, .. } => {
                // Publish again unless it is known to be stored: the first attempt may never
                // have reached the broker. When history cannot tell, publishing is the safe
                // side, as copies of one id are de-duplicated.
                let stored = self
                    .hub
                    .history
                    .is_stored(&room, id, &self.session.token.get())
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
        // Checked again after the waits above: a removal handled meanwhile refuses the send
        // rather than acknowledging a message its sender may no longer post.
        if !self.in_room(&room) {
            let error = not_joined(&room);
            return refuse(error.code, error.message);
        }
        let mut message = ChatMessage::new(
            id,
            room,
            client_id,
            self.session.user.clone(),
            body,
            sent_at,
        );
        message.reply_to = reply;
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
                ErrorCode::Unavailable,
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

    /// Publishes an `edit`, `delete` or `react` of message `id` and acknowledges it once the
    /// broker confirmed it. history-service checks it first (author, role, window, deleted,
    /// emoji limit); its `client_id` is reserved like a send's, and a retry publishes the
    /// change again under the change id of its first attempt (applying it twice changes
    /// nothing; see docs/guarantees.md, 7).
    async fn change_message(
        &mut self,
        room: RoomId,
        id: MessageId,
        client_id: ClientMessageId,
        change: Change,
    ) -> Result<Result<(), FrameError>, Gone> {
        let cid = client_id.to_string();
        let refuse = |error: FrameError| {
            Ok(Err(FrameError {
                client_id: Some(cid.clone()),
                ..error
            }))
        };
        if !self.in_room(&room) {
            return refuse(not_joined(&room));
        }
        if let Err(error) = self.still_allowed(&room).await? {
            return refuse(error);
        }
        let action = match &change {
            Change::Edit { .. } => serde_json::json!({"action": "edit"}),
            Change::Delete => serde_json::json!({"action": "delete"}),
            Change::React { emoji, on } => {
                serde_json::json!({"action": "react", "emoji": emoji, "on": on})
            }
        };
        let checked = self
            .hub
            .history
            .check_change(&room, id, action, &self.session.token.get())
            .await;
        match checked {
            Ok(_) => {}
            Err(ChangeRefusal::Denied(code)) => return refuse(change_refused(code)),
            Err(ChangeRefusal::Unavailable) => {
                return refuse(FrameError::new(
                    ErrorCode::Unavailable,
                    "history is unavailable; retry with the same client_id",
                ));
            }
        }
        let change_id = self.hub.next_message_id();
        let at = chrono::DateTime::from_timestamp_millis(change_id.timestamp_ms() as i64)
            .unwrap_or_else(chrono::Utc::now);
        let target = format!("{}:{id}", change.kind());
        let reservation = self
            .hub
            .receipts
            .reserve_for(
                &self.session.user.id,
                &client_id,
                &room,
                change_id,
                at,
                Some(target.clone()),
            )
            .await;
        let (change_id, at) = match reservation {
            Ok(Reservation::New) => (change_id, at),
            Ok(Reservation::Existing {
                id: earlier,
                sent_at,
                room: earlier_room,
                target: earlier_target,
            }) => {
                if earlier_room != room.as_str() || earlier_target.as_deref() != Some(&target) {
                    return refuse(FrameError::new(
                        ErrorCode::DuplicateClientId,
                        "client_id was already used for something else",
                    ));
                }
                (earlier, sent_at)
            }
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "send receipts unavailable");
                return refuse(FrameError::new(
                    ErrorCode::Unavailable,
                    "the message store is unavailable; retry with the same client_id",
                ));
            }
        };
        if !self.in_room(&room) {
            return refuse(not_joined(&room));
        }
        let event = ChangeEvent {
            v: common::event::EVENT_VERSION,
            room,
            id,
            change_id,
            client_id,
            by: self.session.user.clone(),
            at,
            change,
        };
        if let Err(error) = self.hub.broker.publish_change(&event).await {
            self.hub.metrics.publish_failures.inc();
            return refuse(FrameError::new(
                ErrorCode::Unavailable,
                format!("{error}; retry with the same client_id"),
            ));
        }
        self.send(ServerFrame::Ack {
            client_id: &event.client_id,
            id: event.id,
            sent_at: &event.at,
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
                    ErrorCode::Unavailable,
                    "tokens cannot be verified right now; retry shortly",
                )));
            }
            Err(error) => {
                tracing::debug!(%error, "in-band token refused");
                return Ok(Err(FrameError::new(
                    ErrorCode::Unauthorized,
                    "the token is invalid or expired",
                )));
            }
        };
        if verified.user.id != self.session.user.id {
            return Ok(Err(FrameError::new(
                ErrorCode::Unauthorized,
                "the token belongs to another user",
            )));
        }
        self.session.token.set(token);
        self.session.expires_at = verified.expires_at;
        self.session.issued_at = verified.issued_at;
        self.send(ServerFrame::Authenticated {
            expires_at: verified.expires_at,
        })
        .await?;
        Ok(Ok(()))
    }

    /// The room's recent messages for a plain join: from the room's memory when it is
    /// complete or provisional, else from history-service (a read shared with the other joins
    /// of the room in flight), which fills the memory (and, made within the grace, schedules
    /// the settling read).
    async fn recent_for_join(
        &self,
        room: &RoomId,
        binding: Instant,
    ) -> anyhow::Result<HistoryPage> {
        let limit = self.hub.history.recent_limit();
        if let Some(messages) = self.hub.rooms.recent_for_join(room, limit, self.conn) {
            self.hub.metrics.joins_from_memory.inc();
            return Ok(HistoryPage::of(messages));
        }
        let ticket = self
            .hub
            .rooms
            .read_ticket(room, self.hub.broker.is_connected());
        let (page, ticket) = self
            .hub
            .history
            .recent(room, binding, &self.session.token.get(), ticket)
            .await
            .map_err(|error| anyhow::anyhow!("{error:#}"))?;
        if let Some(ticket) = ticket
            && let Some(settle_at) = self.hub.rooms.fill(room, &page.messages, ticket)
        {
            self.settle_later(room.clone(), ticket, settle_at);
        }
        // The memory holds the answer now, and what arrived meanwhile.
        Ok(
            match self.hub.rooms.recent_for_join(room, limit, self.conn) {
                Some(messages) => HistoryPage::of(messages),
                None => HistoryPage::clone(&page),
            },
        )
    }

    /// Makes the room's settling read at `at`: its answer completes the room's memory and
    /// brings the joins answered from the provisional memory what was stored after its read.
    /// A read history-service sheds is asked again a few times; if none is answered, later
    /// joins read again. One task per room binding at most (see [`crate::rooms::Rooms::fill`]).
    fn settle_later(&self, room: RoomId, early: ReadTicket, at: Instant) {
        let (hub, token) = (self.hub.clone(), self.session.token.get());
        let bound_at = early.bound_at();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let mut retry = Duration::from_millis(300);
            for attempt in 1..=SETTLE_ATTEMPTS {
                let ticket = hub
                    .rooms
                    .read_ticket(&room, hub.broker.is_connected())
                    .filter(|ticket| ticket.settles() && ticket.bound_at() == bound_at);
                let Some(ticket) = ticket else {
                    break;
                };
                match hub
                    .history
                    .recent(&room, bound_at, &token, Some(ticket))
                    .await
                {
                    Ok((page, Some(ticket))) if ticket.settles() => {
                        hub.rooms.fill(&room, &page.messages, ticket);
                        return;
                    }
                    Ok(_) => break,
                    Err(error) if attempt == SETTLE_ATTEMPTS => {
                        tracing::warn!(error = format!("{error:#}"), %room, "settling read failed; joins read again");
                    }
                    Err(_) => {
                        tokio::time::sleep(retry).await;
                        retry *= 2;
                    }
                }
            }
            hub.rooms.settle_failed(&room, bound_at);
        });
    }

    async fn join(
        &mut self,
        room: RoomId,
        since: Option<MessageId>,
        changes_since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Result<(), FrameError>, Gone> {
        if self.in_room(&room) {
            return Ok(Err(FrameError::new(
                ErrorCode::AlreadyJoined,
                format!("already in room `{room}`"),
            )));
        }
        let max_rooms = self.hub.limits.max_rooms_per_connection;
        if self.joined.len() >= max_rooms {
            // Rooms a removal took this connection out of do not count.
            let (rooms, conn) = (&self.hub.rooms, self.conn);
            self.joined.retain(|joined| rooms.is_member(joined, conn));
        }
        if self.joined.len() >= max_rooms {
            return Ok(Err(FrameError::new(
                ErrorCode::TooManyRooms,
                format!("at most {max_rooms} rooms per connection"),
            )));
        }
        self.hub.metrics.joins.inc();
        let steps = &self.hub.metrics.join_step_seconds;
        let started = Instant::now();
        let user = &self.session.user.id;
        let authorized = self
            .hub
            .membership
            .authorize_join(user, &room, &self.session.token.get())
            .await;
        let mut view = match authorized.answer {
            Ok(view) => view,
            Err(refusal) => return Ok(Err(refused(&room, refusal))),
        };
        // Hold live messages from the moment this connection is a member.
        self.enqueue(Outbound::BeginJoin(Box::new(room.clone())))
            .await?;
        let member = Member {
            user: self.session.user.clone(),
            tx: self.tx.clone(),
            token: self.session.token.clone(),
        };
        let joined = self.hub.rooms.join(&room, self.conn, member);
        if self.hub.membership.revision() != authorized.revision {
            // A decision was dropped since the authorization: a removal may have been handled
            // before this connection was in the registry, where it would have found it.
            let again = self
                .hub
                .membership
                .reauthorize_join(&self.session.user.id, &room, &self.session.token.get())
                .await;
            match again.answer {
                Ok(fresh) => view = fresh,
                Err(refusal) => {
                    self.hub.rooms.leave(&room, self.conn);
                    self.enqueue(Outbound::Forget(Box::new(room.clone())))
                        .await?;
                    return Ok(Err(refused(&room, refusal)));
                }
            }
        }
        let authorized_at = Instant::now();
        steps
            .with_label_values(&["authorize"])
            .observe((authorized_at - started).as_secs_f64());
        joined.bound.cancelled().await;
        let bound_at = Instant::now();
        steps
            .with_label_values(&["bind"])
            .observe((bound_at - authorized_at).as_secs_f64());
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
        // This connection is a member, so the room is bound; a missing binding (never seen)
        // would only mean that this join shares its read with no other.
        let binding = self.hub.rooms.binding(&room).unwrap_or_else(Instant::now);
        let page = match since {
            Some(since) => {
                let published_after = known.map(|at| self.hub.history.late_from(at));
                self.hub
                    .history
                    .after(
                        &room,
                        binding,
                        since,
                        published_after,
                        changes_since,
                        &self.session.token.get(),
                    )
                    .await
                    .map(|page| HistoryPage::clone(&page))
                    .map_err(|error| anyhow::anyhow!("{error:#}"))
            }
            None => self.recent_for_join(&room, binding).await,
        };
        steps
            .with_label_values(&["history"])
            .observe(bound_at.elapsed().as_secs_f64());
        let (changes, changes_truncated) = match &page {
            Ok(page) => (page.changes.clone(), page.changes_truncated),
            Err(_) => (Vec::new(), false),
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
                    ErrorCode::Unavailable,
                    "history is unavailable; retry the join",
                )));
            }
        };
        if !self.in_room(&room) {
            // Removed while the history was read: the client got `removed` already.
            self.enqueue(Outbound::Forget(Box::new(room.clone())))
                .await?;
            return Ok(Err(FrameError::new(
                ErrorCode::Forbidden,
                format!("removed from room `{room}` while joining"),
            )));
        }
        let members = self.hub.rooms.members(&room);
        let frame = protocol::joined_with_view(
            &ServerFrame::Joined {
                room: &room,
                members: &members,
                messages: &messages,
                truncated,
                changes: &changes,
                changes_truncated,
            },
            &view,
        );
        self.enqueue(Outbound::Joined(Box::new(JoinedFrame {
            room,
            frame: frame.into(),
            history: messages.iter().map(|m| m.id).collect(),
        })))
        .await?;
        Ok(Ok(()))
    }

    async fn leave(&mut self, room: RoomId) -> Result<Result<(), FrameError>, Gone> {
        if !self.in_room(&room) {
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

    pub(super) fn leave_all(&mut self) {
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
        match merged.entry(message.id) {
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(message);
            }
            // The newer state of the two: a change may have reached either first.
            std::collections::btree_map::Entry::Occupied(mut entry) => {
                if entry.get().state.version < message.state.version {
                    entry.insert(message);
                }
            }
        }
    }
    let skip = merged.len().saturating_sub(limit);
    merged.into_values().skip(skip).collect()
}

/// The `error` answering a refused authorization.
fn refused(room: &RoomId, refusal: Refusal) -> FrameError {
    match refusal {
        Refusal::Denied(ErrorCode::NotFound) => FrameError::new(
            ErrorCode::NotFound,
            format!("no room `{room}`, or it is private and you are not a member"),
        ),
        Refusal::Denied(ErrorCode::Banned) => FrameError::new(
            ErrorCode::Banned,
            format!("you are banned from room `{room}`"),
        ),
        Refusal::Denied(ErrorCode::Archived) => FrameError::new(
            ErrorCode::Archived,
            format!("room `{room}` is archived: read only"),
        ),
        Refusal::Denied(ErrorCode::Unauthorized) => FrameError::new(
            ErrorCode::Unauthorized,
            "the token is no longer honoured; sign in again",
        ),
        Refusal::Denied(_) => FrameError::new(
            ErrorCode::Forbidden,
            format!("you may not do this in room `{room}`"),
        ),
        Refusal::Unavailable => FrameError::new(
            ErrorCode::Unavailable,
            format!("room `{room}` cannot be authorized right now; retry"),
        ),
    }
}

/// The `error` answering a change history-service refused.
fn change_refused(code: ErrorCode) -> FrameError {
    let message = match code {
        ErrorCode::NotFound => "no such message in this room",
        ErrorCode::Forbidden => "your role does not allow changing this message",
        ErrorCode::MessageDeleted => "the message is deleted",
        ErrorCode::EditWindowPassed => "the message can no longer be edited",
        ErrorCode::TooManyReactions => "the message has 20 distinct emoji already",
        ErrorCode::InvalidEmoji => "emoji must be exactly one emoji",
        ErrorCode::Banned => "you are banned from this room",
        ErrorCode::Archived => "the room is archived: read only",
        ErrorCode::Unauthorized => "the token is no longer honoured; sign in again",
        _ => "refused",
    };
    FrameError::new(code, message)
}

fn not_joined(room: &RoomId) -> FrameError {
    FrameError::new(ErrorCode::NotJoined, format!("join room `{room}` first"))
}
