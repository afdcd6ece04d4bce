//! The events carried over RabbitMQ and the topology both sides declare.
//!
//! One durable topic exchange carries these families of routing keys:
//! - `msg.<room>`: chat messages, published persistent with publisher confirms; the history
//!   service's durable queue is bound to `msg.*`, which matches two-word keys only, so it
//!   gets messages and nothing else;
//! - `msg.<room>.evt`: ephemeral room events (presence, typing, room updates), never
//!   stored; history-service announces each change it applied here too. They share the
//!   room's `msg.` prefix so that a gateway binds its queue once per room with local
//!   members, `msg.<room>.#` (`#` matches zero or more words: the room's messages and its
//!   events), and unbinds that key when the room's last local member leaves;
//! - `chg.<room>`: changes of stored messages (edit, delete, react), published persistent
//!   with publisher confirms like messages and bound to the history queue only;
//! - `account.<user_id>`: account changes published by auth-service (deleted, disabled,
//!   enabled); every gateway and history-service instance binds a queue of its own to
//!   `account.*` and stops honouring the user's access tokens;
//! - `member.<user_id>`: a user's membership changes (added, removed, role, read marker),
//!   published by history-service after storing them; every gateway binds `member.*`
//!   (see docs/rooms.md).
//!
//! Every payload carries a version number `v` so the format can evolve while old and new
//! services run side by side. Versions that published room events on `evt.<room>` do not
//! exchange room events with this one (docs/architecture.md, "Routing keys").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    ClientMessageId, Emoji, MessageBody, MessageId, RemovalReason, Role, RoomId, UserId, UserRef,
};

/// Current version of the event format.
pub const EVENT_VERSION: u32 = 1;

/// Default names; every service lets configuration override them (tests use unique ones).
pub mod topology {
    use crate::domain::RoomId;

    pub const DEFAULT_EXCHANGE: &str = "chat.events";
    pub const DEFAULT_HISTORY_QUEUE: &str = "chat.history";
    /// Binding of the history queue: every room's chat messages. `*` is exactly one word, so
    /// the room events under `msg.<room>.evt` do not match it.
    pub const ALL_MESSAGES_BINDING: &str = "msg.*";

    /// Routing key of a room's chat messages.
    pub fn message_key(room: &RoomId) -> String {
        format!("msg.{room}")
    }

    /// The word after a room's message key that makes the key of its room events.
    const ROOM_EVENT_WORD: &str = "evt";

    /// Routing key of a room's ephemeral events: under the room's message key, one word
    /// longer, so that [`room_binding`] carries them and [`ALL_MESSAGES_BINDING`] does not.
    pub fn room_event_key(room: &RoomId) -> String {
        format!("msg.{room}.{ROOM_EVENT_WORD}")
    }

    /// Binding of a gateway's queue for a room with local members: the room's messages and its
    /// events in one binding (`#` matches zero or more words), so joining a room waits for one
    /// binding on the broker, not one per kind.
    pub fn room_binding(room: &RoomId) -> String {
        format!("msg.{room}.#")
    }

    /// Routing key of the changes (edit, delete, react) of a room's messages.
    pub fn change_key(room: &RoomId) -> String {
        format!("chg.{room}")
    }

    /// Binding of the history queue: every room's message changes.
    pub const ALL_CHANGES_BINDING: &str = "chg.*";

    /// Routing key of a user's account changes.
    pub fn account_key(user: &crate::domain::UserId) -> String {
        format!("account.{user}")
    }

    /// Binding of every queue that acts on account changes.
    pub const ALL_ACCOUNTS_BINDING: &str = "account.*";

    /// Routing key of a user's membership changes.
    pub fn member_key(user: &crate::domain::UserId) -> String {
        format!("member.{user}")
    }

    /// Binding of every gateway queue: all users' membership changes.
    pub const ALL_MEMBERS_BINDING: &str = "member.*";

