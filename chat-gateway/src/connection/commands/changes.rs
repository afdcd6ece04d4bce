//! `change`: an edit, delete or reaction of a message, checked by history-service, its
//! `client_id` reserved like a send's, published and acknowledged once the broker confirmed
//! it; and the `error` answering a change history-service refused.

use common::domain::{ClientMessageId, MessageId, RoomId};
use common::event::{Change, ChangeEvent};

use crate::connection::{Gone, Reader};
use crate::history::ChangeRefusal;
use crate::protocol::{ErrorCode, FrameError, ServerFrame};
use crate::receipts::Reservation;

use super::access::not_joined;

impl Reader {
    /// Publishes an `edit`, `delete` or `react` of message `id` and acknowledges it once the
    /// broker confirmed it. history-service checks it first (author, role, window, deleted,
    /// emoji limit); its `client_id` is reserved like a send's, and a retry publishes the
    /// change again under the change id of its first attempt (applying it twice changes
    /// nothing; see docs/guarantees.md, 7).
    pub(super) async fn change_message(
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
}

/// The `error` answering a change history-service refused.
pub(super) fn change_refused(code: ErrorCode) -> FrameError {
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
