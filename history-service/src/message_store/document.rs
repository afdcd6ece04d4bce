//! A message as stored: its document, the documents it holds (reply, user, reaction), and
//! the conversions between it and the message served.

use anyhow::Context;
use chrono::{DateTime, Utc};
use common::domain::{
    ClientMessageId, Emoji, MessageBody, MessageId, RoomId, UserId, UserRef, Username,
};
use common::event::{ChatMessage, MessageEvent, MessageState, ReactionCount, ReplyRef};
use mongodb::bson;
use serde::{Deserialize, Serialize};

/// A stored message in its current state. Changes (see [`crate::changes`]) add the fields
/// after `seq`; a delete removes `body` and everything derived from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MessageDocument {
    #[serde(rename = "_id")]
    pub(crate) id: String,
    pub(crate) room: String,
    pub(super) client_id: String,
    pub(crate) author_id: String,
    pub(super) author_name: String,
    /// Absent once deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<String>,
    pub(crate) sent_at: bson::DateTime,
    /// When the stored copy was published (absent on messages from older gateways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) published_at: Option<bson::DateTime>,
    /// The message's number in its room (1, 2, …; see
    /// [`MessageStore::number`](super::MessageStore::number)); absent on messages stored before
    /// rooms counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) seq: Option<i64>,
    /// The message this one answers: its id and author only (the excerpt is read when served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reply_to: Option<ReplyDocument>,
    /// 1 when sent (absent on documents never changed), one more per applied change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<i64>,
    /// The change id of the edit the body comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) edit_change: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) edited_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deleted_change: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deleted_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deleted_by: Option<UserDocument>,
    /// One register per (user, emoji), "off" ones kept so that an older "on" cannot revive
    /// them; in the order the emoji were first used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) reactions: Vec<ReactionDocument>,
    /// When history-service last applied a change (the change feed's cursor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) changed_at: Option<bson::DateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReplyDocument {
    id: String,
    author_id: String,
    author_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserDocument {
    pub(crate) id: String,
    pub(crate) username: String,
}

impl From<&UserRef> for UserDocument {
    fn from(user: &UserRef) -> Self {
        Self {
            id: user.id.to_string(),
            username: user.username.to_string(),
        }
    }
}

impl UserDocument {
    pub(crate) fn to_user(&self) -> anyhow::Result<UserRef> {
        Ok(UserRef {
            id: UserId::parse(self.id.clone()).map_err(|e| anyhow::anyhow!("stored user: {e}"))?,
            username: Username::parse(self.username.clone())
                .map_err(|e| anyhow::anyhow!("stored user: {e}"))?,
        })
    }
}

/// A user's reaction with one emoji: on or off, and the change that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReactionDocument {
    pub(crate) emoji: String,
    pub(crate) user: String,
    pub(crate) on: bool,
    pub(crate) change: String,
}

impl From<&MessageEvent> for MessageDocument {
    fn from(event: &MessageEvent) -> Self {
        let m = &event.message;
        Self {
            id: m.id.to_string(),
            room: m.room.to_string(),
            client_id: m.client_id.to_string(),
            author_id: m.author.id.to_string(),
            author_name: m.author.username.to_string(),
            body: m.body.as_ref().map(ToString::to_string),
            sent_at: bson::DateTime::from_millis(m.sent_at.timestamp_millis()),
            published_at: event
                .published_at
                .map(|at| bson::DateTime::from_millis(at.timestamp_millis())),
            seq: None,
            reply_to: m.reply_to.as_ref().map(|reply| ReplyDocument {
                id: reply.id.to_string(),
                author_id: reply.author.id.to_string(),
                author_name: reply.author.username.to_string(),
            }),
            version: None,
            edit_change: None,
            edited_at: None,
            deleted: false,
            deleted_change: None,
            deleted_at: None,
            deleted_by: None,
            reactions: Vec::new(),
            changed_at: None,
        }
    }
}

pub(crate) fn to_chrono(at: bson::DateTime) -> anyhow::Result<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(at.timestamp_millis())
        .context("stored timestamp out of range")
}

impl MessageDocument {
    /// The stored version (1 for a document never changed).
    pub(crate) fn current_version(&self) -> i64 {
        self.version.unwrap_or(1)
    }

    /// The reaction counts, in the order the emoji were first used; `me` set for `reader`.
    pub(crate) fn reaction_counts(&self, reader: Option<&str>) -> Vec<ReactionCount> {
        let mut counts: Vec<ReactionCount> = Vec::new();
        for reaction in self.reactions.iter().filter(|r| r.on) {
            let Ok(emoji) = Emoji::parse(reaction.emoji.clone()) else {
                continue;
            };
            let mine = reader == Some(reaction.user.as_str());
            match counts.iter_mut().find(|c| c.emoji == emoji) {
                Some(count) => {
                    count.count += 1;
                    if mine {
                        count.me = Some(true);
                    }
                }
                None => counts.push(ReactionCount {
                    emoji,
                    count: 1,
                    me: (reader.is_some()).then_some(mine),
                }),
            }
        }
        counts
    }

    /// Stored documents were validated on the way in; a document that no longer parses (edited
    /// by hand, say) is reported rather than served. `reader` sets `me` in the reactions
    /// (none: counts only); a reply's excerpt is filled in by
    /// [`MessageStore::resolve_replies`](super::MessageStore::resolve_replies).
    pub(crate) fn into_message(self, reader: Option<&str>) -> anyhow::Result<ChatMessage> {
        let invalid =
            |e: common::domain::InvalidValue| anyhow::anyhow!("stored message {}: {e}", self.id);
        let reply_to = match &self.reply_to {
            None => None,
            Some(reply) => Some(ReplyRef {
                id: MessageId::parse(&reply.id).map_err(invalid)?,
                author: UserRef {
                    id: UserId::parse(reply.author_id.clone()).map_err(invalid)?,
                    username: Username::parse(reply.author_name.clone()).map_err(invalid)?,
                },
                excerpt: None,
                deleted: false,
            }),
        };
        let state = MessageState {
            version: self.current_version().max(1) as u64,
            edited_at: self.edited_at.map(to_chrono).transpose()?,
            deleted: self.deleted,
            deleted_at: self.deleted_at.map(to_chrono).transpose()?,
            deleted_by: self
                .deleted_by
                .as_ref()
                .map(UserDocument::to_user)
                .transpose()?,
            reactions: self.reaction_counts(reader),
            changed_at: self.changed_at.map(to_chrono).transpose()?,
        };
        Ok(ChatMessage {
            id: MessageId::parse(&self.id).map_err(invalid)?,
            room: RoomId::parse(self.room.clone()).map_err(invalid)?,
            client_id: ClientMessageId::parse(self.client_id.clone()).map_err(invalid)?,
            author: UserRef {
                id: UserId::parse(self.author_id.clone()).map_err(invalid)?,
                username: Username::parse(self.author_name.clone()).map_err(invalid)?,
            },
            body: match (&self.body, self.deleted) {
                (Some(body), false) => Some(MessageBody::parse(body.clone()).map_err(invalid)?),
                _ => None,
            },
            sent_at: to_chrono(self.sent_at)?,
            reply_to,
            state,
        })
    }

    pub(crate) fn author(&self) -> anyhow::Result<UserRef> {
        UserDocument {
            id: self.author_id.clone(),
            username: self.author_name.clone(),
        }
        .to_user()
    }
}
