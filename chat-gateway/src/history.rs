//! Client of history-service: a room's recent messages for `joined`, and the messages after a
//! cursor for a `join` with `since`. The user's own token authorizes the request.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::domain::{MessageId, RoomId};
use common::event::ChatMessage;
use serde::Deserialize;

use crate::settings::HistorySettings;

#[derive(Clone)]
pub struct HistoryClient {
    http: reqwest::Client,
    base: String,
    recent: u32,
    catch_up_limit: u32,
    late_window: chrono::Duration,
}

#[derive(Debug, Deserialize)]
pub struct HistoryPage {
    pub messages: Vec<ChatMessage>,
    pub has_more: bool,
    /// For a catch-up: the messages before its cursor published after this time (Unix ms)
    /// are in `messages`.
    #[serde(default)]
    pub published_after: Option<i64>,
}

impl HistoryClient {
    pub fn new(settings: &HistorySettings) -> anyhow::Result<Self> {
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

    /// The latest messages of the room, oldest first.
    pub async fn recent(&self, room: &RoomId, token: &str) -> anyhow::Result<HistoryPage> {
        self.get(room, &[("limit", self.recent.to_string())], token)
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