    /// What a delivery carries, told by its routing key (one of the keys above).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum KeyKind {
        Message,
        Change,
        RoomEvent,
        Account,
        Member,
    }

    /// The kind of `routing_key`; `None` for a key none of the above makes (a gateway's room
    /// binding also matches any longer `msg.<room>.…` key a later version may add).
    pub fn kind_of(routing_key: &str) -> Option<KeyKind> {
        let (prefix, rest) = routing_key.split_once('.')?;
        match prefix {
            "msg" => match rest.split_once('.') {
                None if !rest.is_empty() => Some(KeyKind::Message),
                Some((room, ROOM_EVENT_WORD)) if !room.is_empty() => Some(KeyKind::RoomEvent),
                _ => None,
            },
            "chg" => Some(KeyKind::Change),
            "account" => Some(KeyKind::Account),
            "member" => Some(KeyKind::Member),
            _ => None,
        }
    }

    /// Declares the durable topic exchange every service publishes to and binds on.
    #[cfg(feature = "amqp")]
    pub async fn declare_exchange(channel: &lapin::Channel, exchange: &str) -> lapin::Result<()> {
        channel
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
    }

    /// Consumes every account event of `exchange` from a queue of the caller's own:
    /// server-named, exclusive (deleted with the connection), without acknowledgements (an
    /// event missed while disconnected is covered by the access tokens' short lifetime).
    #[cfg(feature = "amqp")]
    pub async fn consume_account_events(
        channel: &lapin::Channel,
        exchange: &str,
        consumer_tag: &str,
    ) -> lapin::Result<lapin::Consumer> {
        consume_instance_events(channel, exchange, consumer_tag, &[ALL_ACCOUNTS_BINDING]).await
    }

    /// Consumes the events of `exchange` matching `bindings` from a queue of the caller's
    /// own, as [`consume_account_events`] does; deliveries tell their kind by routing key.
    #[cfg(feature = "amqp")]
    pub async fn consume_instance_events(
        channel: &lapin::Channel,
        exchange: &str,
        consumer_tag: &str,
        bindings: &[&str],
    ) -> lapin::Result<lapin::Consumer> {
        use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        for binding in bindings {
            channel
                .queue_bind(
                    queue.name().as_str().into(),
                    exchange.into(),
                    (*binding).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        channel
            .basic_consume(
                queue.name().as_str().into(),
                consumer_tag.into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
    }

    /// Name of a gateway instance's own queue.
    pub fn gateway_queue(exchange: &str, instance_id: &str) -> String {
        format!("{exchange}.gateway.{instance_id}")
    }
}

/// A chat message as published by a gateway, stored by the history service and served back
/// in its current state (see [`MessageState`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub id: MessageId,
    pub room: RoomId,
    pub client_id: ClientMessageId,
    pub author: UserRef,
    /// Absent only on a deleted message (a tombstone): deleting erases the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<MessageBody>,
    pub sent_at: DateTime<Utc>,
    /// The message this one answers (same room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<ReplyRef>,
    #[serde(flatten)]
    pub state: MessageState,
}

impl ChatMessage {
    /// A message as sent: version 1, no reply, nothing changed.
    pub fn new(
        id: MessageId,
        room: RoomId,
        client_id: ClientMessageId,
        author: UserRef,
        body: MessageBody,
        sent_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            room,
            client_id,
            author,
            body: Some(body),
            sent_at,
            reply_to: None,
            state: MessageState::default(),
        }
    }
}

/// What a reply shows of the message it answers. Only `id` and `author` are stored with the
/// reply; the excerpt is read from the answered message when served, so a deleted message's
/// text survives nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyRef {
    pub id: MessageId,
    pub author: UserRef,
    /// The first [`ReplyRef::EXCERPT_CHARS`] characters of the answered message's body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl ReplyRef {
    pub const EXCERPT_CHARS: usize = 100;

    /// The excerpt of `body` a reply shows.
    pub fn excerpt_of(body: &str) -> String {
        body.chars().take(Self::EXCERPT_CHARS).collect()
    }
}

/// One emoji's reactions to a message: how many users, and (history pages and `joined`
/// only, for the reader) whether the reader is one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionCount {
    pub emoji: Emoji,
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub me: Option<bool>,
}

fn first_version() -> u64 {
    1
}

