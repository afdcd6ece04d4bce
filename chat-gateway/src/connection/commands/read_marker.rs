//! `read`: a read marker, recorded for the next coalesced write (see [`crate::read_markers`]).

use common::domain::{MessageId, RoomId};

use crate::connection::Reader;
use crate::protocol::{ErrorCode, FrameError};

use super::access::not_joined;

impl Reader {
    /// Records a read marker for the next coalesced write (see [`crate::read_markers`]).
    pub(super) fn read_marker(&mut self, room: RoomId, id: MessageId) -> Result<(), FrameError> {
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
}
