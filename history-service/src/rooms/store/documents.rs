//! The documents of the store's collections as Rust types, and the helpers that build their
//! ids and convert their times.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use common::domain::{Role, RoomKind, UserRef};
use mongodb::bson;
use serde::{Deserialize, Serialize};

use crate::rooms::policy::RoomFacts;

/// A user as stored next to a membership, ban or DM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    pub id: String,
    pub username: String,
}

impl From<&UserRef> for StoredUser {
    fn from(user: &UserRef) -> Self {
        Self {
            id: user.id.to_string(),
            username: user.username.to_string(),
        }
    }
}

/// The room's latest stored message, as the room list shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastMessage {
    pub id: String,
    pub author: StoredUser,
    pub preview: String,
    pub sent_at: bson::DateTime,
}

/// A `rooms` document. Every field but `_id` may be missing: the consumer numbers the messages
/// of rooms nobody created (stored before rooms existed) in a document of its own making,
/// which holds only `seq`, `last_message` and `last_activity` until someone joins.
#[derive(Debug, Clone, Deserialize)]
pub struct RoomDoc {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub kind: Option<RoomKind>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub topic: String,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub created_at: Option<bson::DateTime>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub member_count: i64,
    #[serde(default)]
    pub seq: i64,
    #[serde(default)]
    pub last_message: Option<LastMessage>,
    #[serde(default)]
    pub last_activity: Option<bson::DateTime>,
    #[serde(default)]
    pub dm_users: Option<Vec<StoredUser>>,
}

impl RoomDoc {
    /// What the permission table needs; `None` for a room nobody created yet.
    pub fn facts(&self) -> Option<RoomFacts> {
        self.kind.map(|kind| RoomFacts {
            kind,
            archived: self.archived,
        })
    }
}

/// A `memberships` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub room: String,
    pub user: StoredUser,
    pub role: Role,
    pub joined_at: bson::DateTime,
}

/// One room of a user's inbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxEntry {
    pub role: Role,
    pub joined_at: bson::DateTime,
    #[serde(default)]
    pub read_id: Option<String>,
    #[serde(default)]
    pub read_seq: i64,
    #[serde(default)]
    pub hidden: bool,
}

/// An `inboxes` document: the rooms a user is in, keyed by room id (room ids contain neither
/// `.` nor `$`, so they are safe field names).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InboxDoc {
    /// The user's id (empty in a document read with a projection that left it out).
    #[serde(rename = "_id", default)]
    pub id: String,
    #[serde(default)]
    pub rooms: HashMap<String, InboxEntry>,
}

pub fn membership_id(room: &str, user: &str) -> String {
    format!("{room}/{user}")
}

pub(super) fn now() -> bson::DateTime {
    bson::DateTime::now()
}

pub fn to_chrono(at: bson::DateTime) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(at.timestamp_millis()).unwrap_or(DateTime::UNIX_EPOCH)
}
