//! history-service's Prometheus metrics of the consumer, served at `GET /metrics` on the metrics
//! listener with the HTTP histogram (the read-shedding ones are in [`crate::reads`]).

use common::metrics::{LATENCY_BUCKETS, register};
use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};

#[derive(Clone)]
pub struct ConsumerMetrics {
    /// Messages per `insert_many`.
    pub batch_size: Histogram,
    /// Duration of one batch write, retries included.
    pub write_seconds: Histogram,
    /// From a message's `sent_at` to its batch being written: how far storage lags.
    pub lag_seconds: Histogram,
    pub stored: IntCounter,
    /// Redeliveries found already stored.
    pub duplicates: IntCounter,
    /// Unreadable messages dropped from the queue.
    pub rejected: IntCounter,
}

impl ConsumerMetrics {
    pub fn new(registry: &Registry) -> Self {
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            register(
                registry,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("static histogram options are valid"),
            )
        };
        let counter = |name: &str, help: &str| {
            register(
                registry,
                IntCounter::new(name, help).expect("static counter options are valid"),
            )
        };
        Self {
            batch_size: histogram(
                "history_batch_size",
                "Messages per batch write",
                vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0],
            ),
            write_seconds: histogram(
                "history_write_seconds",
                "Batch write duration",
                LATENCY_BUCKETS.to_vec(),
            ),
            lag_seconds: histogram(
                "history_lag_seconds",
                "From sent_at to stored",
                LATENCY_BUCKETS.to_vec(),
            ),
            stored: counter("history_messages_stored_total", "Messages written"),
            duplicates: counter(
                "history_duplicates_total",
                "Redelivered messages already stored",
            ),
            rejected: counter("history_rejected_total", "Unreadable messages dropped"),
        }
    }
}
