//! Fuzzes the WebSocket client-frame parser, `chat_gateway::protocol::parse`.
//!
//! The input is one text frame: the bytes as UTF-8 where they are valid, otherwise their lossy
//! decoding (the gateway only ever parses text frames, which WebSocket guarantees are UTF-8).
//! Besides "never panics", every outcome is checked against the rules of `docs/protocol.md`,
//! written out again here rather than calling the domain types, so that a parser which lets a
//! bad value through is caught:
//! - an accepted frame matches its `type` and each field obeys its rule (room id and client id
//!   1–64 of `[A-Za-z0-9_-]`, body 1–4000 characters and not blank, `since`, `reply_to` and
//!   the `id` of a `read`, `edit`, `delete` or `react` a canonical ULID, `changes_since` an
//!   RFC 3339 time, an emoji at most 16 characters and 64 bytes, `on` a boolean, an `auth`
//!   token 1–`MAX_TOKEN_LEN` bytes);
//! - a refused frame has one of the documented error codes that concern a frame's content, and
//!   a refused `send`, `edit`, `delete` or `react` carries its `client_id` whenever that id is
//!   itself valid.

#![no_main]

use chat_gateway::protocol::{ClientFrame, FrameError, MAX_TOKEN_LEN, parse};
use common::event::Change;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// The codes of `docs/protocol.md` ("Error codes") that a frame's text alone can cause; the
/// others (`not_joined`, `already_joined`, `too_many_rooms`, `unavailable`,
/// `unsupported_frame`, `duplicate_client_id`, `rate_limited`, `unauthorized`) depend on the
/// connection's state, the frame's kind or the token's verification, not on parsing.
const PARSE_ERROR_CODES: &[&str] = &[
    "malformed_json",
    "invalid_frame",
    "unknown_type",
    "invalid_room",
    "invalid_body",
    "invalid_client_id",
    "invalid_since",
    "invalid_token",
    "invalid_marker",
    "invalid_id",
    "invalid_reply_to",
    "invalid_emoji",
];

/// The frame types that carry a `client_id` and echo it in their errors.
const CLIENT_ID_TYPES: &[&str] = &["send", "edit", "delete", "react"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let outcome = parse(&text);
    // The object the parser saw, for the cross-checks; `None` when the frame is not an object.
    let object = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(object)) => Some(object),
        _ => None,
    };
    match outcome {
        Ok(frame) => check_accepted(&frame, object.as_ref()),
        Err(error) => check_refused(&error, object.as_ref()),
    }
});

fn is_id(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_body(value: &str) -> bool {
    let chars = value.chars().count();
    (1..=4000).contains(&chars) && !value.chars().all(char::is_whitespace)
}

fn string<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    object.get(name).and_then(Value::as_str)
}

/// An optional message id field: absent or null when the frame has none, else canonical.
fn check_optional_id(name: &str, parsed: Option<String>, object: &Map<String, Value>) {
    match (parsed, object.get(name)) {
        (None, None | Some(Value::Null)) => {}
        (Some(id), Some(Value::String(raw))) => {
            assert_eq!(&id, raw, "`{name}` is not in canonical form");
            assert_eq!(raw.len(), 26);
        }
        (id, raw) => panic!("`{name}` {id:?} does not match the frame's {raw:?}"),
    }
}

