//! The systems under test, as the scenarios see them.

use std::net::SocketAddr;

use anyhow::Context;

use crate::cli::RunArgs;
use crate::measure::NamedPid;
use crate::wire::Protocol;

/// One system under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// `ours`, `ours-2gw` or `peer`: the row label in every table.
    pub name: String,
    pub protocol: Protocol,
    /// WebSocket endpoints; connection `i` goes to `gateways[i % len]`.
    pub gateways: Vec<SocketAddr>,
    /// Base URL for signup and login of the scenarios' users (cheap bcrypt cost).
    pub auth: String,
    /// Base URL of the instance with the default bcrypt cost, for the auth scenario.
    pub auth_slow: String,
    /// Database holding the `messages` collection.
    pub db: String,
    /// Ours only: history-service's base URL (its `/health/ready` is polled by the storm).
    pub history: Option<String>,
    /// Ours only: history-service's Prometheus metrics URL.
    pub history_metrics: Option<String>,
    /// Ours only: the Prometheus metrics URL of the gateway that `ours` uses.
    pub gateway_metrics: Option<String>,
    /// Processes whose CPU time counts for this target.
    pub processes: Vec<NamedPid>,
    /// Processes that hold the connections, whose memory the idle scenario reads: the
    /// gateways for ours, the `node` process for the peer.
    pub connection_holders: Vec<u32>,
}

impl Target {
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(|p| p.pid).collect()
    }

    pub fn gateway(&self, connection: usize) -> SocketAddr {
        self.gateways[connection % self.gateways.len()]
    }
}

/// The targets of a run: ours with one gateway, ours with two (when a second gateway is
/// given) and the peer.
pub struct Targets {
    pub ours: Target,
    pub ours_two: Option<Target>,
    pub peer: Target,
}

fn address(text: &str) -> anyhow::Result<SocketAddr> {
    let text = text
        .trim_start_matches("http://")
        .trim_start_matches("ws://")
        .trim_end_matches('/');
    text.parse()
        .with_context(|| format!("`{text}` is not an ip:port address"))
}

fn url(text: &str) -> String {
    let text = text.trim_end_matches('/');
    if text.starts_with("http://") {
        text.to_string()
    } else {
        format!("http://{text}")
    }
}

impl Targets {
    pub fn from_args(args: &RunArgs) -> anyhow::Result<Self> {
        let gateways = args
            .ours_gateway
            .iter()
            .map(|g| address(g))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let pid_of = |name: &str| args.ours_pid.iter().find(|p| p.name == name).map(|p| p.pid);
        let first = gateways.first().copied().context("no gateway given")?;
        let ours = Target {
            name: "ours".into(),
            protocol: Protocol::Ours,
            gateways: vec![first],
            auth: url(&args.ours_auth),
            auth_slow: url(&args.ours_auth_slow),
            db: args.ours_db.clone(),
            history: args.ours_history.as_deref().map(url),
            history_metrics: args.ours_history_metrics.as_deref().map(url).or_else(|| {
                args.ours_history
                    .as_deref()
                    .map(|h| format!("{}/metrics", url(h)))
            }),
            gateway_metrics: Some(
                args.ours_gateway_metrics
                    .as_deref()
                    .map_or_else(|| format!("http://{first}/metrics"), url),
            ),
            processes: args
                .ours_pid
                .iter()
                .filter(|p| p.name != "gateway2")
                .cloned()
                .collect(),
            connection_holders: pid_of("gateway").into_iter().collect(),
        };
        let ours_two = (gateways.len() >= 2).then(|| Target {
            name: "ours-2gw".into(),
            gateways: gateways[..2].to_vec(),
            // Its metrics are split over two gateways; no scenario reads them.
            gateway_metrics: None,
            processes: args.ours_pid.clone(),
            connection_holders: pid_of("gateway")
                .into_iter()
                .chain(pid_of("gateway2"))
                .collect(),
            ..ours.clone()
        });
        let peer_address = address(&args.peer)?;
        let peer = Target {
            name: "peer".into(),
            protocol: Protocol::SocketIo,
            gateways: vec![peer_address],
            auth: url(&args.peer),
            auth_slow: url(&args.peer_slow),
            db: args.peer_db.clone(),
            history: None,
            history_metrics: None,
            gateway_metrics: None,
            processes: args.peer_pid.clone(),
            connection_holders: args
                .peer_pid
                .iter()
                .filter(|p| p.name == "node")
                .map(|p| p.pid)
                .collect(),
        };
        Ok(Self {
            ours,
            ours_two,
            peer,
        })
    }
}
