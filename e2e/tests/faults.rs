//! The fault suite of docs/guarantees.md: the real binaries, on a RabbitMQ node and a FerretDB
//! of the suite's own (scripts/fault-deps.sh), used by resilient clients while things fail —
//! history-service killed, RabbitMQ and FerretDB restarted, a gateway deployed away, every
//! send retried on the other gateway, a thousand clients that stop reading.
//!
//! Each scenario prints its figures and fails on any lost or duplicated message (definitions
//! in `support::ledger`). The scenarios take turns, whatever `--test-threads` says: they share
//! the broker and the database they stop.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use support::cluster::{Cluster, Progress};
use support::isolated::Isolated;
use support::ledger::{Figures, eventually, memory_kib, percentile_ms, while_progressing};
use support::resilient::{ClientReport, ClientSpec, ResilientClient, open, stamped};
use support::{System, SystemOptions, message_ids, try_all_messages};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// The gateways' abuse limits are lifted: they have their own tests, and here they would only
/// slow the traffic down. Everything else runs with its defaults.
const UNLIMITED: &[(&str, &str)] = &[
    ("GATEWAY__LIMITS__MESSAGES_PER_SECOND", "1000000"),
    ("GATEWAY__LIMITS__MESSAGE_BURST", "1000000"),
    ("GATEWAY__LIMITS__MAX_CONNECTIONS_PER_USER", "100000"),
];

/// How long a wait may go without any progress (acks, deliveries, stored messages) before the
/// scenario gives up and fails with its figures.
const STALL: Duration = Duration::from_secs(30);

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One scenario's running system, on the isolated dependencies.
struct Scenario {
    name: &'static str,
    started: Instant,
    isolated: Isolated,
    system: System,
    /// A user whose token reads the history.
    reader: String,
}

impl Scenario {
    async fn start(name: &'static str, gateways: usize, gateway_env: &[(&str, &str)]) -> Self {
        Self::start_on(name, gateways, gateway_env, None).await
    }

    /// [`Self::start`] on `cluster` instead of the isolated broker: auth-service and
    /// history-service connect to node 1 first, gateway `i` to node `i % 3 + 1`, and each
    /// fails over to the next nodes in turn.
    async fn start_on(
        name: &'static str,
        gateways: usize,
        gateway_env: &[(&str, &str)],
        cluster: Option<&Cluster>,
    ) -> Self {
        let isolated = Isolated::acquire().await;
        let started = Instant::now();
        let mut gateway_settings = pairs(UNLIMITED);
        gateway_settings.extend(pairs(gateway_env));
        let mut options = SystemOptions {
            gateways,
            amqp_uri: Some(isolated.amqp_uri()),
            mongodb_uri: Some(isolated.mongodb_uri()),
            auth_env: pairs(&[("AUTH__LIMITS__ENABLED", "false")]),
            history_env: Vec::new(),
            gateway_env: gateway_settings,
            gateway_env_each: Vec::new(),
        };
        if let Some(cluster) = cluster {
            let (uri, uris) = cluster.addresses(1);
            options.amqp_uri = Some(uri);
            options
                .auth_env
                .push(("AUTH__AMQP__URIS".into(), uris.clone()));
            options
                .history_env
                .push(("HISTORY__AMQP__URIS".into(), uris));
            for i in 0..gateways {
                let (uri, uris) = cluster.addresses(i as u16 % 3 + 1);
                options.gateway_env_each.push(vec![
                    ("GATEWAY__AMQP__URI".into(), uri),
                    ("GATEWAY__AMQP__URIS".into(), uris),
                ]);
            }
        }
        let system = System::start_with(&options).await;
        let reader = system.user(0, "reader").await;
        let scenario = Self {
            name,
            started,
            isolated,
            system,
            reader,
        };
        scenario.log("services ready");
        scenario
    }

