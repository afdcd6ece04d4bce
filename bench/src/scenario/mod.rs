//! The scenarios, each run against every target in turn with the same plan, and what they
//! share: the run context, logging users in, and opening fleets of joined connections.

pub mod auth;
pub mod connect;
pub mod fanout;
pub mod idle;
pub mod persistence;
pub mod rooms;
pub mod storm;

use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};

use crate::client::{self, Ws};
use crate::measure::{Latency, SharedHistogram};
use crate::plan::Plan;
use crate::report::{Reporter, Table, num, ratio};
use crate::target::Target;

/// What every scenario gets.
pub struct Ctx {
    pub plan: Plan,
    pub http: reqwest::Client,
    pub mongo: mongodb::Client,
    /// The users signed up on every target (cheap bcrypt cost).
    pub usernames: Vec<String>,
    /// Prefix for names that must be unique per run.
    pub prefix: String,
    pub reporter: Reporter,
    /// Headline numbers of every scenario, side by side with ratios.
    pub summary: Summary,
}

impl Ctx {
    /// Fresh tokens for the plan's users on `target` (tokens expire, so every scenario logs
    /// in again).
    pub async fn tokens(&self, target: &Target) -> anyhow::Result<Vec<String>> {
        crate::accounts::log_in_all(&self.http, &target.auth, &self.usernames, 16).await
    }
}

/// The comparison table: one row per headline metric.
pub struct Summary {
    table: Table,
}

/// Whether more or less of a metric is better.
#[derive(Clone, Copy)]
pub enum Better {
    Higher,
    Lower,
}

impl Default for Summary {
    fn default() -> Self {
        Self {
            table: Table::new(
                "summary",
                "Summary: ours vs the socket.io peer",
                &[
                    "scenario",
                    "metric",
                    "better",
                    "ours",
                    "ours-2gw",
                    "peer",
                    "ours/peer",
                    "ours-2gw/peer",
                ],
            ),
        }
    }
}

impl Summary {
    /// Adds a metric; `ours_two` is the two-gateway value where the scenario has one.
    pub fn add(
        &mut self,
        scenario: &str,
        metric: &str,
        better: Better,
        ours: f64,
        ours_two: Option<f64>,
        peer: f64,
    ) {
        let decimals = if ours.abs() < 100.0 { 2 } else { 0 };
        self.table.push(vec![
            scenario.to_string(),
            metric.to_string(),
            match better {
                Better::Higher => "higher",
                Better::Lower => "lower",
            }
            .to_string(),
            num(ours, decimals),
            ours_two.map_or("-".to_string(), |v| num(v, decimals)),
            num(peer, decimals),
            ratio(ours, peer),
            ours_two.map_or("-".to_string(), |v| ratio(v, peer)),
        ]);
    }

    pub fn table(&self) -> &Table {
        &self.table
    }
}

/// How building a fleet went.
#[derive(Default)]
pub struct Built {
    /// Joined connections with the index they were opened as (which picks room and user).
    pub connections: Vec<(usize, Ws)>,
    pub failed: usize,
    pub first_error: Option<String>,
    /// Start of the TCP connect until the session is authenticated.
    pub ready: SharedHistogram,
    /// The join's round trip.
    pub join: SharedHistogram,
    pub elapsed: Duration,
}

impl Built {
    pub fn ready(&self) -> Latency {
        Latency::of(&self.ready.snapshot())
    }

    pub fn join(&self) -> Latency {
        Latency::of(&self.join.snapshot())
    }
}

