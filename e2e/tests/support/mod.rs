//! Starts the real binaries as child processes on free ports, each test with its own database,
//! exchange and queue names, and talks to them over HTTP and WebSocket like a client would.

#![allow(dead_code)]

pub mod broker_users;
pub mod cluster;
pub mod isolated;
pub mod ledger;
pub mod resilient;
pub mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use broker_users::BrokerUsers;

pub fn bin_dir() -> PathBuf {
    std::env::var_os("CHAT_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"))
}

/// Runs `scripts/<script> <args>` from the repository; panics with its output when it fails.
/// Prints each line of the output with the time the script took; returns its standard output.
pub async fn run_script(script: &str, args: &[&str]) -> String {
    let started = Instant::now();
    let output = tokio::process::Command::new("bash")
        .arg(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../scripts")
                .join(script),
        )
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|error| panic!("bash runs scripts/{script}: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "scripts/{script} {} failed:\n{text}",
        args.join(" ")
    );
    for line in text.lines() {
        println!("  [{:>5.1}s] {line}", started.elapsed().as_secs_f64());
    }
    stdout
}

/// The port named by the environment variable `var` (as the script that starts the server
/// reads it), or `default`.
pub fn env_port(var: &str, default: u16) -> u16 {
    std::env::var(var)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running service binary; killed (SIGKILL) when dropped.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    env: HashMap<String, String>,
    child: Option<Child>,
}

impl Service {
    pub fn start(name: &'static str, port: u16, env: HashMap<String, String>) -> Self {
        let mut service = Self {
            name,
            port,
            env,
            child: None,
        };
        service.spawn();
        service
    }

