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
use crate::scenario::storm::{fetch, metric_sum};
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
    let mut steps = None;
    for target in targets {
        let tokens = ctx.tokens(target).await?;
        if target.protocol == Protocol::Ours {
            outcomes.push(members_phase(ctx, target, &tokens).await?);
        }
        let before = gateway_metrics(ctx, target).await;
        outcomes.push(paced_phase(ctx, target, &tokens).await);
        if let (Some(before), Some(after)) = (before, gateway_metrics(ctx, target).await) {
            steps = Some(step_table(&before, &after));
        }
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
    if let Some(steps) = steps {
        ctx.reporter.emit(&steps)?;
    }

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

/// The first gateway's metrics text, when the target has them.
async fn gateway_metrics(ctx: &Ctx, target: &Target) -> Option<String> {
    let url = target.gateway_metrics.as_ref()?;
    match fetch(&ctx.http, url).await {
        Ok(text) => Some(text),
        Err(error) => {
            eprintln!("chat-bench: the gateway's metrics at {url}: {error:#}");
            None
        }
    }
}

/// The steps of the joins the first gateway served between `before` and `after`, from its
/// `gateway_join_step_seconds` histogram: how many, the mean, and the bucket bounds the median
/// and the 99th percentile fall under.
fn step_table(before: &str, after: &str) -> Table {
    const NAME: &str = "gateway_join_step_seconds";
    let mut table = Table::new(
        "connect_steps",
        "Where the paced joins' time went on the first gateway (ms; p50/p99 as histogram bucket bounds)",
        &["step", "joins", "mean", "p50_under", "p99_under"],
    );
    let delta = |name: &str, labels: &[(&str, &str)]| {
        metric_sum(after, name, labels).unwrap_or(0.0)
            - metric_sum(before, name, labels).unwrap_or(0.0)
    };
    for step in ["authorize", "bind", "history"] {
        let labels = [("step", step)];
        let count = delta(&format!("{NAME}_count"), &labels);
        let sum = delta(&format!("{NAME}_sum"), &labels);
        let before_buckets = buckets(before, NAME, step);
        let buckets: Vec<(f64, f64)> = buckets(after, NAME, step)
            .into_iter()
            .map(|(le, n)| {
                let earlier = before_buckets
                    .iter()
                    .find(|(b, _)| *b == le)
                    .map_or(0.0, |b| b.1);
                (le, n - earlier)
            })
            .collect();
        let under = |q: f64| {
            buckets.iter().find(|(_, n)| *n >= q * count).map_or_else(
                || "-".to_string(),
                |(le, _)| match le.is_finite() {
                    true => num(le * 1000.0, 1),
                    false => "+Inf".to_string(),
                },
            )
        };
        table.push(vec![
            step.to_string(),
            num(count, 0),
            num(sum * 1000.0 / count.max(1.0), 2),
            under(0.5),
            under(0.99),
        ]);
    }
    table
}

/// The cumulative buckets `(le, count)` of histogram `name` for `step`, in ascending order.
fn buckets(text: &str, name: &str, step: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let wanted = format!("step=\"{step}\"");
    let mut found: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter(|rest| rest.contains(&wanted))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once('}')?;
            let le = labels.split("le=\"").nth(1)?.split('"').next()?;
            let le = match le {
                "+Inf" => f64::INFINITY,
                le => le.parse().ok()?,
            };
            Some((le, value.trim().parse().ok()?))
        })
        .collect();
    found.sort_by(|a, b| a.0.total_cmp(&b.0));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_steps_are_read_from_the_histogram_growth_between_two_scrapes() {
        let text = |bind: [u32; 3]| {
            format!(
                "gateway_join_step_seconds_bucket{{step=\"bind\",le=\"0.01\"}} {}\n\
                 gateway_join_step_seconds_bucket{{step=\"bind\",le=\"0.5\"}} {}\n\
                 gateway_join_step_seconds_bucket{{step=\"bind\",le=\"+Inf\"}} {}\n\
                 gateway_join_step_seconds_sum{{step=\"bind\"}} {}\n\
                 gateway_join_step_seconds_count{{step=\"bind\"}} {}\n",
                bind[0],
                bind[1],
                bind[2],
                f64::from(bind[2]) * 0.02,
                bind[2]
            )
        };
        // 100 joins between the scrapes: 98 under 10 ms, 2 under 500 ms.
        let table = step_table(&text([5, 5, 5]), &text([103, 105, 105])).text();
        let bind = table
            .lines()
            .find(|line| line.contains("bind"))
            .expect("a bind row");
        let cells: Vec<&str> = bind.split_whitespace().collect();
        assert!(cells.contains(&"100"), "{bind}");
        assert!(cells.contains(&"10.0"), "median under 10 ms: {bind}");
        assert!(cells.contains(&"500.0"), "p99 under 500 ms: {bind}");
    }
}
