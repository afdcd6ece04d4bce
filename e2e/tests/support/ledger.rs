//! What a fault scenario adds up to: sent, acked, stored, delivered per client, duplicates and
//! missing messages, printed as the scenario's figures and checked against the definitions in
//! docs/guarantees.md:
//!
//! - **lost**: acked, but not stored in MongoDB, or not received (live, in `joined` after a
//!   `since`, or paged after a truncated catch-up) by a client that stayed joined;
//! - **duplicate**: stored twice (one id twice, or two ids for one user's `client_id`), or
//!   delivered twice on one connection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use super::resilient::{Ack, ClientReport};

/// One client's deliveries.
#[derive(Debug, Clone)]
pub struct ClientFigures {
    pub name: String,
    /// Gateway port of each connection, in order, with the close code that ended it.
    pub connections: Vec<(u16, Option<u16>)>,
    /// Message ids delivered over all its connections, duplicates included.
    pub deliveries: usize,
    /// Acked messages of its rooms it should have.
    pub expected: usize,
    pub missing: Vec<String>,
    pub duplicates: usize,
    pub truncated_joins: usize,
    pub paged: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// For the first missing messages: who sent them, when, and the joins around that time.
    pub diagnosis: Vec<String>,
}

/// The figures of one scenario.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub scenario: String,
    /// Distinct messages (`client_id`s) the clients were asked to send.
    pub sent: usize,
    /// Send requests, counting a message sent through two connections twice.
    pub requests: usize,
    /// `send` frames written, retries included.
    pub attempts: usize,
    pub refused: BTreeMap<String, usize>,
    /// Distinct `client_id`s acknowledged.
    pub acked: usize,
    /// Messages never acknowledged.
    pub unacked: usize,
    /// Acks of one `client_id` that disagree (another id or `sent_at`).
    pub ack_conflicts: Vec<String>,
    /// Messages stored in the scenario's rooms.
    pub stored: usize,
    pub stored_twice: Vec<String>,
    /// Acked but not stored.
    pub not_stored: Vec<String>,
    /// Stored without ever being acked (harmless: a send whose ack never arrived).
    pub stored_unacked: usize,
    pub clients: Vec<ClientFigures>,
    pub unexpected: Vec<String>,
    /// Scenario-specific lines (fault timings, memory).
    pub notes: Vec<String>,
}

