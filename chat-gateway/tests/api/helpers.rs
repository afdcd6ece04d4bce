//! Starts gateways in-process on free ports against the real RabbitMQ, with a unique exchange
//! per test and tokens from the test-only key; a client that speaks the protocol.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use chat_gateway::settings::Settings;
use chat_gateway::startup::Application;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub struct TestGateway {
    pub address: String,
    /// Where its `/metrics` is served.
    pub metrics_address: String,
    pub stop: tokio_util::sync::CancellationToken,
}

/// Everything gateways of one test share.
pub struct Cluster {
    pub exchange: String,
    pub database: String,
    pub jwks: String,
    /// The history-service stand-in every gateway of the cluster uses unless told otherwise.
    pub history: StubHistory,
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
            history: StubHistory::start().await,
        }
    }

    pub async fn gateway(&self) -> TestGateway {
        self.gateway_with(|_| {}).await
    }

    pub async fn gateway_with(&self, adjust: impl FnOnce(&mut Settings)) -> TestGateway {
        let mut settings = Settings::load().expect("settings load");
        settings.http.port = 0;
        settings.metrics.port = 0;
        settings.amqp.connection.exchange = self.exchange.clone();
        settings.mongodb.database = self.database.clone();
        settings.amqp.instance_id = ulid::Ulid::new().to_string().to_lowercase();
        settings.amqp.queue_expires_ms = 10_000;
        settings.auth.url = self.jwks.clone();
        // Joins are authorized, pages are empty: joins carry what the gateway saw.
        settings.history.url = self.history.url.clone();
        settings.history.timeout_ms = 500;
        // Tests send in bursts; the rate limit has tests of its own.
        settings.limits.messages_per_second = 100_000;
        settings.limits.message_burst = 100_000;
        adjust(&mut settings);
        let keys_reachable = settings.auth.url == self.jwks;
        let app = Application::build(settings).await.expect("gateway builds");
        let port = app.port();
        let metrics_port = app.metrics_port();
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(app.run_until(async move { stopped.cancelled().await }));
        let gateway = TestGateway {
            address: format!("127.0.0.1:{port}"),
            metrics_address: format!("127.0.0.1:{metrics_port}"),
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

    pub async fn leave(&mut self, room: &str) -> Value {
        self.send_json(json!({"type": "leave", "room": room})).await;
        self.next_of("left").await
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

/// An upstream that answers every request with the request's head as the body, and records
/// the request line of each request it received. Its answers name a header `x-hop` in
/// `Connection` (meant for the gateway only) besides an end-to-end `x-echo`.
pub struct EchoUpstream {
    pub url: String,
    request_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl EchoUpstream {
    pub async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let request_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = request_lines.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut received = Vec::new();
                    let mut buffer = [0u8; 4096];
                    // The head, then as much body as it announces (unread data would reset the
                    // connection before the answer is read).
                    let head_end = loop {
                        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => received.extend_from_slice(&buffer[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&received[..head_end]).to_string();
                    let body_length = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    while received.len() < head_end + body_length {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => received.extend_from_slice(&buffer[..n]),
                        }
                    }
                    recorded
                        .lock()
                        .expect("lock")
                        .push(head.lines().next().unwrap_or_default().to_string());
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                         connection: close, x-hop\r\nx-hop: for the gateway only\r\n\
                         x-echo: yes\r\n\r\n{head}",
                        head.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        Self {
            url: format!("http://{address}"),
            request_lines,
        }
    }

    /// The request lines received so far (`GET /path?query HTTP/1.1`), without the token
    /// key fetches of a gateway that uses this upstream as its auth-service.
    pub fn request_lines(&self) -> Vec<String> {
        self.request_lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|line| !line.starts_with("GET /.well-known/jwks.json "))
            .cloned()
            .collect()
    }
}

/// A response read off the wire.
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Sends `request` as written (no client normalises its path, like `curl --path-as-is`) and
/// reads the answer until the server closes the connection.
pub async fn raw_request(address: &str, request: &str) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = TcpStream::connect(address).await.expect("connected");
    socket
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut received))
        .await
        .expect("answered and closed within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&received).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    RawResponse {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A history-service stand-in for the gateway's side of rooms: it authorizes every join
/// (`POST /api/rooms/{room}/join`) and membership check (`GET /api/rooms/{room}`) with a room
/// view unless told to refuse a (user, room) pair, counts those requests, records the read
/// markers written (`PUT /api/rooms/{room}/read`), and answers message pages empty and every
/// message as not stored yet.
#[derive(Clone, Default)]
pub struct StubHistory {
    pub url: String,
    state: Arc<StubState>,
}

#[derive(Default)]
struct StubState {
    /// (user, room) → (status, error code).
    refusals: Mutex<HashMap<(String, String), (u16, String)>>,
    joins: Mutex<HashMap<(String, String), usize>>,
    checks: Mutex<HashMap<(String, String), usize>>,
    markers: Mutex<Vec<(String, String, String)>>,
    invalid_markers: Mutex<HashSet<String>>,
    /// How long each authorization takes.
    delay: Mutex<Duration>,
}

/// The user id (`sub`) of a request's bearer token; the stand-in trusts the gateway to have
/// verified it.
fn token_user(headers: &axum::http::HeaderMap) -> String {
    use base64::Engine;
    let claims = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| token.split('.').nth(1))
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .expect("a bearer token with claims");
    claims["sub"].as_str().expect("sub").to_string()
}

/// The room view the stand-in answers for `room`.
pub fn room_view(room: &str) -> Value {
    json!({
        "id": room, "kind": "public", "name": room, "topic": "", "created_by": "u-owner",
        "created_at": "2026-01-01T00:00:00Z", "archived": false, "member_count": 2,
        "role": "member", "unread": 0, "unread_capped": false,
    })
}

impl StubHistory {
    pub async fn start() -> Self {
        let mut stub = Self::default();
        let app = stub.routes().merge(
            axum::Router::new()
                .route(
                    "/api/rooms/{room}/messages",
                    axum::routing::get(|| async {
                        axum::Json(json!({"messages": [], "has_more": false}))
                    }),
                )
                .route(
                    "/api/rooms/{room}/messages/{id}",
                    axum::routing::get(|| async {
                        let error = json!({"error": {"code": "not_found", "message": "not found"}});
                        (axum::http::StatusCode::NOT_FOUND, axum::Json(error))
                    }),
                ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        stub.url = format!("http://{address}");
        stub
    }

    /// The room routes alone, for other stand-ins to merge into theirs.
    pub fn routes(&self) -> axum::Router {
        use axum::extract::{Path, State};
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::{IntoResponse, Response};

        async fn authorize(
            state: &StubState,
            counts: &Mutex<HashMap<(String, String), usize>>,
            headers: &HeaderMap,
            room: String,
        ) -> Response {
            let key = (token_user(headers), room.clone());
            *counts.lock().expect("lock").entry(key.clone()).or_default() += 1;
            let delay = *state.delay.lock().expect("lock");
            tokio::time::sleep(delay).await;
            let refusal = state.refusals.lock().expect("lock").get(&key).cloned();
            match refusal {
                Some((status, code)) => (
                    StatusCode::from_u16(status).expect("status"),
                    axum::Json(json!({"error": {"code": code, "message": "refused"}})),
                )
                    .into_response(),
                None => axum::Json(room_view(&room)).into_response(),
            }
        }

        axum::Router::new()
            .route(
                "/api/rooms/{room}/join",
                axum::routing::post(
                    |State(state): State<Arc<StubState>>, headers: HeaderMap, Path(room): Path<String>| async move {
                        authorize(&state, &state.joins, &headers, room).await
                    },
                ),
            )
            .route(
                "/api/rooms/{room}",
                axum::routing::get(
                    |State(state): State<Arc<StubState>>, headers: HeaderMap, Path(room): Path<String>| async move {
                        authorize(&state, &state.checks, &headers, room).await
                    },
                ),
            )
            .route(
                "/api/rooms/{room}/read",
                axum::routing::put(
                    |State(state): State<Arc<StubState>>,
                     headers: HeaderMap,
                     Path(room): Path<String>,
                     axum::Json(body): axum::Json<Value>| async move {
                        let id = body["id"].as_str().expect("id").to_string();
                        if state.invalid_markers.lock().expect("lock").contains(&id) {
                            let error = json!({"error": {"code": "invalid_marker", "message": "no such message"}});
                            return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(error)).into_response();
                        }
                        state
                            .markers
                            .lock()
                            .expect("lock")
                            .push((token_user(&headers), room, id));
                        StatusCode::NO_CONTENT.into_response()
                    },
                ),
            )
            .with_state(self.state.clone())
    }

    /// Answers `user`'s joins and checks of `room` with `status` and error `code` from now on.
    pub fn refuse(&self, user: &str, room: &str, status: u16, code: &str) {
        self.state
            .refusals
            .lock()
            .expect("lock")
            .insert((user.into(), room.into()), (status, code.into()));
    }

    /// How many join authorizations of `user` in `room` were asked.
    pub fn joins(&self, user: &str, room: &str) -> usize {
        let joins = self.state.joins.lock().expect("lock");
        joins.get(&(user.into(), room.into())).copied().unwrap_or(0)
    }

    /// How many membership checks of `user` in `room` were asked.
    pub fn checks(&self, user: &str, room: &str) -> usize {
        let checks = self.state.checks.lock().expect("lock");
        checks
            .get(&(user.into(), room.into()))
            .copied()
            .unwrap_or(0)
    }

    /// The read markers written so far: (user, room, id).
    pub fn markers(&self) -> Vec<(String, String, String)> {
        self.state.markers.lock().expect("lock").clone()
    }

    /// Answers a marker for message `id` with `422 invalid_marker`.
    pub fn reject_marker(&self, id: &str) {
        self.state
            .invalid_markers
            .lock()
            .expect("lock")
            .insert(id.to_string());
    }

    /// Makes every authorization take `delay`.
    pub fn delay(&self, delay: Duration) {
        *self.state.delay.lock().expect("lock") = delay;
    }
}

/// A history-service stand-in: counts reads and holds every answer until released; stores
/// one message at first.
#[derive(Clone)]
pub struct SlowHistory {
    reads: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Semaphore>,
    stored: Arc<Mutex<Vec<Value>>>,
}

impl SlowHistory {
    pub async fn start() -> (Self, String) {
        let history = Self {
            reads: Arc::default(),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
            stored: Arc::default(),
        };
        history.store("stored before");
        let app = axum::Router::new()
            .route(
                "/api/rooms/{room}/messages",
                axum::routing::get(
                    |State(history): State<SlowHistory>, Path(room): Path<String>| async move {
                        history.reads.fetch_add(1, Ordering::SeqCst);
                        let _permit = history.release.acquire().await;
                        let messages: Vec<Value> = history
                            .stored
                            .lock()
                            .expect("stored")
                            .iter()
                            .map(|message| {
                                let mut message = message.clone();
                                message["room"] = room.clone().into();
                                message
                            })
                            .collect();
                        axum::Json(json!({"messages": messages, "has_more": false}))
                    },
                ),
            )
            .with_state(history.clone())
            .merge(StubHistory::default().routes());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (history, format!("http://{address}"))
    }

    /// Stores a message with an id made now.
    pub fn store(&self, body: &str) {
        let mut stored = self.stored.lock().expect("stored");
        let client_id = format!("c-stored-{}", stored.len());
        stored.push(json!({
            "id": ulid::Ulid::new().to_string(), "room": "", "client_id": client_id,
            "author": {"id": "u-old", "username": "old"},
            "body": body, "sent_at": "2026-01-01T00:00:00Z"
        }));
    }

    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Answers the reads held so far and every later one.
    pub fn open(&self) {
        self.release
            .add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    /// Holds every later read again.
    pub fn close(&self) {
        self.release
            .forget_permits(tokio::sync::Semaphore::MAX_PERMITS);
    }
}
