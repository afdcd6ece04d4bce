//! Room fan-out: many clients spread over rooms, messages sent at rising rates by members of
//! each room in turn, and every delivery to another member timed from the message's intended
//! send time (carried in its body). On ours the clients' users are made members of their rooms
//! first, untimed, so that the fan-out measures delivery and not first joins.
//!
//! Only deliveries to the other members count: the socket.io design does not echo a message
//! to its sender (`socket.to(room)`), ours does, and that echo is extra work ours does without
//! credit. A rate counts as served when its p99 stays within the plan's limit and at least
//! 99% of the expected deliveries arrived within the drain time.
//!
//! Ours then runs the ladder once more with message changes in the traffic (`ours-rx`): a
//! share of the frames (the plan's `reaction_share`) are reactions turned on and off by the
//! sender on an earlier message of the room, each checked with history-service and fanned out
//! to the room as a `reactions` frame. Its table puts the messages' latency, the reactions'
//! ack latency and the reaction frames delivered next to the plain run's figures.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::{Fleet, Observer};
use crate::measure::{CpuMeter, Latency, histogram, paced, record};
use crate::report::{Table, num};
use crate::scenario::rooms::become_members;
use crate::scenario::{
    AckTimes, Better, Ctx, ms_or_dash, open_fleet, settle_and_clear, warn_failures, warn_refusals,
};
use crate::target::Target;
use crate::wire::{Protocol, Stamp};

/// Deliveries of one step.
struct StepDeliveries {
    latency: Mutex<Histogram<u64>>,
    delivered: AtomicU64,
}

/// The emoji of the mixed run, one per sender in turn: well under the 20 distinct emoji a
/// message may carry.
const EMOJI: [&str; 8] = ["👍", "❤️", "😂", "🎉", "👀", "🙏", "🔥", "✅"];

/// Records every delivery (and every ack) into its step.
struct Deliveries {
    origin: Instant,
    steps: Vec<StepDeliveries>,
    acks: AckTimes,
    /// Acks of reactions, by step.
    reaction_acks: AckTimes,
    /// The tag of reactions' client ids (see [`Stamp::client_id`]).
    reaction_tag: String,
    /// What the client ids of the rooms' anchor messages start with.
    anchor_tag: String,
    /// Message id of each acked anchor, by its client id.
    anchors: Mutex<HashMap<String, String>>,
    /// `reactions` frames received, all steps together.
    reaction_frames: AtomicU64,
}

impl Observer for Deliveries {
    fn on_message(&self, receiver: u32, body: &str, at: Instant) {
        let Some(stamp) = Stamp::parse(body) else {
            return;
        };
        if stamp.sender == receiver {
            return;
        }
        let Some(step) = self.steps.get(stamp.step as usize) else {
            return;
        };
        let latency = (at - self.origin).saturating_sub(Duration::from_nanos(stamp.intended_ns));
        record(
            &mut step.latency.lock().unwrap_or_else(PoisonError::into_inner),
            latency,
        );
        step.delivered.fetch_add(1, Ordering::Relaxed);
    }

    fn on_ack(&self, _: u32, client_id: &str, id: &str, at: Instant) {
        if client_id.starts_with(&self.anchor_tag) {
            self.anchors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(client_id.to_string(), id.to_string());
        } else if client_id.starts_with(&self.reaction_tag) {
            self.reaction_acks.record(client_id, at);
        } else {
            self.acks.record(client_id, at);
        }
    }

    fn on_reactions(&self, _: u32, _: Instant) {
        self.reaction_frames.fetch_add(1, Ordering::Relaxed);
    }
}

struct Step {
    rate: f64,
    sent: u64,
    reactions_sent: u64,
    reaction_frames: u64,
    reaction_ack: Latency,
    not_queued: u64,
    expected: u64,
    delivered: u64,
    deliveries_per_s: f64,
    latency: Latency,
    ack: Latency,
    cpu: f64,
    closed: usize,
    served: bool,
}

