//! Test-unique RabbitMQ users for the services, made by `deploy/rabbitmq/provision.sh` (the
//! script `scripts/deps.sh` runs for the real `chat-*` users) from the same
//! `deploy/rabbitmq/permissions.conf`, for one test's exchange and history queue. Deleted again
//! when dropped, so the users `scripts/deps.sh` made are never touched.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

/// The services, as `permissions.conf` names them.
pub const ROLES: [&str; 3] = ["auth", "gateway", "history"];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shared broker's AMQP port (`scripts/deps.sh` reads the same variable).
pub fn amqp_port() -> u16 {
    std::env::var("RABBITMQ_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5672)
}

/// The script's arguments for these users, after the action.
fn provision_command(action: &str, args: &[&str]) -> std::process::Command {
    // As root, as scripts/deps.sh runs it (through the same helper): rabbitmqctl needs the
    // node's Erlang cookie.
    let mut command = std::process::Command::new("bash");
    command
        .current_dir(repo_root())
        .arg("-c")
        .arg(r#"source scripts/lib.sh && as_root bash deploy/rabbitmq/provision.sh "$@""#)
        .arg("provision")
        .arg(action)
        .args(args)
        .stdin(Stdio::null());
    command
}

/// One user per service, named `<prefix><role>`, allowed what `permissions.conf` allows on one
/// exchange.
pub struct BrokerUsers {
    prefix: String,
    passwords: HashMap<&'static str, String>,
}

impl BrokerUsers {
    /// Creates the users `e2e-<tag>-<role>` for `exchange` and `history_queue`.
    pub async fn create(tag: &str, exchange: &str, history_queue: &str) -> Self {
        let prefix = format!("e2e-{tag}-");
        let passwords: HashMap<&'static str, String> = ROLES
            .iter()
            .map(|role| {
                let secret = format!("{}{}", ulid::Ulid::new(), ulid::Ulid::new());
                (*role, secret.to_lowercase())
            })
            .collect();
        // Passwords reach the script in a file, as scripts/deps.sh passes .local/broker.env.
        let file = std::env::temp_dir().join(format!("{prefix}broker.env"));
        let text: String = passwords
            .iter()
            .map(|(role, secret)| format!("RABBITMQ_{}_PASSWORD={secret}\n", role.to_uppercase()))
            .collect();
        std::fs::write(&file, text).expect("the passwords file is written");
        let file_arg = file.to_string_lossy().into_owned();
        let output = tokio::process::Command::from(provision_command(
            "apply",
            &[
                "--prefix",
                &prefix,
                "--exchange",
                exchange,
                "--history-queue",
                history_queue,
                "--passwords",
                &file_arg,
            ],
        ))
        .output()
        .await
        .expect("bash runs deploy/rabbitmq/provision.sh");
        let _ = std::fs::remove_file(&file);
        assert!(
            output.status.success(),
            "deploy/rabbitmq/provision.sh apply failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Self { prefix, passwords }
    }

    pub fn user(&self, role: &str) -> String {
        format!("{}{role}", self.prefix)
    }

    pub fn password(&self, role: &str) -> &str {
        &self.passwords[role]
    }

    /// The AMQP URI a service with this role connects with.
    pub fn uri(&self, role: &str) -> String {
        format!(
            "amqp://{}:{}@127.0.0.1:{}/%2f",
            self.user(role),
            self.password(role),
            amqp_port()
        )
    }
}

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        let _ = provision_command("delete", &["--prefix", &self.prefix])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
