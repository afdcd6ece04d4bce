//! Auth under load: the process that hashes passwords is probed (`/health/live` and the token
//! check of `/api/auth/me`) at a steady rate, first alone and then while concurrent login loops
//! keep bcrypt busy at the default cost. If hashing blocked the threads that serve requests,
//! the probes' p99 would jump in the second phase.
//!
//! Both targets run a separate instance with the default cost for this, so the other
//! scenarios' users can be created cheaply.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::accounts::{self, http_client};
use crate::measure::{Latency, SharedHistogram, paced};
use crate::report::{Table, num};
use crate::scenario::{Better, Ctx};
use crate::target::Target;

/// Probes in flight at once; past that a probe is counted as skipped.
const PROBES_IN_FLIGHT: usize = 256;

struct Phase {
    target: String,
    name: &'static str,
    logins: u64,
    login_errors: u64,
    logins_per_s: f64,
    login: Latency,
    health: Latency,
    me: Latency,
    probe_errors: u64,
}

pub async fn run(ctx: &mut Ctx, targets: &[&Target]) -> anyhow::Result<()> {
    let mut phases = Vec::new();
    for target in targets {
        let base = &target.auth_slow;
        let users = accounts::usernames(&format!("{}s", ctx.prefix), ctx.plan.auth.users);
        accounts::sign_up_all(&ctx.http, base, &users, 4).await?;
        let token = accounts::log_in(&ctx.http, base, &users[0]).await?;
        for with_logins in [false, true] {
            phases.push(phase(ctx, target, &users, &token, with_logins).await?);
        }
    }

    let mut table = Table::new(
        "auth",
        "Auth under load: probes while logins saturate bcrypt (latency in ms)",
        &[
            "target",
            "phase",
            "logins",
            "logins_per_s",
            "login_p50",
            "login_p99",
            "health_p50",
            "health_p99",
            "health_max",
            "me_p50",
            "me_p99",
            "errors",
        ],
    );
    for p in &phases {
        table.push(vec![
            p.target.clone(),
            p.name.to_string(),
            p.logins.to_string(),
            num(p.logins_per_s, 1),
            num(p.login.p50, 1),
            num(p.login.p99, 1),
            num(p.health.p50, 2),
            num(p.health.p99, 2),
            num(p.health.max, 2),
            num(p.me.p50, 2),
            num(p.me.p99, 2),
            (p.login_errors + p.probe_errors).to_string(),
        ]);
    }
    ctx.reporter.emit(&table)?;
    let find = |target: &str| {
        phases
            .iter()
            .find(|p| p.target == target && p.name == "logins")
    };
    if let (Some(o), Some(p)) = (find("ours"), find("peer")) {
        ctx.summary.add(
            "auth",
            "logins/s at bcrypt cost 12",
            Better::Higher,
            o.logins_per_s,
            None,
            p.logins_per_s,
        );
        ctx.summary.add(
            "auth",
            "/health/live p99 ms during logins",
            Better::Lower,
            o.health.p99,
            None,
            p.health.p99,
        );
        ctx.summary.add(
            "auth",
            "token check (/api/auth/me) p99 ms during logins",
            Better::Lower,
            o.me.p99,
            None,
            p.me.p99,
        );
    }
    Ok(())
}

async fn phase(
    ctx: &Ctx,
    target: &Target,
    users: &[String],
    token: &str,
    with_logins: bool,
) -> anyhow::Result<Phase> {
    let plan = &ctx.plan.auth;
    let base = target.auth_slow.clone();
    let deadline = Instant::now() + plan.phase;

    let login = Arc::new(SharedHistogram::default());
    let (logins, login_errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = JoinSet::new();
    if with_logins {
        // Its own client, so logins and probes do not share pooled connections.
        let http = http_client()?;
        for w in 0..plan.login_workers {
            let (http, base, user) = (http.clone(), base.clone(), users[w % users.len()].clone());
            let (login, logins, login_errors) =
                (login.clone(), logins.clone(), login_errors.clone());
            workers.spawn(async move {
                while Instant::now() < deadline {
                    let start = Instant::now();
                    match accounts::log_in(&http, &base, &user).await {
                        Ok(_) => {
                            login.record(start.elapsed());
                            logins.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            login_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    }

    let probes = http_client()?;
    let health = Arc::new(SharedHistogram::default());
    let me = Arc::new(SharedHistogram::default());
    let probe_errors = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(Semaphore::new(PROBES_IN_FLIGHT));
    let mut probe_tasks = JoinSet::new();
    let start = Instant::now();
    paced(plan.probe_rate, plan.phase, |_, intended| {
        for (path, histogram) in [("/health/live", &health), ("/api/auth/me", &me)] {
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                probe_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let request = probes
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .timeout(Duration::from_secs(10));
            let (histogram, probe_errors) = (histogram.clone(), probe_errors.clone());
            probe_tasks.spawn(async move {
                let ok = request.send().await.is_ok_and(|r| r.status().is_success());
                // From the intended time, so a probe the schedule could not start on time
                // still counts its wait.
                histogram.record(Instant::now().saturating_duration_since(intended));
                if !ok {
                    probe_errors.fetch_add(1, Ordering::Relaxed);
                }
                drop(permit);
            });
        }
    })
    .await;
    while probe_tasks.join_next().await.is_some() {}
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    workers.abort_all();
    let elapsed = start.elapsed().as_secs_f64();
    let logins = logins.load(Ordering::Relaxed);
    Ok(Phase {
        target: target.name.clone(),
        name: if with_logins { "logins" } else { "quiet" },
        logins,
        login_errors: login_errors.load(Ordering::Relaxed),
        logins_per_s: logins as f64 / elapsed,
        login: Latency::of(&login.snapshot()),
        health: Latency::of(&health.snapshot()),
        me: Latency::of(&me.snapshot()),
        probe_errors: probe_errors.load(Ordering::Relaxed),
    })
}
