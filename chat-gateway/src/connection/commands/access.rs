//! Whether the connection may act in a room: `in_room` (by the registry that fan-out reads)
//! and `still_allowed` (by the cached decision or history-service; a refusal takes the
//! connection out of the room); and the `error` frames answering a refusal or a frame for a
//! room not joined.

use common::domain::{RemovalReason, RoomId};

use crate::connection::{Gone, Reader};
use crate::history::Refusal;
use crate::outbox::Outbound;
use crate::protocol::{ErrorCode, FrameError, ServerFrame};

impl Reader {
    /// Whether this connection is in `room`, by the registry that fan-out reads: a removal
    /// takes a connection out of it (and tells the writer) before the reader hears of it, so
    /// the connection's own list is brought in line here.
    pub(super) fn in_room(&mut self, room: &RoomId) -> bool {
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
    pub(super) async fn still_allowed(
        &mut self,
        room: &RoomId,
    ) -> Result<Result<(), FrameError>, Gone> {
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
}

/// The `error` answering a refused authorization.
pub(super) fn refused(room: &RoomId, refusal: Refusal) -> FrameError {
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

pub(super) fn not_joined(room: &RoomId) -> FrameError {
    FrameError::new(ErrorCode::NotJoined, format!("join room `{room}` first"))
}
