//! Client of history-service: a room's recent messages for `joined`, and the messages after a
//! cursor for a `join` with `since`; the authorization of a join (and of a `send` whose decision
//! expired) and the writing of read markers. The user's own token authorizes every request.
//!
//! Authorizations are shared like reads: concurrent identical ones for one (user, room) make
//! one request (a user's tabs all rejoining after a reconnect).
//!
//! Reads are shared: while one is in flight, joins that need the same answer wait for it
//! instead of asking again — plain joins of a room, and catch-ups of a room from the same
//! `since` (after a gateway restart, the clients that were up to date all rejoin with the
//! room's last message). A storm of joins then costs history-service about one read per room,
//! not one per user. A read is shared only within one binding of the room (see
//! [`crate::rooms::Rooms::binding`]): what was published while the room was unbound here is
//! in no read from before. Every join is authorized before it reads, so the token of any joiner
//! of the room serves all of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::domain::{MessageId, RoomId, UserId};
use common::event::ChatMessage;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use serde::Deserialize;

use crate::metrics::GatewayMetrics;
use crate::protocol::ErrorCode;
use crate::rooms::ReadTicket;
use crate::settings::HistorySettings;

/// A failed read, shared by every join that waited for it.
pub type ReadError = Arc<anyhow::Error>;

/// A recent-messages page with the ticket of the join that started the read.
pub type SharedAnswer = Result<(Arc<HistoryPage>, Option<ReadTicket>), ReadError>;

/// A catch-up page, shared by the joins that asked for it.
pub type SharedPage = Result<Arc<HistoryPage>, ReadError>;

/// Why history-service did not allow a room action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A refusal of docs/rooms.md, by its error code: `not_found`, `forbidden`, `banned`,
    /// `archived` (or `unauthorized` for a token history-service no longer honours).
    Denied(ErrorCode),
    /// No answer, a 5xx, or an answer that is none of the above: retry later.
    Unavailable,
}

/// An authorization: the room view (as JSON text) when allowed.
pub type Authorization = Result<Arc<str>, Refusal>;

/// What an authorization asks: a join (`POST …/join`) or whether the user is still a member
/// (`GET /api/rooms/{room}`, which changes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthorizationKind {
    Join,
    Check,
}

/// What writing a read marker came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerWrite {
    Written,
    /// `422 invalid_marker`: the id is not a message of the room.
    Invalid,
    /// Refused for good (no longer a member, token no longer honoured): dropped.
    Refused,
    /// No answer or a 5xx: worth writing again.
    Unavailable,
}

/// The reads in flight, by what they ask; each is removed when it completes, so a join that
/// arrives later reads again (it may need newer messages).
struct Flights<K, V: Clone> {
    reads: Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>,
}

