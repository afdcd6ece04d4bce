//! Persistence: messages sent at rising rates, each sender alone in its room so the numbers
//! are about the write path, not fan-out. The target's stored documents are counted every
//! 50 ms or, when counting gets slow, a quarter of the time at most (`$collStats`, see
//! [`stored_documents`]), in a collection emptied before each step; message `k` of a step counts as stored at the first poll that sees at least
//! `k + 1` new documents (messages are stored about in order), which gives the send to
//! stored lag to within one poll interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::client::Fleet;
use crate::measure::{CpuMeter, Latency, histogram, paced, record};
use crate::report::{Table, num};
use crate::scenario::{
    AckTimes, Better, Ctx, clear, messages, ms_or_dash, open_fleet, settle_and_clear,
    stored_documents, warn_failures, warn_refusals,
};
use crate::target::Target;
use crate::wire::Stamp;

/// One count of the collection: when it answered, and how many documents were new.
type Poll = (Duration, u64);

/// When each message counts as stored, from the intended send times and the polls.
pub fn store_lags(intended: &[Duration], polls: &[Poll]) -> (hdrhistogram::Histogram<u64>, u64) {
    let mut lags = histogram();
    let mut stored = 0;
    let mut seen = 0;
    let mut poll = 0;
    for (k, &sent) in intended.iter().enumerate() {
        let needed = k as u64 + 1;
        while poll < polls.len() && seen.max(polls[poll].1) < needed {
            seen = seen.max(polls[poll].1);
            poll += 1;
        }
        let Some(&(at, _)) = polls.get(poll) else {
            break;
        };
        record(&mut lags, at.saturating_sub(sent));
        stored += 1;
    }
    (lags, stored)
}

/// Messages stored per second: from the poll that first saw a stored message to the one that
/// saw the last, so neither the time before the first write nor the lag of the last one
/// dilutes it.
pub fn store_rate(polls: &[Poll], stored: u64) -> f64 {
    let first = polls.iter().find(|(_, n)| *n >= 1);
    let last = polls.iter().find(|(_, n)| *n >= stored);
    match (first, last) {
        (Some(&(from, from_count)), Some(&(to, _))) if to > from => {
            (stored - from_count) as f64 / (to - from).as_secs_f64()
        }
        _ => 0.0,
    }
}

struct Step {
    rate: f64,
    sent: u64,
    not_queued: u64,
    stored: u64,
    stored_per_s: f64,
    lag: Latency,
    ack: Latency,
    cpu: f64,
}

pub async fn run(ctx: &mut Ctx, targets: &[&Target]) -> anyhow::Result<()> {
    let mut table = Table::new(
        "persistence",
        "Persistence: messages stored in MongoDB (lag in ms)",
        &[
            "target",
            "offered_per_s",
            "sent",
            "stored",
            "stored_per_s",
            "lag_p50",
            "lag_p99",
            "lag_max",
            "ack_p50",
            "ack_p99",
            "server_cpu_pct",
            "sustained",
        ],
    );
    let mut best: Vec<(String, f64, f64)> = Vec::new();
    for target in targets {
        let steps = run_target(ctx, target).await?;
        settle_and_clear(ctx, target).await?;
        let limit = ctx.plan.persistence.lag_limit_ms;
        let mut target_best = (0.0, 0.0);
        for step in &steps {
            let sustained = step.sent > 0 && step.stored == step.sent && step.lag.p99 < limit;
            if sustained && step.rate > target_best.0 {
                target_best = (step.rate, step.lag.p99);
            }
            table.push(vec![
                target.name.clone(),
                num(step.rate, 0),
                step.sent.to_string(),
                step.stored.to_string(),
                num(step.stored_per_s, 0),
                num(step.lag.p50, 1),
                num(step.lag.p99, 1),
                num(step.lag.max, 1),
                ms_or_dash(&step.ack, |l| l.p50),
                ms_or_dash(&step.ack, |l| l.p99),
                num(step.cpu, 0),
                if sustained { "yes" } else { "no" }.to_string(),
            ]);
            if step.not_queued > 0 {
                eprintln!(
                    "chat-bench: {}: {} sends at {}/s found the connection's queue full",
                    target.name, step.not_queued, step.rate
                );
            }
        }
        best.push((target.name.clone(), target_best.0, target_best.1));
    }
    ctx.reporter.emit(&table)?;
    ctx.reporter.note(&format!(
        "`sustained`: everything sent was stored within the drain time and the lag p99 stayed \
         under {} ms.",
        ctx.plan.persistence.lag_limit_ms
    ))?;
    if let [(_, ours, ours_lag), (_, peer, peer_lag)] = best.as_slice() {
        ctx.summary.add(
            "persistence",
            "highest rate stored in full, lag p99 < 1 s (msgs/s)",
            Better::Higher,
            *ours,
            None,
            *peer,
        );
        ctx.summary.add(
            "persistence",
            "lag p99 ms at that rate",
            Better::Lower,
            *ours_lag,
            None,
            *peer_lag,
        );
    }
    Ok(())
}

