//! Load shedding for history reads. A read (a page, or one message) runs only while it holds
//! one of `max_concurrent_reads` slots; at most `max_queued_reads` wait for a slot, none for
//! longer than `read_queue_wait_ms`; and every read has a deadline (`read_timeout_ms` from its
//! arrival) that its queries carry as `maxTimeMS` and past which it is abandoned. A read refused
//! or abandoned is answered 503 `unavailable` with `Retry-After` at once, so a flood of reads
//! costs the database at most `max_concurrent_reads` queries at a time instead of a queue that
//! outlives the callers who asked (a gateway gives up after 3 s).

use std::future::Future;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::settings::Limits;

/// Readiness pings running at once (`GET /health/ready`); more wait for their turn.
pub const READY_PINGS: usize = 2;

/// MongoDB connections beyond `max_concurrent_reads`: one for the consumer's batch writes,
/// [`READY_PINGS`] for readiness, one spare. Reads never hold more than their slots, so
/// these are always free for the others.
pub const POOL_HEADROOM: u32 = 2 + READY_PINGS as u32;

/// Server error code of a query stopped by its `maxTimeMS`.
const MAX_TIME_MS_EXPIRED: i32 = 50;

/// When a read must be answered by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(budget: Duration) -> Self {
        Self(Instant::now() + budget)
    }

    /// The time left, for a query's `maxTimeMS`: at least 1 ms, because 0 means no limit.
    pub fn max_time(&self) -> Duration {
        self.0
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    }
}

/// Why a read was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedReason {
    /// Every slot was taken and the read could not wait (or waited long enough).
    Busy,
    /// The read's deadline passed.
    Deadline,
}

impl ShedReason {
    fn label(self) -> &'static str {
        match self {
            ShedReason::Busy => "busy",
            ShedReason::Deadline => "deadline",
        }
    }
}

/// A read that was refused or abandoned; answered 503 with `Retry-After: retry_after_s`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("history is busy; retry in a moment")]
pub struct Shed {
    pub reason: ShedReason,
    pub retry_after_s: u32,
}

/// Admits reads; one per service, shared by every worker.
pub struct ReadLimiter {
    /// Reads running or waiting for a slot: bounds the wait queue by count.
    admitted: Semaphore,
    /// Reads running against MongoDB.
    running: Semaphore,
    queue_wait: Duration,
    timeout: Duration,
    retry_after_s: u32,
    metrics: ReadMetrics,
}

#[derive(Clone)]
struct ReadMetrics {
    /// `history_reads_shed_total{reason}`: reads answered 503 instead of served.
    shed: IntCounterVec,
    /// `history_reads_running`: reads holding a slot.
    running: IntGauge,
}

impl ReadLimiter {
    /// A limiter whose metrics are `history_<name>_shed_total{reason}` and
    /// `history_<name>_running` (`reads` for history reads).
    pub fn new(limits: &Limits, name: &str, registry: &Registry) -> anyhow::Result<Self> {
        anyhow::ensure!(
            limits.max_concurrent > 0,
            "{name}: at least 1 must run at once"
        );
        let slots = limits.max_concurrent as usize;
        let shed = IntCounterVec::new(
            Opts::new(
                format!("history_{name}_shed_total"),
                format!("{name} answered 503 instead of served, by reason (busy, deadline)"),
            ),
            &["reason"],
        )?;
        let running = IntGauge::new(
            format!("history_{name}_running"),
            format!("{name} holding a slot"),
        )?;
        Ok(Self {
            admitted: Semaphore::new(slots + limits.max_queued as usize),
            running: Semaphore::new(slots),
            queue_wait: Duration::from_millis(limits.queue_wait_ms),
            timeout: Duration::from_millis(limits.timeout_ms),
            retry_after_s: limits.retry_after_s,
            metrics: ReadMetrics {
                shed: common::metrics::register(registry, shed),
                running: common::metrics::register(registry, running),
            },
        })
    }

    /// Admits a read, or sheds it at once when `max_concurrent_reads + max_queued_reads` are
    /// already admitted. Called first thing, so that a read shed costs no token check.
    pub fn admit(&self) -> Result<Admitted<'_>, Shed> {
        let deadline = Deadline::after(self.timeout);
        match self.admitted.try_acquire() {
            Ok(permit) => Ok(Admitted {
                limiter: self,
                _permit: permit,
                deadline,
            }),
            Err(_) => Err(self.shed(ShedReason::Busy)),
        }
    }

    /// Counts and answers a read refused for `reason`.
    pub fn shed(&self, reason: ShedReason) -> Shed {
        self.metrics.shed.with_label_values(&[reason.label()]).inc();
        tracing::debug!(reason = reason.label(), "history read shed");
        Shed {
            reason,
            retry_after_s: self.retry_after_s,
        }
    }
}

/// Counts a read in `history_reads_running` while it lives, however it ends (a handler is
/// dropped when its client goes away).
struct Running<'a>(&'a IntGauge);

impl<'a> Running<'a> {
    fn count(gauge: &'a IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An admitted read, counted until it is dropped; its deadline runs from its admission.
pub struct Admitted<'a> {
    limiter: &'a ReadLimiter,
    _permit: SemaphorePermit<'a>,
    deadline: Deadline,
}

impl Admitted<'_> {
    /// Runs `read` in a slot, under the deadline. `Err` when the read was shed; `Ok` with the
    /// read's own outcome otherwise. Dropping the read at its deadline drops its queries (the
    /// driver closes a connection dropped mid-query), and `maxTimeMS` stops them on the
    /// server.
    pub async fn run<T, F, Fut>(self, read: F) -> Result<anyhow::Result<T>, Shed>
    where
        F: FnOnce(Deadline) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let limiter = self.limiter;
        let deadline = self.deadline;
        let wait_until = (Instant::now() + limiter.queue_wait).min(deadline.0);
        let _slot = match tokio::time::timeout_at(wait_until, limiter.running.acquire()).await {
            Ok(Ok(slot)) => slot,
            // Timed out; the semaphore is never closed.
            Ok(Err(_)) | Err(_) => return Err(limiter.shed(ShedReason::Busy)),
        };
        let _counted = Running::count(&limiter.metrics.running);
        match tokio::time::timeout_at(deadline.0, read(deadline)).await {
            Err(_) => Err(limiter.shed(ShedReason::Deadline)),
            Ok(Err(error)) if stopped_by_time_limit(&error) => {
                Err(limiter.shed(ShedReason::Deadline))
            }
            Ok(result) => Ok(result),
        }
    }
}

/// Whether the database stopped a query at its `maxTimeMS`.
fn stopped_by_time_limit(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<mongodb::error::Error>())
        .any(|e| {
            matches!(
                e.kind.as_ref(),
                mongodb::error::ErrorKind::Command(c) if c.code == MAX_TIME_MS_EXPIRED
            )
        })
}