impl<K, V> Flights<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn new() -> Arc<Self> {
        Arc::new(Self {
            reads: Mutex::new(HashMap::new()),
        })
    }

    /// The answer of the read in flight for `key`, or of `read` started now.
    async fn share(self: &Arc<Self>, key: K, read: impl FnOnce() -> BoxFuture<'static, V>) -> V {
        let shared = {
            let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
            reads
                .entry(key.clone())
                .or_insert_with(|| {
                    let flights = self.clone();
                    let read = read();
                    async move {
                        let answer = read.await;
                        flights
                            .reads
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&key);
                        answer
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        shared.await
    }
}

/// What a catch-up asks: the room's binding, `since`, and the late parameter.
type CatchUpKey = (
    RoomId,
    Instant,
    MessageId,
    (&'static str, String),
    Option<i64>,
);

#[derive(Clone)]
pub struct HistoryClient {
    http: reqwest::Client,
    base: String,
    recent: u32,
    catch_up_limit: u32,
    late_window: chrono::Duration,
    /// The recent-messages read in flight for each binding of a room, one made within the
    /// grace and one after it (a settling read shares no earlier read).
    recent_reads: Arc<Flights<(RoomId, Instant, bool), SharedAnswer>>,
    /// The catch-up reads in flight.
    catch_up_reads: Arc<Flights<CatchUpKey, SharedPage>>,
    /// The authorizations in flight.
    authorizations: Arc<Flights<(UserId, RoomId, AuthorizationKind), Authorization>>,
    metrics: Arc<GatewayMetrics>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HistoryPage {
    pub messages: Vec<ChatMessage>,
    pub has_more: bool,
    /// For a catch-up: the messages before its cursor published after this time (Unix ms)
    /// are in `messages`.
    #[serde(default)]
    pub published_after: Option<i64>,
    /// For a catch-up: the messages up to its cursor changed meanwhile, current state.
    #[serde(default)]
    pub changes: Vec<ChatMessage>,
    #[serde(default)]
    pub changes_truncated: bool,
}

impl HistoryPage {
    /// A page of the latest messages, as the room's memory holds them.
    pub fn of(messages: Vec<ChatMessage>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }
}

/// What history-service answered about a change a user wants to make.
#[derive(Debug, Clone, Deserialize)]
pub struct ChangeCheck {
    /// The author of the message (for a reply's `reply_to`).
    pub author: common::domain::UserRef,
    /// The start of its body (absent once deleted).
    #[serde(default)]
    pub excerpt: Option<String>,
    #[serde(default)]
    pub deleted: bool,
}

/// Why a change was refused: an error code of docs/protocol.md, or no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeRefusal {
    Denied(ErrorCode),
    Unavailable,
}

impl HistoryClient {
    pub fn new(settings: &HistorySettings, metrics: Arc<GatewayMetrics>) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(settings.timeout_ms))
                .build()?,
            base: settings.url.trim_end_matches('/').to_string(),
            recent: settings.recent_on_join,
            catch_up_limit: settings.catch_up_limit,
            late_window: chrono::Duration::milliseconds(
                i64::try_from(settings.late_window_ms).unwrap_or(i64::MAX / 2),
            ),
            recent_reads: Flights::new(),
            catch_up_reads: Flights::new(),
            authorizations: Flights::new(),
            metrics,
        })
    }

    /// `GET /api/rooms/{room}/messages{path}` with the user's token.
    fn request(&self, room: &RoomId, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}/api/rooms/{room}/messages{path}", self.base))
            .bearer_auth(token)
    }

    async fn get(
        &self,
        room: &RoomId,
        query: &[(&str, String)],
        token: &str,
    ) -> anyhow::Result<HistoryPage> {
        self.metrics.history_reads.inc();
        let page = self
            .request(room, "", token)
            .query(query)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(page)
    }

    /// Asks history-service whether the user may make `action` (`edit`, `delete`, `react`,
    /// `reply`) of message `id` now.
    pub async fn check_change(
        &self,
        room: &RoomId,
        id: MessageId,
        action: serde_json::Value,
        token: &str,
    ) -> Result<ChangeCheck, ChangeRefusal> {
        let response = self
            .http
            .post(format!(
                "{}/api/rooms/{room}/messages/{id}/check",
                self.base
            ))
            .bearer_auth(token)
            .json(&action)
            .send()
            .await
            .map_err(|_| ChangeRefusal::Unavailable)?;
        let status = response.status();
        if status.is_success() {
            return response
                .json()
                .await
                .map_err(|_| ChangeRefusal::Unavailable);
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let code = body["error"]["code"].as_str().unwrap_or("");
        let known = ErrorCode::parse(code).filter(|code| {
            matches!(
                code,
                ErrorCode::NotFound
                    | ErrorCode::Forbidden
                    | ErrorCode::Banned
                    | ErrorCode::Archived
                    | ErrorCode::MessageDeleted
                    | ErrorCode::EditWindowPassed
                    | ErrorCode::TooManyReactions
                    | ErrorCode::InvalidEmoji
            )
        });
        match (status.as_u16(), known) {
            (404, _) => Err(ChangeRefusal::Denied(ErrorCode::NotFound)),
            (403, _) => Err(ChangeRefusal::Denied(known.unwrap_or(ErrorCode::Forbidden))),
            (401, _) => Err(ChangeRefusal::Denied(ErrorCode::Unauthorized)),
            (409 | 422, Some(code)) => Err(ChangeRefusal::Denied(code)),
            _ => Err(ChangeRefusal::Unavailable),
        }
    }

    /// Whether history-service has stored message `id` of `room`.
    pub async fn is_stored(
        &self,
        room: &RoomId,
        id: MessageId,
        token: &str,
    ) -> anyhow::Result<bool> {
        let response = self.request(room, &format!("/{id}"), token).send().await?;
        match response.status() {
            reqwest::StatusCode::OK => Ok(true),
            reqwest::StatusCode::NOT_FOUND => Ok(false),
            status => anyhow::bail!("history-service answered {status}"),
        }
    }

    /// Asks history-service whether `user` may be in `room` (see [`AuthorizationKind`]); the
    /// answer of the identical request in flight if there is one.
    pub async fn authorize(
        &self,
        kind: AuthorizationKind,
        user: &UserId,
        room: &RoomId,
        token: &str,
    ) -> Authorization {
        let client = self.clone();
        let key = (user.clone(), room.clone(), kind);
        let (room, token) = (room.clone(), token.to_string());
        self.authorizations
            .share(key, move || {
                async move {
                    client.metrics.room_authorizations.inc();
                    let request = match kind {
                        AuthorizationKind::Join => client
                            .http
                            .post(format!("{}/api/rooms/{room}/join", client.base)),
                        AuthorizationKind::Check => {
                            client.http.get(format!("{}/api/rooms/{room}", client.base))
                        }
                    };
                    let answer = client.authorization(request.bearer_auth(&token)).await;
                    if kind == AuthorizationKind::Check {
                        answer.and_then(member_of)
                    } else {
                        answer
                    }
                    .map(|view| Arc::from(view.to_string()))
                }
                .boxed()
            })
            .await
    }

    async fn authorization(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, Refusal> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(%error, "room authorization unavailable");
                return Err(Refusal::Unavailable);
            }
        };
        let status = response.status();
        if status.is_success() {
            return response.json().await.map_err(|error| {
                tracing::warn!(%error, "unreadable room view");
                Refusal::Unavailable
            });
        }
        let code = response
            .json::<common::error::ErrorBody>()
            .await
            .map(|body| body.error.code)
            .unwrap_or_default();
        Err(refusal(status, &code).unwrap_or_else(|| {
            tracing::warn!(%status, code, "unexpected answer to a room authorization");
            Refusal::Unavailable
        }))
    }

    /// `PUT /api/rooms/{room}/read {"id":ID}` with the user's token.
    pub async fn write_marker(&self, room: &RoomId, id: MessageId, token: &str) -> MarkerWrite {
        let response = self
            .http
            .put(format!("{}/api/rooms/{room}/read", self.base))
            .bearer_auth(token)
            .json(&serde_json::json!({ "id": id }))
            .send()
            .await;
        match response.map(|r| r.status()) {
            Ok(status) if status.is_success() => MarkerWrite::Written,
            Ok(reqwest::StatusCode::UNPROCESSABLE_ENTITY) => MarkerWrite::Invalid,
            Ok(status) if status.is_client_error() => MarkerWrite::Refused,
            Ok(_) | Err(_) => MarkerWrite::Unavailable,
        }
    }

    /// How many recent messages a plain join carries.
    pub fn recent_limit(&self) -> usize {
        self.recent as usize
    }

    /// The latest messages of the room, oldest first: the answer of the read in flight for
    /// the room if there is one, else of a new read. The answer carries the ticket of the join
    /// that started the read (see [`crate::rooms::Rooms::fill`]).
    pub async fn recent(
        &self,
        room: &RoomId,
        binding: Instant,
        token: &str,
        ticket: Option<ReadTicket>,
    ) -> SharedAnswer {
        let client = self.clone();
        let key = (room.clone(), binding, ticket.is_some_and(|t| t.settles()));
        let (room, token) = (room.clone(), token.to_string());
        self.recent_reads
            .share(key, move || {
                async move {
                    client
                        .get(
                            &room,
                            &[
                                ("limit", client.recent.to_string()),
                                ("me", "false".to_string()),
                            ],
                            &token,
                        )
                        .await
                        .map(|page| (Arc::new(page), ticket))
                        .map_err(Arc::new)
                }
                .boxed()
            })
            .await
    }

    /// Messages after `since`, oldest first, preceded by those with earlier ids published
    /// late: after `published_after`, or when this gateway does not know when `since` was
    /// published, after that time (as stored) minus the late window. The page says which time
    /// was used. Both kinds count in the catch-up limit; `has_more` says some were left out,
    /// and paging on from the page's last id (which sorts before `since` when only late ones
    /// fit) finds them.
    pub async fn after(
        &self,
        room: &RoomId,
        binding: Instant,
        since: MessageId,
        published_after: Option<DateTime<Utc>>,
        changes_since: Option<DateTime<Utc>>,
        token: &str,
    ) -> SharedPage {
        let late = match published_after {
            Some(at) => ("published_after", at.timestamp_millis().to_string()),
            None => (
                "late_window_ms",
                self.late_window.num_milliseconds().to_string(),
            ),
        };
        // The client's change cursor, less the window: history-service's clocks may differ.
        let changes_since = changes_since.map(|at| self.late_from(at).timestamp_millis());
        let client = self.clone();
        let key = (room.clone(), binding, since, late.clone(), changes_since);
        let (room, token) = (room.clone(), token.to_string());
        self.catch_up_reads
            .share(key, move || {
                async move {
                    let mut query = vec![
                        ("after", since.to_string()),
                        (late.0, late.1),
                        ("limit", client.catch_up_limit.to_string()),
                        ("changes", "true".to_string()),
                        ("me", "false".to_string()),
                    ];
                    if let Some(at) = changes_since {
                        query.push(("changes_since", at.to_string()));
                    }
                    client
                        .get(&room, &query, &token)
                        .await
                        .map(Arc::new)
                        .map_err(Arc::new)
                }
                .boxed()
            })
            .await
    }

    /// The room's messages with ids after `after`, oldest first, at most the catch-up limit:
    /// the next page of a catch-up, by id alone.
    pub async fn page(
        &self,
        room: &RoomId,
        after: MessageId,
        token: &str,
    ) -> anyhow::Result<HistoryPage> {
        let query = [
            ("after", after.to_string()),
            ("limit", self.catch_up_limit.to_string()),
            ("me", "false".to_string()),
        ];
        self.get(room, &query, token).await
    }

    /// For a catch-up after a message published at `published`: messages published after
    /// the returned time are sent even when their ids sort before it. The window covers the
    /// time between stamping a message's publish time and the broker routing it, and clock
    /// differences between gateways; one reaching past the epoch means every message.
    pub fn late_from(&self, published: DateTime<Utc>) -> DateTime<Utc> {
        published
            .checked_sub_signed(self.late_window)
            .unwrap_or(DateTime::UNIX_EPOCH)
    }
}

