//! Validated domain values.
//!
//! Strings from clients become these types at the edge (HTTP handlers, WebSocket frame parsing);
//! stores and the broker only take the validated forms. Each type keeps its field private and
//! is built through `parse`, so an instance is proof that the value passed the rules.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a value was refused; the message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn invalid(message: impl Into<String>) -> InvalidValue {
    InvalidValue(message.into())
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn all_chars(value: &str, allowed: impl Fn(char) -> bool) -> bool {
    value.chars().all(allowed)
}

string_newtype!(
    /// A username as the user typed it: 3–32 of `[A-Za-z0-9_.-]`.
    /// Uniqueness is case-insensitive, through [`Username::normalized`].
    Username
);

impl Username {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 32;

    pub fn parse(value: String) -> Result<Self, InvalidValue> {
        if value.len() < Self::MIN_LEN || value.len() > Self::MAX_LEN {
            return Err(invalid(format!(
                "must be {}–{} characters long",
                Self::MIN_LEN,
                Self::MAX_LEN
            )));
        }
        if !all_chars(&value, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
        }) {
            return Err(invalid(
                "may contain only letters, digits, '_', '.' and '-'",
            ));
        }
        Ok(Self(value))
    }

    /// The key that makes `Alice` and `alice` the same user.
    pub fn normalized(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

string_newtype!(
    /// An e-mail address, trimmed and lower-cased so uniqueness ignores case.
    Email
);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(value: String) -> Result<Self, InvalidValue> {
        let value = value.trim().to_lowercase();
        let looks_valid = value.len() <= Self::MAX_LEN
            && !value.chars().any(|c| c.is_whitespace() || c.is_control())
            && match value.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && local.len() <= 64
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !domain.contains("..")
                        && all_chars(domain, |c| c.is_alphanumeric() || matches!(c, '.' | '-'))
                }
                None => false,
            };
        if looks_valid {
            Ok(Self(value))
        } else {
            Err(invalid("must be a valid e-mail address"))
        }
    }
}

string_newtype!(
    /// A room id: 1–64 of `[A-Za-z0-9_-]`. It is also used in RabbitMQ routing keys,
    /// which is why dots and wildcards are excluded.
    RoomId
);

impl RoomId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(value: String) -> Result<Self, InvalidValue> {
        if value.is_empty()
            || value.len() > Self::MAX_LEN
            || !all_chars(&value, |c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
            })
        {
            return Err(invalid(
                "room id must be 1–64 characters of letters, digits, '_' and '-'",
            ));
        }
        Ok(Self(value))
    }
}

string_newtype!(
    /// A message body: plain text, 1–4000 characters (Unicode scalar values), not blank.
    MessageBody
);

impl MessageBody {
    pub const MAX_CHARS: usize = 4000;

    pub fn parse(value: String) -> Result<Self, InvalidValue> {
        if value.trim().is_empty() {
            return Err(invalid("message body must not be empty"));
        }
        if value.chars().count() > Self::MAX_CHARS {
            return Err(invalid(format!(
                "message body must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        Ok(Self(value))
    }
}

string_newtype!(
    /// The id a client gives each `send` (a UUID, say) so that it can match the `ack`
    /// and retry without creating a second message: 1–64 of `[A-Za-z0-9_-]`.
    ClientMessageId
);

impl ClientMessageId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(value: String) -> Result<Self, InvalidValue> {
        if value.is_empty()
            || value.len() > Self::MAX_LEN
            || !all_chars(&value, |c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
            })
        {
            return Err(invalid(
                "client_id must be 1–64 characters of letters, digits, '_' and '-'",
            ));
        }
        Ok(Self(value))
    }
}

string_newtype!(
    /// A user id as issued by the auth service (the `sub` claim).
    UserId
);

impl UserId {
    pub fn parse(value: String) -> Result<Self, InvalidValue> {
        if value.is_empty() || value.len() > 64 {
            return Err(invalid("user id must be 1–64 characters"));
        }
        Ok(Self(value))
    }
}

/// A message id: a ULID, assigned by the gateway, so ids sort by time and can serve as a
/// cursor (`before`, `since`) and as MongoDB's `_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(ulid::Ulid);

impl MessageId {
    pub fn from_ulid(id: ulid::Ulid) -> Self {
        Self(id)
    }

    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        // Canonical form only, so that string order in MongoDB equals id order.
        let id = ulid::Ulid::from_string(value).map_err(|_| invalid("not a valid message id"))?;
        if id.to_string() != value {
            return Err(invalid("not a valid message id"));
        }
        Ok(Self(id))
    }

    pub fn ulid(&self) -> ulid::Ulid {
        self.0
    }

    /// Milliseconds since the Unix epoch encoded in the id.
    pub fn timestamp_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

string_newtype!(
    /// One emoji as a single grapheme (docs/protocol.md, "Changing messages"): emoji
    /// characters joined by ZWJ, each optionally followed by a variation selector or a skin
    /// tone; a flag of two regional indicators; a subdivision flag; a keycap. At most 16
    /// scalar values and 64 bytes.
    Emoji
);

impl Emoji {
    pub const MAX_CHARS: usize = 16;
    pub const MAX_BYTES: usize = 64;

    pub fn parse(value: String) -> Result<Self, InvalidValue> {
        if value.len() > Self::MAX_BYTES
            || value.chars().count() > Self::MAX_CHARS
            || !is_one_emoji(&value)
        {
            return Err(invalid("emoji must be exactly one emoji"));
        }
        Ok(Self(value))
    }
}

const ZWJ: char = '\u{200D}';

fn is_emoji_char(c: char) -> bool {
    matches!(c,
        '\u{1F000}'..='\u{1F1E5}' | '\u{1F200}'..='\u{1F3FA}' | '\u{1F400}'..='\u{1FAFF}'
        | '\u{2600}'..='\u{27BF}' | '\u{2300}'..='\u{23FF}' | '\u{2B00}'..='\u{2BFF}'
        | '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2194}'..='\u{2199}' | '\u{21A9}' | '\u{21AA}' | '\u{3030}' | '\u{303D}'
        | '\u{3297}' | '\u{3299}')
}

fn is_modifier(c: char) -> bool {
    matches!(c, '\u{FE0F}' | '\u{FE0E}' | '\u{1F3FB}'..='\u{1F3FF}')
}

fn is_regional_indicator(c: char) -> bool {
    matches!(c, '\u{1F1E6}'..='\u{1F1FF}')
}

/// The grammar of [`Emoji`], without a Unicode segmentation table: what it accepts is one
/// grapheme cluster of emoji.
fn is_one_emoji(value: &str) -> bool {
    let chars: Vec<char> = value.chars().collect();
    match chars.as_slice() {
        [] => false,
        // A flag: exactly two regional indicators.
        [a, b] if is_regional_indicator(*a) && is_regional_indicator(*b) => true,
        // A keycap: 0-9, # or *, an optional VS16, the combining enclosing keycap.
        [k, rest @ ..] if k.is_ascii_digit() || matches!(k, '#' | '*') => {
            matches!(rest, ['\u{20E3}'] | ['\u{FE0F}', '\u{20E3}'])
        }
        // A subdivision flag: black flag, tag characters, cancel tag.
        ['\u{1F3F4}', tags @ .., '\u{E007F}'] if !tags.is_empty() => {
            tags.iter().all(|c| matches!(c, '\u{E0020}'..='\u{E007E}'))
        }
        _ => {
            // Emoji characters, each followed by modifiers, joined by ZWJ.
            let mut expect_base = true;
            for &c in &chars {
                if expect_base {
                    if !is_emoji_char(c) || is_regional_indicator(c) || is_modifier(c) {
                        return false;
                    }
                    expect_base = false;
                } else if c == ZWJ {
                    expect_base = true;
                } else if !is_modifier(c) {
                    return false;
                }
            }
            !expect_base
        }
    }
}

/// Who may see and enter a room (see docs/rooms.md for the permission table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    /// Listed in the directory; anyone signed in and not banned may join.
    Public,
    /// Members only; invisible to everyone else.
    Private,
    /// A direct message between exactly two users.
    Dm,
}

/// A member's role in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

/// Why a user's connections were taken out of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemovalReason {
    Kicked,
    Banned,
    Left,
    Archived,
}

