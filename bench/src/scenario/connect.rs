//! Connect rate: new connections that authenticate and join a room.
//!
//! A connection joins a room its user is a member of, as a client reconnecting does: on ours,
//! a `members` phase first makes every user of the scenario a member of the rooms its
//! connections will join (`POST /api/rooms/{room}/join`, 16 at once) and reports how many of
//! those first joins history-service admitted a second; the peer has no membership.
//!
//! Two measurements per target then: `paced` opens connections open-loop at a fixed rate and reports
//! the latency of each step (so a server that falls behind shows as latency, not as a slower
//! schedule); `burst` opens them as fast as a fixed number of concurrent connectors allows and
//! reports the rate reached. Connections stay open until the measurement ends.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::client::{self, Ws};
use crate::measure::{Latency, SharedHistogram, paced};
use crate::report::{Table, num};
use crate::scenario::rooms::{MEMBER_JOINS_AT_ONCE, become_members};
use crate::scenario::{Better, Ctx, open_fleet, warn_failures};
use crate::target::Target;
use crate::wire::Protocol;

struct Outcome {
    target: String,
    phase: &'static str,
    offered: String,
    connects: usize,
    failed: usize,
    per_second: f64,
    ready: Latency,
    join: Latency,
}

pub async fn run(ctx: &mut Ctx, targets: &[&Target]) -> anyhow::Result<()> {
    let mut outcomes = Vec::new();
    for target in targets {
        let tokens = ctx.tokens(target).await?;
        if target.protocol == Protocol::Ours {
            outcomes.push(members_phase(ctx, target, &tokens).await?);
        }
        outcomes.push(paced_phase(ctx, target, &tokens).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
        outcomes.push(burst_phase(ctx, target, &tokens).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let mut table = Table::new(
        "connect",
        "Connect rate: authenticate + join (latencies in ms)",
        &[
            "target",
            "phase",
            "offered_per_s",
            "connects",
            "failed",
            "connects_per_s",
            "ready_p50",
            "ready_p99",
            "join_p50",
            "join_p99",
        ],
    );
    for o in &outcomes {
        table.push(vec![
            o.target.clone(),
            o.phase.to_string(),
            o.offered.clone(),
            o.connects.to_string(),
            o.failed.to_string(),
            num(o.per_second, 0),
            num(o.ready.p50, 2),
            num(o.ready.p99, 2),
            num(o.join.p50, 2),
            num(o.join.p99, 2),
        ]);
    }
    ctx.reporter.emit(&table)?;

    let find = |target: &str, phase: &str| {
        outcomes
            .iter()
            .find(|o| o.target == target && o.phase == phase)
    };
    if let (Some(o), Some(p)) = (find("ours", "burst"), find("peer", "burst")) {
        ctx.summary.add(
            "connect",
            "connects/s (authenticate + join)",
            Better::Higher,
            o.per_second,
            None,
            p.per_second,
        );
    }
    if let (Some(o), Some(p)) = (find("ours", "paced"), find("peer", "paced")) {
        let at = &o.offered;
        ctx.summary.add(
            "connect",
            &format!("upgrade p99 ms at {at}/s"),
            Better::Lower,
            o.ready.p99,
            None,
            p.ready.p99,
        );
        ctx.summary.add(
            "connect",
            &format!("join p99 ms at {at}/s"),
            Better::Lower,
            o.join.p99,
            None,
            p.join.p99,
        );
    }
    Ok(())
}

/// Makes the user of every connection the other phases open a member of its room.
async fn members_phase(ctx: &Ctx, target: &Target, tokens: &[String]) -> anyhow::Result<Outcome> {
    let plan = &ctx.plan.connect;
    let connections = plan.paced_count.max(plan.burst_count);
    let pairs: BTreeSet<(usize, String)> = (0..connections)
        .map(|k| (k % tokens.len(), format!("conn-{}", k % plan.rooms)))
        .collect();
    let start = Instant::now();
    let join = become_members(ctx, target, tokens, &pairs).await?;
    Ok(Outcome {
        target: target.name.clone(),
        phase: "members",
        offered: format!("{MEMBER_JOINS_AT_ONCE} at once"),
        connects: pairs.len(),
        failed: 0,
        per_second: pairs.len() as f64 / start.elapsed().as_secs_f64().max(1e-3),
        ready: Latency::of(&SharedHistogram::default().snapshot()),
        join: Latency::of(&join.snapshot()),
    })
}

async fn paced_phase(ctx: &Ctx, target: &Target, tokens: &[String]) -> Outcome {
    let plan = &ctx.plan.connect;
    let ready = Arc::new(SharedHistogram::default());
    let join = Arc::new(SharedHistogram::default());
    let held: Arc<Mutex<Vec<Ws>>> = Arc::default();
    let mut failures = Vec::new();
    let mut tasks = JoinSet::new();
    let rooms = plan.rooms;
    let start = Instant::now();
    paced(
        plan.rate,
        Duration::from_secs_f64(plan.paced_count as f64 / plan.rate),
        |k, intended| {
            let k = k as usize;
            let (protocol, addr) = (target.protocol, target.gateway(k));
            let token = tokens[k % tokens.len()].clone();
            let (ready, join, held) = (ready.clone(), join.clone(), held.clone());
            tasks.spawn(async move {
                let mut opened = client::open(protocol, addr, &token).await?;
                // Timed from the intended start: a connect the client could not start on
                // time because the machine was busy still counts its wait.
                ready.record(Instant::now().saturating_duration_since(intended));
                let joined =
                    client::join(&mut opened.ws, protocol, &format!("conn-{}", k % rooms)).await?;
                join.record(joined);
                held.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(opened.ws);
                anyhow::Ok(Instant::now())
            });
        },
    )
    .await;
    let mut last = start;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(at)) => last = last.max(at),
            Ok(Err(error)) => failures.push(format!("{error:#}")),
            Err(error) => failures.push(error.to_string()),
        }
    }
    let connects = held.lock().unwrap_or_else(PoisonError::into_inner).len();
    if let Some(first) = failures.first() {
        eprintln!(
            "chat-bench: {}: {} paced connects failed; first error: {first}",
            target.name,
            failures.len()
        );
    }
    held.lock().unwrap_or_else(PoisonError::into_inner).clear();
    Outcome {
        target: target.name.clone(),
        phase: "paced",
        offered: num(plan.rate, 0),
        connects,
        failed: failures.len(),
        per_second: connects as f64 / (last - start).as_secs_f64().max(1e-3),
        ready: Latency::of(&ready.snapshot()),
        join: Latency::of(&join.snapshot()),
    }
}

async fn burst_phase(ctx: &Ctx, target: &Target, tokens: &[String]) -> Outcome {
    let plan = &ctx.plan.connect;
    let rooms = plan.rooms;
    let built = open_fleet(
        target,
        tokens,
        0..plan.burst_count,
        plan.burst_concurrency,
        |i| format!("conn-{}", i % rooms),
    )
    .await;
    warn_failures(target, "burst", &built);
    let outcome = Outcome {
        target: target.name.clone(),
        phase: "burst",
        offered: format!("{} at once", plan.burst_concurrency),
        connects: built.connections.len(),
        failed: built.failed,
        per_second: built.connections.len() as f64 / built.elapsed.as_secs_f64().max(1e-3),
        ready: built.ready(),
        join: built.join(),
    };
    drop(built);
    outcome
}
