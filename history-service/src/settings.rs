//! history-service settings: `config/default.toml`, then `HISTORY_CONFIG_FILE`, then
//! `HISTORY__*` environment variables. A key none of them has, or (under
//! `APP_ENVIRONMENT=production`) a development password, stops the service at start.

use common::settings::{AmqpSettings, HttpSettings, MetricsSettings, MongoSettings, Profile};
use common::token::AuthServerSettings;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub metrics: MetricsSettings,
    pub mongodb: MongoSettings,
    pub amqp: HistoryAmqpSettings,
    pub auth: AuthServerSettings,
    pub history: PageSettings,
    pub rooms: RoomsSettings,
    pub messages: MessageSettings,
}

/// Rules of message changes (docs/protocol.md, "Changing messages").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageSettings {
    /// How long after sending its author may edit a message; 0 = always.
    pub edit_window_secs: u64,
}

impl MessageSettings {
    /// The edit window, `None` when edits are allowed forever.
    pub fn edit_window(&self) -> Option<chrono::Duration> {
        (self.edit_window_secs > 0)
            .then(|| chrono::Duration::try_seconds(self.edit_window_secs as i64))
            .flatten()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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

/// Rooms, memberships and their routes (docs/rooms.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsSettings {
    /// A join of a room id that has no room creates it, public, owned by the joiner.
    pub create_on_join: bool,
    /// Rooms one user may create per hour (per instance).
    pub create_per_hour: u32,
    /// Joins and read markers (the gateway's hot paths) admitted as `joins`.
    pub joins: Limits,
    /// The other room routes, admitted as `ops`.
    pub ops: Limits,
    /// Joins waiting for their reads (see [`crate::rooms::lookups`]); beyond, a join is
    /// answered 503 at once.
    pub join_queue: usize,
    /// Most joins read for together.
    pub join_batch: usize,
    /// Member and room events waiting for the broker; beyond, events are dropped.
    pub outbox_capacity: usize,
    /// Longest a publication waits for the broker's confirm.
    pub confirm_timeout_ms: u64,
    /// Longest a username lookup at auth-service may take.
    pub users_timeout_ms: u64,
    /// How long a room list may serve a room document read earlier (see
    /// [`crate::rooms::cache`]): the staleness of lists when several instances write.
    pub list_cache_ttl_ms: u64,
    /// Most room documents the room lists' cache holds.
    pub list_cache_rooms: usize,
    /// How long a member's membership and inbox entry read for a join answer their later
    /// joins (see [`crate::rooms::cache::MemberCache`]), unless forgotten by a write or a
    /// member event before.
    pub join_cache_ttl_ms: u64,
    /// Most members the join cache holds.
    pub join_cache_members: usize,
}

/// One admission bound (see [`crate::reads`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_concurrent: u32,
    pub max_queued: u32,
    pub queue_wait_ms: u64,
    pub timeout_ms: u64,
    pub retry_after_s: u32,
}

impl From<&PageSettings> for Limits {
    fn from(pages: &PageSettings) -> Self {
        Self {
            max_concurrent: pages.max_concurrent_reads,
            max_queued: pages.max_queued_reads,
            queue_wait_ms: pages.read_queue_wait_ms,
            timeout_ms: pages.read_timeout_ms,
            retry_after_s: pages.retry_after_s,
        }
    }
}

impl Settings {
    pub fn load() -> anyhow::Result<Self> {
        let settings: Settings =
            common::settings::Layout::new(include_str!("../config/default.toml"), "HISTORY")
                .optional(&["amqp.queue_expires_ms"])
                .lists(&[AmqpSettings::URIS_KEY])
                .load()?;
        let amqp = settings.amqp.connection.named_uris();
        let mut uris: Vec<(&str, &SecretString)> =
            amqp.iter().map(|(key, uri)| (key.as_str(), *uri)).collect();
        uris.push(("mongodb.uri", &settings.mongodb.uri));
        Profile::from_env()?.refuse_development_credentials(&uris)?;
        Ok(settings)
    }
}
