//! Idle connections: authenticated, joined connections that send nothing, built up level by
//! level; at each level the resident memory of the processes holding them is read, and the
//! growth over the empty server is divided by the number of connections.

use std::sync::Arc;

use crate::client::{Fleet, Ignore};
use crate::measure::total_rss_kib;
use crate::report::{Table, num};
use crate::scenario::{Better, Ctx, open_fleet, warn_failures};
use crate::target::Target;

pub async fn run(ctx: &mut Ctx, targets: &[&Target]) -> anyhow::Result<()> {
    let plan = &ctx.plan.idle;
    let mut table = Table::new(
        "idle",
        "Idle connections: server memory",
        &[
            "target",
            "connections",
            "open",
            "failed",
            "server_rss_mib",
            "baseline_rss_mib",
            "kib_per_connection",
        ],
    );
    // Per target: (connections, KiB per connection) at each level.
    let mut per_target: Vec<Vec<(usize, f64)>> = Vec::new();
    for target in targets {
        let tokens = ctx.tokens(target).await?;
        let holders = &target.connection_holders;
        let baseline = total_rss_kib(holders).unwrap_or(0);
        let mut fleet = Fleet::new(target.protocol, Arc::new(Ignore));
        let mut opened = 0;
        let mut failed = 0;
        let mut points = Vec::new();
        for &level in &plan.levels {
            let rooms = plan.rooms;
            let built = open_fleet(
                target,
                &tokens,
                opened..level,
                ctx.plan.connect_concurrency,
                |i| format!("idle-{}", i % rooms),
            )
            .await;
            warn_failures(target, "idle", &built);
            opened = level;
            failed += built.failed;
            for (_, ws) in built.connections {
                fleet.add(ws);
            }
            tokio::time::sleep(plan.settle).await;
            let open = fleet.len() - fleet.closed();
            let rss = total_rss_kib(holders).unwrap_or(0);
            let per_connection = if open > 0 {
                rss.saturating_sub(baseline) as f64 / open as f64
            } else {
                0.0
            };
            points.push((level, per_connection));
            table.push(vec![
                target.name.clone(),
                level.to_string(),
                open.to_string(),
                failed.to_string(),
                num(rss as f64 / 1024.0, 1),
                num(baseline as f64 / 1024.0, 1),
                num(per_connection, 2),
            ]);
        }
        fleet.shutdown().await;
        per_target.push(points);
        // Let the server notice the closes before the next target or scenario.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    ctx.reporter.emit(&table)?;
    if !plan.skipped.is_empty() {
        ctx.reporter.note(&format!(
            "Idle levels {:?} were not run: the open-files limit of this machine caps one \
             process at {} connections.",
            plan.skipped,
            plan.levels.last().copied().unwrap_or(0)
        ))?;
    }
    if let [ours, peer] = per_target.as_slice()
        && let (Some(o), Some(p)) = (ours.last(), peer.last())
    {
        ctx.summary.add(
            "idle",
            &format!("KiB per idle connection at {}", o.0),
            Better::Lower,
            o.1,
            None,
            p.1,
        );
    }
    Ok(())
}
