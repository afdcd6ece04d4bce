//! The room view of docs/rooms.md: a room as one user sees it (their role, unread count and
//! read marker when they are a member; the other side of a DM).

use serde_json::{Value, json};

use crate::rooms::store::{InboxEntry, RoomDoc, to_chrono};

/// Unread counts are exact up to this; beyond, `unread_capped` is set.
pub const UNREAD_CAP: i64 = 100;

/// The view of `room` for `viewer`; `entry` is their inbox entry when they are a member.
/// Without a viewer (`None`), the view carries no caller-specific fields (room events).
pub fn room_view(room: &RoomDoc, viewer: Option<(&str, Option<&InboxEntry>)>) -> Value {
    let mut view = json!({
        "id": room.id,
        "kind": room.kind,
        "name": room.name,
        "topic": room.topic,
        "created_by": room.created_by,
        "created_at": room.created_at.map(to_chrono),
        "archived": room.archived,
        "member_count": room.member_count.max(0),
    });
    if let Some(last) = &room.last_message {
        view["last_message"] = json!({
            "id": last.id,
            "author": {"id": last.author.id, "username": last.author.username},
            "preview": last.preview,
            "sent_at": to_chrono(last.sent_at),
        });
    }
    let Some((viewer, entry)) = viewer else {
        return view;
    };
    if let Some(entry) = entry {
        let unread = (room.seq - entry.read_seq).max(0);
        view["role"] = json!(entry.role);
        view["unread"] = json!(unread.min(UNREAD_CAP));
        view["unread_capped"] = json!(unread > UNREAD_CAP);
        view["read_id"] = json!(entry.read_id);
    }
    if let Some(other) = room
        .dm_users
        .iter()
        .flatten()
        .find(|user| user.id != viewer)
    {
        view["dm_user"] = json!({"id": other.id, "username": other.username});
    }
    view
}
