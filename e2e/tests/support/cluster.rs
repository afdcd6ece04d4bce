//! The cluster test's own 3-node RabbitMQ cluster (`scripts/cluster-deps.sh`), whose nodes it
//! kills, stops and starts again, and a recorder of the pauses those faults cause.
//!
//! The first test to use the cluster starts it and registers this process with the script,
//! which stops the nodes again once the process has exited, however the run ended.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

static STARTED: OnceCell<()> = OnceCell::const_new();

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster-deps.sh")
}

/// Runs `scripts/cluster-deps.sh <args>`; panics with its output when it fails.
async fn run_script(args: &[&str]) {
    let started = Instant::now();
    let output = tokio::process::Command::new("bash")
        .arg(script())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("bash runs scripts/cluster-deps.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "scripts/cluster-deps.sh {} failed:\n{text}",
        args.join(" ")
    );
    for line in text.lines() {
        println!("  [{:>5.1}s] {line}", started.elapsed().as_secs_f64());
    }
}

/// The three nodes, numbered 1 to 3 as the script numbers them.
pub struct Cluster;

impl Cluster {
    /// Makes sure all three nodes run and are joined (a failed test may have left one down).
    pub async fn start() -> Self {
        run_script(&["start"]).await;
        STARTED
            .get_or_init(|| async {
                if std::env::var_os("CLUSTER_DEPS_KEEP").is_none() {
                    run_script(&["stop-when-gone", &std::process::id().to_string()]).await;
                }
            })
            .await;
        Self
    }

    /// Node `n`'s AMQP URI (guest, from the loopback address only).
    pub fn uri(&self, n: u16) -> String {
        let base = std::env::var("CLUSTER_RABBITMQ_BASE_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(5674u16);
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", base + n - 1)
    }

    /// Node `first`'s URI, then the other two in turn: `amqp.uri` and `amqp.uris` of a
    /// service that connects to `first` and fails over to the next nodes.
    pub fn addresses(&self, first: u16) -> (String, String) {
        let others: Vec<String> = (1..3).map(|i| self.uri((first - 1 + i) % 3 + 1)).collect();
        (self.uri(first), others.join(","))
    }

    /// SIGKILL of node `n`'s Erlang VM: no shutdown code runs, its connections just break.
    pub async fn kill(&self, n: u16) {
        run_script(&["kill-node", &n.to_string()]).await;
    }

    /// `rabbitmqctl shutdown` of node `n`, as a rolling restart does.
    pub async fn stop(&self, n: u16) {
        run_script(&["stop-node", &n.to_string()]).await;
    }

    /// Starts node `n` again with its data; it rejoins the cluster.
    pub async fn start_node(&self, n: u16) {
        run_script(&["start-node", &n.to_string()]).await;
    }
}

/// When a growing count (deliveries, acks) last changed, sampled every few milliseconds, to
/// find the longest time it stood still.
pub struct Progress {
    started: Instant,
    changes: Arc<Mutex<Vec<Duration>>>,
    task: JoinHandle<()>,
}

/// Most changes kept (a few minutes of traffic change the count far fewer times).
const MAX_CHANGES: usize = 1_000_000;
const SAMPLE: Duration = Duration::from_millis(5);

impl Progress {
    pub fn record(count: impl Fn() -> usize + Send + 'static) -> Self {
        let started = Instant::now();
        let changes = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let changes = changes.clone();
            async move {
                let mut last = count();
                let mut tick = tokio::time::interval(SAMPLE);
                loop {
                    tick.tick().await;
                    let now = count();
                    if now != last {
                        last = now;
                        let mut changes = changes.lock().unwrap_or_else(PoisonError::into_inner);
                        if changes.len() < MAX_CHANGES {
                            changes.push(started.elapsed());
                        }
                    }
                }
            }
        });
        Self {
            started,
            changes,
            task,
        }
    }

    /// The longest time without a change within `from..to`, counting a pause that started
    /// before `from` or went on after `to` as far as it reaches into the window: the pause a
    /// fault at `from` caused. The quiet time after the very last change (the traffic is
    /// over) is no pause.
    pub fn longest_pause(&self, from: Instant, to: Instant) -> Duration {
        let from = from.saturating_duration_since(self.started);
        let to = to.saturating_duration_since(self.started);
        let changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        changes
            .windows(2)
            .map(|pair| (pair[0].max(from), pair[1].min(to)))
            .filter(|(start, end)| start < end)
            .map(|(start, end)| end - start)
            .max()
            .unwrap_or_default()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}