fn check_accepted(frame: &ClientFrame, object: Option<&Map<String, Value>>) {
    let object = object.expect("an accepted frame is a JSON object");
    let kind = string(object, "type").expect("an accepted frame has a string `type`");
    let room_field = || string(object, "room").expect("the frame names a room");
    match frame {
        ClientFrame::Join {
            room,
            since,
            changes_since,
        } => {
            assert_eq!(kind, "join");
            assert!(is_id(room.as_str()), "room {room:?} breaks its rule");
            assert_eq!(room.as_str(), room_field());
            check_optional_id("since", since.as_ref().map(ToString::to_string), object);
            match (changes_since, object.get("changes_since")) {
                (None, None | Some(Value::Null)) => {}
                (Some(at), Some(Value::String(raw))) => {
                    let parsed = chrono::DateTime::parse_from_rfc3339(raw)
                        .expect("an accepted `changes_since` is RFC 3339");
                    assert_eq!(*at, parsed.to_utc(), "`changes_since` changed its instant");
                }
                (at, raw) => {
                    panic!("`changes_since` {at:?} does not match the frame's {raw:?}")
                }
            }
        }
        ClientFrame::Leave { room } | ClientFrame::Typing { room } => {
            assert!(kind == "leave" || kind == "typing", "kind {kind:?}");
            assert_eq!(
                matches!(frame, ClientFrame::Leave { .. }),
                kind == "leave",
                "frame {frame:?} for type {kind:?}"
            );
            assert!(is_id(room.as_str()), "room {room:?} breaks its rule");
            assert_eq!(room.as_str(), room_field());
        }
        ClientFrame::Send {
            room,
            client_id,
            body,
            reply_to,
        } => {
            assert_eq!(kind, "send");
            assert!(is_id(room.as_str()), "room {room:?} breaks its rule");
            assert!(
                is_id(client_id.as_str()),
                "client_id {client_id:?} breaks its rule"
            );
            assert!(is_body(body.as_str()), "body {body:?} breaks its rule");
            assert_eq!(room.as_str(), room_field());
            assert_eq!(Some(client_id.as_str()), string(object, "client_id"));
            assert_eq!(Some(body.as_str()), string(object, "body"));
            check_optional_id(
                "reply_to",
                reply_to.as_ref().map(ToString::to_string),
                object,
            );
        }
        ClientFrame::Change {
            room,
            id,
            client_id,
            change,
        } => {
            assert_eq!(kind, change.kind(), "frame {frame:?} for type {kind:?}");
            assert!(is_id(room.as_str()), "room {room:?} breaks its rule");
            assert_eq!(room.as_str(), room_field());
            assert!(
                is_id(client_id.as_str()),
                "client_id {client_id:?} breaks its rule"
            );
            assert_eq!(Some(client_id.as_str()), string(object, "client_id"));
            let raw = string(object, "id").expect("the frame names a message");
            assert_eq!(&id.to_string(), raw, "`id` is not in canonical form");
            assert_eq!(raw.len(), 26);
            match change {
                Change::Edit { body } => {
                    assert!(is_body(body.as_str()), "body {body:?} breaks its rule");
                    assert_eq!(Some(body.as_str()), string(object, "body"));
                }
                Change::Delete => {}
                Change::React { emoji, on } => {
                    let emoji = emoji.as_str();
                    assert!(
                        !emoji.is_empty()
                            && emoji.len() <= 64
                            && emoji.chars().count() <= 16
                            && !emoji.chars().any(|c| c.is_ascii_alphabetic()),
                        "emoji {emoji:?} breaks its rule"
                    );
                    assert_eq!(Some(emoji), string(object, "emoji"));
                    assert_eq!(Some(&Value::Bool(*on)), object.get("on"));
                }
            }
        }
        ClientFrame::Read { room, id } => {
            assert_eq!(kind, "read");
            assert!(is_id(room.as_str()), "room {room:?} breaks its rule");
            assert_eq!(room.as_str(), room_field());
            let raw = string(object, "id").expect("the frame names a message");
            assert_eq!(&id.to_string(), raw, "`id` is not in canonical form");
            assert_eq!(raw.len(), 26);
        }
        ClientFrame::Ping => assert_eq!(kind, "ping"),
        ClientFrame::Auth { token } => {
            assert_eq!(kind, "auth");
            assert!(
                (1..=MAX_TOKEN_LEN).contains(&token.len()),
                "token of {} bytes accepted",
                token.len()
            );
            assert_eq!(Some(token.as_str()), string(object, "token"));
        }
    }
}

fn check_refused(error: &FrameError, object: Option<&Map<String, Value>>) {
    assert!(
        PARSE_ERROR_CODES.contains(&error.code.as_str()),
        "undocumented error code {:?}",
        error.code
    );
    assert!(
        !error.message.is_empty(),
        "error {:?} has no message",
        error.code
    );
    if let Some(client_id) = &error.client_id {
        assert!(
            is_id(client_id),
            "echoed client_id {client_id:?} is invalid"
        );
    }
    // "A refused `send` (or change) carries its `client_id` whenever it could be read."
    let Some(object) = object else { return };
    if string(object, "type").is_some_and(|kind| CLIENT_ID_TYPES.contains(&kind))
        && let Some(client_id) = string(object, "client_id").filter(|c| is_id(c))
    {
        assert_eq!(
            error.client_id.as_deref(),
            Some(client_id),
            "refused {:?} ({}) lost its client_id",
            string(object, "type"),
            error.code
        );
    }
}
