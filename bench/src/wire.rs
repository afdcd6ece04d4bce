//! The two wire protocols, reduced to what the scenarios need: the frames a client sends
//! (join, send, react) and a cheap classification of the frames it receives.
//!
//! Ours is JSON text frames on `/ws` (see `docs/protocol.md`). The peer is socket.io 4, i.e.
//! Engine.IO v4 packets carried as WebSocket text frames: `0{..}` open, `2`/`3` ping/pong,
//! `40` namespace connect, `44{..}` connect refused, `42[event, data]` events.
//!
//! Receiving is on the hot path of the fan-out scenario (tens of thousands of frames per
//! second on the same two cores as the servers), so chat messages are recognised by prefix
//! and only their `body` is sliced out; the rarer frames are parsed as JSON.

use std::net::SocketAddr;

use serde_json::{Value, json};

/// Which server a client talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// chat-gateway's JSON frames.
    Ours,
    /// socket.io 4 over a plain WebSocket (no long-polling first).
    SocketIo,
}

/// A received frame, as far as the scenarios care.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// Engine.IO's open packet; the client answers with a namespace connect.
    Open,
    /// The session is authenticated and ready (socket.io's `40{"sid":..}`).
    Connected,
    /// Engine.IO ping; must be answered with `3` or the server drops the connection.
    Ping,
    /// The join of `room` completed (ours: `joined`; peer: `room_history`).
    Joined(String),
    /// A chat message; `body` is the raw JSON string content.
    Message { body: &'a str },
    /// Ours confirmed a send or a change: accepted (published to the broker). `id` is the
    /// message sent or changed.
    Ack { client_id: &'a str, id: &'a str },
    /// Ours: a message's reactions changed.
    Reactions,
    /// The server refused something (ours: an `error` frame; peer: `44` connect error).
    Refused(&'a str),
    /// Anything else (acks, presence, pongs).
    Other,
}

impl Protocol {
    /// The WebSocket URL for a connection with `token` (sent as a query parameter on both).
    pub fn url(self, addr: SocketAddr, token: &str) -> String {
        match self {
            Protocol::Ours => format!("ws://{addr}/ws?token={token}"),
            Protocol::SocketIo => {
                format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&token={token}")
            }
        }
    }

    /// The frame that joins `room`.
    pub fn join(self, room: &str) -> String {
        match self {
            Protocol::Ours => json!({"type": "join", "room": room}).to_string(),
            Protocol::SocketIo => format!("42{}", json!(["join_room", room])),
        }
    }

    /// The frame that rejoins `room` after a disconnect, asking for the messages after `since`.
    /// socket.io's join has no such field: the peer's frame is its plain join.
    pub fn join_since(self, room: &str, since: &str) -> String {
        match self {
            Protocol::Ours => json!({"type": "join", "room": room, "since": since}).to_string(),
            Protocol::SocketIo => self.join(room),
        }
    }

    /// The frame that sends `body` to `room`.
    pub fn send(self, room: &str, client_id: &str, body: &str) -> String {
        let payload = json!({"room": room, "client_id": client_id, "body": body});
        match self {
            Protocol::Ours => {
                json!({"type": "send", "room": room, "client_id": client_id, "body": body})
                    .to_string()
            }
            Protocol::SocketIo => format!("42{}", json!(["send_message", payload])),
        }
    }

    /// Ours only: the frame that turns the sender's reaction `emoji` to message `id` on or off.
    pub fn react(
        self,
        room: &str,
        id: &str,
        client_id: &str,
        emoji: &str,
        on: bool,
    ) -> Option<String> {
        match self {
            Protocol::Ours => Some(
                json!({"type": "react", "room": room, "id": id, "client_id": client_id,
                       "emoji": emoji, "on": on})
                .to_string(),
            ),
            Protocol::SocketIo => None,
        }
    }

    /// The answer to [`Incoming::Ping`], when the protocol has one at this level.
    pub fn pong(self) -> Option<&'static str> {
        match self {
            Protocol::Ours => None,
            Protocol::SocketIo => Some("3"),
        }
    }

    /// Classifies one received text frame.
    pub fn classify(self, text: &str) -> Incoming<'_> {
        match self {
            Protocol::Ours => classify_ours(text),
            Protocol::SocketIo => classify_socketio(text),
        }
    }
}

