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
//!
//! This file turns a frame into its handler's call (`handle`; `ping` is answered here) and
//! holds the ways a handler answers: queued for the writer, waiting for room at most
//! `limits.reply_wait_ms`, or, for an error, dropped when the queue is full. The handlers:
//! - `access.rs`: whether the connection is in a room and the user may still act there, and
//!   the `error` answering a refusal;
//! - `send.rs`: `send`, with its `reply_to` check and `client_id` receipt;
//! - `changes.rs`: `change` (edit, delete, react);
//! - `auth.rs`: `auth`, a fresh token;
//! - `join.rs`: `join`, with the room's history or a catch-up;
//! - `recent.rs`: a plain join's recent messages, from the room's memory or a read shared with
//!   the other joins, and the settling read;
//! - `leave.rs`: `leave`, and leaving every room when the connection ends;
//! - `typing.rs`, `read_marker.rs`: `typing` and `read`.

mod access;
mod auth;
mod changes;
mod join;
mod leave;
mod read_marker;
mod recent;
mod send;
mod typing;

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::outbox::{self, Outbound};
use crate::protocol::{self, ClientFrame, FrameError, ServerFrame, close_code};

use super::{Gone, Reader};

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
}
