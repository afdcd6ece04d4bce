//! `leave`: the connection taken out of a room, the user's offline presence announced when
//! it was their last connection there; and leaving every room when the connection ends.

use common::domain::RoomId;
use common::event::PresenceState;

use crate::connection::{Gone, Reader};
use crate::outbox::Outbound;
use crate::protocol::{FrameError, ServerFrame};

use super::access::not_joined;

impl Reader {
    pub(super) async fn leave(&mut self, room: RoomId) -> Result<Result<(), FrameError>, Gone> {
        if !self.in_room(&room) {
            return Ok(Err(not_joined(&room)));
        }
        self.leave_room(&room);
        self.enqueue(Outbound::Forget(Box::new(room.clone())))
            .await?;
        self.send(ServerFrame::Left { room: &room }).await?;
        Ok(Ok(()))
    }

    pub(super) fn leave_room(&mut self, room: &RoomId) {
        self.joined.retain(|joined| joined != room);
        self.last_typing.remove(room);
        if self.hub.rooms.leave(room, self.conn) == Some(true) {
            self.hub
                .broker
                .presence(room, &self.session.user, PresenceState::Offline, false);
        }
    }

    pub(in crate::connection) fn leave_all(&mut self) {
        for room in std::mem::take(&mut self.joined) {
            self.leave_room(&room);
        }
    }
}
