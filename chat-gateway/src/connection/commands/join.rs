//! `join`: the user authorized (the cached decision or history-service), the connection made
//! a member and the room bound, presence announced, then the `joined` frame with the room's
//! history: recent messages for a plain join, a catch-up after `since` (and the changes after
//! `changes_since`) for a rejoin, merged with what this gateway saw but history-service may
//! not have stored yet. Live messages are held from the moment the connection is a member;
//! the writer stitches them to this history.

use std::time::Instant;

use common::domain::{MessageId, RoomId};
use common::event::{ChatMessage, PresenceState, RoomEvent};

use crate::connection::{Gone, Reader};
use crate::history::HistoryPage;
use crate::outbox::{JoinedFrame, Outbound};
use crate::protocol::{self, ErrorCode, FrameError, ServerFrame};
use crate::rooms::Member;

use super::access::refused;

impl Reader {
    pub(super) async fn join(
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