fn classify_ours(text: &str) -> Incoming<'_> {
    if text.starts_with(r#"{"type":"message""#) {
        return body_of(text).map_or(Incoming::Other, |body| Incoming::Message { body });
    }
    if text.starts_with(r#"{"type":"ack""#) {
        return string_field(text, "client_id").map_or(Incoming::Other, |client_id| {
            Incoming::Ack {
                client_id,
                id: string_field(text, "id").unwrap_or_default(),
            }
        });
    }
    if text.starts_with(r#"{"type":"reactions""#) {
        return Incoming::Reactions;
    }
    if text.starts_with(r#"{"type":"joined""#) {
        return room_of(serde_json::from_str(text).ok().as_ref())
            .map_or(Incoming::Other, Incoming::Joined);
    }
    if text.starts_with(r#"{"type":"error""#) {
        return Incoming::Refused(text);
    }
    Incoming::Other
}

fn classify_socketio(text: &str) -> Incoming<'_> {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.get(1)) {
        (Some(b'0'), _) => Incoming::Open,
        (Some(b'2'), _) => Incoming::Ping,
        (Some(b'4'), Some(b'0')) => Incoming::Connected,
        (Some(b'4'), Some(b'4')) => Incoming::Refused(text),
        (Some(b'4'), Some(b'2')) => {
            let event = &text[2..];
            if event.starts_with(r#"["receive_message""#) {
                body_of(event).map_or(Incoming::Other, |body| Incoming::Message { body })
            } else if event.starts_with(r#"["room_history""#) {
                let value: Option<Value> = serde_json::from_str(event).ok();
                room_of(value.as_ref().and_then(|v| v.get(1)))
                    .map_or(Incoming::Other, Incoming::Joined)
            } else {
                Incoming::Other
            }
        }
        _ => Incoming::Other,
    }
}

/// The `body` string of a message frame.
fn body_of(text: &str) -> Option<&str> {
    string_field(text, "body")
}

/// The first string field `name` in `text`. Bench bodies and client ids hold no quotes or
/// escapes, so the first closing quote ends them.
fn string_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let start = text.find(&key)? + key.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

fn room_of(value: Option<&Value>) -> Option<String> {
    value?.get("room")?.as_str().map(str::to_string)
}

/// What a bench message body carries: the step it belongs to, the sending connection and the
/// time it was meant to be sent (nanoseconds since the scenario's origin instant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub step: u32,
    pub sender: u32,
    pub intended_ns: u64,
}

impl Stamp {
    /// The body text, padded with `x` to at least `len` bytes so message sizes are realistic.
    pub fn body(&self, len: usize) -> String {
        let mut body = format!("{}:{}:{}:", self.step, self.sender, self.intended_ns);
        while body.len() < len {
            body.push('x');
        }
        body
    }

    /// A client id carrying the stamp, unique per `tag` (the target): ours answers every send
    /// with an `ack` naming it, which times the send's acceptance. Ours also remembers client
    /// ids per user to make retries idempotent, so they must never repeat across targets.
    pub fn client_id(&self, tag: &str) -> String {
        format!("{tag}_{}_{}_{}", self.step, self.sender, self.intended_ns)
    }

    pub fn from_client_id(client_id: &str) -> Option<Self> {
        let mut parts = client_id.rsplitn(4, '_');
        let intended_ns = parts.next()?.parse().ok()?;
        let sender = parts.next()?.parse().ok()?;
        let step = parts.next()?.parse().ok()?;
        Some(Self {
            step,
            sender,
            intended_ns,
        })
    }

