//! Recovery after a lost broker connection: every room served here is read back from
//! history-service, and what was stored since the loss but never came through this gateway's
//! queue is delivered to the room's local members.
//!
//! A message can pass a gateway by while its broker connection is lost: a classic queue on a
//! node that died drops what it held, and a publish cut off by the loss of a node can reach
//! history-service's queue but not this one (its retry then finds the message stored and is
//! acknowledged without publishing again). The clients cannot know: their WebSocket stays
//! open. So after each reconnect the gateway reads every local room's messages since the loss
//! (from the last delivery before it, less the late window) in two passes, once the memory
//! grace has passed and again five graces later (history-service stores late what it
//! consumes late after its own reconnect), and delivers as `message` frames what
//! [`Rooms::first_delivery`] has not seen. Copies arriving later through the queue are
//! dropped the same way. A room whose reads keep failing (about 12 s of attempts), or that
//! has more than [`MAX_PAGES`] pages since the loss, is handed back to its clients: they get
//! `lagged` with the id where the read back started (their live messages since the reconnect
//! may be newer: they must rejoin from that id, not from their newest). So does a client whose
//! queue overflows with what the read back delivers.
//!
//! Reads go [`RECOVERY_READS`] at a time: a gateway serving many rooms spreads its recovery
//! over time rather than asking history-service for every room at once.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::domain::{MessageId, RoomId};
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::history::{HistoryClient, HistoryPage};
use crate::metrics::GatewayMetrics;
use crate::outbox::LiveMessage;
use crate::rooms::Rooms;

/// Rooms read back at a time.
pub const RECOVERY_READS: usize = 4;

/// Pages read per room and pass before the room is handed back to its clients.
pub const MAX_PAGES: usize = 10;

/// Attempts at a page history-service sheds or does not answer, waiting from
/// [`FIRST_RETRY`] to [`LAST_RETRY`] in between (about 12 s in all): a history-service
/// recovering from the same outage sheds reads for a while, and handing a room back costs
/// more than waiting.
const ATTEMPTS: u32 = 6;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// The second pass comes this many graces after the reconnect.
const SECOND_PASS_GRACES: u32 = 5;

/// A gap not yet recovered: the earliest time from which messages may be missing, when the
/// connection came back, and how many reconnects were reported; and a loss not followed by a
/// reconnect yet.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    from: Option<DateTime<Utc>>,
    reconnected: Option<Instant>,
    generation: u64,
    lost: Option<DateTime<Utc>>,
}

/// Where the broker task reports losses and reconnects; the recovery task waits on it.
pub struct Gaps {
    pending: Mutex<Pending>,
    notify: Notify,
    /// How long before its publish time a message may be stamped (see
    /// [`crate::settings::HistorySettings::late_window_ms`]).
    late_window: Duration,
}

impl Gaps {
    pub fn new(late_window: Duration) -> Self {
        Self {
            pending: Mutex::default(),
            notify: Notify::new(),
            late_window,
        }
    }

    /// The broker connection was lost now; `last_delivery` is when the last message came
    /// through it.
    pub fn lost(&self, last_delivery: Option<Instant>) {
        let start = gap_start(Utc::now(), last_delivery, self.late_window);
        let mut pending = self.lock();
        pending.lost = Some(pending.lost.map_or(start, |earlier| earlier.min(start)));
    }

    /// The broker connection is back: if it was lost, the rooms are read back from the loss
    /// (merged with a gap still being recovered).
    pub fn reconnected(&self) {
        let mut pending = self.lock();
        let Some(lost) = pending.lost.take() else {
            return;
        };
        pending.from = Some(pending.from.map_or(lost, |earlier| earlier.min(lost)));
        pending.reconnected = Some(Instant::now());
        pending.generation += 1;
        drop(pending);
        self.notify.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self) -> Pending {
        *self.lock()
    }

    /// Forgets the gap if no reconnect was reported since `generation`.
    fn recovered(&self, generation: u64) {
        let mut pending = self.lock();
        if pending.generation == generation {
            pending.from = None;
        }
    }
}

