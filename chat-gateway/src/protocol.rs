//! The WebSocket protocol's frames (documented in `docs/protocol.md`).
//!
//! Client frames are parsed in two steps, JSON first and then each field through its domain
//! type, so every failure maps to a precise `error` code instead of one generic parse error.

use common::domain::{
    ClientMessageId, Emoji, MessageBody, MessageId, RemovalReason, RoomId, UserRef,
};
use common::event::{ChatMessage, PresenceState};
use serde::Serialize;
use serde_json::{Map, Value};

/// A parsed, validated client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Join {
        room: RoomId,
        since: Option<MessageId>,
        /// With `since`: changes only from this time (the greatest `changed_at` the client
        /// has seen in the room).
        changes_since: Option<chrono::DateTime<chrono::Utc>>,
    },
    Leave {
        room: RoomId,
    },
    Send {
        room: RoomId,
        client_id: ClientMessageId,
        body: MessageBody,
        /// The message of the same room this one answers.
        reply_to: Option<MessageId>,
    },
    /// `edit`, `delete` or `react` of message `id` (docs/protocol.md, "Changing messages").
    Change {
        room: RoomId,
        id: MessageId,
        client_id: ClientMessageId,
        change: common::event::Change,
    },
    Typing {
        room: RoomId,
    },
    /// Move the user's read marker in a joined room to message `id` (forward only).
    Read {
        room: RoomId,
        id: MessageId,
    },
    Ping,
    /// A fresh access token for this connection, sent before the current one expires.
    Auth {
        token: String,
    },
}

/// Longest token accepted in an `auth` frame.
pub const MAX_TOKEN_LEN: usize = 8192;

/// The `code` of an `error` event: docs/protocol.md, "Error codes", lists each with its
/// cause (a test keeps the two in step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MalformedJson,
    InvalidFrame,
    UnknownType,
    InvalidRoom,
    InvalidBody,
    InvalidClientId,
    InvalidSince,
    NotJoined,
    NotFound,
    Forbidden,
    InvalidId,
    EditWindowPassed,
    MessageDeleted,
    InvalidReplyTo,
    InvalidEmoji,
    TooManyReactions,
    Banned,
    Archived,
    InvalidMarker,
    AlreadyJoined,
    TooManyRooms,
    Unavailable,
    UnsupportedFrame,
    DuplicateClientId,
    RateLimited,
    Unauthorized,
    InvalidToken,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 27] = [
        Self::MalformedJson,
        Self::InvalidFrame,
        Self::UnknownType,
        Self::InvalidRoom,
        Self::InvalidBody,
        Self::InvalidClientId,
        Self::InvalidSince,
        Self::NotJoined,
        Self::NotFound,
        Self::Forbidden,
        Self::InvalidId,
        Self::EditWindowPassed,
        Self::MessageDeleted,
        Self::InvalidReplyTo,
        Self::InvalidEmoji,
        Self::TooManyReactions,
        Self::Banned,
        Self::Archived,
        Self::InvalidMarker,
        Self::AlreadyJoined,
        Self::TooManyRooms,
        Self::Unavailable,
        Self::UnsupportedFrame,
        Self::DuplicateClientId,
        Self::RateLimited,
        Self::Unauthorized,
        Self::InvalidToken,
    ];

    /// The code as it goes on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::InvalidFrame => "invalid_frame",
            Self::UnknownType => "unknown_type",
            Self::InvalidRoom => "invalid_room",
            Self::InvalidBody => "invalid_body",
            Self::InvalidClientId => "invalid_client_id",
            Self::InvalidSince => "invalid_since",
            Self::NotJoined => "not_joined",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::InvalidId => "invalid_id",
            Self::EditWindowPassed => "edit_window_passed",
            Self::MessageDeleted => "message_deleted",
            Self::InvalidReplyTo => "invalid_reply_to",
            Self::InvalidEmoji => "invalid_emoji",
            Self::TooManyReactions => "too_many_reactions",
            Self::Banned => "banned",
            Self::Archived => "archived",
            Self::InvalidMarker => "invalid_marker",
            Self::AlreadyJoined => "already_joined",
            Self::TooManyRooms => "too_many_rooms",
            Self::Unavailable => "unavailable",
            Self::UnsupportedFrame => "unsupported_frame",
            Self::DuplicateClientId => "duplicate_client_id",
            Self::RateLimited => "rate_limited",
            Self::Unauthorized => "unauthorized",
            Self::InvalidToken => "invalid_token",
        }
    }

    /// The code written `code`, if it is one (history-service answers with the same codes).
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|known| known.as_str() == code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a client frame was refused; becomes an `error` event and the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    /// The `client_id` of a refused `send`, when it could be read, so the client can match it.
    pub client_id: Option<String>,
    /// The room of a refused `join`, `leave`, `send`, `typing` or `read`, so a client with
    /// several frames in flight knows which one was refused.
    pub room: Option<RoomId>,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            client_id: None,
            room: None,
        }
    }

    /// The same refusal, about `room` (unless it names one already).
    pub fn about(mut self, room: Option<&RoomId>) -> Self {
        if self.room.is_none() {
            self.room = room.cloned();
        }
        self
    }
}