/// What changed about a message since it was sent (docs/protocol.md, "Changing messages").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageState {
    /// 1 when sent, one more for every change applied.
    #[serde(default = "first_version")]
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_by: Option<UserRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionCount>,
    /// When history-service last applied a change (its clock): the change feed's cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<DateTime<Utc>>,
}

impl Default for MessageState {
    fn default() -> Self {
        Self {
            version: first_version(),
            edited_at: None,
            deleted: false,
            deleted_at: None,
            deleted_by: None,
            reactions: Vec::new(),
            changed_at: None,
        }
    }
}

/// What a [`ChangeEvent`] does to its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// The author replaces the body.
    Edit { body: MessageBody },
    /// The author, or an owner or admin of the room, deletes the message (final).
    Delete,
    /// `by` turns their reaction `emoji` on or off.
    React { emoji: Emoji, on: bool },
}

impl Change {
    /// The name of the change in receipts and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Edit { .. } => "edit",
            Change::Delete => "delete",
            Change::React { .. } => "react",
        }
    }
}

/// Payload of a `chg.<room>` publication: one change of a stored message, made by `by`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub v: u32,
    pub room: RoomId,
    /// The message changed.
    pub id: MessageId,
    /// Orders changes of one message: a change applies only over older ones. Made by the
    /// gateway like message ids (a ULID from a monotonic generator) and kept by retries.
    pub change_id: MessageId,
    pub client_id: ClientMessageId,
    pub by: UserRef,
    /// When the gateway took the change (kept by retries); edits are checked against the
    /// edit window with it.
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub change: Change,
}

/// A change history-service applied, as the room's clients get it (docs/protocol.md):
/// serialized once per room by each gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AppliedChange {
    Edited {
        room: RoomId,
        id: MessageId,
        body: MessageBody,
        edited_at: DateTime<Utc>,
        version: u64,
        changed_at: DateTime<Utc>,
    },
    Deleted {
        room: RoomId,
        id: MessageId,
        deleted_at: DateTime<Utc>,
        by: UserRef,
        version: u64,
        changed_at: DateTime<Utc>,
    },
    Reactions {
        room: RoomId,
        id: MessageId,
        reactions: Vec<ReactionCount>,
        version: u64,
        by: UserRef,
        emoji: Emoji,
        on: bool,
        changed_at: DateTime<Utc>,
    },
}

/// Payload of a `msg.<room>` publication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEvent {
    pub v: u32,
    /// When this copy was handed to the broker; a retry publishes a new copy of the message
    /// (same id) with a later time. A catch-up join uses it to find messages published after
    /// its cursor even when their ids sort before it (an id is assigned before publishing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub message: ChatMessage,
}

impl MessageEvent {
    /// The event for publishing `message` now.
    pub fn new(message: ChatMessage) -> Self {
        Self {
            v: EVENT_VERSION,
            published_at: Some(Utc::now()),
            message,
        }
    }
}

/// Presence state of a user in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceState {
    Online,
    Offline,
}

/// Payload of a `msg.<room>.evt` publication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoomEvent {
    /// A user came online in (or left) the room on the gateway `origin`.
    Presence {
        v: u32,
        origin: String,
        room: RoomId,
        user: UserRef,
        state: PresenceState,
        /// An answer to a [`RoomEvent::PresenceQuery`], not a change: receivers show it only
        /// if it tells them something new.
        #[serde(default)]
        sync: bool,
    },
    /// A user is typing.
    Typing {
        v: u32,
        origin: String,
        room: RoomId,
        user: UserRef,
    },
    /// A gateway that just started serving the room asks the others who is online there.
    PresenceQuery {
        v: u32,
        origin: String,
        room: RoomId,
    },
    /// The room's name, topic or kind changed (published by history-service); `view` is the
    /// room view of docs/rooms.md without the caller-specific fields, passed to clients as is.
    RoomUpdated {
        v: u32,
        origin: String,
        room: RoomId,
        view: serde_json::Value,
    },
    /// The room was archived: every connection leaves it (reason `archived`).
    RoomArchived {
        v: u32,
        origin: String,
        room: RoomId,
    },
    /// history-service stored a change of one of the room's messages.
    MessageChanged {
        v: u32,
        origin: String,
        room: RoomId,
        change: AppliedChange,
    },
}

