//! chat-bench: a load generator that runs the same scenarios against our services and against
//! the socket.io reference peer (`bench/peers/socketio-seed`), and reports numbers side by
//! side: tables on stdout, CSV files and a Markdown summary in the output directory. It never
//! passes or fails on a number; it fails only when it could not measure.
//!
//! A tour: [`wire`] speaks both protocols (our JSON frames, socket.io's Engine.IO v4 packets);
//! [`client`] opens authenticated connections and keeps fleets of them alive; [`accounts`]
//! signs users up and logs them in; [`measure`] has the histograms, the open-loop pacer and the
//! `/proc` readers; [`scenario`] holds the six scenarios; [`report`] prints and writes tables;
//! [`plan`] sizes everything for the `quick` and `full` profiles.

pub mod accounts;
pub mod cli;
pub mod client;
pub mod measure;
pub mod plan;
pub mod report;
pub mod scenario;
pub mod target;
pub mod wire;

use std::time::Instant;

use cli::{RunArgs, Scenario};
use scenario::{Ctx, Summary};
use target::{Target, Targets};

/// How a run went, for the closing line and the exit code.
pub struct Outcome {
    pub passed: usize,
    pub failed: usize,
}

/// Runs the chosen scenarios against every target.
pub async fn run(args: &RunArgs) -> anyhow::Result<Outcome> {
    let targets = Targets::from_args(args)?;
    let open_files = measure::open_files_limit().unwrap_or(1024);
    let plan = plan::Plan::new(args.profile, open_files);
    let http = accounts::http_client()?;
    let mut options = mongodb::options::ClientOptions::parse(&args.mongo).await?;
    options.app_name = Some("chat-bench".into());
    options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
    let mongo = mongodb::Client::with_options(options)?;

    let usernames = accounts::usernames(&args.user_prefix, plan.users);
    for target in [&targets.ours, &targets.peer] {
        let start = Instant::now();
        accounts::sign_up_all(&http, &target.auth, &usernames, 16).await?;
        println!(
            "chat-bench: {} users signed up on {} in {:.1} s",
            usernames.len(),
            target.name,
            start.elapsed().as_secs_f64()
        );
    }
    let mut ctx = Ctx {
        plan,
        http,
        mongo,
        usernames,
        prefix: args.user_prefix.clone(),
        reporter: report::Reporter::new(&args.out)?,
        summary: Summary::default(),
    };

    let mut scenarios = args.scenarios.clone();
    scenarios.sort();
    scenarios.dedup();
    let (mut passed, mut failed) = (0, 0);
    for scenario in scenarios {
        let start = Instant::now();
        let mut list: Vec<&Target> = vec![&targets.ours];
        if scenario == Scenario::Fanout
            && let Some(two) = &targets.ours_two
        {
            list.push(two);
        }
        list.push(&targets.peer);
        let result = match scenario {
            Scenario::Idle => scenario::idle::run(&mut ctx, &list).await,
            Scenario::Connect => scenario::connect::run(&mut ctx, &list).await,
            Scenario::Persistence => scenario::persistence::run(&mut ctx, &list).await,
            Scenario::Fanout => scenario::fanout::run(&mut ctx, &list).await,
            Scenario::Auth => scenario::auth::run(&mut ctx, &list).await,
            Scenario::Rooms => scenario::rooms::run(&mut ctx, &list).await,
            Scenario::Storm => scenario::storm::run(&mut ctx, &list).await,
        };
        match result {
            Ok(()) => {
                passed += 1;
                println!(
                    "chat-bench: {scenario:?} measured in {:.0} s",
                    start.elapsed().as_secs_f64()
                );
            }
            Err(error) => {
                failed += 1;
                eprintln!("chat-bench: {scenario:?} could not be measured: {error:#}");
            }
        }
    }
    let summary = ctx.summary.table();
    if !summary.rows.is_empty() {
        ctx.reporter.emit(summary)?;
    }
    // The driver ends its sessions while the runtime still runs: left to the drop at exit,
    // that clean-up can find the driver's workers gone and panic.
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        ctx.mongo.clone().shutdown(),
    )
    .await;
    Ok(Outcome { passed, failed })
}

/// Drops the databases of a run.
pub async fn drop_databases(mongo: &str, names: &[String]) -> anyhow::Result<()> {
    let client = mongodb::Client::with_uri_str(mongo).await?;
    for name in names {
        client.database(name).drop().await?;
    }
    Ok(())
}
