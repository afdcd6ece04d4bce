//! `typing`: passed on to the room as a room event, at most once every two seconds per room
//! and connection.

use std::time::{Duration, Instant};

use common::domain::RoomId;
use common::event::RoomEvent;

use crate::connection::{Gone, Reader};
use crate::protocol::FrameError;

use super::access::not_joined;

impl Reader {
    /// Tells the room the user is typing, at most once every two seconds per room and
    /// connection.
    pub(super) async fn typing(&mut self, room: RoomId) -> Result<Result<(), FrameError>, Gone> {
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
}