/// The author of a message as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserRef {
    pub id: UserId,
    pub username: Username,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_accepts_its_charset_and_rejects_the_rest() {
        assert!(Username::parse("al.ice_-9".into()).is_ok());
        for bad in [
            "ab",
            "a b c",
            "alice$",
            &"a".repeat(33),
            "ålice",
            "{\"$ne\":null}",
        ] {
            assert!(Username::parse(bad.to_string()).is_err(), "{bad} accepted");
        }
        assert_eq!(
            Username::parse("Alice".into()).map(|u| u.normalized()),
            Ok("alice".to_string())
        );
    }

    #[test]
    fn email_is_lowercased_and_checked() {
        assert_eq!(
            Email::parse(" Bob@Example.COM ".into()).map(|e| e.into_inner()),
            Ok("bob@example.com".to_string())
        );
        for bad in [
            "bob",
            "bob@",
            "@x.com",
            "bob@x",
            "bo b@x.com",
            "a@b@c.com",
            "a@.x.com",
        ] {
            assert!(Email::parse(bad.to_string()).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn room_id_is_limited_to_routing_key_safe_characters() {
        assert!(RoomId::parse("general-2_b".into()).is_ok());
        for bad in ["", "a.b", "a*", "a#", "a b", &"r".repeat(65)] {
            assert!(RoomId::parse(bad.to_string()).is_err(), "{bad:?} accepted");
        }
        assert!(RoomId::parse("r".repeat(64)).is_ok());
    }

    #[test]
    fn message_body_counts_characters_not_bytes() {
        assert!(MessageBody::parse("é".repeat(4000)).is_ok());
        assert!(MessageBody::parse("é".repeat(4001)).is_err());
        assert!(MessageBody::parse("".into()).is_err());
        assert!(MessageBody::parse(" \n\t".into()).is_err());
    }

    #[test]
    fn emoji_accepts_one_emoji_and_nothing_else() {
        for good in [
            "👍",
            "❤️",
            "👍🏽",
            "👨‍👩‍👧‍👦",
            "🇫🇷",
            "1️⃣",
            "#⃣",
            "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
            "☕",
            "🫠",
            "🧑🏿‍🚀",
        ] {
            assert!(Emoji::parse(good.to_string()).is_ok(), "{good} refused");
        }
        for bad in [
            "",
            "a",
            "👍👍",
            "👍 ",
            ":)",
            "\u{200D}👍",
            "👍\u{200D}",
            "🏽",
            "🇫",
            "🇫🇷🇫🇷",
            "1",
            "<b>",
        ] {
            assert!(Emoji::parse(bad.to_string()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn message_id_round_trips_and_rejects_non_canonical_forms() {
        let id = MessageId::from_ulid(ulid::Ulid::new());
        assert_eq!(MessageId::parse(&id.to_string()), Ok(id));
        assert!(MessageId::parse("not-an-id").is_err());
        assert!(MessageId::parse(&id.to_string().to_lowercase()).is_err());
    }
}