    fn log(&self, what: impl std::fmt::Display) {
        println!(
            "[{} {:>6.1}s] {what}",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }

    fn ports(&self) -> Vec<u16> {
        self.system.gateways.iter().map(|g| g.port).collect()
    }

    /// One user and client per entry of `first` (the gateway it connects to first), all in
    /// `room`; returns once every client has joined.
    async fn clients(&self, room: &str, first: &[usize]) -> Arc<Vec<ResilientClient>> {
        let mut clients = Vec::new();
        for (i, gateway) in first.iter().enumerate() {
            let token = self.system.user(*gateway, &format!("user{i}")).await;
            clients.push(ResilientClient::spawn(ClientSpec {
                name: format!("c{i}@gw{gateway}"),
                token,
                gateways: self.ports(),
                first: *gateway,
                rooms: vec![room.to_string()],
                window: 8,
            }));
        }
        let ready = eventually(Duration::from_secs(30), || async {
            clients.iter().all(|c| c.is_ready()).then_some(())
        })
        .await;
        assert!(ready.is_some(), "clients did not join within 30 s");
        Arc::new(clients)
    }

    /// Waits until the clients have `count` acks between them.
    async fn until_acked(&self, clients: &[ResilientClient], count: usize) {
        let reached = while_progressing(STALL, || acked(clients), || acked(clients) >= count).await;
        assert!(
            reached,
            "stuck at {} of {count} acks for {STALL:?}",
            acked(clients)
        );
    }

    /// Waits until every gateway and history-service report ready again.
    async fn until_ready(&self) {
        self.system.history.wait_ready().await;
        for gateway in self.system.gateways.iter().filter(|g| g.pid().is_some()) {
            gateway.wait_ready().await;
        }
    }

    /// Lets the traffic finish, waits until every send is acked, every client has every
    /// acked message and everything is stored, then stops the clients and adds it all up.
    async fn finish(
        &self,
        senders: &[&ResilientClient],
        receivers: &[&ResilientClient],
        room: &str,
    ) -> Figures {
        let total_acks = || senders.iter().map(|c| c.progress().0).sum::<usize>();
        if !while_progressing(STALL, total_acks, || senders.iter().all(|c| c.all_acked())).await {
            self.log(format!("acks stopped coming for {STALL:?}"));
        }
        let reports: Vec<ClientReport> = senders.iter().map(|c| c.report()).collect();
        let report_refs: Vec<&ClientReport> = reports.iter().collect();
        let (acks, _) = support::ledger::merged_acks(&report_refs);
        let expected: Vec<String> = acks
            .values()
            .filter(|a| a.room == room)
            .map(|a| a.id.clone())
            .collect();
        let received = || receivers.iter().map(|c| c.progress().2).sum::<usize>();
        let everything = || receivers.iter().all(|c| c.has_received_all(&expected));
        if !while_progressing(STALL, received, everything).await {
            self.log(format!(
                "deliveries stopped for {STALL:?} with acked messages missing"
            ));
        }
        self.settle(receivers).await;
        let stored = self.stored(room, expected.len()).await;
        let mut senders_done = Vec::new();
        for client in senders {
            senders_done.push(client.stop().await);
        }
        let mut receivers_done = Vec::new();
        for client in receivers {
            receivers_done.push(client.stop().await);
        }
        let senders_done: Vec<&ClientReport> = senders_done.iter().collect();
        let receivers_done: Vec<&ClientReport> = receivers_done.iter().collect();
        let mut figures = Figures::new(self.name, &senders_done, &receivers_done, &stored);
        figures.note(format!(
            "scenario took {:.1} s",
            self.started.elapsed().as_secs_f64()
        ));
        figures
    }

    /// Waits until no client received anything for a second (late duplicates show up).
    async fn settle(&self, clients: &[&ResilientClient]) {
        let total = || clients.iter().map(|c| c.deliveries()).sum::<usize>();
        let mut last = total();
        let mut quiet_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(15);
        while quiet_since.elapsed() < Duration::from_secs(1) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = total();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
    }

    /// The room's stored messages, read from history-service once it has `count` of them (or
    /// once their number stopped growing for [`STALL`]).
    async fn stored(&self, room: &str, count: usize) -> Vec<Value> {
        let url = self.system.history.url();
        let mut last = 0;
        let mut changed = Instant::now();
        let mut member = false;
        loop {
            // Only members read a room's history: the reader joins first (idempotent; retried
            // while history-service is away).
            if !member {
                member = reqwest::Client::new()
                    .post(format!("{url}/api/rooms/{room}/join"))
                    .bearer_auth(&self.reader)
                    .send()
                    .await
                    .is_ok_and(|response| response.status().is_success());
            }
            let stored = try_all_messages(&url, &self.reader, room)
                .await
                .unwrap_or_default();
            if stored.len() != last {
                last = stored.len();
                changed = Instant::now();
            }
            if stored.len() >= count || changed.elapsed() >= STALL {
                return stored;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn acked(clients: &[ResilientClient]) -> usize {
    clients.iter().map(|c| c.progress().0).sum()
}

fn refusals(client: &ResilientClient) -> usize {
    client.report().refused.values().sum()
}

fn refused(clients: &[ResilientClient]) -> usize {
    clients.iter().map(refusals).sum()
}

/// Every client sends `per_client` messages, one each `1 / per_second` seconds, as people
/// typing would: a client that cannot send keeps them queued and retries.
fn spawn_traffic(
    clients: &Arc<Vec<ResilientClient>>,
    room: &str,
    tag: &str,
    per_client: usize,
    per_second: f64,
    filler: usize,
) -> JoinHandle<()> {
    let clients = clients.clone();
    let room = room.to_string();
    let tag = tag.to_string();
    let padding = "·".repeat(filler);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
        for i in 0..per_client {
            tick.tick().await;
            for client in clients.iter() {
                let name = client.name().replace('@', "-");
                client.send(
                    &room,
                    &format!("{tag}-{name}-{i}"),
                    &format!("{tag} {name} #{i}{padding}"),
                );
            }
        }
    })
}

fn refs(clients: &[ResilientClient]) -> Vec<&ResilientClient> {
    clients.iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_service_killed_three_times_during_5000_messages_loses_and_duplicates_nothing() {
    let mut scenario = Scenario::start("history-service kill -9 ×3", 2, &[]).await;
    let room = "kill9";
    let clients = scenario.clients(room, &[0, 1, 0, 1, 0, 1, 0, 1]).await;
    // 8 × 625 = 5,000 messages, offered at 8 × 25 = 200 a second.
    let traffic = spawn_traffic(&clients, room, "m", 625, 25.0, 0);
    for (round, at) in [1000, 2500, 4000].into_iter().enumerate() {
        scenario.until_acked(&clients, at).await;
        scenario.system.history.kill();
        let down_at = acked(&clients);
        scenario.log(format!(
            "kill -9 history-service #{} at {down_at} acked",
            round + 1
        ));
        // Sends go on without it: wait for 200 more acks before bringing it back.
        scenario.until_acked(&clients, down_at + 200).await;
        scenario.system.history.start_again();
        scenario.system.history.wait_ready().await;
        scenario.log(format!(
            "history-service ready again at {} acked",
            acked(&clients)
        ));
    }
    traffic.await.expect("traffic ran");
    let everyone = refs(&clients);
    let figures = scenario.finish(&everyone, &everyone, room).await;
    figures.check();
    assert_eq!(figures.sent, 5000);
}

/// 3,200 messages from 8 clients at 40 a second, half through each of two gateways (with
/// the queue type `gateway_env` sets), on a 3-node RabbitMQ cluster: node 1 (where auth-service, history-service and gateway 0 are
/// connected, and where the history queue and gateway 0's queue have their leaders) is killed
/// with SIGKILL and started again, then node 2 (gateway 1's, and gateway 0's after its
/// failover) is shut down and started again, as a rolling restart does. Every acked message
/// must be stored once and reach every member, live or through `since`. The longest pause in
/// acks and in deliveries after each fault is printed (docs/guarantees.md has the figures).
async fn cluster_node_faults(scenario_name: &'static str, gateway_env: &[(&str, &str)]) -> Figures {
    let cluster = Cluster::start().await;
    let scenario = Scenario::start_on(scenario_name, 2, gateway_env, Some(&cluster)).await;
    let room = "cluster";
    let clients = scenario.clients(room, &[0, 1, 0, 1, 0, 1, 0, 1]).await;
    // Deliveries to the clients of each gateway, apart: one gateway's pause does not show
    // in a sum over both.
    let deliveries: Vec<Progress> = (0..2)
        .map(|gateway| {
            let clients = clients.clone();
            let suffix = format!("@gw{gateway}");
            Progress::record(move || {
                clients
                    .iter()
                    .filter(|c| c.name().ends_with(&suffix))
                    .map(|c| c.progress().2)
                    .sum()
            })
        })
        .collect();
    let acks = Progress::record({
        let clients = clients.clone();
        move || acked(&clients)
    });
    let traffic_started = Instant::now();
    let traffic = spawn_traffic(&clients, room, "m", 400, 5.0, 0);
    let mut faults: Vec<(String, Instant)> = Vec::new();

    scenario.until_acked(&clients, 500).await;
    faults.push((
        format!("kill -9 of node 1 at {} acked", acked(&clients)),
        Instant::now(),
    ));
    scenario.log(&faults[0].0);
    cluster.kill(1).await;
    scenario.until_acked(&clients, acked(&clients) + 400).await;
    faults.push((
        format!("node 1 started again at {} acked", acked(&clients)),
        Instant::now(),
    ));
    scenario.log(&faults[1].0);
    cluster.start_node(1).await;
    scenario.until_acked(&clients, acked(&clients) + 400).await;
    faults.push((
        format!(
            "rabbitmqctl shutdown of node 2 at {} acked",
            acked(&clients)
        ),
        Instant::now(),
    ));
    scenario.log(&faults[2].0);
    cluster.stop(2).await;
    scenario.until_acked(&clients, acked(&clients) + 400).await;
    faults.push((
        format!("node 2 started again at {} acked", acked(&clients)),
        Instant::now(),
    ));
    scenario.log(&faults[3].0);
    cluster.start_node(2).await;
    traffic.await.expect("traffic ran");
    let everyone = refs(&clients);
    let mut figures = scenario.finish(&everyone, &everyone, room).await;

    let ended = Instant::now();
    let mut windows = vec![("before any fault".to_string(), traffic_started)];
    windows.extend(faults);
    for (i, (what, from)) in windows.iter().enumerate() {
        let to = windows.get(i + 1).map_or(ended, |(_, at)| *at);
        let line = format!(
            "{what}: longest pause until the next step {:.2} s in acks, {:.2} s in deliveries \
             to gateway 0's clients, {:.2} s to gateway 1's",
            acks.longest_pause(*from, to).as_secs_f64(),
            deliveries[0].longest_pause(*from, to).as_secs_f64(),
            deliveries[1].longest_pause(*from, to).as_secs_f64(),
        );
        scenario.log(&line);
        figures.note(line);
    }
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_killed_then_another_restarted_loses_and_duplicates_nothing() {
    let figures = cluster_node_faults(
        "3-node cluster: kill -9, rolling restart",
        &[("GATEWAY__AMQP__QUEUE_TYPE", "quorum")],
    )
    .await;
    figures.check();
    assert_eq!(figures.sent, 3200);
}

/// The same faults with classic gateway queues, which live on one node: the measurement
/// behind the quorum default (docs/guarantees.md). It is expected to lose live deliveries, so
/// it only prints its figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: classic gateway queues lose live deliveries when their node dies"]
async fn cluster_faults_with_classic_gateway_queues_measured() {
    let figures = cluster_node_faults(
        "3-node cluster, classic gateway queues",
        &[("GATEWAY__AMQP__QUEUE_TYPE", "classic")],
    )
    .await;
    figures.print();
}

/// A dependency the outage scenarios stop and start again.
#[derive(Clone, Copy)]
enum Dependency {
    RabbitMq,
    FerretDb,
}

impl Dependency {
    fn name(self) -> &'static str {
        match self {
            Dependency::RabbitMq => "RabbitMQ",
            Dependency::FerretDb => "FerretDB",
        }
    }

    async fn stop(self, isolated: &Isolated) {
        match self {
            Dependency::RabbitMq => isolated.stop_rabbitmq().await,
            Dependency::FerretDb => isolated.stop_ferretdb().await,
        }
    }

    async fn start(self, isolated: &Isolated) {
        match self {
            Dependency::RabbitMq => isolated.start_rabbitmq().await,
            Dependency::FerretDb => isolated.start_ferretdb().await,
        }
    }
}

/// 1,200 messages from 6 clients, 3 on each gateway; `dependency` is stopped at 400 acks and
/// started again once every client has had a send refused as unavailable (with MongoDB down a
/// send waits for the driver's 5 s server selection timeout before it is refused).
async fn dependency_restarted_during_traffic(scenario_name: &'static str, dependency: Dependency) {
    let scenario = Scenario::start(scenario_name, 2, &[]).await;
    let room = "outage";
    let clients = scenario.clients(room, &[0, 1, 0, 1, 0, 1]).await;
    let traffic = spawn_traffic(&clients, room, "m", 200, 20.0, 0);
    scenario.until_acked(&clients, 400).await;
    let name = dependency.name();
    let acked_at_stop = acked(&clients);
    scenario.log(format!("stopping {name} at {acked_at_stop} acked"));
    let before: Vec<usize> = clients.iter().map(refusals).collect();
    dependency.stop(&scenario.isolated).await;
    let outage = Instant::now();
    let noticed = eventually(Duration::from_secs(30), || async {
        clients
            .iter()
            .zip(&before)
            .all(|(c, before)| refusals(c) > *before)
            .then_some(())
    })
    .await;
    assert!(noticed.is_some(), "not every client saw {name} down");
    scenario.log(format!(
        "sends refused while down: {}; starting {name}",
        refused(&clients) - before.iter().sum::<usize>()
    ));
    dependency.start(&scenario.isolated).await;
    scenario.until_ready().await;
    let recovered = outage.elapsed().as_secs_f64();
    scenario.log(format!(
        "every service ready again, {recovered:.1} s after the stop"
    ));
    traffic.await.expect("traffic ran");
    let everyone = refs(&clients);
    let mut figures = scenario.finish(&everyone, &everyone, room).await;
    figures.note(format!(
        "{name} stopped at {acked_at_stop} acked, every service ready {recovered:.1} s after the stop"
    ));
    figures.check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restarted_during_traffic_loses_and_duplicates_nothing() {
    dependency_restarted_during_traffic("RabbitMQ stop and restart", Dependency::RabbitMq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferretdb_restarted_during_traffic_loses_and_duplicates_nothing() {
    dependency_restarted_during_traffic("FerretDB stop and restart", Dependency::FerretDb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_sigtermed_mid_traffic_hands_its_clients_to_the_other_without_gap_or_duplicate() {
    let mut scenario = Scenario::start("gateway SIGTERM", 2, &[]).await;
    let room = "deploy";
    let clients = scenario.clients(room, &[0, 1, 0, 1, 0, 1, 0, 1]).await;
    let traffic = spawn_traffic(&clients, room, "m", 150, 20.0, 0);
    scenario.until_acked(&clients, 400).await;
    scenario.log(format!("SIGTERM to gateway 0 at {} acked", acked(&clients)));
    let (status, took) = scenario.system.gateways[0]
        .terminate(Duration::from_secs(30))
        .expect("gateway 0 was running");
    scenario.log(format!(
        "gateway 0 exited ({status}) after {:.2} s",
        took.as_secs_f64()
    ));
    traffic.await.expect("traffic ran");
    let everyone = refs(&clients);
    let mut figures = scenario.finish(&everyone, &everyone, room).await;
    figures.note(format!(
        "gateway 0 exited with {status} {:.2} s after SIGTERM",
        took.as_secs_f64()
    ));
    let moved: Vec<String> = figures
        .clients
        .iter()
        .filter(|c| {
            c.connections
                .first()
                .is_some_and(|(_, code)| *code == Some(1001))
        })
        .map(|c| c.name.clone())
        .collect();
    figures.note(format!(
        "clients closed with 1001 and caught up on gateway 1: {moved:?}"
    ));
    figures.check();
    assert!(status.success(), "gateway 0 exited with {status}");
    assert_eq!(moved.len(), 4, "gateway 0's four clients got close 1001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_retried_on_both_gateways_is_stored_once_delivered_once_and_acked_with_one_id() {
    let scenario = Scenario::start("every send twice, once per gateway", 2, &[]).await;
    let room = "twice";
    let ports = scenario.ports();
    let token = scenario.system.user(0, "twice").await;
    let observer = scenario.system.user(1, "observer").await;
    let on = |name: &str, token: &str, port: u16| {
        ResilientClient::spawn(ClientSpec {
            name: name.to_string(),
            token: token.to_string(),
            gateways: vec![port],
            first: 0,
            rooms: vec![room.to_string()],
            window: 8,
        })
    };
    // One user on both gateways (two tabs, or a client that retries elsewhere), and a
    // bystander on each.
    let first = on("twice@gw0", &token, ports[0]);
    let retry = on("twice@gw1", &token, ports[1]);
    let watch0 = on("observer@gw0", &observer, ports[0]);
    let watch1 = on("observer@gw1", &observer, ports[1]);
    let all = [&first, &retry, &watch0, &watch1];
    let ready = eventually(Duration::from_secs(30), || async {
        all.iter().all(|c| c.is_ready()).then_some(())
    })
    .await;
    assert!(ready.is_some(), "clients did not join");

    const MESSAGES: usize = 300;
    for i in 0..MESSAGES {
        let client_id = format!("twice-{i}");
        let body = stamped(&format!("twice #{i}"));
        first.send_body(room, &client_id, &body);
        if i % 2 == 1 {
            // Retried after the first attempt's ack…
            let acked = eventually(Duration::from_secs(30), || async {
                first.is_acked(&client_id).then_some(())
            })
            .await;
            assert!(acked.is_some(), "{client_id} was not acked");
        }
        // …or at once, racing it.
        retry.send_body(room, &client_id, &body);
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let senders = [&first, &retry];
    let mut figures = scenario.finish(&senders, &all, room).await;
    let a = first.report();
    let b = retry.report();
    let identical = a
        .acks
        .iter()
        .filter(|(cid, ack)| {
            b.acks
                .get(*cid)
                .is_some_and(|other| other.id == ack.id && other.sent_at == ack.sent_at)
        })
        .count();
    figures.note(format!(
        "acks on gateway 0: {}, on gateway 1: {}, identical id and sent_at: {identical}",
        a.acks.len(),
        b.acks.len()
    ));
    figures.check();
    assert_eq!(figures.sent, MESSAGES);
    assert_eq!(figures.stored, MESSAGES, "each message stored once");
    assert_eq!(identical, MESSAGES, "both acks of every message agree");
}

/// What the changes scenario expects of one message: what its acked changes leave.
#[derive(Debug, Default, Clone)]
struct Expected {
    body: String,
    deleted: bool,
    /// (user, emoji) → on.
    reactions: std::collections::BTreeMap<(String, String), bool>,
    /// Distinct changes acked (retries excluded): each one bumps the version.
    changes: u64,
}

/// Sends `frame` on `first` until it is acked (a refusal as `unavailable` is retried after a
/// pause, as a careful client does), then the same frame again on `retry` (another gateway)
/// until that is acked too. Panics on any other refusal.
async fn change_twice(first: &mut support::Client, retry: &mut support::Client, frame: &Value) {
    for client in [first, retry] {
        loop {
            client.send_json(frame.clone()).await;
            let client_id = frame["client_id"].clone();
            let answer = client
                .next_matching(|f| {
                    (f["type"] == "ack" || f["type"] == "error") && f["client_id"] == client_id
                })
                .await
                .expect("an answer within 10 s");
            if answer["type"] == "ack" {
                break;
            }
            assert_eq!(answer["code"], "unavailable", "refused: {answer}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_retried_on_both_gateways_through_history_service_kills_end_as_acked() {
    let mut scenario = Scenario::start("changes, retried, history-service kill -9", 2, &[]).await;
    let room = "changes";
    let alice = scenario.system.user(0, "alice").await;
    let bob = scenario.system.user(1, "bob").await;
    let mut alice0 = scenario.system.connect(0, &alice).await;
    let mut alice1 = scenario.system.connect(1, &alice).await;
    let mut bob0 = scenario.system.connect(0, &bob).await;
    let mut bob1 = scenario.system.connect(1, &bob).await;
    for client in [&mut alice0, &mut alice1, &mut bob0, &mut bob1] {
        client.join(room).await;
    }
    const MESSAGES: usize = 60;
    let mut ids = Vec::new();
    let mut expected: Vec<Expected> = Vec::new();
    for i in 0..MESSAGES {
        let body = format!("secret-{i}-sent");
        alice0.send_message(room, &format!("s-{i}"), &body).await;
        let ack = alice0.next_of("ack").await;
        ids.push(ack["id"].as_str().expect("id").to_string());
        expected.push(Expected {
            body,
            ..Expected::default()
        });
    }
    let stored = eventually(Duration::from_secs(30), || async {
        let stored = try_all_messages(&scenario.system.gateways[0].url(), &alice, room)
            .await
            .unwrap_or_default();
        (stored.len() == MESSAGES).then_some(())
    })
    .await;
    assert!(stored.is_some(), "the messages were not stored");

    // Four rounds of one change per message; history-service is killed right after the
    // second and the third round were acked, while their changes are being consumed.
    let mut made = 0;
    for round in 0..4 {
        for (i, id) in ids.iter().enumerate() {
            let state = &mut expected[i];
            if state.deleted {
                continue;
            }
            let client_id = format!("c{round}-{i}");
            let (frame, by_bob) = match (round, i % 5) {
                (0, _) | (2, 1..) => {
                    let body = format!("secret-{i}-edit{round}");
                    state.body = body.clone();
                    (
                        json!({"type": "edit", "room": room, "id": id, "body": body, "client_id": client_id}),
                        false,
                    )
                }
                (2, 0) => {
                    state.deleted = true;
                    state.reactions.clear();
                    (
                        json!({"type": "delete", "room": room, "id": id, "client_id": client_id}),
                        false,
                    )
                }
                (1, _) => {
                    state.reactions.insert(("bob".into(), "👍".into()), true);
                    (
                        json!({"type": "react", "room": room, "id": id, "emoji": "👍", "on": true, "client_id": client_id}),
                        true,
                    )
                }
                _ => {
                    // Bob takes his back on even messages; alice adds hers on the others.
                    if i % 2 == 0 {
                        state.reactions.insert(("bob".into(), "👍".into()), false);
                        (
                            json!({"type": "react", "room": room, "id": id, "emoji": "👍", "on": false, "client_id": client_id}),
                            true,
                        )
                    } else {
                        state.reactions.insert(("alice".into(), "🎉".into()), true);
                        (
                            json!({"type": "react", "room": room, "id": id, "emoji": "🎉", "on": true, "client_id": client_id}),
                            false,
                        )
                    }
                }
            };
            state.changes += 1;
            if by_bob {
                change_twice(&mut bob1, &mut bob0, &frame).await;
            } else {
                change_twice(&mut alice0, &mut alice1, &frame).await;
            }
            made += 1;
        }
        scenario.log(format!(
            "round {round}: {made} changes acked on both gateways"
        ));
        if round == 1 || round == 2 {
            scenario.system.history.kill();
            scenario.log("kill -9 history-service");
            scenario.system.history.start_again();
            scenario.system.history.wait_ready().await;
            scenario.log("history-service ready again");
        }
    }

    // Every message ends as its acked changes say, once history-service has caught up.
    let history = scenario.system.history.url();
    let _ = reqwest::Client::new()
        .post(format!("{history}/api/rooms/{room}/join"))
        .bearer_auth(&scenario.reader)
        .send()
        .await;
    let mismatches = |stored: &[Value]| -> Vec<String> {
        let mut wrong = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let want = &expected[i];
            let Some(got) = stored.iter().find(|m| m["id"] == id.as_str()) else {
                wrong.push(format!("{id}: not stored"));
                continue;
            };
            let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
            for ((_, emoji), on) in &want.reactions {
                if *on {
                    *counts.entry(emoji.clone()).or_default() += 1;
                }
            }
            let got_counts: std::collections::BTreeMap<String, u64> = got["reactions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        r["emoji"].as_str().unwrap_or("").to_string(),
                        r["count"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            let body_ok = if want.deleted {
                got["deleted"] == true && got.get("body").is_none()
            } else {
                got["body"] == want.body.as_str()
            };
            let version_ok = got["version"].as_u64() == Some(1 + want.changes);
            if !body_ok || counts != got_counts || !version_ok {
                wrong.push(format!(
                    "{id}: want {want:?}, counts {counts:?}, version {}; got {got}",
                    1 + want.changes
                ));
            }
        }
        wrong
    };
    let mut last = Vec::new();
    for _ in 0..120 {
        let stored = try_all_messages(&history, &scenario.reader, room)
            .await
            .unwrap_or_default();
        last = mismatches(&stored);
        if last.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deleted = expected.iter().filter(|e| e.deleted).count();
    scenario.log(format!(
        "{MESSAGES} messages, {made} changes each sent on both gateways, {deleted} deleted; \
         {} messages differ from what was acked",
        last.len()
    ));
    assert!(last.is_empty(), "final state differs: {last:#?}");

    // No document of any collection still holds a deleted message's text.
    let db = mongodb::Client::with_uri_str(scenario.isolated.mongodb_uri())
        .await
        .expect("mongodb client")
        .database(&scenario.system.database);
    let mut leftovers = Vec::new();
    for collection in db.list_collection_names().await.expect("collections") {
        let documents: Vec<mongodb::bson::Document> = db
            .collection::<mongodb::bson::Document>(&collection)
            .find(mongodb::bson::doc! {})
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("documents");
        for document in documents {
            let text = document.to_string();
            for (i, want) in expected.iter().enumerate() {
                if want.deleted && text.contains(&format!("secret-{i}-")) {
                    leftovers.push(format!("{collection}: {text}"));
                }
            }
        }
    }
    assert!(leftovers.is_empty(), "deleted text left: {leftovers:#?}");
}

/// A connection that joined `room` and then never reads again; its socket's receive buffer is
/// small, so the gateway's writes to it back up quickly.
async fn stalled_client(
    port: u16,
    token: &str,
    room: &str,
) -> anyhow::Result<WebSocketStream<TcpStream>> {
    let mut socket = open(port, token, Some(4096)).await?;
    socket
        .send(Message::Text(
            json!({"type": "join", "room": room}).to_string().into(),
        ))
        .await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next()).await? {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text)?;
                if frame["type"] == "joined" {
                    return Ok(socket);
                }
            }
            Some(Ok(_)) => {}
            other => anyhow::bail!("no joined: {other:?}"),
        }
    }
}

/// How a stalled connection ended, read once the test looks at it again.
#[derive(Debug, Default)]
struct StallOutcome {
    lagged: bool,
    close: Option<u16>,
    /// Still open after the scenario (never cut off).
    open: bool,
}

async fn read_out(mut socket: WebSocketStream<TcpStream>) -> StallOutcome {
    let mut outcome = StallOutcome::default();
    loop {
        match tokio::time::timeout(Duration::from_secs(3), socket.next()).await {
            Err(_) => {
                outcome.open = true;
                return outcome;
            }
            Ok(Some(Ok(Message::Text(text)))) => {
                if text.contains("\"type\":\"lagged\"") {
                    outcome.lagged = true;
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                outcome.close = frame.map(|f| u16::from(f.code));
                return outcome;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return outcome,
        }
    }
}

/// What stalling may add to the gateway's memory per stalled connection, on top of what the
/// open connection costs anyway: its outbound queue at capacity (256 entries of ~80 bytes
/// plus a copy of the room id each, ~32 KiB; the messages themselves are shared by every
/// connection) and the frame being written with allocator overhead (~16 KiB). It does not
/// depend on how many messages go by: a connection whose queue overflows is closed. Socket
/// buffers are kernel memory, outside the process's RSS.
const STALL_KIB: u64 = 48;
/// What an open, joined connection may cost: its two tasks, HTTP and WebSocket state, the
/// 4 KiB read buffer, its limiter and token state (measured: 20–50 KiB).
const CONNECTION_KIB: u64 = 64;
/// Runtime and allocator slack.
const SLACK_KIB: u64 = 16 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_clients_leave_gateway_memory_bounded_and_live_clients_served() {
    // 32 KiB socket send buffers (instead of 256 KiB) only make the stalls overflow sooner.
    let scenario = Scenario::start(
        "1,000 stalled clients",
        2,
        &[("GATEWAY__LIMITS__SOCKET_SEND_BUFFER_BYTES", "32768")],
    )
    .await;
    let room = "busy";
    let clients = scenario.clients(room, &[0, 0, 0, 0, 1, 1]).await;
    let pid = scenario.system.gateways[0].pid().expect("gateway 0 runs");
    let rss = || memory_kib(pid).map(|(rss, _)| rss).unwrap_or_default();

    // Phase 1: the room without stalled clients.
    let traffic = spawn_traffic(&clients, room, "quiet", 20, 10.0, 200);
    traffic.await.expect("traffic ran");
    let expected = clients
        .iter()
        .map(|c| c.report().client_ids.len())
        .sum::<usize>();
    let received = || clients.iter().map(|c| c.progress().2).sum::<usize>();
    let delivered = || {
        clients
            .iter()
            .all(|c| c.all_acked() && c.progress().2 >= expected)
    };
    assert!(
        while_progressing(STALL, received, delivered).await,
        "phase 1 was not delivered"
    );
    let phase1: Vec<ClientReport> = clients.iter().map(|c| c.report()).collect();
    let phase1_latencies: Vec<u64> = phase1.iter().flat_map(|r| r.latencies_us.clone()).collect();
    let phase1_counts: Vec<usize> = phase1.iter().map(|r| r.latencies_us.len()).collect();
    let rss_before = rss();
    scenario.log(format!("phase 1 done; gateway 0 RSS {rss_before} KiB"));

    // 1,000 connections of 10 users join the room on gateway 0 and stop reading.
    const STALLED: usize = 1000;
    let mut tokens = Vec::new();
    for i in 0..10 {
        tokens.push(scenario.system.user(0, &format!("stalled{i}")).await);
    }
    let port = scenario.ports()[0];
    let stalled: Vec<WebSocketStream<TcpStream>> = futures_util::stream::iter(0..STALLED)
        .map(|i| {
            let token = tokens[i % tokens.len()].clone();
            async move { stalled_client(port, &token, room).await }
        })
        .buffer_unordered(50)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()
        .expect("stalled clients joined");
    let rss_connected = rss();
    scenario.log(format!(
        "{STALLED} stalled clients joined; gateway 0 RSS {rss_connected} KiB"
    ));

    // Phase 2: the same room, busier, with the stalled clients in it; RSS sampled throughout.
    let peak = Arc::new(AtomicU64::new(rss_connected));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some((rss, _)) = memory_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let traffic = spawn_traffic(&clients, room, "busy", 170, 10.0, 200);
    traffic.await.expect("traffic ran");
    let everyone = refs(&clients);
    let mut figures = scenario.finish(&everyone, &everyone, room).await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.expect("sampler ran");
    let peak = peak.load(Ordering::Relaxed);
    let hwm = memory_kib(pid).map(|(_, hwm)| hwm).unwrap_or_default();
    let rss_after = rss();

    let outcomes: Vec<StallOutcome> = futures_util::stream::iter(stalled)
        .map(read_out)
        .buffer_unordered(200)
        .collect()
        .await;
    let cut_off = outcomes.iter().filter(|o| !o.open).count();
    let with_4008 = outcomes.iter().filter(|o| o.close == Some(4008)).count();
    let with_lagged = outcomes.iter().filter(|o| o.lagged).count();

    let final_reports: Vec<ClientReport> = clients.iter().map(|c| c.report()).collect();
    let phase2_latencies: Vec<u64> = final_reports
        .iter()
        .zip(&phase1_counts)
        .flat_map(|(r, skip)| r.latencies_us.iter().skip(*skip).copied())
        .collect();
    let n = STALLED as u64;
    // The bound stated in docs/guarantees.md, and the part of it due to the stalling itself.
    let bound = rss_before + n * (CONNECTION_KIB + STALL_KIB) + SLACK_KIB;
    let stall_bound = rss_connected + n * STALL_KIB + SLACK_KIB;
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    figures.note(format!(
        "live latency without stalled clients: p50 {} p99 {} ({} deliveries)",
        ms(percentile_ms(&phase1_latencies, 50.0)),
        ms(percentile_ms(&phase1_latencies, 99.0)),
        phase1_latencies.len()
    ));
    figures.note(format!(
        "live latency with {STALLED} stalled clients: p50 {} p99 {} ({} deliveries)",
        ms(percentile_ms(&phase2_latencies, 50.0)),
        ms(percentile_ms(&phase2_latencies, 99.0)),
        phase2_latencies.len()
    ));
    figures.note(format!(
        "gateway 0 RSS: {rss_before} KiB before, {rss_connected} KiB with {STALLED} stalled \
         joined ({} KiB each), peak {peak} KiB during traffic (VmHWM {hwm} KiB), {rss_after} KiB \
         after; the stalling added {} KiB per stalled connection",
        rss_connected.saturating_sub(rss_before) / n,
        peak.saturating_sub(rss_connected) / n,
    ));
    figures.note(format!(
        "bounds: peak ≤ {bound} KiB (before + ({CONNECTION_KIB} + {STALL_KIB}) KiB per stalled \
         connection + {slack} MiB) and ≤ {stall_bound} KiB (with the stalled joined + \
         {STALL_KIB} KiB each + {slack} MiB)",
        slack = SLACK_KIB / 1024
    ));
    figures.note(format!(
        "stalled clients cut off by the gateway: {cut_off} of {STALLED} (close 4008 received by {with_4008}, lagged frame by {with_lagged}; the others found the socket closed)"
    ));
    figures.check();
    assert!(
        peak <= bound,
        "gateway RSS peaked at {peak} KiB, over the bound of {bound} KiB"
    );
    assert!(
        peak <= stall_bound,
        "stalling took gateway RSS to {peak} KiB, over {stall_bound} KiB"
    );
    assert_eq!(cut_off, STALLED, "every stalled client was cut off");
}

// Reproductions of the catch-up gaps the SIGTERM scenario runs into by chance, made
// deterministic (or nearly). Ignored until the gateway closes them.

/// Reads frames until `kind` arrives; frames of other types are dropped.
async fn next_of_type(client: &mut support::Client, kind: &str) -> Value {
    loop {
        let frame = client
            .next_json(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no `{kind}` frame within 10 s"));
        if frame["type"] == kind {
            return frame;
        }
    }
}

/// Message ids of every `message` frame arriving within `quiet` of the previous frame.
async fn drain_messages(client: &mut support::Client, quiet: Duration) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(frame) = client.next_json(quiet).await {
        if frame["type"] == "message"
            && let Some(id) = frame["id"].as_str()
        {
            ids.push(id.to_string());
        }
    }
    ids
}

/// Connects through gateway `via`, joins `room` with `since`, and returns the ids of what
/// `joined` carried and of the live messages that followed within 2 s.
async fn rejoin(system: &System, via: usize, token: &str, room: &str, since: &str) -> Vec<String> {
    let mut client = system.connect(via, token).await;
    client
        .send_json(json!({"type": "join", "room": room, "since": since}))
        .await;
    let joined = next_of_type(&mut client, "joined").await;
    let mut ids = message_ids(&joined);
    ids.extend(drain_messages(&mut client, Duration::from_secs(2)).await);
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_retried_after_an_outage_reaches_a_client_rejoining_with_since() {
    let scenario = Scenario::start("retry after an outage vs since", 2, &[]).await;
    let room = "order";
    let system = &scenario.system;
    let (alice_token, bob_token, carol_token) = (
        system.user(0, "alice").await,
        system.user(1, "bob").await,
        system.user(1, "carol").await,
    );
    let mut alice = system.connect(0, &alice_token).await;
    let mut bob = system.connect(1, &bob_token).await;
    let mut carol = system.connect(1, &carol_token).await;
    for client in [&mut alice, &mut bob, &mut carol] {
        client.join(room).await;
    }

    // Alice's first attempt is refused while the broker is down; its receipt (and id) stay.
    scenario.isolated.stop_rabbitmq().await;
    alice
        .send_message(room, "x-1", "written during the outage")
        .await;
    let refused = next_of_type(&mut alice, "error").await;
    assert_eq!(refused["code"], "unavailable");
    scenario.isolated.start_rabbitmq().await;
    scenario.until_ready().await;

    // Bob's newer message reaches Carol, who then drops off.
    bob.send_message(room, "y-1", "after the outage").await;
    let y = next_of_type(&mut bob, "ack").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let seen = next_of_type(&mut carol, "message").await;
    assert_eq!(seen["id"], y.as_str());
    drop(carol);

    // Alice retries: acked with the original id, which sorts before Bob's.
    alice
        .send_message(room, "x-1", "written during the outage")
        .await;
    let x = next_of_type(&mut alice, "ack").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    scenario.log(format!("retry acked as {x}; Carol's since is {y}"));
    assert!(x < y, "the retry keeps the id of its first attempt");
    // Bob's own copy of his message comes before or after his ack; then Alice's.
    let mut before_x = Vec::new();
    loop {
        let message = next_of_type(&mut bob, "message").await;
        if message["id"] == x.as_str() {
            break;
        }
        before_x.push(message["id"].clone());
    }
    assert!(
        before_x.is_empty() || before_x == [Value::from(y.as_str())],
        "Bob got {before_x:?} before Alice's message"
    );

    let got = rejoin(system, 1, &carol_token, room, &y).await;
    assert!(
        got.contains(&x),
        "Carol rejoined with since={y} and never got Alice's acked message {x} (got {got:?})"
    );
}

/// Carol saw a first message, dropped off, and rejoins gateway 1 with `since` after a second
/// message was acked but before history-service stored it. With `bob_stays`, another member
/// keeps gateway 1 serving the room throughout, so the gateway itself saw the message.
async fn since_join_before_history_stored_it(name: &'static str, bob_stays: bool) {
    let mut scenario = Scenario::start(name, 2, &[]).await;
    let room = "lag";
    let alice_token = scenario.system.user(0, "alice").await;
    let carol_token = scenario.system.user(1, "carol").await;
    let mut alice = scenario.system.connect(0, &alice_token).await;
    let mut carol = scenario.system.connect(1, &carol_token).await;
    let mut bob = None;
    if bob_stays {
        let bob_token = scenario.system.user(1, "bob").await;
        let mut client = scenario.system.connect(1, &bob_token).await;
        client.join(room).await;
        bob = Some(client);
    }
    alice.join(room).await;
    carol.join(room).await;
    alice.send_message(room, "first", "seen by Carol").await;
    let first = next_of_type(&mut alice, "ack").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(
        next_of_type(&mut carol, "message").await["id"],
        first.as_str()
    );
    drop(carol);

    // The message history-service has not written yet: its consumer is gone, so it waits in
    // the history queue (durable, and acked to Alice).
    scenario.system.history.kill();
    alice.send_message(room, "second", "not stored yet").await;
    let second = next_of_type(&mut alice, "ack").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    if let Some(bob) = bob.as_mut() {
        let bob_saw = drain_messages(bob, Duration::from_secs(1)).await;
        assert!(bob_saw.contains(&second), "Bob got {second} live");
    }

    // history-service answers reads again while its writes lag behind: modelled by an
    // instance that serves the same database but consumes a queue of its own, created after
    // the message (a slow or backlogged consumer gives the same window, only shorter).
    let queue = format!("lagging-{}", ulid::Ulid::new());
    scenario
        .system
        .history
        .set_env("HISTORY__AMQP__QUEUE", &queue);
    scenario.system.history.start_again();
    scenario.system.history.wait_ready().await;

    let got = rejoin(&scenario.system, 1, &carol_token, room, &first).await;
    scenario.log(format!("Carol's catch-up after {first}: {got:?}"));
    assert!(
        got.contains(&second),
        "Carol rejoined with since={first} and never got the acked message {second} (got {got:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_since_join_gets_what_its_gateway_saw_before_history_stored_it() {
    since_join_before_history_stored_it("since join, message not stored, room served", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fails: a gateway that did not serve the room has only history-service's stored \
            messages for a `since` catch-up (docs/guarantees.md, known gap of 2)"]
async fn a_since_join_on_a_gateway_new_to_the_room_gets_messages_not_yet_stored() {
    since_join_before_history_stored_it("since join, message not stored, room new", false).await;
}

/// Sends `signal` (`STOP`, `CONT`, …) to a process.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reconnecting_to_the_broker_late_delivers_what_was_published_meanwhile() {
    let scenario = Scenario::start("late broker reconnect", 2, &[]).await;
    let room = "late";
    let system = &scenario.system;
    let alice_token = system.user(0, "alice").await;
    let bob_token = system.user(1, "bob").await;
    let mut alice = system.connect(0, &alice_token).await;
    let mut bob = system.connect(1, &bob_token).await;
    alice.join(room).await;
    bob.join(room).await;

    // Gateway 1 reconnects after gateway 0 (as one backoff step later would): it is paused
    // while RabbitMQ restarts and gateway 0 carries on.
    let late = system.gateways[1].pid().expect("gateway 1 runs");
    signal(late, "STOP");
    scenario.isolated.stop_rabbitmq().await;
    scenario.isolated.start_rabbitmq().await;
    system.gateways[0].wait_ready().await;
    alice
        .send_message(room, "meanwhile", "published before gateway 1 is back")
        .await;
    let meanwhile = next_of_type(&mut alice, "ack").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    signal(late, "CONT");
    system.gateways[1].wait_ready().await;
    alice.send_message(room, "after", "published after").await;
    let after = next_of_type(&mut alice, "ack").await["id"]
        .as_str()
        .expect("id")
        .to_string();

    let got = drain_messages(&mut bob, Duration::from_secs(3)).await;
    scenario.log(format!("Bob, connected throughout, got {got:?}"));
    assert!(got.contains(&after), "Bob got the message sent after");
    assert!(
        got.contains(&meanwhile),
        "Bob, joined throughout, never got the acked message {meanwhile}"
    );
}
