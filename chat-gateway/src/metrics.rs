//! The gateway's Prometheus metrics, served at `GET /metrics` on a listener of its own (see
//! [`crate::server::metrics_router`]).

use common::metrics::{LATENCY_BUCKETS, register};
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge, Registry};

pub struct GatewayMetrics {
    pub registry: Registry,
    pub connections: IntGauge,
    pub joins: IntCounter,
    /// Requests to history-service made for joins (a shared read counts once).
    pub history_reads: IntCounter,
    /// Plain joins answered from the room's messages in this gateway's memory, no read.
    pub joins_from_memory: IntCounter,
    /// Messages a settling read found that joins answered within the grace lacked (stored
    /// after the first read), delivered to those joins late.
    pub late_messages: IntCounter,
    /// Messages the recovery after a lost broker connection found stored but never received
    /// through the queue, delivered late (see [`crate::recovery`]).
    pub recovered_messages: IntCounter,
    /// Rooms the recovery could not read back, whose clients were told to rejoin.
    pub recovery_handed_back: IntCounter,
    /// Room authorizations asked of history-service (joins, and sends or typing whose
    /// decision expired); concurrent identical ones count once.
    pub room_authorizations: IntCounter,
    /// Joins, sends and typing allowed by a cached decision without asking.
    pub room_decisions_cached: IntCounter,
    /// Coalesced read markers written to history-service.
    pub read_markers_written: IntCounter,
    /// `read` frames refused because too many markers were waiting.
    pub read_markers_refused: IntCounter,
    pub frames_received: IntCounter,
    pub messages_published: IntCounter,
    pub publish_failures: IntCounter,
    pub publish_confirm_seconds: Histogram,
    /// Frames handed to local connections' outbound queues by fan-out.
    pub frames_delivered: IntCounter,
    /// Fan-out frames refused because a connection's queue was full (it is then closed).
    pub outbound_overflows: IntCounter,
    /// Copies of messages fanned out already (redelivered by the broker, or published twice),
    /// not delivered again.
    pub duplicate_deliveries: IntCounter,
    /// Where a join's time goes, by step: `authorize` (the decision: cached or asked of
    /// history-service), `bind` (waiting for the room's queue binding; the first join of a
    /// room on this gateway pays for it), `history` (the recent messages or the `since`
    /// catch-up: memory, a shared read or a read of its own).
    pub join_step_seconds: HistogramVec,
    pub http: HistogramVec,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::new(name, help).expect("static counter options are valid"),
    )
}

impl GatewayMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        Self {
            connections: register(
                &registry,
                IntGauge::new("gateway_connections", "Open WebSocket connections")
                    .expect("static gauge options are valid"),
            ),
            joins: counter(&registry, "gateway_joins_total", "Room joins"),
            history_reads: counter(
                &registry,
                "gateway_history_reads_total",
                "History requests made for joins (one per room at a time for plain joins)",
            ),
            joins_from_memory: counter(
                &registry,
                "gateway_joins_from_memory_total",
                "Plain joins answered from the gateway's memory of the room",
            ),
            late_messages: counter(
                &registry,
                "gateway_late_messages_total",
                "Messages stored after a join's history read, delivered to it by the settling read",
            ),
            recovered_messages: counter(
                &registry,
                "gateway_recovered_messages_total",
                "Messages stored while the broker connection was lost that never came through the queue, delivered from history",
            ),
            recovery_handed_back: counter(
                &registry,
                "gateway_recovery_handed_back_total",
                "Rooms the recovery after a lost broker connection could not read back; their clients were told to rejoin",
            ),
            room_authorizations: counter(
                &registry,
                "gateway_room_authorizations_total",
                "Room authorizations asked of history-service",
            ),
            room_decisions_cached: counter(
                &registry,
                "gateway_room_decisions_cached_total",
                "Joins, sends and typing allowed by a cached decision",
            ),
            read_markers_written: counter(
                &registry,
                "gateway_read_markers_written_total",
                "Coalesced read markers written to history-service",
            ),
            read_markers_refused: counter(
                &registry,
                "gateway_read_markers_refused_total",
                "read frames refused because too many markers were waiting",
            ),
            frames_received: counter(
                &registry,
                "gateway_frames_received_total",
                "Text frames received from clients",
            ),
            messages_published: counter(
                &registry,
                "gateway_messages_published_total",
                "Chat messages confirmed by the broker",
            ),
            publish_failures: counter(
                &registry,
                "gateway_publish_failures_total",
                "Chat messages the broker did not confirm",
            ),
            publish_confirm_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "gateway_publish_confirm_seconds",
                        "Time from publish to broker confirm",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .expect("static histogram options are valid"),
            ),
            frames_delivered: counter(
                &registry,
                "gateway_frames_delivered_total",
                "Room frames queued to local connections",
            ),
            outbound_overflows: counter(
                &registry,
                "gateway_outbound_overflows_total",
                "Room frames refused because a connection's outbound queue was full",
            ),
            duplicate_deliveries: counter(
                &registry,
                "gateway_duplicate_deliveries_total",
                "Copies of messages fanned out already, not delivered again",
            ),
            join_step_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "gateway_join_step_seconds",
                        "Time a room join spent in each step (authorize, bind, history)",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["step"],
                )
                .expect("static histogram options are valid"),
            ),
            http: common::metrics::http_requests(&registry),
            registry,
        }
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}