    pub fn parse(body: &str) -> Option<Self> {
        let mut parts = body.splitn(4, ':');
        Some(Self {
            step: parts.next()?.parse().ok()?,
            sender: parts.next()?.parse().ok()?,
            intended_ns: parts.next()?.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_body_round_trip() {
        let stamp = Stamp {
            step: 3,
            sender: 4711,
            intended_ns: 123_456_789,
        };
        let body = stamp.body(64);
        assert_eq!(body.len(), 64);
        assert_eq!(Stamp::parse(&body), Some(stamp));
        assert_eq!(Stamp::parse("hello"), None);
        let client_id = stamp.client_id("ours-2gw");
        assert!(client_id.len() <= 64);
        assert_eq!(Stamp::from_client_id(&client_id), Some(stamp));
    }

    #[test]
    fn our_frames_are_classified() {
        let message = r#"{"type":"message","room":"r","id":"01J","client_id":"c","author":{"id":"u","username":"a"},"body":"1:2:3:xx","sent_at":"2024-01-01T00:00:00Z"}"#;
        assert_eq!(
            Protocol::Ours.classify(message),
            Incoming::Message { body: "1:2:3:xx" }
        );
        let joined = r#"{"type":"joined","room":"lobby","members":[],"messages":[]}"#;
        assert_eq!(
            Protocol::Ours.classify(joined),
            Incoming::Joined("lobby".into())
        );
        assert!(matches!(
            Protocol::Ours.classify(r#"{"type":"error","code":"not_joined","message":"m"}"#),
            Incoming::Refused(_)
        ));
        assert_eq!(
            Protocol::Ours.classify(r#"{"type":"ack","client_id":"c","id":"01J"}"#),
            Incoming::Ack {
                client_id: "c",
                id: "01J"
            }
        );
        assert_eq!(
            Protocol::Ours.classify(
                r#"{"type":"reactions","room":"r","id":"01J","reactions":[],"version":2}"#
            ),
            Incoming::Reactions
        );
        assert_eq!(
            Protocol::Ours.classify(r#"{"type":"pong"}"#),
            Incoming::Other
        );
    }

    #[test]
    fn socketio_packets_are_classified() {
        let p = Protocol::SocketIo;
        assert_eq!(
            p.classify(r#"0{"sid":"x","upgrades":[],"pingInterval":25000}"#),
            Incoming::Open
        );
        assert_eq!(p.classify("2"), Incoming::Ping);
        assert_eq!(p.classify(r#"40{"sid":"y"}"#), Incoming::Connected);
        assert!(matches!(
            p.classify(r#"44{"message":"Authentication error"}"#),
            Incoming::Refused(_)
        ));
        assert_eq!(
            p.classify(r#"42["room_history",{"room":"r1","messages":[]}]"#),
            Incoming::Joined("r1".into())
        );
        assert_eq!(
            p.classify(r#"42["receive_message",{"room":"r1","client_id":"c","body":"0:1:2:x"}]"#),
            Incoming::Message { body: "0:1:2:x" }
        );
    }

    #[test]
    fn client_frames_match_each_protocol() {
        let join: Value = serde_json::from_str(&Protocol::Ours.join("r")).expect("json");
        assert_eq!(join, json!({"type": "join", "room": "r"}));
        let ours: Value = serde_json::from_str(&Protocol::Ours.send("r", "c", "b")).expect("json");
        assert_eq!(ours["type"], "send");
        assert_eq!(ours["body"], "b");
        assert_eq!(Protocol::SocketIo.join("r"), r#"42["join_room","r"]"#);
        let rejoin: Value =
            serde_json::from_str(&Protocol::Ours.join_since("r", "01J")).expect("json");
        assert_eq!(rejoin, json!({"type": "join", "room": "r", "since": "01J"}));
        assert_eq!(
            Protocol::SocketIo.join_since("r", "01J"),
            Protocol::SocketIo.join("r")
        );
        let react: Value = serde_json::from_str(
            &Protocol::Ours
                .react("r", "01J", "c", "👍", true)
                .expect("ours reacts"),
        )
        .expect("json");
        assert_eq!(
            react,
            json!({"type": "react", "room": "r", "id": "01J", "client_id": "c", "emoji": "👍", "on": true})
        );
        assert_eq!(Protocol::SocketIo.react("r", "01J", "c", "👍", true), None);
        let peer = Protocol::SocketIo.send("r", "c", "b");
        let value: Value = serde_json::from_str(&peer[2..]).expect("json");
        assert_eq!(value[0], "send_message");
        assert_eq!(value[1]["client_id"], "c");
    }
}
