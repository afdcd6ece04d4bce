//! `send`: a new message of a room the connection is in. A `reply_to` is checked with
//! history-service, the `client_id` is reserved (see [`crate::receipts`]) so a retry keeps its
//! first id, the message is published and acknowledged once the broker confirmed it.

use std::time::Instant;

use common::domain::{ClientMessageId, MessageBody, MessageId, RoomId};
use common::event::{ChatMessage, ReplyRef};

use crate::connection::{Gone, Reader};
use crate::history::ChangeRefusal;
use crate::protocol::{ErrorCode, FrameError, ServerFrame};
use crate::receipts::Reservation;

use super::access::not_joined;
use super::changes::change_refused;

impl Reader {
    /// Publishes a message and acknowledges it once the broker confirmed it. A `client_id`
    /// this user already used is answered with the original id (see [`crate::receipts`]) and
    /// published again when the first attempt is recent (`receipts.republish_within_ms`) or
    /// history-service has not stored it.
    pub(super) async fn send_message(
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
}
