//! The fault suite's own RabbitMQ node and FerretDB (`scripts/fault-deps.sh`), which its tests
//! stop and restart, and the lock that runs those tests one at a time.
//!
//! Other tests and benchmarks keep using the shared instances on the default ports meanwhile.
//! The first test to take the lock starts both and registers this process with the script,
//! which stops them again once the process has exited, however the run ended.

use tokio::sync::{Mutex, MutexGuard, OnceCell};

use super::env_port as port;

/// Held by the running fault test: they share the isolated broker and database, so they must
/// not overlap whatever `--test-threads` says.
static SERIAL: Mutex<()> = Mutex::const_new(());
static STARTED: OnceCell<()> = OnceCell::const_new();

/// Runs `scripts/fault-deps.sh <args>`; panics with its output when it fails.
async fn run_script(args: &[&str]) {
    super::run_script("fault-deps.sh", args).await;
}

/// Exclusive use of the isolated dependencies for one test.
pub struct Isolated {
    _turn: MutexGuard<'static, ()>,
}

impl Isolated {
    /// Waits for the previous fault test to finish, then makes sure RabbitMQ and FerretDB are
    /// up (a failed test may have left one stopped).
    pub async fn acquire() -> Self {
        let turn = SERIAL.lock().await;
        run_script(&["start"]).await;
        STARTED
            .get_or_init(|| async {
                if std::env::var_os("FAULT_DEPS_KEEP").is_none() {
                    run_script(&["stop-when-gone", &std::process::id().to_string()]).await;
                }
            })
            .await;
        Self { _turn: turn }
    }

    pub fn amqp_uri(&self) -> String {
        format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f",
            port("FAULT_RABBITMQ_PORT", 5673)
        )
    }

    pub fn mongodb_uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", port("FAULT_FERRETDB_PORT", 27018))
    }

    /// `rabbitmqctl shutdown` of the isolated node: clients see their connections closed.
    pub async fn stop_rabbitmq(&self) {
        run_script(&["stop-rabbitmq"]).await;
    }

    pub async fn start_rabbitmq(&self) {
        run_script(&["start-rabbitmq"]).await;
    }

    /// SIGTERM to the isolated FerretDB (SIGKILL after 10 s); its data is kept.
    pub async fn stop_ferretdb(&self) {
        run_script(&["stop-ferretdb"]).await;
    }

    pub async fn start_ferretdb(&self) {
        run_script(&["start-ferretdb"]).await;
    }
}
