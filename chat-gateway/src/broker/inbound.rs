//! Where each delivery of this instance's queue goes: [`Inbound`] is what they are applied
//! to, and `dispatch` routes one by its routing key: a chat message to the local members of
//! its room (once per id), a room event (presence by the visibility rules, typing, room
//! updates and archives, message changes) to the room's local members, an account event to
//! [`Accounts::apply`], a membership event to [`crate::membership`]. Frames that start as
//! broker events are serialized here once for every connection of the room.

use std::sync::Arc;

use common::event::{
    AccountEvent, MemberEvent, MessageEvent, PresenceState, RoomEvent,
    topology::{self, KeyKind},
};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::accounts::Accounts;
use crate::membership::{self, Membership};
use crate::outbox::{LiveMessage, Outbound};
use crate::protocol::ServerFrame;
use crate::recovery::Gaps;
use crate::rooms::Rooms;

use super::Broker;

/// What the instance queue's deliveries are applied to.
pub struct Inbound {
    pub broker: Broker,
    pub rooms: Arc<Rooms>,
    pub accounts: Arc<Accounts>,
    pub membership: Arc<Membership>,
    /// Told of each loss and reconnect, for the rooms to be read back (see
    /// [`crate::recovery`]).
    pub gaps: Arc<Gaps>,
}

/// Routes one delivery of the instance queue to the local members of its room, an account
/// event to [`Accounts::apply`], a membership event to [`membership::apply_member_event`].
pub(super) fn dispatch(inbound: &Inbound, routing_key: &str, data: &[u8]) {
    let Inbound {
        broker,
        rooms,
        accounts,
        membership,
        ..
    } = inbound;
    let kind = topology::kind_of(routing_key);
    if kind == Some(KeyKind::Member) {
        match serde_json::from_slice::<MemberEvent>(data) {
            Ok(event) => {
                membership::apply_member_event(&event, membership, rooms, accounts, broker)
            }
            Err(error) => tracing::warn!(%error, "ignoring an unreadable membership event"),
        }
        return;
    }
    if kind == Some(KeyKind::Account) {
        match serde_json::from_slice::<AccountEvent>(data) {
            Ok(event) => accounts.apply(&event),
            Err(error) => tracing::warn!(%error, "ignoring an unreadable account event"),
        }
        return;
    }
    if kind == Some(KeyKind::Message) {
        match serde_json::from_slice::<MessageEvent>(data) {
            Ok(event) if !rooms.first_delivery(event.message.id) => {}
            Ok(event) => {
                let message = event.message;
                rooms.remember(&message, event.published_at);
                let live = LiveMessage::of(&message);
                rooms.deliver(&message.room, || Outbound::RoomMessage(live.clone()));
            }
            Err(error) => tracing::warn!(%error, "ignoring an unreadable chat message"),
        }
        return;
    }
    if kind != Some(KeyKind::RoomEvent) {
        // A room binding also matches longer `msg.<room>.…` keys a later version may add.
        tracing::debug!(
            routing_key,
            "ignoring a delivery of a kind this gateway does not know"
        );
        return;
    }
    let event = match serde_json::from_slice::<RoomEvent>(data) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, "ignoring an unreadable room event");
            return;
        }
    };
    let remote = event.origin() != broker.origin();
    match &event {
        RoomEvent::Presence {
            origin,
            room,
            user,
            state,
            sync,
            ..
        } => {
            // Clients see a presence event only when the user's visibility in the room changed:
            // remote events are recorded here and shown if they changed it; local changes were
            // recorded at join/leave and are shown unless another gateway already (or still)
            // shows the user; query answers from this gateway are for the others.
            let show = if remote {
                rooms.apply_remote_presence(origin, room, user, *state == PresenceState::Online)
            } else if *sync {
                false
            } else {
                let (local, elsewhere) = rooms.visibility(room, &user.id);
                match state {
                    PresenceState::Online => !elsewhere,
                    PresenceState::Offline => !local && !elsewhere,
                }
            };
            if !show {
                return;
            }
            let frame = Arc::new(Utf8Bytes::from(
                ServerFrame::Presence {
                    room,
                    user,
                    state: *state,
                }
                .to_text(),
            ));
            rooms.deliver(room, || Outbound::Frame(frame.clone()));
        }
        RoomEvent::Typing { room, user, .. } => {
            let frame = Arc::new(Utf8Bytes::from(
                ServerFrame::Typing { room, user }.to_text(),
            ));
            rooms.deliver(room, || Outbound::Frame(frame.clone()));
        }
        RoomEvent::PresenceQuery { room, .. } => {
            if remote {
                for user in rooms.local_users(room) {
                    broker.presence(room, &user, PresenceState::Online, true);
                }
            }
        }
        RoomEvent::RoomUpdated { room, view, .. } => {
            let frame = Arc::new(Utf8Bytes::from(
                ServerFrame::RoomUpdated { room: view }.to_text(),
            ));
            rooms.deliver(room, || Outbound::Frame(frame.clone()));
        }
        RoomEvent::RoomArchived { room, .. } => {
            membership::apply_archived(room, membership, rooms, broker);
        }
        RoomEvent::MessageChanged { room, change, .. } => {
            // The applied change is the client frame (`edited`, `deleted`, `reactions`):
            // serialized once for every connection of the room.
            let Ok(text) = serde_json::to_string(change) else {
                return;
            };
            // Plain joins answered from the room's memory must show the change too.
            rooms.apply_change(change);
            let frame = Arc::new(Utf8Bytes::from(text));
            rooms.deliver(room, || Outbound::Frame(frame.clone()));
        }
    }
}