/// The time from which a connection lost at `lost_at` may have missed messages: the last
/// delivery before it (a connection that went silent is noticed late) less `late_window`,
/// or the loss itself if that is earlier.
pub fn gap_start(
    lost_at: DateTime<Utc>,
    last_delivery: Option<Instant>,
    late_window: Duration,
) -> DateTime<Utc> {
    let silent = last_delivery.map_or(Duration::ZERO, |at| at.elapsed());
    let last = chrono::Duration::from_std(silent)
        .ok()
        .and_then(|silent| Utc::now().checked_sub_signed(silent))
        .unwrap_or(lost_at);
    let window = chrono::Duration::from_std(late_window).unwrap_or_default();
    lost_at
        .min(last)
        .checked_sub_signed(window)
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// Reads rooms back after each reconnect [`Gaps`] reports, until `shutdown`.
pub struct Recovery {
    pub rooms: Arc<Rooms>,
    pub history: HistoryClient,
    pub metrics: Arc<GatewayMetrics>,
    pub gaps: Arc<Gaps>,
    /// The memory grace: what was confirmed before it is stored by then.
    pub grace: Duration,
}

impl Recovery {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let pending = self.gaps.snapshot();
            let (Some(from), Some(reconnected)) = (pending.from, pending.reconnected) else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.gaps.notify.notified() => continue,
                }
            };
            let passes = [self.grace, self.grace * SECOND_PASS_GRACES];
            let mut interrupted = false;
            for after in passes {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until((reconnected + after).into()) => {}
                }
                if self.gaps.snapshot().generation != pending.generation {
                    // Reconnected again: start over from that reconnect, with the merged gap.
                    interrupted = true;
                    break;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.pass(from) => {}
                }
            }
            if !interrupted {
                self.gaps.recovered(pending.generation);
            }
        }
    }

    /// Reads every local room back from `from`.
    async fn pass(&self, from: DateTime<Utc>) {
        let rooms = self.rooms.local_rooms();
        tracing::info!(rooms = rooms.len(), %from, "reading rooms back after a lost broker connection");
        futures_util::stream::iter(rooms)
            .for_each_concurrent(RECOVERY_READS, |room| self.recover(room, from))
            .await;
    }

    /// Delivers the room's messages since `from` that this gateway has not fanned out, or
    /// hands the room back to its clients when they cannot all be read.
    async fn recover(&self, room: RoomId, from: DateTime<Utc>) {
        // Where the clients must rejoin from if the room is handed back: messages delivered
        // here may still wait in their queues, which a hand-back drops.
        let start = MessageId::from_ulid(ulid::Ulid::from_parts(
            u64::try_from(from.timestamp_millis()).unwrap_or(0),
            0,
        ));
        let mut cursor = start;
        for page_number in 0..MAX_PAGES {
            // The room may have emptied meanwhile: nobody to recover for.
            let (Some(binding), Some(token)) =
                (self.rooms.binding(&room), self.rooms.member_token(&room))
            else {
                return;
            };
            // The first page also has the messages with earlier ids published since `from`
            // (a retry keeps its first attempt's id); the next ones go by id alone.
            let read = if page_number == 0 {
                Read::First { binding, from }
            } else {
                Read::Next
            };
            let Some(page) = self.read(&room, read, cursor, &token).await else {
                break;
            };
            let mut messages = page.messages.clone();
            messages.sort_by_key(|message| message.id);
            for message in &messages {
                if self.rooms.first_delivery(message.id) {
                    self.metrics.recovered_messages.inc();
                    self.rooms.remember(message, None);
                    self.rooms
                        .deliver_recovered(&LiveMessage::of(message), start);
                }
            }
            match page.messages.last() {
                Some(last) if page.has_more => cursor = last.id,
                _ => return,
            }
        }
        let clients = self.rooms.resync_members(&room, start);
        if clients > 0 {
            self.metrics.recovery_handed_back.inc();
            tracing::warn!(%room, clients, "room not read back after a lost broker connection; its clients rejoin");
        }
    }

    /// One page after `cursor`, asked again with growing waits when history-service sheds it
    /// or does not answer.
    async fn read(
        &self,
        room: &RoomId,
        read: Read,
        cursor: MessageId,
        token: &str,
    ) -> Option<Arc<HistoryPage>> {
        let mut retry = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            let page = match read {
                Read::First { binding, from } => {
                    self.history
                        .after(room, binding, cursor, Some(from), None, token)
                        .await
                }
                Read::Next => self
                    .history
                    .page(room, cursor, token)
                    .await
                    .map(Arc::new)
                    .map_err(Arc::new),
            };
            match page {
                Ok(page) => return Some(page),
                Err(error) if attempt == ATTEMPTS => {
                    tracing::warn!(error = format!("{error:#}"), %room, "reading a room back failed");
                }
                Err(_) => {
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(LAST_RETRY);
                }
            }
        }
        None
    }
}

/// Which page of a room's read-back.
#[derive(Debug, Clone, Copy)]
enum Read {
    /// From the cursor, with the earlier ids published since `from`; shared with catch-ups
    /// asking the same within the binding.
    First {
        binding: Instant,
        from: DateTime<Utc>,
    },
    /// From the cursor, by id alone.
    Next,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_starts_at_the_last_delivery_or_the_loss_whichever_is_earlier_less_the_window() {
        let window = Duration::from_secs(1);
        let lost = Utc::now();
        let earlier = gap_start(lost, Some(Instant::now() - Duration::from_secs(30)), window);
        let seconds = (lost - earlier).num_milliseconds() as f64 / 1000.0;
        assert!(
            (30.5..32.0).contains(&seconds),
            "30 s silent + 1 s: {seconds}"
        );
        let never = gap_start(lost, None, window);
        assert_eq!(never, lost - chrono::Duration::seconds(1));
        let busy = gap_start(
            lost - chrono::Duration::seconds(5),
            Some(Instant::now()),
            window,
        );
        assert_eq!(
            busy,
            lost - chrono::Duration::seconds(6),
            "the loss came first"
        );
    }

    #[test]
    fn a_gap_reported_during_a_recovery_is_merged_and_not_forgotten_by_it() {
        let gaps = Gaps::new(Duration::from_secs(1));
        gaps.reconnected();
        assert_eq!(gaps.snapshot().from, None, "no loss, nothing to recover");
        gaps.lost(Some(Instant::now() - Duration::from_secs(10)));
        gaps.lost(None);
        gaps.reconnected();
        let during = gaps.snapshot();
        let first = during.from.expect("a gap after the loss");
        assert!(
            Utc::now() - first >= chrono::Duration::seconds(11),
            "the earlier loss counts"
        );
        gaps.lost(None);
        gaps.reconnected();
        gaps.recovered(during.generation);
        assert_eq!(
            gaps.snapshot().from,
            Some(first),
            "the earlier start is kept"
        );
        gaps.recovered(gaps.snapshot().generation);
        assert_eq!(gaps.snapshot().from, None);
    }
}
