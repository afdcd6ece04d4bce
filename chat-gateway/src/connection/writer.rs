//! The connection's writer: the task that owns the socket's sending half and writes what the
//! outbound queue brings, in order, until the queue ends or is stopped, the connection lags or
//! the server shuts down; then it sends the close frame and hands the sink back.
//!
//! It is also the seam between a join's history and the room's live messages: from
//! [`Outbound::BeginJoin`] on, the room's live messages are held ([`RoomState::Joining`]); the
//! `joined` frame is written first, then the held messages that are not in its history. From
//! then on the ids written lately ([`Recent`]) drop a message delivered twice.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::domain::{MessageId, RoomId};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::outbox::{self, JoinedFrame, LiveMessage, Outbound};
use crate::protocol::{ServerFrame, close_code};

/// Writes until the queue ends or is stopped, the connection lags or the server stops;
/// returns the sink so the caller can finish the closing handshake.
///
/// A plain function returning the future, so that the arguments are kept once in it (an
/// `async fn` keeps its arguments and their moved-in copies): every connection has one.
#[allow(clippy::manual_async_fn)]
pub(super) fn write_loop<S>(
    mut sink: S,
    mut rx: outbox::Receiver<Outbound>,
    shutdown: CancellationToken,
    max_held: usize,
) -> impl Future<Output = S> + Send
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin + Send,
{
    async move {
        let mut rooms = WriterRooms::default();
        let going_away = || CloseFrame {
            code: CloseCode::Away,
            reason: "server shutting down".into(),
        };
        let stop = loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                _ = shutdown.cancelled() => break Stop::Close(Some(going_away())),
            };
            // Every sender is gone: the reader ended without a close frame to send.
            let Some(item) = item else {
                break Stop::Close(None);
            };
            let frames = match item {
                Outbound::Frame(frame) => Frames::One(Message::Text(Arc::unwrap_or_clone(frame))),
                Outbound::Ping => Frames::One(Message::Ping(Default::default())),
                Outbound::Lagged(_) | Outbound::Resync(_) | Outbound::Close(_) => {
                    break Stop::from(item);
                }
                Outbound::BeginJoin(room) => {
                    rooms.insert(*room, RoomState::Joining(Vec::new()));
                    continue;
                }
                Outbound::Forget(room) => {
                    rooms.remove(&room);
                    continue;
                }
                Outbound::RoomMessage(live) => match rooms.get_mut(&live.room) {
                    Some(RoomState::Joining(held)) => {
                        // Held messages count against the same bound as the queue.
                        if held.len() >= max_held {
                            break Stop::Lagged(Some(live.room.clone()), None);
                        }
                        held.push(live);
                        continue;
                    }
                    Some(RoomState::Live(recent)) => {
                        if !recent.remember(live.id) {
                            continue;
                        }
                        Frames::One(Message::Text(live.frame.clone()))
                    }
                    None => continue,
                },
                Outbound::Joined(joined) => {
                    let JoinedFrame {
                        room,
                        frame,
                        history,
                    } = *joined;
                    let held = match rooms.remove(&room) {
                        Some(RoomState::Joining(held)) => held,
                        _ => Vec::new(),
                    };
                    let mut recent = Recent::from_history(&history);
                    let history: HashSet<MessageId> = history.into_iter().collect();
                    let mut frames = vec![frame];
                    for live in held {
                        if !history.contains(&live.id) && recent.remember(live.id) {
                            frames.push(live.frame.clone());
                        }
                    }
                    rooms.insert(room, RoomState::Live(recent));
                    Frames::Many(frames)
                }
            };
            // A client that stopped reading blocks the write; lagging or shutdown end it
            // anyway. Boxed: an idle connection's task should not carry a write in progress.
            let write = Box::pin(async {
                match frames {
                    Frames::One(message) => sink.feed(message).await?,
                    Frames::Many(frames) => {
                        for frame in frames {
                            sink.feed(Message::Text(frame)).await?;
                        }
                    }
                }
                sink.flush().await
            });
            tokio::select! {
                written = write => {
                    if written.is_err() {
                        return sink;
                    }
                }
                last = rx.stopped() => break Stop::from(last),
                _ = shutdown.cancelled() => break Stop::Close(Some(going_away())),
            }
        };
        let close = match stop {
            Stop::Close(frame) => frame,
            Stop::Lagged(room, resume) => {
                if let Some(room) = room {
                    // The client rejoins from the earlier of what was written last and where
                    // the gateway's certainty ends.
                    let last_id = match (rooms.last_id(&room), resume) {
                        (Some(written), Some(resume)) => Some(written.min(resume)),
                        (written, resume) => written.or(resume),
                    };
                    let frame = ServerFrame::Lagged {
                        last_id,
                        room: &room,
                    }
                    .to_text();
                    // Best effort: the client is not reading, so this may not get through.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        sink.send(Message::Text(frame.into())),
                    )
                    .await;
                }
                Some(CloseFrame {
                    code: CloseCode::from(close_code::LAGGED),
                    reason: "lagged: reconnect and join with since".into(),
                })
            }
        };
        if let Some(frame) = close {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                sink.send(Message::Close(Some(frame))),
            )
            .await;
        }
        sink
    }
}