/// The refusal a status and error code of history-service stand for, if any.
fn refusal(status: reqwest::StatusCode, code: &str) -> Option<Refusal> {
    use reqwest::StatusCode;
    let known = ErrorCode::parse(code).filter(|code| {
        matches!(
            code,
            ErrorCode::NotFound | ErrorCode::Forbidden | ErrorCode::Banned | ErrorCode::Archived
        )
    });
    match status {
        StatusCode::NOT_FOUND => Some(Refusal::Denied(ErrorCode::NotFound)),
        StatusCode::FORBIDDEN => Some(Refusal::Denied(known.unwrap_or(ErrorCode::Forbidden))),
        StatusCode::CONFLICT if code == "archived" => Some(Refusal::Denied(ErrorCode::Archived)),
        StatusCode::UNAUTHORIZED => Some(Refusal::Denied(ErrorCode::Unauthorized)),
        _ => None,
    }
}

/// A room view allows staying in the room when it carries the caller's role (they are a
/// member) and the room is not archived.
fn member_of(view: serde_json::Value) -> Result<serde_json::Value, Refusal> {
    if view.get("archived").and_then(serde_json::Value::as_bool) == Some(true) {
        return Err(Refusal::Denied(ErrorCode::Archived));
    }
    if view.get("role").is_none_or(serde_json::Value::is_null) {
        return Err(Refusal::Denied(ErrorCode::Forbidden));
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn refusals_keep_their_code_and_anything_unexpected_is_unavailable() {
        assert_eq!(
            refusal(StatusCode::NOT_FOUND, ""),
            Some(Refusal::Denied(ErrorCode::NotFound))
        );
        assert_eq!(
            refusal(StatusCode::FORBIDDEN, "banned"),
            Some(Refusal::Denied(ErrorCode::Banned))
        );
        assert_eq!(
            refusal(StatusCode::FORBIDDEN, "whatever"),
            Some(Refusal::Denied(ErrorCode::Forbidden))
        );
        assert_eq!(
            refusal(StatusCode::CONFLICT, "archived"),
            Some(Refusal::Denied(ErrorCode::Archived))
        );
        assert_eq!(refusal(StatusCode::CONFLICT, "room_exists"), None);
        assert_eq!(refusal(StatusCode::INTERNAL_SERVER_ERROR, ""), None);
    }

    #[test]
    fn a_view_without_the_callers_role_or_of_an_archived_room_does_not_allow_staying() {
        let view = |v: serde_json::Value| member_of(v).map(|_| ());
        assert_eq!(view(serde_json::json!({"role": "member"})), Ok(()));
        assert_eq!(
            view(serde_json::json!({"kind": "public"})),
            Err(Refusal::Denied(ErrorCode::Forbidden))
        );
        assert_eq!(
            view(serde_json::json!({"role": "owner", "archived": true})),
            Err(Refusal::Denied(ErrorCode::Archived))
        );
    }
}