impl RoomEvent {
    pub fn origin(&self) -> &str {
        match self {
            RoomEvent::Presence { origin, .. }
            | RoomEvent::Typing { origin, .. }
            | RoomEvent::PresenceQuery { origin, .. }
            | RoomEvent::RoomUpdated { origin, .. }
            | RoomEvent::RoomArchived { origin, .. }
            | RoomEvent::MessageChanged { origin, .. } => origin,
        }
    }

    pub fn room(&self) -> &RoomId {
        match self {
            RoomEvent::Presence { room, .. }
            | RoomEvent::Typing { room, .. }
            | RoomEvent::PresenceQuery { room, .. }
            | RoomEvent::RoomUpdated { room, .. }
            | RoomEvent::RoomArchived { room, .. }
            | RoomEvent::MessageChanged { room, .. } => room,
        }
    }
}

/// What happened to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountChange {
    /// The user deleted their account: its tokens are never honoured again.
    Deleted,
    /// An administrator disabled the account: its tokens issued before `at` are refused.
    Disabled,
    /// An administrator enabled the account again: new logins work; tokens issued while it
    /// was disabled cannot exist.
    Enabled,
}

/// Payload of an `account.<user_id>` publication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEvent {
    pub v: u32,
    pub user_id: UserId,
    pub change: AccountChange,
    /// When the change was stored: access tokens issued (`iat`) before it are refused.
    pub at: DateTime<Utc>,
}

impl AccountEvent {
    /// The event for `change` of `user_id`, stored at `at`.
    pub fn new(user_id: UserId, change: AccountChange, at: DateTime<Utc>) -> Self {
        Self {
            v: EVENT_VERSION,
            user_id,
            change,
            at,
        }
    }
}

/// What changed about a user's membership of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum MemberChange {
    /// The user became a member; `view` is the room view of docs/rooms.md as the user sees it.
    Added { view: serde_json::Value },
    /// The user is no longer a member (or, for `left` on a DM, hid it).
    Removed { reason: RemovalReason },
    /// The user's role changed.
    Role { role: Role },
    /// The user's read marker moved forward to message `id` (the room's `seq`-th).
    Read { id: MessageId, seq: u64 },
}

