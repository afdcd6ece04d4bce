//! Client of history-service: a room's recent messages for `joined`, and the messages after a
//! cursor for a `join` with `since`. The user's own token authorizes the request.
//!
//! Reads are shared: while one is in flight, joins that need the same answer wait for it
//! instead of asking again — plain joins of a room, and catch-ups of a room from the same
//! `since` (after a gateway restart, the clients that were up to date all rejoin with the
//! room's last message). A storm of joins then costs history-service about one read per room,
//! not one per user. A read is shared only within one binding of the room (see
//! [`crate::rooms::Rooms::binding`]): what was published while the room was unbound here is
//! in no read from before. Any valid token may read any room's history, so one joiner's token
//! serves all of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::domain::{MessageId, RoomId};
use common::event::ChatMessage;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use serde::Deserialize;

use crate::metrics::GatewayMetrics;
use crate::rooms::ReadTicket;
use crate::settings::HistorySettings;

/// A failed read, shared by every join that waited for it.
pub type ReadError = Arc<anyhow::Error>;

/// A recent-messages page with the ticket of the join that started the read.
pub type SharedAnswer = Result<(Arc<HistoryPage>, Option<ReadTicket>), ReadError>;

/// A catch-up page, shared by the joins that asked for it.
pub type SharedPage = Result<Arc<HistoryPage>, ReadError>;

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
type CatchUpKey = (RoomId, Instant, MessageId, (&'static str, String));

#[derive(Clone)]
pub struct HistoryClient {
    http: reqwest::Client,
    base: String,
    recent: u32,
    catch_up_limit: u32,
    late_window: chrono::Duration,
    /// The recent-messages read in flight for each binding of a room.
    recent_reads: Arc<Flights<(RoomId, Instant), SharedAnswer>>,
    /// The catch-up reads in flight.
    catch_up_reads: Arc<Flights<CatchUpKey, SharedPage>>,
    metrics: Arc<GatewayMetrics>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HistoryPage {
    pub messages: Vec<ChatMessage>,
    pub has_more: bool,
    /// For a catch-up: the messages before its cursor published after this time (Unix ms)
    /// are in `messages`.
    #[serde(default)]
    pub published_after: Option<i64>,
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
        let key = (room.clone(), binding);
        let (room, token) = (room.clone(), token.to_string());
        self.recent_reads
            .share(key, move || {
                async move {
                    client
                        .get(&room, &[("limit", client.recent.to_string())], &token)
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
        token: &str,
    ) -> SharedPage {
        let late = match published_after {
            Some(at) => ("published_after", at.timestamp_millis().to_string()),
            None => (
                "late_window_ms",
                self.late_window.num_milliseconds().to_string(),
            ),
        };
        let client = self.clone();
        let key = (room.clone(), binding, since, late.clone());
        let (room, token) = (room.clone(), token.to_string());
        self.catch_up_reads
            .share(key, move || {
                async move {
                    client
                        .get(
                            &room,
                            &[
                                ("after", since.to_string()),
                                (late.0, late.1),
                                ("limit", client.catch_up_limit.to_string()),
                            ],
                            &token,
                        )
                        .await
                        .map(Arc::new)
                        .map_err(Arc::new)
                }
                .boxed()
            })
            .await
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
