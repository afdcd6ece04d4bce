//! Client of history-service: a room's recent messages for `joined`, and the messages after a
//! cursor for a `join` with `since`. The user's own token authorizes the request.

use std::time::Duration;

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
}

#[derive(Debug, Deserialize)]
pub struct HistoryPage {
    pub messages: Vec<ChatMessage>,
    pub has_more: bool,
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
        })
    }

    async fn get(
        &self,
        room: &RoomId,
        query: &[(&str, String)],
        token: &str,
    ) -> anyhow::Result<HistoryPage> {
        let page = self
            .http
            .get(format!("{}/api/rooms/{room}/messages", self.base))
            .query(query)
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(page)
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

    /// Messages after `since`, oldest first, at most the catch-up limit (`has_more` beyond).
    pub async fn after(
        &self,
        room: &RoomId,
        since: MessageId,
        token: &str,
    ) -> anyhow::Result<HistoryPage> {
        self.get(
            room,
            &[
                ("after", since.to_string()),
                ("limit", self.catch_up_limit.to_string()),
            ],
            token,
        )
        .await
    }
}