/// Payload of a `member.<user_id>` publication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEvent {
    pub v: u32,
    pub user: UserId,
    pub room: RoomId,
    #[serde(flatten)]
    pub change: MemberChange,
    /// The process that stored the change (a history-service instance's id), when it says:
    /// that process has applied it already and skips the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl MemberEvent {
    pub fn new(user: UserId, room: RoomId, change: MemberChange) -> Self {
        Self {
            v: EVENT_VERSION,
            user,
            room,
            change,
            origin: None,
        }
    }

    /// The same event, saying that process `origin` stored the change.
    pub fn from_origin(self, origin: &str) -> Self {
        Self {
            origin: Some(origin.to_string()),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{UserId, Username};

    #[test]
    fn message_event_round_trips_with_its_version() {
        let message = ChatMessage::new(
            MessageId::from_ulid(ulid::Ulid::new()),
            RoomId::parse("general".into()).expect("valid room"),
            ClientMessageId::parse("c-1".into()).expect("valid client id"),
            UserRef {
                id: UserId::parse("u1".into()).expect("valid user id"),
                username: Username::parse("alice".into()).expect("valid username"),
            },
            MessageBody::parse("hi".into()).expect("valid body"),
            Utc::now(),
        );
        let json = serde_json::to_value(MessageEvent::new(message.clone())).expect("serializes");
        assert_eq!(json["v"], 1);
        assert_eq!(json["room"], "general");
        assert!(json["published_at"].is_string());
        let back: MessageEvent = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back.message, message);
        assert!(back.published_at.is_some());
    }

    #[test]
    fn a_change_event_round_trips_and_tells_its_kind() {
        let json = serde_json::json!({
            "v": 1, "room": "general", "id": ulid::Ulid::new().to_string(),
            "change_id": ulid::Ulid::new().to_string(), "client_id": "c",
            "by": {"id": "u", "username": "alice"}, "at": "2026-01-01T00:00:00Z",
            "change": "react", "emoji": "👍", "on": true
        });
        let event: ChangeEvent = serde_json::from_value(json.clone()).expect("deserializes");
        assert_eq!(event.change.kind(), "react");
        assert_eq!(serde_json::to_value(&event).expect("serializes"), json);
        let mut bad = json;
        bad["emoji"] = "x".into();
        assert!(serde_json::from_value::<ChangeEvent>(bad).is_err());
    }

    #[test]
    fn an_event_without_a_publish_time_still_reads() {
        let json = serde_json::json!({
            "v": 1, "id": ulid::Ulid::new().to_string(), "room": "general", "client_id": "c",
            "author": {"id": "u", "username": "alice"}, "body": "x", "sent_at": "2026-01-01T00:00:00Z"
        });
        let event: MessageEvent = serde_json::from_value(json).expect("deserializes");
        assert_eq!(event.published_at, None);
    }

    #[test]
    fn every_routing_key_tells_its_kind() {
        let user = UserId::parse("u1".into()).expect("valid user id");
        let room = RoomId::parse("general".into()).expect("valid room");
        let keys = [
            (topology::message_key(&room), topology::KeyKind::Message),
            (topology::change_key(&room), topology::KeyKind::Change),
            (
                topology::room_event_key(&room),
                topology::KeyKind::RoomEvent,
            ),
            (topology::account_key(&user), topology::KeyKind::Account),
            (topology::member_key(&user), topology::KeyKind::Member),
        ];
        for (key, kind) in keys {
            assert_eq!(topology::kind_of(&key), Some(kind), "{key}");
        }
        assert_eq!(topology::kind_of("other.x"), None);
        assert_eq!(topology::kind_of("msg"), None);
        assert_eq!(topology::kind_of("msg."), None);
        assert_eq!(topology::kind_of("msg.general.other"), None);
        assert_eq!(topology::kind_of("msg.a.b.c"), None);
        assert_eq!(topology::kind_of("msg..evt"), None);
        assert_eq!(topology::kind_of("evt.general"), None);
    }

    #[test]
    fn a_room_s_events_sit_one_word_under_its_messages_and_one_binding_covers_both() {
        let room = RoomId::parse("general".into()).expect("valid room");
        assert_eq!(topology::message_key(&room), "msg.general");
        assert_eq!(topology::room_event_key(&room), "msg.general.evt");
        assert_eq!(topology::room_binding(&room), "msg.general.#");
        assert_eq!(topology::ALL_MESSAGES_BINDING, "msg.*");
    }

    #[test]
    fn account_event_round_trips_with_its_version() {
        let user = UserId::parse("u1".into()).expect("valid user id");
        let event = AccountEvent::new(user.clone(), AccountChange::Deleted, Utc::now());
        let json = serde_json::to_value(&event).expect("serializes");
        assert_eq!(json["v"], 1);
        assert_eq!(json["change"], "deleted");
        assert_eq!(json["user_id"], "u1");
        assert_eq!(topology::account_key(&user), "account.u1");
        let back: AccountEvent = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, event);
    }

    #[test]
    fn member_event_round_trips_with_its_version() {
        let user = UserId::parse("u1".into()).expect("valid user id");
        let room = RoomId::parse("general".into()).expect("valid room");
        let event = MemberEvent::new(
            user.clone(),
            room,
            MemberChange::Removed {
                reason: RemovalReason::Kicked,
            },
        );
        let json = serde_json::to_value(&event).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"v": 1, "user": "u1", "room": "general", "change": "removed", "reason": "kicked"})
        );
        assert_eq!(topology::member_key(&user), "member.u1");
        let back: MemberEvent = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, event);
    }

    #[test]
    fn a_tampered_event_fails_validation_on_the_consumer_side() {
        let json = serde_json::json!({
            "v": 1, "id": ulid::Ulid::new().to_string(), "room": "bad.room", "client_id": "c",
            "author": {"id": "u", "username": "alice"}, "body": "x", "sent_at": "2026-01-01T00:00:00Z"
        });
        assert!(serde_json::from_value::<MessageEvent>(json).is_err());
    }
}