async fn run_target(ctx: &Ctx, target: &Target) -> anyhow::Result<Vec<Step>> {
    let plan = &ctx.plan.persistence;
    let tokens = ctx.tokens(target).await?;
    let built = open_fleet(
        target,
        &tokens,
        0..plan.senders,
        ctx.plan.connect_concurrency,
        |i| format!("persist-{i}"),
    )
    .await;
    warn_failures(target, "persistence", &built);
    let origin = Instant::now();
    let acks = Arc::new(AckTimes::new(origin, plan.rates.len()));
    let mut fleet = Fleet::new(target.protocol, acks.clone());
    let mut rooms = Vec::new();
    for (i, ws) in built.connections {
        fleet.add(ws);
        rooms.push(format!("persist-{i}"));
    }
    anyhow::ensure!(
        !fleet.is_empty(),
        "{}: no sender could connect",
        target.name
    );
    let messages = messages(ctx, target);
    let count = {
        let messages = messages.clone();
        move || {
            let messages = messages.clone();
            async move { stored_documents(&messages).await }
        }
    };
    let mut steps = Vec::new();
    for (step_index, &rate) in plan.rates.iter().enumerate() {
        // Each step starts from an empty collection, so polling costs the same at every
        // rate (see `stored_documents`). The previous step's messages are all stored.
        clear(&messages).await?;
        let before = count().await?;
        let stop = CancellationToken::new();
        let start = Instant::now();
        // The latest count, for the wait after the step: one poller for both.
        let latest = Arc::new(AtomicU64::new(0));
        let poller = tokio::spawn({
            let (stop, count, poll, latest) =
                (stop.clone(), count.clone(), plan.poll, latest.clone());
            async move {
                let mut polls: Vec<Poll> = Vec::new();
                while !stop.is_cancelled() {
                    let began = Instant::now();
                    if let Ok(n) = count().await {
                        let n = n.saturating_sub(before);
                        latest.store(n, Ordering::Relaxed);
                        polls.push((start.elapsed(), n));
                    }
                    // A count costs the database in proportion to what is stored: busy with
                    // counting at most a quarter of the time, however many documents.
                    tokio::time::sleep(poll.max(began.elapsed() * 3)).await;
                }
                polls
            }
        });
        let cpu = CpuMeter::start(&target.pids());
        let mut intended = Vec::new();
        let mut not_queued = 0;
        let senders = fleet.len();
        paced(rate, plan.step, |k, at| {
            let sender = (k as usize) % senders;
            let stamp = Stamp {
                step: step_index as u32,
                sender: sender as u32,
                intended_ns: (at - origin).as_nanos() as u64,
            };
            let frame = target.protocol.send(
                &rooms[sender],
                &stamp.client_id(&target.name),
                &stamp.body(64),
            );
            if fleet.send(sender, frame) {
                intended.push(at - start);
            } else {
                not_queued += 1;
            }
        })
        .await;
        let sent = intended.len() as u64;
        // Wait for the database to catch up, bounded by the drain time.
        let deadline = Instant::now() + plan.drain;
        while Instant::now() < deadline {
            if latest.load(Ordering::Relaxed) >= sent {
                break;
            }
            tokio::time::sleep(plan.poll).await;
        }
        tokio::time::sleep(plan.poll * 2).await;
        let cpu = cpu.percent();
        stop.cancel();
        let polls = poller.await?;
        let (lags, stored) = store_lags(&intended, &polls);
        steps.push(Step {
            rate,
            sent,
            not_queued,
            stored,
            stored_per_s: store_rate(&polls, stored),
            lag: Latency::of(&lags),
            ack: acks.latency(step_index),
            cpu,
        });
        // A target that could not keep up at this rate will not at a higher one.
        if stored < sent {
            break;
        }
    }
    warn_refusals(target, &fleet);
    fleet.shutdown().await;
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn each_message_is_stored_at_the_first_poll_that_counts_it() {
        let intended = [ms(0), ms(10), ms(20), ms(30)];
        let polls = [(ms(50), 1), (ms(100), 3), (ms(150), 3)];
        let (lags, stored) = store_lags(&intended, &polls);
        assert_eq!(stored, 3);
        let latency = Latency::of(&lags);
        assert_eq!(latency.count, 3);
        // Lags 50, 90 and 80 ms.
        assert!((latency.max - 90.0).abs() < 0.1, "{latency:?}");
    }

    #[test]
    fn the_store_rate_spans_first_to_last_write() {
        let polls = [(ms(0), 0), (ms(100), 10), (ms(600), 60), (ms(1100), 110)];
        assert!((store_rate(&polls, 110) - 100.0).abs() < 0.01);
        assert_eq!(store_rate(&[], 0), 0.0);
    }

    #[test]
    fn a_count_that_goes_down_does_not_unstore_messages() {
        let intended = [ms(0), ms(0)];
        let polls = [(ms(10), 2), (ms(20), 1)];
        assert_eq!(store_lags(&intended, &polls).1, 2);
    }
}