pub async fn run(ctx: &mut Ctx, targets: &[&Target]) -> anyhow::Result<()> {
    let plan = &ctx.plan.fanout;
    let mut table = Table::new(
        "fanout",
        &format!(
            "Room fan-out: {} clients in {} rooms (latency in ms)",
            plan.clients, plan.rooms
        ),
        &[
            "target",
            "msgs_per_s",
            "sent",
            "expected",
            "delivered",
            "deliveries_per_s",
            "p50",
            "p99",
            "p999",
            "max",
            "ack_p50",
            "ack_p99",
            "server_cpu_pct",
            "closed",
            "served",
        ],
    );
    let limit = plan.p99_limit_ms;
    // Per target: the best served step's (deliveries/s, p99).
    let mut best: Vec<(String, f64, f64)> = Vec::new();
    for target in targets {
        let steps = run_target(ctx, target, 0.0).await?;
        settle_and_clear(ctx, target).await?;
        let mut target_best = (0.0, 0.0);
        for step in &steps {
            if step.served && step.deliveries_per_s > target_best.0 {
                target_best = (step.deliveries_per_s, step.latency.p99);
            }
            table.push(vec![
                target.name.clone(),
                num(step.rate, 0),
                step.sent.to_string(),
                step.expected.to_string(),
                step.delivered.to_string(),
                num(step.deliveries_per_s, 0),
                num(step.latency.p50, 1),
                num(step.latency.p99, 1),
                num(step.latency.p999, 1),
                num(step.latency.max, 1),
                ms_or_dash(&step.ack, |l| l.p50),
                ms_or_dash(&step.ack, |l| l.p99),
                num(step.cpu, 0),
                step.closed.to_string(),
                if step.served { "yes" } else { "no" }.to_string(),
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
        "`served`: p99 ≤ {limit} ms and ≥ 99% of the deliveries to other members arrived. \
         The ladder stops after two rates in a row that are not served."
    ))?;
    if plan.reaction_share > 0.0
        && let Some(ours) = targets.iter().find(|t| t.name == "ours")
    {
        let mixed = Target {
            name: "ours-rx".into(),
            ..(*ours).clone()
        };
        let steps = run_target(ctx, &mixed, plan.reaction_share).await?;
        settle_and_clear(ctx, &mixed).await?;
        mixed_table(ctx, &mixed, &steps)?;
    }
    let value = |name: &str| best.iter().find(|(n, ..)| n == name);
    if let (Some(ours), Some(peer)) = (value("ours"), value("peer")) {
        let two = value("ours-2gw");
        ctx.summary.add(
            "fanout",
            &format!("deliveries/s at p99 ≤ {limit} ms"),
            Better::Higher,
            ours.1,
            two.map(|t| t.1),
            peer.1,
        );
        ctx.summary.add(
            "fanout",
            "p99 ms at that rate",
            Better::Lower,
            ours.2,
            two.map(|t| t.2),
            peer.2,
        );
    }
    Ok(())
}

/// The mixed run's table: frames offered (messages and reactions), message latency and
/// reaction acks, to read next to the plain `ours` rows.
fn mixed_table(ctx: &mut Ctx, target: &Target, steps: &[Step]) -> anyhow::Result<()> {
    let plan = &ctx.plan.fanout;
    let mut table = Table::new(
        "fanout_changes",
        &format!(
            "Room fan-out with {:.0}% reactions: {} clients in {} rooms (latency in ms)",
            plan.reaction_share * 100.0,
            plan.clients,
            plan.rooms
        ),
        &[
            "target",
            "frames_per_s",
            "messages_sent",
            "reactions_sent",
            "deliveries_per_s",
            "p50",
            "p99",
            "ack_p99",
            "reaction_ack_p50",
            "reaction_ack_p99",
            "reaction_frames",
            "server_cpu_pct",
            "served",
        ],
    );
    for step in steps {
        table.push(vec![
            target.name.clone(),
            num(step.rate, 0),
            step.sent.to_string(),
            step.reactions_sent.to_string(),
            num(step.deliveries_per_s, 0),
            num(step.latency.p50, 1),
            num(step.latency.p99, 1),
            ms_or_dash(&step.ack, |l| l.p99),
            ms_or_dash(&step.reaction_ack, |l| l.p50),
            ms_or_dash(&step.reaction_ack, |l| l.p99),
            step.reaction_frames.to_string(),
            num(step.cpu, 0),
            if step.served { "yes" } else { "no" }.to_string(),
        ]);
    }
    ctx.reporter.emit(&table)?;
    ctx.reporter.note(
        "`frames_per_s` counts messages and reactions together; `deliveries_per_s` counts \
         messages delivered to other members and `reactions` frames delivered. Message \
         latency (`p50`, `p99`) and `served` are as in the plain table, whose `ours` rows \
         ran the same rates without reactions.",
    )?;
    Ok(())
}

/// Sends one message in each room and waits for their acks: the messages the mixed run
/// reacts to. Answers their ids in the order of `rooms`.
async fn anchor_messages(
    fleet: &Fleet,
    deliveries: &Deliveries,
    protocol: Protocol,
    rooms: &[(String, Vec<usize>)],
) -> anyhow::Result<Vec<String>> {
    let client_id = |r: usize| format!("{}{r}", deliveries.anchor_tag);
    for (r, (name, members)) in rooms.iter().enumerate() {
        anyhow::ensure!(
            fleet.send(members[0], protocol.send(name, &client_id(r), "anchor")),
            "the anchor of {name} found its connection's queue full"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let acked = deliveries
            .anchors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if acked.len() >= rooms.len() {
            // Acked means published; a reaction to a message history-service has not stored
            // yet is refused `not_found`, so give it a moment to store them.
            tokio::time::sleep(Duration::from_secs(2)).await;
            return (0..rooms.len())
                .map(|r| {
                    acked
                        .get(&client_id(r))
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("no ack for the anchor of room {r}"))
                })
                .collect();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} anchor messages acked within 30 s",
            acked.len(),
            rooms.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One pass of the rate ladder; `reaction_share` of the frames are reactions (0: none).
async fn run_target(ctx: &Ctx, target: &Target, reaction_share: f64) -> anyhow::Result<Vec<Step>> {
    let plan = &ctx.plan.fanout;
    let tokens = ctx.tokens(target).await?;
    let room_count = plan.rooms;
    // Members first, as people in a chat are: the fan-out measures delivery, not first joins
    // (each writes a membership, which history-service admits a few dozen a second here).
    let pairs: BTreeSet<(usize, String)> = (0..plan.clients)
        .map(|i| (i % tokens.len(), format!("fan-{}", i % room_count)))
        .collect();
    become_members(ctx, target, &tokens, &pairs).await?;
    let built = open_fleet(
        target,
        &tokens,
        0..plan.clients,
        ctx.plan.connect_concurrency,
        |i| format!("fan-{}", i % room_count),
    )
    .await;
    warn_failures(target, "fan-out", &built);
    let origin = Instant::now();
    let deliveries = Arc::new(Deliveries {
        origin,
        steps: plan
            .rates
            .iter()
            .map(|_| StepDeliveries {
                latency: Mutex::new(histogram()),
                delivered: AtomicU64::new(0),
            })
            .collect(),
        acks: AckTimes::new(origin, plan.rates.len()),
        reaction_acks: AckTimes::new(origin, plan.rates.len()),
        reaction_tag: format!("{}-react", target.name),
        anchor_tag: format!("{}-anchor-", target.name),
        anchors: Mutex::new(HashMap::new()),
        reaction_frames: AtomicU64::new(0),
    });
    let mut fleet = Fleet::new(target.protocol, deliveries.clone());
    // Members of each room, as fleet indices.
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); room_count];
    for (i, ws) in built.connections {
        members[i % room_count].push(fleet.add(ws));
    }
    let rooms: Vec<(String, Vec<usize>)> = members
        .into_iter()
        .enumerate()
        .filter(|(_, m)| m.len() >= 2)
        .map(|(r, m)| (format!("fan-{r}"), m))
        .collect();
    anyhow::ensure!(
        !rooms.is_empty(),
        "{}: no room has two connected members",
        target.name
    );

    let anchors = if reaction_share > 0.0 {
        anchor_messages(&fleet, &deliveries, target.protocol, &rooms).await?
    } else {
        Vec::new()
    };
    // Each sender's reaction, on or off, so that reactions alternate per sender.
    let mut reacted = vec![false; fleet.len()];

    let mut steps = Vec::new();
    let mut not_served_in_a_row = 0;
    for (index, &rate) in plan.rates.iter().enumerate() {
        let record = &deliveries.steps[index];
        let closed_before = fleet.closed();
        let cpu = CpuMeter::start(&target.pids());
        let start = Instant::now();
        let (mut sent, mut not_queued, mut expected) = (0u64, 0u64, 0u64);
        let mut reactions_sent = 0u64;
        let frames_before = deliveries.reaction_frames.load(Ordering::Relaxed);
        paced(rate, plan.step, |k, at| {
            let room = k as usize % rooms.len();
            let (name, room_members) = &rooms[room];
            let turn = k as usize / rooms.len();
            let sender = room_members[turn % room_members.len()];
            let stamp = Stamp {
                step: index as u32,
                sender: sender as u32,
                intended_ns: (at - origin).as_nanos() as u64,
            };
            // Spread the reactions evenly: frame k is one when the running share steps up.
            if ((k + 1) as f64 * reaction_share).floor() > (k as f64 * reaction_share).floor()
                && let Some(anchor) = anchors.get(room)
            {
                reacted[sender] = !reacted[sender];
                let frame = target.protocol.react(
                    name,
                    anchor,
                    &stamp.client_id(&deliveries.reaction_tag),
                    EMOJI[sender % EMOJI.len()],
                    reacted[sender],
                );
                if frame.is_some_and(|frame| fleet.send(sender, frame)) {
                    reactions_sent += 1;
                } else {
                    not_queued += 1;
                }
                return;
            }
            let frame = target.protocol.send(
                name,
                &stamp.client_id(&target.name),
                &stamp.body(plan.body_bytes),
            );
            if fleet.send(sender, frame) {
                sent += 1;
                expected += room_members.len() as u64 - 1;
            } else {
                not_queued += 1;
            }
        })
        .await;
        let deadline = Instant::now() + plan.drain;
        while Instant::now() < deadline && record.delivered.load(Ordering::Relaxed) < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = start.elapsed();
        let cpu = cpu.percent();
        let delivered = record.delivered.load(Ordering::Relaxed);
        let reaction_frames = deliveries.reaction_frames.load(Ordering::Relaxed) - frames_before;
        let latency = Latency::of(
            &record
                .latency
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let served = expected > 0
            && delivered as f64 >= 0.99 * expected as f64
            && latency.p99 <= plan.p99_limit_ms;
        steps.push(Step {
            rate,
            sent,
            reactions_sent,
            reaction_frames,
            reaction_ack: deliveries.reaction_acks.latency(index),
            not_queued,
            expected,
            delivered,
            // Over the sending time plus however long the last deliveries took.
            deliveries_per_s: (delivered + reaction_frames) as f64
                / elapsed.as_secs_f64().max(plan.step.as_secs_f64()),
            latency,
            ack: deliveries.acks.latency(index),
            cpu,
            closed: fleet.closed() - closed_before,
            served,
        });
        not_served_in_a_row = if served { 0 } else { not_served_in_a_row + 1 };
        if not_served_in_a_row >= 2 || fleet.closed() * 2 > fleet.len() {
            break;
        }
        // Late deliveries of this step land in its own record and do not disturb the next.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    warn_refusals(target, &fleet);
    fleet.shutdown().await;
    Ok(steps)
}
