//! Command line: where the targets listen and which profile of sizes to run.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::measure::NamedPid;

#[derive(Parser)]
#[command(
    name = "chat-bench",
    about = "Measures our chat services and the socket.io reference peer with the same scenarios."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Runs the scenarios against every target; prints tables and writes CSV files.
    Run(Box<RunArgs>),
    /// Drops databases a run created (the runner calls this when it stops).
    DropDatabases {
        #[arg(long, default_value = "mongodb://127.0.0.1:27017")]
        mongo: String,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Sizes of the scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// Small sizes, a few minutes: checks that the tool works.
    Quick,
    /// The sizes of the issue, bounded to what this machine allows (about half an hour).
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
/// In the order they run: the scenarios that store messages come after the ones whose joins
/// read history, so those joins find an empty store. The storm fills the store itself and
/// empties it afterwards; it runs last so that a target still working off its joins cannot
/// slow another scenario down.
pub enum Scenario {
    Idle,
    Connect,
    Fanout,
    Persistence,
    Auth,
    Rooms,
    Storm,
}

#[derive(Args)]
pub struct RunArgs {
    #[arg(long, value_enum, default_value = "quick")]
    pub profile: Profile,
    /// Directory for the CSV files and `summary.md`.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "idle,connect,fanout,persistence,auth,rooms,storm"
    )]
    pub scenarios: Vec<Scenario>,
    /// Prefix of the usernames created on both targets (unique per run).
    #[arg(long, default_value = "bench")]
    pub user_prefix: String,
    #[arg(long, default_value = "mongodb://127.0.0.1:27017")]
    pub mongo: String,

    /// Our gateway's address (host:port); give it twice for the two-instance runs.
    #[arg(long, required = true)]
    pub ours_gateway: Vec<String>,
    /// auth-service base URL with a cheap bcrypt cost, for the scenarios' users.
    #[arg(long)]
    pub ours_auth: String,
    /// auth-service base URL with the default bcrypt cost, for the auth scenario.
    #[arg(long)]
    pub ours_auth_slow: String,
    /// history-service's database (messages land in its `messages` collection).
    #[arg(long)]
    pub ours_db: String,
    /// history-service's base URL: the storm polls its `/health/ready`. Without it, the
    /// storm reports no readiness and no history reads.
    #[arg(long)]
    pub ours_history: Option<String>,
    /// Where history-service serves its Prometheus metrics, for the storm's count of history
    /// reads (default: `<ours-history>/metrics`).
    #[arg(long)]
    pub ours_history_metrics: Option<String>,
    /// Where the first gateway serves its Prometheus metrics, for the storm's count of joins
    /// answered from memory (default: `http://<first ours-gateway>/metrics`).
    #[arg(long)]
    pub ours_gateway_metrics: Option<String>,
    /// Our processes as name=pid; `gateway` and `gateway2` hold the connections, the others
    /// (history, rabbitmq, ferretdb) count in the CPU columns.
    #[arg(long)]
    pub ours_pid: Vec<NamedPid>,

    /// The peer's address (host:port), started with a cheap bcrypt cost.
    #[arg(long)]
    pub peer: String,
    /// A second peer process with the default bcrypt cost, for the auth scenario.
    #[arg(long)]
    pub peer_slow: String,
    /// The peer's database (Mongoose's `messages` collection).
    #[arg(long)]
    pub peer_db: String,
    /// The peer's processes as name=pid; `node` holds the connections.
    #[arg(long)]
    pub peer_pid: Vec<NamedPid>,
}