/// Milliseconds at percentile `p` (0–100) of microsecond samples.
pub fn percentile_ms(samples: &[u64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    Some(sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0)
}

/// Every acked `client_id` with its ack, merged over clients; disagreeing acks are conflicts.
pub fn merged_acks(reports: &[&ClientReport]) -> (BTreeMap<String, Ack>, Vec<String>) {
    let mut acks: BTreeMap<String, Ack> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for report in reports {
        conflicts.extend(report.ack_conflicts.iter().cloned());
        for (client_id, ack) in &report.acks {
            match acks.get(client_id) {
                Some(first) if first.id != ack.id || first.sent_at != ack.sent_at => conflicts
                    .push(format!(
                        "{client_id}: {} at {} vs {} at {}",
                        first.id, first.sent_at, ack.id, ack.sent_at
                    )),
                Some(_) => {}
                None => {
                    acks.insert(client_id.clone(), ack.clone());
                }
            }
        }
    }
    (acks, conflicts)
}

impl Figures {
    /// `senders` asked for the sends; `receivers` are the clients that stayed joined (they
    /// may be the same); `stored` is the history of the scenario's rooms.
    pub fn new(
        scenario: &str,
        senders: &[&ClientReport],
        receivers: &[&ClientReport],
        stored: &[Value],
    ) -> Self {
        let (acks, ack_conflicts) = merged_acks(senders);
        let acked_ids: BTreeSet<&str> = acks.values().map(|a| a.id.as_str()).collect();
        let mut figures = Figures {
            scenario: scenario.to_string(),
            sent: senders
                .iter()
                .flat_map(|r| r.client_ids.iter())
                .collect::<BTreeSet<_>>()
                .len(),
            requests: senders.iter().map(|r| r.queued).sum(),
            attempts: senders.iter().map(|r| r.attempts).sum(),
            acked: acks.len(),
            unacked: senders.iter().map(|r| r.pending).sum(),
            ack_conflicts,
            stored: stored.len(),
            ..Figures::default()
        };
        // Each client once, whether it sent, received or both.
        let mut everyone: Vec<&ClientReport> = senders.to_vec();
        for report in receivers {
            if !everyone.iter().any(|r| r.name == report.name) {
                everyone.push(report);
            }
        }
        for report in &everyone {
            for (code, count) in &report.refused {
                *figures.refused.entry(code.clone()).or_default() += count;
            }
        }

        let mut by_id: HashMap<&str, usize> = HashMap::new();
        let mut by_client_id: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
        for message in stored {
            let id = message["id"].as_str().unwrap_or_default();
            *by_id.entry(id).or_default() += 1;
            by_client_id
                .entry((
                    message["author"]["id"].as_str().unwrap_or_default(),
                    message["client_id"].as_str().unwrap_or_default(),
                ))
                .or_default()
                .push(id);
        }
        figures.stored_twice.extend(
            by_id
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(id, n)| format!("id {id} stored {n} times")),
        );
        figures.stored_twice.extend(
            by_client_id
                .iter()
                .filter(|(_, ids)| ids.len() > 1)
                .map(|((_, cid), ids)| format!("client_id {cid} stored as {ids:?}")),
        );
        figures.not_stored = acked_ids
            .iter()
            .filter(|id| !by_id.contains_key(*id))
            .map(|id| id.to_string())
            .collect();
        figures.stored_unacked = by_id.keys().filter(|id| !acked_ids.contains(*id)).count();

        for report in receivers {
            let expected: Vec<&str> = acks
                .values()
                .filter(|a| report.rooms.contains(&a.room))
                .map(|a| a.id.as_str())
                .collect();
            let missing: Vec<String> = expected
                .iter()
                .filter(|id| !report.received.contains(**id))
                .map(|id| id.to_string())
                .collect();
            let diagnosis = missing
                .iter()
                .take(5)
                .map(|id| diagnose(id, &acks, report))
                .collect();
            figures.clients.push(ClientFigures {
                name: report.name.clone(),
                connections: report
                    .connections
                    .iter()
                    .map(|c| (c.gateway, c.close))
                    .collect(),
                deliveries: report.deliveries(),
                expected: expected.len(),
                missing,
                duplicates: report.duplicates(),
                truncated_joins: report.truncated_joins,
                paged: report.paged,
                p50_ms: percentile_ms(&report.latencies_us, 50.0),
                p99_ms: percentile_ms(&report.latencies_us, 99.0),
                diagnosis,
            });
        }
        for report in &everyone {
            figures.unexpected.extend(
                report
                    .unexpected
                    .iter()
                    .map(|u| format!("{}: {u}", report.name)),
            );
        }
        figures
    }

    pub fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    pub fn duplicates(&self) -> usize {
        self.stored_twice.len() + self.clients.iter().map(|c| c.duplicates).sum::<usize>()
    }

    pub fn missing(&self) -> usize {
        self.not_stored.len() + self.clients.iter().map(|c| c.missing.len()).sum::<usize>()
    }

    pub fn print(&self) {
        let refused: Vec<String> = self
            .refused
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        println!("\n=== fault scenario: {}", self.scenario);
        println!(
            "sent {} ({} requests), send frames {}, refused [{}], acked {}, unacked {}, ack conflicts {}",
            self.sent,
            self.requests,
            self.attempts,
            refused.join(", "),
            self.acked,
            self.unacked,
            self.ack_conflicts.len()
        );
        println!(
            "stored {}, acked but not stored {}, stored twice {}, stored but never acked {}",
            self.stored,
            self.not_stored.len(),
            self.stored_twice.len(),
            self.stored_unacked
        );
        for client in &self.clients {
            let connections: Vec<String> = client
                .connections
                .iter()
                .map(|(port, close)| match close {
                    Some(code) => format!(":{port}→{code}"),
                    None => format!(":{port}"),
                })
                .collect();
            let latency = match (client.p50_ms, client.p99_ms) {
                (Some(p50), Some(p99)) => format!(", latency p50 {p50:.1} ms p99 {p99:.1} ms"),
                _ => String::new(),
            };
            println!(
                "  {:<12} delivered {:>5} of {:>5} expected, missing {}, duplicates {}, connections [{}], truncated joins {}, paged {}{latency}",
                client.name,
                client.deliveries,
                client.expected,
                client.missing.len(),
                client.duplicates,
                connections.join(" "),
                client.truncated_joins,
                client.paged,
            );
            for line in &client.diagnosis {
                println!("      {line}");
            }
        }
        for note in &self.notes {
            println!("  {note}");
        }
        println!(
            "duplicates {}, missing {}",
            self.duplicates(),
            self.missing()
        );
        for line in self.violations() {
            println!("  VIOLATION {line}");
        }
    }

    /// Everything that breaks a guarantee.
    pub fn violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        let sample = |ids: &[String]| ids.iter().take(5).cloned().collect::<Vec<_>>();
        if self.unacked > 0 {
            violations.push(format!("{} messages were never acked", self.unacked));
        }
        if self.acked != self.sent {
            violations.push(format!("{} sent but {} acked", self.sent, self.acked));
        }
        for conflict in &self.ack_conflicts {
            violations.push(format!("acks disagree: {conflict}"));
        }
        if !self.not_stored.is_empty() {
            violations.push(format!(
                "{} acked messages not stored, e.g. {:?}",
                self.not_stored.len(),
                sample(&self.not_stored)
            ));
        }
        violations.extend(
            self.stored_twice
                .iter()
                .map(|d| format!("stored twice: {d}")),
        );
        for client in &self.clients {
            if !client.missing.is_empty() {
                violations.push(format!(
                    "{} is missing {} acked messages, e.g. {:?}",
                    client.name,
                    client.missing.len(),
                    sample(&client.missing)
                ));
            }
            if client.duplicates > 0 {
                violations.push(format!(
                    "{} got {} duplicate deliveries on one connection",
                    client.name, client.duplicates
                ));
            }
        }
        violations.extend(self.unexpected.iter().map(|u| format!("unexpected: {u}")));
        violations
    }

    /// Prints the figures and fails on any loss, duplicate or disagreement.
    pub fn check(&self) {
        self.print();
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "{}: {} violation(s): {violations:#?}",
            self.scenario,
            violations.len()
        );
    }
}

