//! A plain join's recent messages: from the room's memory when it can answer, else from
//! history-service in a read shared with the other joins of the room in flight, which fills
//! the memory; and the settling read that completes a memory filled within the grace.

use std::time::{Duration, Instant};

use common::domain::RoomId;

use crate::connection::Reader;
use crate::history::HistoryPage;
use crate::rooms::ReadTicket;

/// Settling reads asked before joins go back to reading (see [`Reader::settle_later`]).
const SETTLE_ATTEMPTS: u32 = 4;

impl Reader {
    /// The room's recent messages for a plain join: from the room's memory when it is
    /// complete or provisional, else from history-service (a read shared with the other joins
    /// of the room in flight), which fills the memory (and, made within the grace, schedules
    /// the settling read).
    pub(super) async fn recent_for_join(
        &self,
        room: &RoomId,
        binding: Instant,
    ) -> anyhow::Result<HistoryPage> {
        let limit = self.hub.history.recent_limit();
        if let Some(messages) = self.hub.rooms.recent_for_join(room, limit, self.conn) {
            self.hub.metrics.joins_from_memory.inc();
            return Ok(HistoryPage::of(messages));
        }
        let ticket = self
            .hub
            .rooms
            .read_ticket(room, self.hub.broker.is_connected());
        let (page, ticket) = self
            .hub
            .history
            .recent(room, binding, &self.session.token.get(), ticket)
            .await
            .map_err(|error| anyhow::anyhow!("{error:#}"))?;
        if let Some(ticket) = ticket
            && let Some(settle_at) = self.hub.rooms.fill(room, &page.messages, ticket)
        {
            self.settle_later(room.clone(), ticket, settle_at);
        }
        // The memory holds the answer now, and what arrived meanwhile.
        Ok(
            match self.hub.rooms.recent_for_join(room, limit, self.conn) {
                Some(messages) => HistoryPage::of(messages),
                None => HistoryPage::clone(&page),
            },
        )
    }

    /// Makes the room's settling read at `at`: its answer completes the room's memory and
    /// brings the joins answered from the provisional memory what was stored after its read.
    /// A read history-service sheds is asked again a few times; if none is answered, later
    /// joins read again. One task per room binding at most (see [`crate::rooms::Rooms::fill`]).
    fn settle_later(&self, room: RoomId, early: ReadTicket, at: Instant) {
        let (hub, token) = (self.hub.clone(), self.session.token.get());
        let bound_at = early.bound_at();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let mut retry = Duration::from_millis(300);
            for attempt in 1..=SETTLE_ATTEMPTS {
                let ticket = hub
                    .rooms
                    .read_ticket(&room, hub.broker.is_connected())
                    .filter(|ticket| ticket.settles() && ticket.bound_at() == bound_at);
                let Some(ticket) = ticket else {
                    break;
                };
                match hub
                    .history
                    .recent(&room, bound_at, &token, Some(ticket))
                    .await
                {
                    Ok((page, Some(ticket))) if ticket.settles() => {
                        hub.rooms.fill(&room, &page.messages, ticket);
                        return;
                    }
                    Ok(_) => break,
                    Err(error) if attempt == SETTLE_ATTEMPTS => {
                        tracing::warn!(error = format!("{error:#}"), %room, "settling read failed; joins read again");
                    }
                    Err(_) => {
                        tokio::time::sleep(retry).await;
                        retry *= 2;
                    }
                }
            }
            hub.rooms.settle_failed(&room, bound_at);
        });
    }
}