impl ClientFrame {
    /// The room the frame is about, if any.
    pub fn room(&self) -> Option<&RoomId> {
        match self {
            ClientFrame::Join { room, .. }
            | ClientFrame::Leave { room }
            | ClientFrame::Send { room, .. }
            | ClientFrame::Change { room, .. }
            | ClientFrame::Typing { room }
            | ClientFrame::Read { room, .. } => Some(room),
            ClientFrame::Ping | ClientFrame::Auth { .. } => None,
        }
    }
}

fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Result<&'a str, FrameError> {
    match object.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(FrameError::new(
            ErrorCode::InvalidFrame,
            format!("`{name}` must be a string"),
        )),
        None => Err(FrameError::new(
            ErrorCode::InvalidFrame,
            format!("`{name}` is required"),
        )),
    }
}

fn room(object: &Map<String, Value>) -> Result<RoomId, FrameError> {
    RoomId::parse(field(object, "room")?.to_string())
        .map_err(|e| FrameError::new(ErrorCode::InvalidRoom, e.0))
}

fn body(object: &Map<String, Value>) -> Result<MessageBody, FrameError> {
    field(object, "body").and_then(|b| {
        MessageBody::parse(b.to_string()).map_err(|e| FrameError::new(ErrorCode::InvalidBody, e.0))
    })
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        FrameError::new(
            ErrorCode::MalformedJson,
            format!("frame is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(object) = value else {
        return Err(FrameError::new(
            ErrorCode::InvalidFrame,
            "frame must be a JSON object",
        ));
    };
    let kind = field(&object, "type")?;
    match kind {
        "join" => {
            let since = match object.get("since") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(MessageId::parse(s).map_err(|_| {
                    FrameError::new(ErrorCode::InvalidSince, "`since` must be a message id")
                })?),
                Some(_) => {
                    return Err(FrameError::new(
                        ErrorCode::InvalidSince,
                        "`since` must be a message id",
                    ));
                }
            };
            let changes_since = match object.get("changes_since") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(
                    chrono::DateTime::parse_from_rfc3339(s)
                        .map_err(|_| {
                            FrameError::new(
                                ErrorCode::InvalidSince,
                                "`changes_since` must be an RFC 3339 time",
                            )
                        })?
                        .to_utc(),
                ),
                Some(_) => {
                    return Err(FrameError::new(
                        ErrorCode::InvalidSince,
                        "`changes_since` must be an RFC 3339 time",
                    ));
                }
            };
            Ok(ClientFrame::Join {
                room: room(&object)?,
                since,
                changes_since,
            })
        }
        "leave" => Ok(ClientFrame::Leave {
            room: room(&object)?,
        }),
        "typing" => Ok(ClientFrame::Typing {
            room: room(&object)?,
        }),
        "read" => {
            let id = field(&object, "id").and_then(|id| {
                MessageId::parse(id).map_err(|_| {
                    FrameError::new(ErrorCode::InvalidMarker, "`id` must be a message id")
                })
            })?;
            Ok(ClientFrame::Read {
                room: room(&object)?,
                id,
            })
        }
        "ping" => Ok(ClientFrame::Ping),
        "auth" => {
            let token = field(&object, "token")?;
            if token.is_empty() || token.len() > MAX_TOKEN_LEN {
                return Err(FrameError::new(
                    ErrorCode::InvalidToken,
                    "`token` must be 1–8192 bytes",
                ));
            }
            Ok(ClientFrame::Auth {
                token: token.to_string(),
            })
        }
        "send" => {
            let client_id = field(&object, "client_id").and_then(|c| {
                ClientMessageId::parse(c.to_string())
                    .map_err(|e| FrameError::new(ErrorCode::InvalidClientId, e.0))
            })?;
            let with_id = |mut e: FrameError| {
                e.client_id = Some(client_id.to_string());
                e
            };
            let room = room(&object).map_err(with_id)?;
            let body = body(&object).map_err(with_id)?;
            let reply_to = match object.get("reply_to") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) => Some(MessageId::parse(id).map_err(|_| {
                    with_id(FrameError::new(
                        ErrorCode::InvalidReplyTo,
                        "`reply_to` must be a message id",
                    ))
                })?),
                Some(_) => {
                    return Err(with_id(FrameError::new(
                        ErrorCode::InvalidReplyTo,
                        "`reply_to` must be a message id",
                    )));
                }
            };
            Ok(ClientFrame::Send {
                room,
                client_id,
                body,
                reply_to,
            })
        }
        "edit" | "delete" | "react" => {
            let client_id = field(&object, "client_id").and_then(|c| {
                ClientMessageId::parse(c.to_string())
                    .map_err(|e| FrameError::new(ErrorCode::InvalidClientId, e.0))
            })?;
            let with_id = |mut e: FrameError| {
                e.client_id = Some(client_id.to_string());
                e
            };
            let room = room(&object).map_err(with_id)?;
            let id = field(&object, "id")
                .and_then(|id| {
                    MessageId::parse(id).map_err(|_| {
                        FrameError::new(ErrorCode::InvalidId, "`id` must be a message id")
                    })
                })
                .map_err(with_id)?;
            let change = match kind {
                "edit" => common::event::Change::Edit {
                    body: body(&object).map_err(with_id)?,
                },
                "delete" => common::event::Change::Delete,
                _ => {
                    let emoji = field(&object, "emoji")
                        .and_then(|e| {
                            Emoji::parse(e.to_string())
                                .map_err(|e| FrameError::new(ErrorCode::InvalidEmoji, e.0))
                        })
                        .map_err(with_id)?;
                    let on = match object.get("on") {
                        Some(Value::Bool(on)) => *on,
                        _ => {
                            return Err(with_id(FrameError::new(
                                ErrorCode::InvalidFrame,
                                "`on` must be true or false",
                            )));
                        }
                    };
                    common::event::Change::React { emoji, on }
                }
            };
            Ok(ClientFrame::Change {
                room,
                id,
                client_id,
                change,
            })
        }
        other => Err(FrameError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown frame type `{}`",
                other.chars().take(32).collect::<String>()
            ),
        )),
    }
}

