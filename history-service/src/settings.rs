//! history-service settings: `config/default.toml`, then `HISTORY_CONFIG_FILE`, then
//! `HISTORY__*` environment variables.

use common::settings::{AmqpSettings, HttpSettings, MetricsSettings, MongoSettings};
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

/// Page sizes, and the limits that keep reads from queueing without bound (see
/// [`crate::reads`]).
#[derive(Debug, Clone, Deserialize)]
pub struct PageSettings {
    pub default_page: u32,
    pub max_page: u32,
    /// Reads (pages and single messages) running against MongoDB at once. The MongoDB pool
    /// holds this many connections plus [`crate::reads::POOL_HEADROOM`] for the consumer's
    /// writes and the readiness ping.
    pub max_concurrent_reads: u32,
    /// Reads waiting for one of those slots; a read beyond is answered 503 at once.
    pub max_queued_reads: u32,
    /// Longest a read waits for a slot before it is answered 503.
    pub read_queue_wait_ms: u64,
    /// Longest a read may take, from its arrival to its answer, waiting included; the
    /// queries carry the time left as `maxTimeMS`, so the database stops too.
    pub read_timeout_ms: u64,
    /// `Retry-After` of a read answered 503 because it was shed, in seconds.
    pub retry_after_s: u32,
}

impl Settings {
    pub fn load() -> anyhow::Result<Self> {
        common::settings::load(include_str!("../config/default.toml"), "HISTORY")
    }
}
