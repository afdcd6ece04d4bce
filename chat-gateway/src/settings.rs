//! chat-gateway settings: `config/default.toml`, then `GATEWAY_CONFIG_FILE`, then
//! `GATEWAY__*` environment variables. A key none of them has, or (under
//! `APP_ENVIRONMENT=production`) a development password, stops the gateway at start.

use common::settings::{AmqpSettings, HttpSettings, MetricsSettings, MongoSettings, Profile};
use common::token::AuthServerSettings;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub amqp: GatewayAmqpSettings,
    pub mongodb: MongoSettings,
    pub receipts: ReceiptSettings,
    pub auth: AuthServerSettings,
    pub history: HistorySettings,
    pub rooms: RoomSettings,
    pub security: SecuritySettings,
    pub web: WebSettings,
    pub metrics: MetricsSettings,
    pub limits: Limits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayAmqpSettings {
    #[serde(flatten)]
    pub connection: AmqpSettings,
    pub instance_id: String,
    /// What kind of queue the instance queue is (see [`QueueType`]).
    pub queue_type: QueueType,
    pub queue_expires_ms: u32,
    pub confirm_timeout_ms: u64,
}

/// The kind of the gateway's instance queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Replicated on every node of a broker cluster (Raft): the queue, its bindings and its
    /// messages survive the loss of a minority of nodes, and a new leader takes over within
    /// seconds. For a broker cluster.
    Quorum,
    /// On the node the gateway first declared it, only: while that node is down the gateway
    /// can neither consume nor declare it again. For a single-node broker; the default.
    Classic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptSettings {
    pub retention_hours: u32,
    /// A retry this soon after its first attempt is published again without asking whether
    /// the message is stored (see `connection/commands/send.rs`, `send_message`).
    pub republish_within_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    pub url: String,
    pub recent_on_join: u32,
    pub catch_up_limit: u32,
    /// A catch-up also sends messages with earlier ids published up to this long before its
    /// `since` was (see [`crate::history::HistoryClient::late_from`]).
    pub late_window_ms: u64,
    pub timeout_ms: u64,
    /// A room's memory answers plain joins once a history read started this long after the
    /// room was bound filled it (see [`crate::rooms`]).
    pub memory_grace_ms: u64,
}

/// Room authorization and read markers (see [`crate::membership`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSettings {
    /// How long an allowed join is trusted for the user's `send`, `typing` and later joins
    /// of the room before history-service is asked again.
    pub decision_ttl_s: u64,
    /// Most (user, room) decisions kept.
    pub decision_cache_size: usize,
    /// How often coalesced read markers are written to history-service.
    pub read_flush_ms: u64,
    /// Most (user, room) read markers waiting for the next write.
    pub read_markers_pending: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSettings {
    pub dir: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub outbound_queue: usize,
    pub socket_send_buffer_bytes: usize,
    pub handshake_timeout_ms: u64,
    /// Longest wait for a forwarded request's body, from the end of its headers.
    pub body_timeout_ms: u64,
    pub max_message_bytes: usize,
    pub read_buffer_bytes: usize,
    pub max_rooms_per_connection: usize,
    pub messages_per_second: u32,
    pub message_burst: u32,
    pub rate_limited_close_after: u32,
    pub max_connections_per_user: usize,
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
    /// Longest a reply waits for room in the connection's outbound queue before the
    /// connection is closed as not reading.
    pub reply_wait_ms: u64,
}

impl Settings {
    pub fn load() -> anyhow::Result<Self> {
        let mut settings: Settings = common::settings::load_with_lists(
            include_str!("../config/default.toml"),
            "GATEWAY",
            &["security.allowed_origins", AmqpSettings::URIS_KEY],
        )?;
        anyhow::ensure!(
            settings.limits.ping_interval_secs > 0 && settings.limits.idle_timeout_secs > 0,
            "limits.ping_interval_secs and limits.idle_timeout_secs must be at least 1"
        );
        let amqp = settings.amqp.connection.named_uris();
        let mut uris: Vec<(&str, &SecretString)> =
            amqp.iter().map(|(key, uri)| (key.as_str(), *uri)).collect();
        uris.push(("mongodb.uri", &settings.mongodb.uri));
        Profile::from_env()?.refuse_development_credentials(&uris)?;
        if settings.amqp.instance_id.is_empty() {
            settings.amqp.instance_id =
                format!("gw-{}", ulid::Ulid::new().to_string().to_lowercase());
        }
        Ok(settings)
    }
}