/// Frames the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Joined {
        room: &'a RoomId,
        members: &'a [UserRef],
        messages: &'a [ChatMessage],
        /// Set when a `since` join missed more than the catch-up limit: `messages` holds the
        /// oldest missed ones and the client pages on with `after=<last id>`.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
        /// A `since` join's change feed: messages up to `since` that changed while the
        /// client was away, in their current state.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        changes: &'a [ChatMessage],
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        changes_truncated: bool,
    },
    Left {
        room: &'a RoomId,
    },
    /// This connection is no longer in the room; no `message` of it follows.
    Removed {
        room: &'a RoomId,
        reason: RemovalReason,
    },
    /// The user was added to a room (or opened a DM): its room view.
    RoomAdded {
        room: &'a serde_json::Value,
    },
    /// A joined room's name, topic or kind changed: its room view.
    RoomUpdated {
        room: &'a serde_json::Value,
    },
    /// The user's read marker in the room moved to `id`.
    Read {
        room: &'a RoomId,
        id: MessageId,
    },
    Message(&'a ChatMessage),
    Ack {
        client_id: &'a ClientMessageId,
        id: MessageId,
        sent_at: &'a chrono::DateTime<chrono::Utc>,
    },
    Presence {
        room: &'a RoomId,
        user: &'a UserRef,
        state: PresenceState,
    },
    Typing {
        room: &'a RoomId,
        user: &'a UserRef,
    },
    Pong,
    /// The `auth` frame's token was accepted; the connection now lasts until `expires_at`
    /// (seconds since the Unix epoch).
    Authenticated {
        expires_at: u64,
    },
    Lagged {
        room: &'a RoomId,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_id: Option<MessageId>,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a RoomId>,
    },
}

