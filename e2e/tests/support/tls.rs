//! The TLS tests' RabbitMQ node and FerretDB (`scripts/tls-deps.sh`): TLS listeners only, with
//! a server certificate signed by a CA the script made when it started them.
//!
//! The first test to ask starts both and registers this process with the script, which stops
//! them again once the process has exited, however the run ended.

use std::path::PathBuf;

use tokio::sync::OnceCell;

use super::{env_port, run_script};

static STARTED: OnceCell<PathBuf> = OnceCell::const_new();

/// The running TLS servers and the file of the CA that signed their certificate.
pub struct TlsServers {
    ca_file: PathBuf,
}

impl TlsServers {
    /// Starts both servers unless they run (once per test process).
    pub async fn start() -> Self {
        let ca_file = STARTED
            .get_or_init(|| async {
                run_script("tls-deps.sh", &["start"]).await;
                if std::env::var_os("TLS_DEPS_KEEP").is_none() {
                    let pid = std::process::id().to_string();
                    run_script("tls-deps.sh", &["stop-when-gone", &pid]).await;
                }
                PathBuf::from(run_script("tls-deps.sh", &["ca"]).await.trim())
            })
            .await
            .clone();
        assert!(ca_file.is_file(), "{} exists", ca_file.display());
        Self { ca_file }
    }

    /// The PEM file of the CA that signed both servers' certificate.
    pub fn ca_file(&self) -> String {
        self.ca_file.to_string_lossy().into_owned()
    }

    /// The broker's AMQPS address (RabbitMQ's `guest`, which may log in from this machine).
    pub fn amqps_uri(&self) -> String {
        format!(
            "amqps://guest:guest@127.0.0.1:{}/%2f",
            env_port("TLS_RABBITMQ_PORT", 5671)
        )
    }

    /// FerretDB's TLS address, with `query` (e.g. `tls=true&tlsCAFile=…`).
    pub fn mongodb_uri(&self, query: &str) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?{query}",
            env_port("TLS_FERRETDB_PORT", 27019)
        )
    }
}