    fn spawn(&mut self) {
        let path = bin_dir().join(self.name);
        assert!(
            path.exists(),
            "{} is missing: build the binaries first (cargo build --workspace)",
            path.display()
        );
        let log = std::env::var_os("E2E_LOG").is_some();
        // E2E_LOG_DIR keeps each service's output in <dir>/<name>-<port>.log (appended across
        // restarts), for looking into a failed run afterwards.
        let log_file = std::env::var_os("E2E_LOG_DIR").and_then(|dir| {
            std::fs::create_dir_all(&dir).ok()?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(PathBuf::from(dir).join(format!("{}-{}.log", self.name, self.port)))
                .ok()
        });
        let output = |file: &Option<std::fs::File>| match file.as_ref().map(|f| f.try_clone()) {
            Some(Ok(file)) => Stdio::from(file),
            _ if log => Stdio::inherit(),
            _ => Stdio::null(),
        };
        let child = Command::new(path)
            .envs(&self.env)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(output(&log_file))
            .stderr(output(&log_file))
            .spawn()
            .expect("service starts");
        self.child = Some(child);
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, as a deploy would, then waits up to `grace` for the process to exit (SIGKILL
    /// after that). Returns how it exited and how long that took.
    pub fn terminate(&mut self, grace: Duration) -> Option<(ExitStatus, Duration)> {
        let mut child = self.child.take()?;
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        while started.elapsed() < grace {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok().map(|status| (status, started.elapsed()))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Changes an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.insert(key.to_string(), value.to_string());
    }

    /// Starts the process again after [`Service::kill`] or [`Service::terminate`].
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    pub async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        for _ in 0..300 {
            let ready = http
                .get(format!("{}/health/ready", self.url()))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} on port {} did not become ready", self.name, self.port);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The signing key the tests' auth-service uses: the committed test-only key.
const TEST_ONLY_SIGNING_KEY_PEM: &str =
    include_str!("../../../auth-service/config/dev-only-signing-key.pem");

/// auth-service, history-service and `gateways` gateways on free ports.
pub struct System {
    pub auth: Service,
    pub history: Service,
    pub gateways: Vec<Service>,
    pub database: String,
    /// On the shared broker, each service connects as its own user with only the permissions
    /// of deploy/rabbitmq/permissions.conf. Declared last: dropped after the services stop.
    pub broker_users: Option<BrokerUsers>,
}

/// How [`System::start_with`] starts the services: where RabbitMQ and MongoDB are (the shared
/// local instances when `None`) and extra environment variables per service.
#[derive(Debug, Clone, Default)]
pub struct SystemOptions {
    pub gateways: usize,
    pub amqp_uri: Option<String>,
    pub mongodb_uri: Option<String>,
    pub auth_env: Vec<(String, String)>,
    pub history_env: Vec<(String, String)>,
    pub gateway_env: Vec<(String, String)>,
    /// More variables for gateway `i` only (entry `i`), after `gateway_env`.
    pub gateway_env_each: Vec<Vec<(String, String)>>,
}

impl SystemOptions {
    pub fn new(gateways: usize) -> Self {
        Self {
            gateways,
            ..Self::default()
        }
    }
}

impl System {
    pub async fn start(gateways: usize) -> Self {
        Self::start_with(&SystemOptions::new(gateways)).await
    }

    pub async fn start_with(options: &SystemOptions) -> Self {
        let gateways = options.gateways;
        let with = |mut env: HashMap<String, String>,
                    uris: &[(&str, &Option<String>)],
                    extra: &[(String, String)]| {
            for (key, value) in uris {
                if let Some(value) = value {
                    env.insert((*key).to_string(), value.clone());
                }
            }
            env.extend(extra.iter().cloned());
            env
        };
        let tag = ulid::Ulid::new().to_string().to_lowercase();
        let database = format!("e2e_{tag}");
        let exchange = format!("e2e.{tag}");
        let history_queue = format!("{exchange}.history");
        // The shared broker gets this system's own users; another broker (the fault suite's)
        // is used as the URI given says.
        let broker_users = match options.amqp_uri {
            None => Some(BrokerUsers::create(&tag, &exchange, &history_queue).await),
            Some(_) => None,
        };
        let amqp_uri = |role: &str| match &broker_users {
            Some(users) => Some(users.uri(role)),
            None => options.amqp_uri.clone(),
        };
        let auth_port = free_port();
        let auth = Service::start(
            "auth-service",
            auth_port,
            with(
                HashMap::from([
                    ("AUTH__HTTP__PORT".into(), auth_port.to_string()),
                    ("AUTH__MONGODB__DATABASE".into(), database.clone()),
                    ("AUTH__AMQP__EXCHANGE".into(), exchange.clone()),
                    ("AUTH__PASSWORD__BCRYPT_COST".into(), "4".into()),
                    // A free port of its own, so instances never collide.
                    ("AUTH__METRICS__PORT".into(), "0".into()),
                    // The committed test-only key, named explicitly: without it the service
                    // would create a key file of its own in the working directory.
                    (
                        "AUTH__JWT__PRIVATE_KEY_PEM".into(),
                        TEST_ONLY_SIGNING_KEY_PEM.into(),
                    ),
                ]),
                &[
                    ("AUTH__AMQP__URI", &amqp_uri("auth")),
                    ("AUTH__MONGODB__URI", &options.mongodb_uri),
                ],
                &options.auth_env,
            ),
        );
        let history_port = free_port();
        let history = Service::start(
            "history-service",
            history_port,
            with(
                HashMap::from([
                    ("HISTORY__HTTP__PORT".into(), history_port.to_string()),
                    // Any free port: instances (and restarts) must not collide on 9182.
                    ("HISTORY__METRICS__PORT".into(), "0".into()),
                    ("HISTORY__MONGODB__DATABASE".into(), database.clone()),
                    ("HISTORY__AMQP__EXCHANGE".into(), exchange.clone()),
                    ("HISTORY__AMQP__QUEUE".into(), history_queue.clone()),
                    ("HISTORY__AMQP__QUEUE_EXPIRES_MS".into(), "120000".into()),
                    ("HISTORY__AUTH__URL".into(), auth.url()),
                ]),
                &[
                    ("HISTORY__AMQP__URI", &amqp_uri("history")),
                    ("HISTORY__MONGODB__URI", &options.mongodb_uri),
                ],
                &options.history_env,
            ),
        );
        let gateways: Vec<Service> = (0..gateways)
            .map(|i| {
                let port = free_port();
                Service::start(
                    "chat-gateway",
                    port,
                    with(
                        HashMap::from([
                            ("GATEWAY__HTTP__PORT".into(), port.to_string()),
                            // Several gateways run at once: each metrics listener on a free port.
                            ("GATEWAY__METRICS__PORT".into(), "0".into()),
                            ("GATEWAY__AMQP__EXCHANGE".into(), exchange.clone()),
                            ("GATEWAY__MONGODB__DATABASE".into(), database.clone()),
                            // These tests send as fast as acks come back.
                            (
                                "GATEWAY__LIMITS__MESSAGES_PER_SECOND".into(),
                                "100000".into(),
                            ),
                            ("GATEWAY__LIMITS__MESSAGE_BURST".into(), "100000".into()),
                            ("GATEWAY__AMQP__INSTANCE_ID".into(), format!("{tag}-{i}")),
                            ("GATEWAY__AUTH__URL".into(), auth.url()),
                            ("GATEWAY__HISTORY__URL".into(), history.url()),
                        ]),
                        &[
                            ("GATEWAY__AMQP__URI", &amqp_uri("gateway")),
                            ("GATEWAY__MONGODB__URI", &options.mongodb_uri),
                        ],
                        &[
                            options.gateway_env.as_slice(),
                            options
                                .gateway_env_each
                                .get(i)
                                .map_or(&[][..], Vec::as_slice),
                        ]
                        .concat(),
                    ),
                )
            })
            .collect();
        auth.wait_ready().await;
        history.wait_ready().await;
        for gateway in &gateways {
            gateway.wait_ready().await;
        }
        Self {
            auth,
            history,
            gateways,
            database,
            broker_users,
        }
    }

    /// Signs up and logs in through gateway `via`; returns the access token.
    pub async fn user(&self, via: usize, username: &str) -> String {
        let base = self.gateways[via].url();
        let http = reqwest::Client::new();
        let signup = http
            .post(format!("{base}/api/auth/signup"))
            .json(&json!({"username": username, "email": format!("{username}@example.com"), "password": "correct horse"}))
            .send()
            .await
            .expect("signup sent");
        assert_eq!(signup.status(), 201, "signup of {username}");
        let login: Value = http
            .post(format!("{base}/api/auth/login"))
            .json(&json!({"username": username, "password": "correct horse"}))
            .send()
            .await
            .expect("login sent")
            .json()
            .await
            .expect("login body");
        login["access_token"].as_str().expect("token").to_string()
    }

    pub async fn connect(&self, via: usize, token: &str) -> Client {
        let (socket, _) = connect_async(format!(
            "ws://127.0.0.1:{}/ws?token={token}",
            self.gateways[via].port
        ))
        .await
        .expect("upgrade accepted");
        Client {
            socket,
            skipped: Default::default(),
        }
    }

    /// Every stored message of a room through the gateway's history API, oldest first.
    pub async fn history(&self, via: usize, token: &str, room: &str) -> Vec<Value> {
        // Unreadable (history-service restarting): nothing yet; callers poll.
        try_all_messages(&self.gateways[via].url(), token, room)
            .await
            .unwrap_or_default()
    }
}

/// Every stored message of a room from the history API at `base` (a gateway or
/// history-service itself), oldest first; an error when a request fails or is refused.
/// The ids of the messages in a `joined` frame or a history page, in order.
pub fn message_ids(frame: &Value) -> Vec<String> {
    frame["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect()
}

pub async fn try_all_messages(base: &str, token: &str, room: &str) -> anyhow::Result<Vec<Value>> {
    let http = reqwest::Client::new();
    let mut all: Vec<Value> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/rooms/{room}/messages?limit=100");
        if let Some(before) = &before {
            url.push_str(&format!("&before={before}"));
        }
        let page: Value = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let messages = page["messages"].as_array().cloned().unwrap_or_default();
        before = messages
            .first()
            .and_then(|m| m["id"].as_str())
            .map(str::to_string);
        let mut merged = messages;
        merged.extend(all);
        all = merged;
        if page["has_more"] != true || before.is_none() {
            return Ok(all);
        }
    }
}

pub struct Client {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames read while looking for another type, kept for later `next_of` calls.
    skipped: std::collections::VecDeque<Value>,
}

impl Client {
    pub async fn send_json(&mut self, value: Value) {
        self.socket
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("frame sent");
    }

    pub async fn next_json(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(wait, self.socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).ok(),
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => {
                    return None;
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The close code the server sends within `wait` (frames before it are skipped).
    pub async fn close_code(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) | Err(_) => return None,
            }
        }
    }

    /// The next frame of type `kind`; frames of other types are kept for later calls.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        if let Some(index) = self.skipped.iter().position(|f| f["type"] == kind)
            && let Some(frame) = self.skipped.remove(index)
        {
            return frame;
        }
        loop {
            let frame = self
                .next_json(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "no `{kind}` frame within 10 s; frames received meanwhile: {:?}",
                        self.skipped
                    )
                });
            if frame["type"] == kind {
                return frame;
            }
            self.skipped.push_back(frame);
        }
    }

    /// The next frame for which `matches` holds; other frames are kept for later calls.
    pub async fn next_matching(&mut self, matches: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(index) = self.skipped.iter().position(&matches)
            && let Some(frame) = self.skipped.remove(index)
        {
            return Some(frame);
        }
        loop {
            let frame = self.next_json(Duration::from_secs(10)).await?;
            if matches(&frame) {
                return Some(frame);
            }
            self.skipped.push_back(frame);
        }
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.send_json(json!({"type": "join", "room": room})).await;
        self.next_of("joined").await
    }

    pub async fn send_message(&mut self, room: &str, client_id: &str, body: &str) {
        self.send_json(json!({"type": "send", "room": room, "client_id": client_id, "body": body}))
            .await;
    }
}
