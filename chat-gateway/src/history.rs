//! Client of history-service: a room's recent messages for `joined`, and the messages after a
//! cursor for a `join` with `since`. The user's own token authorizes the request.
//!
//! Reads of a room's recent messages are shared: while one is in flight, other joins of the
//! same room wait for its answer instead of asking again, so a storm of joins (a gateway
//! restart with thousands of users) costs history-service one read per room, not one per user.
//! Any valid token may read any room's history, so one joiner's token serves all of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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

/// A read of a room's recent messages that several joins await.
type SharedRead = Shared<BoxFuture<'static, SharedAnswer>>;

/// A recent-messages page with the ticket of the join that started the read.
pub type SharedAnswer = Result<(Arc<HistoryPage>, Option<ReadTicket>), ReadError>;

#[derive(Clone)]
pub struct HistoryClient {
    http: reqwest::Client,
    base: String,
    recent: u32,
    catch_up_limit: u32,
    late_window: chrono::Duration,
    /// The recent-messages read in flight for each room; removed when it completes.
    in_flight: Arc<Mutex<HashMap<RoomId, SharedRead>>>,
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
            in_flight: Arc::new(Mutex::new(HashMap::new())),
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
        token: &str,
        ticket: Option<ReadTicket>,
    ) -> SharedAnswer {
        let read = {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            in_flight
                .entry(room.clone())
                .or_insert_with(|| {
                    let client = self.clone();
                    let room = room.clone();
                    let token = token.to_string();
                    async move {
                        let page = client
                            .get(&room, &[("limit", client.recent.to_string())], &token)
                            .await;
                        // Joins arriving from now on read again: they may need newer messages.
                        client
                            .in_flight
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&room);
                        page.map(|page| (Arc::new(page), ticket)).map_err(Arc::new)
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        read.await
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
        since: MessageId,
        published_after: Option<DateTime<Utc>>,
        token: &str,
    ) -> anyhow::Result<HistoryPage> {
        let late = match published_after {
            Some(at) => ("published_after", at.timestamp_millis().to_string()),
            None => (
                "late_window_ms",
                self.late_window.num_milliseconds().to_string(),
            ),
        };
        self.get(
            room,
            &[
                ("after", since.to_string()),
                late,
                ("limit", self.catch_up_limit.to_string()),
            ],
            token,
        )
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
