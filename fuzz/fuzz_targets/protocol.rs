//! Fuzzes the WebSocket client-frame parser, `chat_gateway::protocol::parse`.
//!
//! The input is one text frame: the bytes as UTF-8 where they are valid, otherwise their lossy
//! decoding (the gateway only ever parses text frames, which WebSocket guarantees are UTF-8).
//! Besides "never panics", every outcome is checked against the rules of `docs/protocol.md`,
//! written out again here rather than calling the domain types, so that a parser which lets a
//! bad value through is caught:
//! - an accepted frame matches its `type` and each field obeys its rule (room id and client id
//!   1–64 of `[A-Za-z0-9_-]`, body 1–4000 characters and not blank, `since` and a `read`'s `id`
//!   a canonical ULID, an `auth` token 1–`MAX_TOKEN_LEN` bytes);
//! - a refused frame has one of the documented error codes that concern a frame's content, and
//!   a refused `send` carries its `client_id` whenever that id is itself valid.

#![no_main]

use chat_gateway::protocol::{ClientFrame, FrameError, MAX_TOKEN_LEN, parse};
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
];

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

fn check_accepted(frame: &ClientFrame, object: Option<&Map<String, Value>>) {
    let object = object.expect("an accepted frame is a JSON object");
    let kind = string(object, "type").expect("an accepted frame has a string `type`");
    let room_field = || string(object, "room").expect("the frame names a room");
    match frame {
        ClientFrame::Join { room, since } => {
            assert_eq!(kind, "join");
            assert!(is_id(room.as_str()), "room {room:?} breaks its rule");
            assert_eq!(room.as_str(), room_field());
            match (since, object.get("since")) {
                (None, None | Some(Value::Null)) => {}
                (Some(id), Some(Value::String(raw))) => {
                    assert_eq!(&id.to_string(), raw, "`since` is not in canonical form");
                    assert_eq!(raw.len(), 26);
                }
                (since, raw) => panic!("`since` {since:?} does not match the frame's {raw:?}"),
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
    assert!(!error.code.is_empty(), "empty error code");
    assert!(
        PARSE_ERROR_CODES.contains(&error.code),
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
    // "A refused `send` carries its `client_id` whenever it could be read."
    let Some(object) = object else { return };
    if string(object, "type") == Some("send")
        && let Some(client_id) = string(object, "client_id").filter(|c| is_id(c))
    {
        assert_eq!(
            error.client_id.as_deref(),
            Some(client_id),
            "refused send ({}) lost its client_id",
            error.code
        );
    }
}
