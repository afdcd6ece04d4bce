//! Starts the real binaries as child processes on free ports, each test with its own database,
//! exchange and queue names, and talks to them over HTTP and WebSocket like a client would.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub fn bin_dir() -> PathBuf {
    std::env::var_os("CHAT_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"))
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
        let child = Command::new(path)
            .envs(&self.env)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(if log { Stdio::inherit() } else { Stdio::null() })
            .stderr(if log { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("service starts");
        self.child = Some(child);
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

/// auth-service, history-service and `gateways` gateways on free ports.
pub struct System {
    pub auth: Service,
    pub history: Service,
    pub gateways: Vec<Service>,
    pub database: String,
}

impl System {
    pub async fn start(gateways: usize) -> Self {
        let tag = ulid::Ulid::new().to_string().to_lowercase();
        let database = format!("e2e_{tag}");
        let exchange = format!("e2e.{tag}");
        let auth_port = free_port();
        let auth = Service::start(
            "auth-service",
            auth_port,
            HashMap::from([
                ("AUTH__HTTP__PORT".into(), auth_port.to_string()),
                ("AUTH__MONGODB__DATABASE".into(), database.clone()),
                ("AUTH__PASSWORD__BCRYPT_COST".into(), "4".into()),
            ]),
        );
        let history_port = free_port();
        let history = Service::start(
            "history-service",
            history_port,
            HashMap::from([
                ("HISTORY__HTTP__PORT".into(), history_port.to_string()),
                ("HISTORY__MONGODB__DATABASE".into(), database.clone()),
                ("HISTORY__AMQP__EXCHANGE".into(), exchange.clone()),
                ("HISTORY__AMQP__QUEUE".into(), format!("{exchange}.history")),
                ("HISTORY__AMQP__QUEUE_EXPIRES_MS".into(), "120000".into()),
                ("HISTORY__AUTH__URL".into(), auth.url()),
            ]),
        );
        let gateways: Vec<Service> = (0..gateways)
            .map(|i| {
                let port = free_port();
                Service::start(
                    "chat-gateway",
                    port,
                    HashMap::from([
                        ("GATEWAY__HTTP__PORT".into(), port.to_string()),
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
        let http = reqwest::Client::new();
        let mut all: Vec<Value> = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/api/rooms/{room}/messages?limit=100",
                self.gateways[via].url()
            );
            if let Some(before) = &before {
                url.push_str(&format!("&before={before}"));
            }
            let page: Value = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("history sent")
                .json()
                .await
                .expect("history body");
            let messages = page["messages"].as_array().cloned().unwrap_or_default();
            before = messages
                .first()
                .and_then(|m| m["id"].as_str())
                .map(str::to_string);
            let mut merged = messages;
            merged.extend(all);
            all = merged;
            if page["has_more"] != true || before.is_none() {
                return all;
            }
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
                .unwrap_or_else(|| panic!("no `{kind}` frame within 10 s"));
            if frame["type"] == kind {
                return frame;
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