/// Opens connections `indices` to `target`, each authenticated with `tokens[i % len]` and
/// joined to `room(i)`, `concurrency` at a time. Failures are counted, not fatal: a server
/// that refuses connections under load is a result.
pub async fn open_fleet(
    target: &Target,
    tokens: &[String],
    indices: std::ops::Range<usize>,
    concurrency: usize,
    room: impl Fn(usize) -> String,
) -> Built {
    let start = Instant::now();
    let built = Built::default();
    let results: Vec<(usize, anyhow::Result<Ws>)> = stream::iter(indices)
        .map(|i| {
            let token = &tokens[i % tokens.len()];
            let room = room(i);
            let built = &built;
            async move {
                let outcome = async {
                    let mut opened =
                        client::open(target.protocol, target.gateway(i), token).await?;
                    built.ready.record(opened.ready);
                    let joined = client::join(&mut opened.ws, target.protocol, &room).await?;
                    built.join.record(joined);
                    anyhow::Ok(opened.ws)
                }
                .await;
                (i, outcome)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut built = built;
    for (i, outcome) in results {
        match outcome {
            Ok(ws) => built.connections.push((i, ws)),
            Err(error) => {
                built.failed += 1;
                built
                    .first_error
                    .get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    built.connections.sort_by_key(|(i, _)| *i);
    built.elapsed = start.elapsed();
    built
}

/// Prints why connections failed, once per fleet.
pub fn warn_failures(target: &Target, what: &str, built: &Built) {
    if let Some(error) = &built.first_error {
        eprintln!(
            "chat-bench: {}: {} of the {what} connections failed; first error: {error}",
            target.name, built.failed
        );
    }
}

/// Prints how many frames a fleet's server refused, and the first refusal.
pub fn warn_refusals(target: &Target, fleet: &client::Fleet) {
    if let (count, Some(first)) = fleet.refusals() {
        eprintln!(
            "chat-bench: {}: the server refused {count} frames; first: {first}",
            target.name
        );
    }
}

/// The collection where `target` stores chat messages (ours: history-service's; the peer:
/// Mongoose's).
pub fn messages(ctx: &Ctx, target: &Target) -> mongodb::Collection<mongodb::bson::Document> {
    ctx.mongo.database(&target.db).collection("messages")
}

/// Waits until `target` has stopped storing messages (the count unchanged for two seconds, at
/// most `limit`), then empties its `messages` collection. A target still writing a backlog
/// would otherwise load the shared database during the next target's measurement, and joins
/// (which read a room's history) would get slower with every scenario.
pub async fn settle_and_clear(ctx: &Ctx, target: &Target) -> anyhow::Result<()> {
    let limit = ctx.plan.store_settle;
    let messages = messages(ctx, target);
    let start = Instant::now();
    let mut last = stored_documents(&messages).await?;
    let mut unchanged_since = Instant::now();
    while start.elapsed() < limit && unchanged_since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let count = stored_documents(&messages).await?;
        if count != last {
            last = count;
            unchanged_since = Instant::now();
        }
    }
    let settled = unchanged_since.elapsed() >= Duration::from_secs(2);
    clear(&messages).await?;
    eprintln!(
        "chat-bench: {}: {last} messages in the store, {} after {:.0} s; emptied",
        target.name,
        if settled { "settled" } else { "still growing" },
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Send-to-ack latency per step, timed from each send's intended time. Only ours acknowledges
/// sends; for the peer these stay empty.
pub struct AckTimes {
    origin: Instant,
    steps: Vec<SharedHistogram>,
}

impl AckTimes {
    pub fn new(origin: Instant, steps: usize) -> Self {
        Self {
            origin,
            steps: (0..steps).map(|_| SharedHistogram::default()).collect(),
        }
    }

    pub fn record(&self, client_id: &str, at: Instant) {
        let Some(stamp) = crate::wire::Stamp::from_client_id(client_id) else {
            return;
        };
        if let Some(step) = self.steps.get(stamp.step as usize) {
            let intended = self.origin + Duration::from_nanos(stamp.intended_ns);
            step.record(at.saturating_duration_since(intended));
        }
    }

    pub fn latency(&self, step: usize) -> Latency {
        self.steps
            .get(step)
            .map(|h| Latency::of(&h.snapshot()))
            .unwrap_or_default()
    }
}

impl client::Observer for AckTimes {
    fn on_message(&self, _: u32, _: &str, _: Instant) {}

    fn on_ack(&self, _: u32, client_id: &str, _: &str, at: Instant) {
        self.record(client_id, at);
    }
}

/// A latency cell (`value` picks the percentile), or `-` where nothing was measured.
pub fn ms_or_dash(latency: &Latency, value: impl Fn(&Latency) -> f64) -> String {
    if latency.count == 0 {
        "-".to_string()
    } else {
        num(value(latency), 1)
    }
}

/// Documents in a target's `messages` collection, from `$collStats` (`count`).
///
/// What it costs on the Mongo-wire server used here (FerretDB on SQLite) decides how often
/// it can be polled without loading the database under test: the collection's own count
/// reads every document (about 60 ms of the server's CPU per 1,000 documents); `dbStats`
/// also runs SQLite's `ANALYZE` on every table (25 ms at 10,000 documents, 112 ms at 40,000);
/// `$collStats` only walks the table's pages (11 and 65 ms). Every poll still costs in
/// proportion to the collection's size, so the persistence scenario empties it between
/// steps ([`clear`]).
pub async fn stored_documents(
    messages: &mongodb::Collection<mongodb::bson::Document>,
) -> anyhow::Result<u64> {
    use futures_util::TryStreamExt;
    let stats: Vec<mongodb::bson::Document> = messages
        .aggregate([mongodb::bson::doc! { "$collStats": { "count": {} } }])
        .await?
        .try_collect()
        .await?;
    let count = match stats.first().and_then(|stats| stats.get("count")) {
        Some(mongodb::bson::Bson::Int32(n)) => i64::from(*n),
        Some(mongodb::bson::Bson::Int64(n)) => *n,
        Some(mongodb::bson::Bson::Double(n)) => *n as i64,
        // A collection that does not exist yet holds nothing.
        None if stats.is_empty() => 0,
        other => anyhow::bail!("$collStats answered without a count: {other:?}"),
    };
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Empties a `messages` collection: drops it and creates its indexes again, as they were.
/// Deleting the documents instead takes minutes on FerretDB on SQLite (a `delete_many` over a
/// large collection fails with "too many SQL variables", so it goes a thousand at a time, each
/// a scan). Only for a target that is not writing (its backlog is stored).
pub async fn clear(messages: &mongodb::Collection<mongodb::bson::Document>) -> anyhow::Result<()> {
    // Nothing stored yet: no collection, nothing to clear.
    let Some(indexes) = indexes_to_restore(messages).await? else {
        return Ok(());
    };
    messages.drop().await?;
    restore_indexes(messages, indexes).await
}

/// The indexes of a collection besides `_id`'s, as [`restore_indexes`] gives them back after
/// a drop; `None` when there is no collection.
pub async fn indexes_to_restore(
    messages: &mongodb::Collection<mongodb::bson::Document>,
) -> anyhow::Result<Option<Vec<mongodb::IndexModel>>> {
    use futures_util::TryStreamExt;
    let indexes: Vec<mongodb::IndexModel> = match messages.list_indexes().await {
        Ok(cursor) => cursor.try_collect().await?,
        Err(_) => return Ok(None),
    };
    Ok(Some(
        indexes
            .into_iter()
            .filter(|index| index.options.as_ref().and_then(|o| o.name.as_deref()) != Some("_id_"))
            .map(|mut index| {
                if let Some(options) = index.options.as_mut() {
                    // Reported by the server, refused when given back (FerretDB).
                    options.version = None;
                }
                index
            })
            .collect(),
    ))
}

/// Creates `indexes` (from [`indexes_to_restore`]) on a dropped collection.
pub async fn restore_indexes(
    messages: &mongodb::Collection<mongodb::bson::Document>,
    indexes: Vec<mongodb::IndexModel>,
) -> anyhow::Result<()> {
    for index in indexes {
        // One index per call: FerretDB drops the connection when one call creates several.
        messages.create_index(index).await?;
    }
    Ok(())
}
