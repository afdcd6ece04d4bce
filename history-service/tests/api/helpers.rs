//! Starts history-service in-process on a free port with its own database, exchange and queue,
//! against the real RabbitMQ and MongoDB-wire server; tokens come from the test-only key.

use std::time::Duration;

use chrono::Utc;
use common::domain::{ClientMessageId, MessageBody, MessageId, RoomId, UserId, UserRef, Username};
use common::event::{ChatMessage, MessageEvent, topology};
use history_service::settings::Settings;
use history_service::startup::Application;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use mongodb::Database;
use secrecy::ExposeSecret;

pub struct TestApp {
    pub address: String,
    /// The `(token, room)` pairs [`TestApp::get_history`] has joined already.
    joined: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// Base URL of the metrics listener.
    pub metrics_address: String,
    pub db: Database,
    pub http: reqwest::Client,
    pub exchange: String,
    channel: lapin::Channel,
    _connection: Connection,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`] with settings changed by `adjust` (the test's own publisher keeps the
/// original broker URI).
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_unready_with(adjust).await;
    app.wait_until_ready().await;
    app
}

/// The service started, without waiting until it reports ready (for tests of a service that
/// cannot be).
pub async fn spawn_app_unready_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        common::telemetry::init("history-service");
    }
    let suffix = ulid::Ulid::new().to_string().to_lowercase();
    let mut settings = Settings::load().expect("settings load");
    settings.http.port = 0;
    settings.metrics.port = 0;
    settings.mongodb.database = format!("history_test_{suffix}");
    settings.amqp.connection.exchange = format!("test.{suffix}");
    settings.amqp.queue = format!("test.{suffix}.history");
    settings.amqp.queue_expires_ms = Some(60_000);
    settings.auth.url = serve_auth().await;
    let db = settings
        .mongodb
        .client("history-tests")
        .await
        .expect("mongo client")
        .database(&settings.mongodb.database);
    let connection = Connection::connect(
        settings.amqp.connection.uri.expose_secret(),
        ConnectionProperties::default(),
    )
    .await
    .expect("rabbitmq connection");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let exchange = settings.amqp.connection.exchange.clone();
    adjust(&mut settings);

    let app = Application::build(settings)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = format!("http://127.0.0.1:{}", app.metrics_port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        joined: Default::default(),
        metrics_address,
        db,
        // Idle connections are dropped before the server's keep-alive (5 s) closes them, so a
        // request never races a close on a reused connection.
        http: reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client"),
        exchange,
        channel,
        _connection: connection,
    }
}

/// A stand-in for auth-service on a free loopback port: its JWKS (the test key), and
/// `GET /api/users/by-name/{username}`, which knows every user `<name>` as id `u-<name>`,
/// except names starting with `ghost`, and wants a Bearer token like the real one.
pub async fn serve_auth() -> String {
    use axum::extract::Path;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;

    async fn by_name(
        Path(username): Path<String>,
        headers: HeaderMap,
    ) -> (StatusCode, axum::Json<serde_json::Value>) {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7);
        if !bearer {
            let body =
                serde_json::json!({"error": {"code": "unauthorized", "message": "no token"}});
            return (StatusCode::UNAUTHORIZED, axum::Json(body));
        }
        if username.starts_with("ghost") {
            let body =
                serde_json::json!({"error": {"code": "user_not_found", "message": "no such user"}});
            return (StatusCode::NOT_FOUND, axum::Json(body));
        }
        let body = serde_json::json!({"id": format!("u-{username}"), "username": username});
        (StatusCode::OK, axum::Json(body))
    }

    let jwks = serde_json::to_value(common::testing::jwks()).expect("jwks serializes");
    let app = axum::Router::new()
        .route(
            "/.well-known/jwks.json",
            get(move || async move { axum::Json(jwks) }),
        )
        .route("/api/users/by-name/{username}", get(by_name));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the auth stub");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{address}")
}

pub fn message(room: &str, body: &str) -> ChatMessage {
    ChatMessage::new(
        MessageId::from_ulid(ulid::Ulid::new()),
        RoomId::parse(room.to_string()).expect("room"),
        ClientMessageId::parse(ulid::Ulid::new().to_string()).expect("client id"),
        UserRef {
            id: UserId::parse("user-1".to_string()).expect("user id"),
            username: Username::parse("alice".to_string()).expect("username"),
        },
        MessageBody::parse(body.to_string()).expect("body"),
        Utc::now(),
    )
}

impl TestApp {
    async fn wait_until_ready(&self) {
        for _ in 0..100 {
            let ready = self
                .http
                .get(format!("{}/health/ready", self.address))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("history-service did not become ready");
    }

    /// Publishes raw bytes as a persistent message with the room's routing key, confirmed.
    pub async fn publish_raw(&self, room: &str, payload: &[u8]) {
        let room = RoomId::parse(room.to_string()).expect("room");
        let confirmation = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                topology::message_key(&room).as_str().into(),
                BasicPublishOptions::default(),
                payload,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("published")
            .await
            .expect("confirmed");
        assert!(confirmation.is_ack());
    }

    /// Publishes a message change (`chg.<room>`), confirmed.
    pub async fn publish_change(&self, event: &common::event::ChangeEvent) {
        self.publish_json(&topology::change_key(&event.room), event)
            .await;
    }

    /// Publishes a member event (`member.<user>`) as another instance would, confirmed.
    pub async fn publish_member_event(&self, event: &common::event::MemberEvent) {
        self.publish_json(&topology::member_key(&event.user), event)
            .await;
    }

    /// Publishes `event` as JSON, persistent, with routing key `key`, confirmed.
    async fn publish_json(&self, key: &str, event: &impl serde::Serialize) {
        let payload = serde_json::to_vec(event).expect("json");
        let confirmation = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                key.into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("published")
            .await
            .expect("confirmed");
        assert!(confirmation.is_ack());
    }

    pub async fn publish(&self, message: &ChatMessage) {
        let payload = serde_json::to_vec(&MessageEvent::new(message.clone())).expect("json");
        self.publish_raw(message.room.as_str(), &payload).await;
    }

    /// Stores messages straight through the store, without the broker: quick for filling a
    /// room.
    pub async fn store_directly(&self, events: &[MessageEvent]) {
        let store = history_service::message_store::MessageStore::open(&self.db)
            .await
            .expect("store opens");
        for chunk in events.chunks(500) {
            let outcome = store.insert_batch(chunk).await.expect("stored");
            assert_eq!(outcome.inserted, chunk.len());
        }
    }

    /// The text of `GET /metrics` on the metrics listener.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.metrics_address))
            .send()
            .await
            .expect("metrics answered")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn stored_count(&self) -> u64 {
        self.db
            .collection::<mongodb::bson::Document>("messages")
            .count_documents(mongodb::bson::doc! {})
            .await
            .expect("count")
    }

    /// Waits until `n` messages are stored (or fails after 15 s).
    pub async fn wait_for_stored(&self, n: u64) {
        for _ in 0..150 {
            if self.stored_count().await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "expected {n} stored messages, have {}",
            self.stored_count().await
        );
    }

    /// `POST /api/rooms/{room}/join` with `token`.
    pub async fn join(&self, room: &str, token: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/api/rooms/{room}/join", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// History is for members: the first read of a room with a token joins it first (the
    /// gateway does the same on a WebSocket `join`); the join's answer is not checked here.
    pub async fn get_history(
        &self,
        room: &str,
        query: &str,
        token: Option<&str>,
    ) -> reqwest::Response {
        if let Some(token) = token {
            let first = self
                .joined
                .lock()
                .expect("not poisoned")
                .insert((token.to_string(), room.to_string()));
            if first {
                self.join(room, token).await;
            }
        }
        self.read_history(room, query, token).await
    }

    /// `GET /api/rooms/{room}/messages{query}` as is, without joining first.
    pub async fn read_history(
        &self,
        room: &str,
        query: &str,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .get(format!("{}/api/rooms/{room}/messages{query}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }
}

/// A token of user `u-<name>` named `name`, as the auth stub knows them.
pub fn user_token(name: &str) -> String {
    common::testing::token(&format!("u-{name}"), name)
}

/// A queue of the test's own bound to `member.*` and `msg.*.evt` (every room's events) of the
/// app's exchange; events it skips while looking for one stay queued for later expectations.
pub struct EventListener {
    consumer: lapin::Consumer,
    skipped: Vec<(String, serde_json::Value)>,
    _channel: lapin::Channel,
}

impl TestApp {
    pub async fn listen_to_room_events(&self) -> EventListener {
        use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let channel = self._connection.create_channel().await.expect("channel");
        topology::declare_exchange(&channel, &self.exchange)
            .await
            .expect("exchange");
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue");
        for binding in [topology::ALL_MEMBERS_BINDING, "msg.*.evt"] {
            channel
                .queue_bind(
                    queue.name().as_str().into(),
                    self.exchange.as_str().into(),
                    binding.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bound");
        }
        let consumer = channel
            .basic_consume(
                queue.name().as_str().into(),
                "room-events-test".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consuming");
        EventListener {
            consumer,
            skipped: Vec::new(),
            _channel: channel,
        }
    }
}

impl EventListener {
    /// The first event with routing key `key` for which `matches` holds, waiting at most 5 s
    /// (events arrive within milliseconds; the bound only keeps a failing test from hanging).
    pub async fn expect(
        &mut self,
        key: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        use futures_util::StreamExt;
        if let Some(index) = self
            .skipped
            .iter()
            .position(|(k, v)| k == key && matches(v))
        {
            return self.skipped.remove(index).1;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let next = tokio::time::timeout_at(deadline, self.consumer.next()).await;
            let Ok(Some(Ok(delivery))) = next else {
                panic!("no matching {key} event; seen: {:?}", self.skipped);
            };
            let routing_key = delivery.routing_key.as_str().to_string();
            let value: serde_json::Value =
                serde_json::from_slice(&delivery.data).expect("events are JSON");
            if routing_key == key && matches(&value) {
                return value;
            }
            self.skipped.push((routing_key, value));
        }
    }
}