/// Why the writer stopped.
enum Stop {
    /// Send this close frame (if any) and end.
    Close(Option<CloseFrame>),
    /// The connection fell behind in this room, or may miss messages of it after the id
    /// given.
    Lagged(Option<RoomId>, Option<MessageId>),
}

impl From<Outbound> for Stop {
    /// The stop item of the queue (see [`outbox::Sender::stop`]).
    fn from(last: Outbound) -> Self {
        match last {
            Outbound::Lagged(room) => Stop::Lagged(Some(*room), None),
            Outbound::Resync(resync) => {
                let (room, resume) = *resync;
                Stop::Lagged(Some(room), Some(resume))
            }
            Outbound::Close(frame) => Stop::Close(frame.map(|frame| *frame)),
            // Only the three above are ever sent as a stop.
            _ => Stop::Close(None),
        }
    }
}

/// What one turn of the writer writes: nearly always one frame, which needs no allocation.
enum Frames {
    One(Message),
    Many(Vec<Utf8Bytes>),
}

/// Per-room delivery state of the writer.
enum RoomState {
    /// Join in progress: live messages held until `joined` is written.
    Joining(Vec<Arc<LiveMessage>>),
    /// Live: what was written recently, to drop a message delivered twice.
    Live(Recent),
}

const RECENT_IDS: usize = 128;

/// The ids of a room's messages written recently, oldest first.
struct Recent {
    ids: VecDeque<MessageId>,
    /// The greatest id written: a greater one is new without looking through `ids`, which is
    /// nearly always the case (ids are made in time order).
    newest: Option<MessageId>,
}

impl Recent {
    /// Starts with the latest ids of a `joined` frame's history.
    fn from_history(history: &[MessageId]) -> Self {
        let ids: VecDeque<MessageId> = history
            .iter()
            .skip(history.len().saturating_sub(RECENT_IDS))
            .copied()
            .collect();
        let newest = ids.iter().max().copied();
        Self { ids, newest }
    }

    /// Records `id`; false when it was written recently.
    fn remember(&mut self, id: MessageId) -> bool {
        if self.newest.is_some_and(|newest| id <= newest) && self.ids.contains(&id) {
            return false;
        }
        if self.ids.len() == RECENT_IDS {
            self.ids.pop_front();
        }
        self.ids.push_back(id);
        self.newest = self.newest.max(Some(id));
        true
    }

    /// The latest message written to the client.
    fn last(&self) -> Option<MessageId> {
        self.ids.back().copied()
    }
}

/// The writer's rooms: a connection is in a handful, so a list costs less than a map.
#[derive(Default)]
struct WriterRooms(Vec<(RoomId, RoomState)>);

impl WriterRooms {
    fn get_mut(&mut self, room: &RoomId) -> Option<&mut RoomState> {
        self.0
            .iter_mut()
            .find(|(id, _)| id == room)
            .map(|(_, state)| state)
    }

    fn insert(&mut self, room: RoomId, state: RoomState) {
        match self.get_mut(&room) {
            Some(existing) => *existing = state,
            None => self.0.push((room, state)),
        }
    }

    fn remove(&mut self, room: &RoomId) -> Option<RoomState> {
        let at = self.0.iter().position(|(id, _)| id == room)?;
        Some(self.0.swap_remove(at).1)
    }

    /// The latest message written to the client in the room.
    fn last_id(&mut self, room: &RoomId) -> Option<MessageId> {
        match self.get_mut(room) {
            Some(RoomState::Live(recent)) => recent.last(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> MessageId {
        MessageId::from_ulid(ulid::Ulid::from_parts(n, 0))
    }

    #[test]
    fn recent_drops_ids_written_before_in_any_order_and_keeps_new_older_ones() {
        let mut recent = Recent::from_history(&[id(1), id(5)]);
        assert!(!recent.remember(id(5)), "the newest id again");
        assert!(!recent.remember(id(1)), "an older id from the history");
        assert!(recent.remember(id(3)), "an older id never written is new");
        assert!(!recent.remember(id(3)));
        assert!(recent.remember(id(9)));
        assert_eq!(recent.last(), Some(id(9)));
        assert!(recent.remember(id(7)), "a late id below the newest");
        assert_eq!(recent.last(), Some(id(7)));
    }

    #[test]
    fn recent_keeps_a_bounded_window() {
        let history: Vec<MessageId> = (0..RECENT_IDS as u64 + 10).map(id).collect();
        let mut recent = Recent::from_history(&history);
        assert_eq!(recent.ids.len(), RECENT_IDS);
        assert!(recent.remember(id(0)), "an id that fell out of the window");
        assert!(!recent.remember(id(RECENT_IDS as u64 + 9)));
        assert_eq!(recent.ids.len(), RECENT_IDS);
    }
}
