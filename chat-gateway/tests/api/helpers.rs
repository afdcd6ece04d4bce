//! Starts gateways in-process on free ports against the real RabbitMQ, with a unique exchange
//! per test and tokens from the test-only key; a client that speaks the protocol.

use std::time::Duration;

use chat_gateway::settings::Settings;
use chat_gateway::startup::Application;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub struct TestGateway {
    pub address: String,
    pub stop: tokio_util::sync::CancellationToken,
}

/// Everything gateways of one test share.
pub struct Cluster {
    pub exchange: String,
    pub database: String,
    pub jwks: String,
}

impl Cluster {
    pub async fn new() -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            common::telemetry::init("chat-gateway");
        }
        let tag = ulid::Ulid::new().to_string().to_lowercase();
        Self {
            exchange: format!("test.{tag}"),
            database: format!("gateway_test_{tag}"),
            jwks: common::testing::serve_jwks().await,
        }
    }

    pub async fn gateway(&self) -> TestGateway {
        self.gateway_with(|_| {}).await
    }

    pub async fn gateway_with(&self, adjust: impl FnOnce(&mut Settings)) -> TestGateway {
        let mut settings = Settings::load().expect("settings load");
        settings.http.port = 0;
        settings.amqp.connection.exchange = self.exchange.clone();
        settings.mongodb.database = self.database.clone();
        settings.amqp.instance_id = ulid::Ulid::new().to_string().to_lowercase();
        settings.amqp.queue_expires_ms = 10_000;
        settings.auth.url = self.jwks.clone();
        // Nothing listens there: joins proceed without history.
        settings.history.url = "http://127.0.0.1:9".to_string();
        settings.history.timeout_ms = 500;
        // Tests send in bursts; the rate limit has tests of its own.
        settings.limits.messages_per_second = 100_000;
        settings.limits.message_burst = 100_000;
        adjust(&mut settings);
        let keys_reachable = settings.auth.url == self.jwks;
        let app = Application::build(settings).await.expect("gateway builds");
        let port = app.port();
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(app.run_until(async move { stopped.cancelled().await }));
        let gateway = TestGateway {
            address: format!("127.0.0.1:{port}"),
            stop,
        };
        gateway.wait_until_ready(keys_reachable).await;
        gateway
    }
}

impl TestGateway {
    /// Waits for readiness; without reachable token keys a gateway never gets ready, so then
    /// only for the broker connection.
    async fn wait_until_ready(&self, keys_reachable: bool) {
        let http = reqwest::Client::new();
        for _ in 0..100 {
            let ready = match http
                .get(format!("http://{}/health/ready", self.address))
                .send()
                .await
            {
                Ok(r) if keys_reachable => r.status() == 200,
                Ok(r) => r.json::<Value>().await.is_ok_and(|b| b["broker"] == true),
                Err(_) => false,
            };
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("gateway did not become ready");
    }

    pub async fn connect(&self, user_id: &str, username: &str) -> Client {
        self.connect_with_token(&common::testing::token(user_id, username))
            .await
            .expect("upgrade accepted")
    }

    /// Opens a connection with `token`; the error carries the HTTP status of a refusal.
    pub async fn connect_with_token(&self, token: &str) -> Result<Client, u16> {
        match connect_async(format!("ws://{}/ws?token={token}", self.address)).await {
            Ok((socket, _)) => Ok(Client {
                socket,
                skipped: Default::default(),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(error) => panic!("connection failed: {error}"),
        }
    }
}

impl TestGateway {
    /// A client whose socket receive buffer is tiny, so a client that stops reading backs up
    /// into the server quickly.
    pub async fn connect_with_small_receive_buffer(&self, user_id: &str, username: &str) -> Client {
        let token = common::testing::token(user_id, username);
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket
            .connect(self.address.parse().expect("address"))
            .await
            .expect("connected");
        let (socket, _) = tokio_tungstenite::client_async(
            format!("ws://{}/ws?token={token}", self.address),
            MaybeTlsStream::Plain(stream),
        )
        .await
        .expect("upgrade accepted");
        Client {
            socket,
            skipped: Default::default(),
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
        self.send_text(value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("frame sent");
    }

    /// The next JSON frame, skipping control frames; fails after 5 s.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), self.socket.next())
                .await
                .expect("a frame within 5 s")
                .expect("connection open")
                .expect("frame read");
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(&text).expect("server sent JSON");
                }
                Message::Close(frame) => panic!("connection closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame of the given type; frames of other types are kept for later calls.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        if let Some(index) = self.skipped.iter().position(|f| f["type"] == kind)
            && let Some(frame) = self.skipped.remove(index)
        {
            return frame;
        }
        loop {
            let frame = self.next_json().await;
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

    /// Collects frames of `kind` until `n` arrived or `wait` passed without a new frame.
    pub async fn collect(&mut self, kind: &str, n: usize, wait: Duration) -> Vec<Value> {
        let mut frames: Vec<Value> = Vec::new();
        while frames.len() < n {
            match self.skipped.iter().position(|f| f["type"] == kind) {
                Some(index) => frames.extend(self.skipped.remove(index)),
                None => break,
            }
        }
        while frames.len() < n {
            match tokio::time::timeout(wait, self.socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let frame: Value = serde_json::from_str(&text).expect("JSON");
                    if frame["type"] == kind {
                        frames.push(frame);
                    }
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        frames
    }
}
