//! history-service settings: `config/default.toml`, then `HISTORY_CONFIG_FILE`, then
//! `HISTORY__*` environment variables.

use common::settings::{AmqpSettings, HttpSettings, MongoSettings};
use common::token::AuthServerSettings;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub metrics: MetricsSettings,
    pub mongodb: MongoSettings,
    pub amqp: HistoryAmqpSettings,
    pub auth: AuthServerSettings,
    pub history: PageSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HistoryAmqpSettings {
    #[serde(flatten)]
    pub connection: AmqpSettings,
    pub queue: String,
    pub prefetch: u16,
    pub batch_size: usize,
    pub batch_wait_ms: u64,
    /// Deletes the queue after this long without consumers (`x-expires`); unset in
    /// production, set by tests so their queues do not pile up.
    #[serde(default)]
    pub queue_expires_ms: Option<u32>,
}

/// Where `GET /metrics` is served: its own listener, never the public port.
#[derive(Debug, Clone, Deserialize)]
pub struct MetricsSettings {
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
}

impl MetricsSettings {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PageSettings {
    pub default_page: u32,
    pub max_page: u32,
}

impl Settings {
    pub fn load() -> anyhow::Result<Self> {
        common::settings::load(include_str!("../config/default.toml"), "HISTORY")
    }
}