/// Explains where a missing message fell relative to the client's joins.
fn diagnose(id: &str, acks: &BTreeMap<String, Ack>, report: &ClientReport) -> String {
    let secs = |us: u64| us as f64 / 1e6;
    let ack = acks.iter().find(|(_, a)| a.id == id);
    let sent = match ack {
        Some((client_id, ack)) => format!("{client_id} acked at {:.3} s", secs(ack.at_us)),
        None => "never acked".to_string(),
    };
    let joins: Vec<String> = report
        .joins
        .iter()
        .map(|join| {
            let position = match &join.since {
                Some(since) if id <= since.as_str() => "id ≤ since",
                Some(_) => "id > since",
                None => "no since",
            };
            format!(
                "joined :{} at {:.3} s since {} with {} messages ({position}{})",
                join.gateway,
                secs(join.at_us),
                join.since.as_deref().unwrap_or("-"),
                join.ids.len(),
                if join.truncated { ", truncated" } else { "" }
            )
        })
        .collect();
    format!("missing {id} ({sent}); {}", joins.join("; "))
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls every 100 ms until `done()`; gives up (false) once `progress()` has not changed for
/// `stall`, so a scenario that lost something fails in seconds instead of waiting out a
/// fixed deadline.
pub async fn while_progressing(
    stall: Duration,
    mut progress: impl FnMut() -> usize,
    mut done: impl FnMut() -> bool,
) -> bool {
    let mut last = progress();
    let mut changed = tokio::time::Instant::now();
    loop {
        if done() {
            return true;
        }
        let now = progress();
        if now != last {
            last = now;
            changed = tokio::time::Instant::now();
        } else if changed.elapsed() >= stall {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resident and peak resident memory of a process, in KiB (`VmRSS`, `VmHWM`).
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