/// A `joined` frame's text with the room view (JSON text as history-service answered it)
/// added as its `view` field.
pub fn joined_with_view(frame: &ServerFrame<'_>, view: &str) -> String {
    let mut text = frame.to_text();
    // Every frame serializes as a JSON object: its text ends with the closing brace.
    if text.ends_with('}') {
        text.pop();
        text.push_str(",\"view\":");
        text.push_str(view);
        text.push('}');
    }
    text
}

impl ServerFrame<'_> {
    /// Serializes to the text of one WebSocket frame.
    pub fn to_text(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys, no custom errors.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal_error","message":"serialization failed"}"#
                .to_string()
        })
    }
}

/// Close codes the server uses (also in `docs/protocol.md`).
pub mod close_code {
    /// Server shutting down (RFC 6455 "going away").
    pub const GOING_AWAY: u16 = 1001;
    /// Binary frames are not part of the protocol.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A message exceeded the size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The connection did not read fast enough and its outbound queue overflowed.
    pub const LAGGED: u16 = 4008;
    /// No frame for longer than the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// The access token expired and no fresh one arrived in an `auth` frame.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// Repeated frames over the rate limit (RFC 6455 "policy violation").
    pub const POLICY_VIOLATION: u16 = 1008;
    /// The user's account was deleted or disabled: do not reconnect with the same tokens.
    pub const ACCOUNT_REVOKED: u16 = 4003;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes docs/protocol.md's "Error codes" table lists, in its first column.
    fn documented_codes() -> Vec<String> {
        let doc = include_str!("../../docs/protocol.md");
        let table = doc
            .split("### Error codes")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("docs/protocol.md has an Error codes section");
        table
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .flat_map(|row| {
                let first = row.split(" | ").next().unwrap_or_default();
                format!("`{first}")
                    .split(',')
                    .map(|code| code.trim().trim_matches('`').to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn every_error_code_is_documented_and_every_documented_code_exists() {
        let documented = documented_codes();
        for code in ErrorCode::ALL {
            assert!(
                documented.iter().any(|d| d == code.as_str()),
                "`{code}` is missing from docs/protocol.md's Error codes"
            );
            let wire = serde_json::to_value(code).expect("serialized");
            assert_eq!(wire, code.as_str(), "serialized as documented");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        for code in &documented {
            assert!(
                ErrorCode::parse(code).is_some(),
                "docs/protocol.md documents `{code}`, which the gateway never sends"
            );
        }
    }

    #[test]
    fn valid_frames_parse() {
        assert_eq!(
            parse(r#"{"type":"join","room":"general"}"#),
            Ok(ClientFrame::Join {
                room: RoomId::parse("general".into()).expect("room"),
                since: None,
                changes_since: None,
            })
        );
        assert!(matches!(parse(r#"{"type":"ping"}"#), Ok(ClientFrame::Ping)));
        assert!(matches!(
            parse(r#"{"type":"send","room":"r","client_id":"c1","body":"hi"}"#),
            Ok(ClientFrame::Send { .. })
        ));
    }

    #[test]
    fn each_kind_of_bad_frame_has_its_code() {
        let code = |text: &str| parse(text).map(|_| ()).expect_err("refused").code.as_str();
        assert_eq!(code("{not json"), "malformed_json");
        assert_eq!(code("[1,2]"), "invalid_frame");
        assert_eq!(code(r#"{"room":"r"}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"join","room":"a.b"}"#), "invalid_room");
        assert_eq!(
            code(r#"{"type":"join","room":{"$gt":""}}"#),
            "invalid_frame"
        );
        assert_eq!(
            code(r#"{"type":"join","room":"r","since":"nope"}"#),
            "invalid_since"
        );
        assert_eq!(
            code(r#"{"type":"send","room":"r","client_id":"c","body":""}"#),
            "invalid_body"
        );
        let long = "x".repeat(4001);
        let error = parse(&format!(
            r#"{{"type":"send","room":"r","client_id":"c","body":"{long}"}}"#
        ))
        .expect_err("refused");
        assert_eq!(
            (error.code.as_str(), error.client_id.as_deref()),
            ("invalid_body", Some("c"))
        );
        assert_eq!(
            code(r#"{"type":"send","room":"r","client_id":"a b","body":"x"}"#),
            "invalid_client_id"
        );
    }

    #[test]
    fn server_frames_serialize_with_their_type_tag() {
        let room = RoomId::parse("r".into()).expect("room");
        let text = ServerFrame::Lagged {
            room: &room,
            last_id: None,
        }
        .to_text();
        assert_eq!(text, r#"{"type":"lagged","room":"r"}"#);
        assert_eq!(ServerFrame::Pong.to_text(), r#"{"type":"pong"}"#);
        let text = ServerFrame::Removed {
            room: &room,
            reason: RemovalReason::Kicked,
        }
        .to_text();
        assert_eq!(text, r#"{"type":"removed","room":"r","reason":"kicked"}"#);
    }

    #[test]
    fn a_joined_frame_carries_the_room_view_as_sent() {
        let room = RoomId::parse("r".into()).expect("room");
        let frame = ServerFrame::Joined {
            room: &room,
            members: &[],
            messages: &[],
            truncated: false,
            changes: &[],
            changes_truncated: false,
        };
        let text = joined_with_view(&frame, r#"{"id":"r","role":"member"}"#);
        let value: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(value["type"], "joined");
        assert_eq!(value["view"]["role"], "member");
    }

    #[test]
    fn change_frames_parse_and_each_bad_field_has_its_code() {
        let id = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
        assert!(matches!(
            parse(&format!(
                r#"{{"type":"edit","room":"r","id":"{id}","body":"b","client_id":"c"}}"#
            )),
            Ok(ClientFrame::Change { .. })
        ));
        assert!(matches!(
            parse(&format!(
                r#"{{"type":"delete","room":"r","id":"{id}","client_id":"c"}}"#
            )),
            Ok(ClientFrame::Change { .. })
        ));
        assert!(matches!(
            parse(&format!(
                r#"{{"type":"react","room":"r","id":"{id}","emoji":"👍","on":true,"client_id":"c"}}"#
            )),
            Ok(ClientFrame::Change { .. })
        ));
        let error = |text: String| {
            let error = parse(&text).map(|_| ()).expect_err("refused");
            (error.code.as_str(), error.client_id)
        };
        let c = Some("c".to_string());
        assert_eq!(
            error(format!(
                r#"{{"type":"edit","room":"r","id":"{id}","body":" ","client_id":"c"}}"#
            )),
            ("invalid_body", c.clone())
        );
        assert_eq!(
            error(r#"{"type":"delete","room":"r","id":"x","client_id":"c"}"#.to_string()),
            ("invalid_id", c.clone())
        );
        assert_eq!(
            error(format!(
                r#"{{"type":"react","room":"r","id":"{id}","emoji":"👍👍","on":true,"client_id":"c"}}"#
            )),
            ("invalid_emoji", c.clone())
        );
        assert_eq!(
            error(format!(
                r#"{{"type":"react","room":"r","id":"{id}","emoji":"👍","on":"yes","client_id":"c"}}"#
            )),
            ("invalid_frame", c.clone())
        );
        assert_eq!(
            error(
                r#"{"type":"send","room":"r","body":"b","reply_to":"x","client_id":"c"}"#
                    .to_string()
            ),
            ("invalid_reply_to", c)
        );
    }

    #[test]
    fn a_read_frame_needs_a_message_id() {
        assert!(matches!(
            parse(r#"{"type":"read","room":"r","id":"01ARZ3NDEKTSV4RRFFQ69G5FAV"}"#),
            Ok(ClientFrame::Read { .. })
        ));
        let code = |text: &str| parse(text).map(|_| ()).expect_err("refused").code.as_str();
        assert_eq!(
            code(r#"{"type":"read","room":"r","id":"x"}"#),
            "invalid_marker"
        );
        assert_eq!(code(r#"{"type":"read","room":"r"}"#), "invalid_frame");
    }
}
