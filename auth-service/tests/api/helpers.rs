//! Starts auth-service in-process on a free port with its own database and exchange, like
//! production start-up does (`Application::build`), against the real MongoDB-wire server and
//! RabbitMQ.

use std::sync::Arc;

use auth_service::password::Passwords;
use auth_service::settings::Settings;
use auth_service::startup::Application;
use auth_service::tokens::DEV_ONLY_KEY_PEM;
use common::event::{AccountEvent, topology};
use futures_util::StreamExt;
use mongodb::Database;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// Base URL of the metrics listener.
    pub metrics_address: String,
    pub db: Database,
    /// The exchange this instance publishes account events to (one per test).
    pub exchange: String,
    pub amqp_uri: String,
    pub http: reqwest::Client,
    pub passwords: Arc<Passwords>,
}

/// The service with test settings: cheap bcrypt, and abuse limits far above what any test
/// reaches unless it lowers them.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// [`spawn_app`] with the user `alice` (password `correct horse`) signed up.
pub async fn signed_up_app() -> TestApp {
    let app = spawn_app().await;
    let response = app
        .signup("alice", "alice@example.com", "correct horse")
        .await;
    assert_eq!(response.status(), 201);
    app
}

/// [`spawn_app`] with settings adjusted by `configure` after the test defaults.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        common::telemetry::init("auth-service");
    }
    let mut settings = Settings::load().expect("settings load");
    settings.http.listen.port = 0;
    settings.metrics.port = 0;
    let suffix = ulid::Ulid::new().to_string().to_lowercase();
    settings.mongodb.database = format!("auth_test_{suffix}");
    settings.amqp.connection.exchange = format!("auth_test.{suffix}");
    settings.password.bcrypt_cost = 4;
    // The committed test-only key, named explicitly: nothing else signs with it.
    settings.jwt.private_key_pem = DEV_ONLY_KEY_PEM.to_string().into();
    settings.limits.login_per_ip = 10_000;
    settings.limits.login_per_username = 10_000;
    settings.limits.signup_per_ip = 10_000;
    configure(&mut settings);
    let client = settings
        .mongodb
        .client("auth-tests")
        .await
        .expect("mongo client");
    let db = client.database(&settings.mongodb.database);
    let exchange = settings.amqp.connection.exchange.clone();
    let amqp_uri = settings.amqp.connection.uri.expose_secret().to_string();
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let port = app.port();
    let metrics_port = app.metrics_port();
    let passwords = app.passwords();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        metrics_address: format!("http://127.0.0.1:{metrics_port}"),
        db,
        exchange,
        amqp_uri,
        http: reqwest::Client::new(),
        passwords,
    }
}

impl TestApp {
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// `GET` of a URL (`address` or `metrics_address` followed by a path).
    pub async fn get(&self, url: String) -> reqwest::Response {
        self.http.get(url).send().await.expect("request sent")
    }

    pub async fn signup(&self, username: &str, email: &str, password: &str) -> reqwest::Response {
        self.post(
            "/api/auth/signup",
            &json!({"username": username, "email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.post(
            "/api/auth/login",
            &json!({"username": username, "password": password}),
        )
        .await
    }

    /// Logs in and returns the token pair, asserting success.
    pub async fn login_pair(&self, username: &str, password: &str) -> Value {
        let response = self.login(username, password).await;
        assert_eq!(response.status(), 200, "login of {username}");
        response.json().await.expect("token pair")
    }

    pub async fn jwks(&self) -> jsonwebtoken::jwk::JwkSet {
        self.http
            .get(format!("{}/.well-known/jwks.json", self.address))
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("JWKS")
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post(
            "/api/auth/refresh",
            &json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    pub async fn logout(&self, refresh_token: &str) -> reqwest::Response {
        self.post(
            "/api/auth/logout",
            &json!({ "refresh_token": refresh_token }),
        )
        .await
    }

    pub async fn me(&self, access_token: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/api/auth/me", self.address))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("request sent")
    }

    /// `DELETE /api/auth/me` with `body` (none when `None`) and the bearer token.
    pub async fn delete_me(&self, access_token: &str, body: Option<Value>) -> reqwest::Response {
        let request = self
            .http
            .delete(format!("{}/api/auth/me", self.address))
            .bearer_auth(access_token);
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
        .send()
        .await
        .expect("request sent")
    }

    /// `POST /api/auth/users/{user_id}/{action}` (`disable` or `enable`) with the bearer token.
    pub async fn admin(
        &self,
        access_token: &str,
        user_id: &str,
        action: &str,
    ) -> reqwest::Response {
        self.http
            .post(format!(
                "{}/api/auth/users/{user_id}/{action}",
                self.address
            ))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("request sent")
    }

    /// Signs up `username` (password `correct horse`), logs in and returns the user id and
    /// the token pair.
    pub async fn user(&self, username: &str) -> (String, Value) {
        let response = self
            .signup(
                username,
                &format!("{username}@example.com"),
                "correct horse",
            )
            .await;
        assert_eq!(response.status(), 201, "sign-up of {username}");
        let body: Value = response.json().await.expect("json");
        let id = body["user"]["id"].as_str().expect("id").to_string();
        (id, self.login_pair(username, "correct horse").await)
    }

    /// A queue of its own bound to every account event on this instance's exchange.
    pub async fn listen_to_account_events(&self) -> AccountEventListener {
        AccountEventListener::start(&self.amqp_uri, &self.exchange).await
    }

    /// The text of this instance's metrics.
    pub async fn metrics(&self) -> String {
        self.get(format!("{}/metrics", self.metrics_address))
            .await
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn count(&self, collection: &str) -> u64 {
        self.db
            .collection::<mongodb::bson::Document>(collection)
            .count_documents(mongodb::bson::doc! {})
            .await
            .expect("count documents")
    }

    /// Every document of a collection.
    pub async fn documents(&self, collection: &str) -> Vec<mongodb::bson::Document> {
        let mut cursor = self
            .db
            .collection::<mongodb::bson::Document>(collection)
            .find(mongodb::bson::doc! {})
            .await
            .expect("find");
        let mut documents = Vec::new();
        while cursor.advance().await.expect("next document") {
            documents.push(cursor.deserialize_current().expect("document"));
        }
        documents
    }

    pub async fn user_count(&self) -> u64 {
        self.count("users").await
    }
}

/// Account events as a service bound to `account.*` receives them.
pub struct AccountEventListener {
    _connection: lapin::Connection,
    consumer: lapin::Consumer,
}

impl AccountEventListener {
    /// Declares `exchange` on the broker at `amqp_uri` and binds a queue of its own (deleted
    /// with the connection) to `account.*` there.
    pub async fn start(amqp_uri: &str, exchange: &str) -> Self {
        let connection =
            lapin::Connection::connect(amqp_uri, lapin::ConnectionProperties::default())
                .await
                .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        topology::declare_exchange(&channel, exchange)
            .await
            .expect("exchange");
        let consumer = topology::consume_account_events(&channel, exchange, "account-events-test")
            .await
            .expect("consumer");
        AccountEventListener {
            _connection: connection,
            consumer,
        }
    }

    /// The next event with its routing key; fails after `PATIENCE`.
    pub async fn next(&mut self) -> (String, AccountEvent) {
        let delivery = tokio::time::timeout(Self::PATIENCE, self.consumer.next())
            .await
            .expect("an account event arrived in time")
            .expect("the consumer is open")
            .expect("a delivery");
        let event = serde_json::from_slice(&delivery.data).expect("an account event");
        (delivery.routing_key.to_string(), event)
    }

    /// Generous, so a busy machine or a publisher still reconnecting does not fail a test.
    pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
}

/// The issuer and audience the test settings use.
pub fn token_policy() -> common::token::TokenPolicy {
    common::token::TokenPolicy {
        issuer: "chat-auth".into(),
        audience: "chat".into(),
        leeway_secs: 0,
    }
}

/// An access token for the user `user_id` (`username`), valid for ten minutes, signed with
/// `key` under `kid`: what someone holding that key could make.
pub fn token_signed_with(
    key: &jsonwebtoken::EncodingKey,
    kid: Option<String>,
    user_id: &str,
    username: &str,
) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = common::token::Claims {
        sub: user_id.to_string(),
        name: username.to_string(),
        iat: now,
        exp: now + 600,
        nbf: None,
        iss: "chat-auth".into(),
        aud: "chat".into(),
        jti: ulid::Ulid::new().to_string(),
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = kid;
    jsonwebtoken::encode(&header, &claims, key).expect("signs")
}

/// Reads a JSON error body and returns its code, checking the documented shape.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.expect("JSON error body");
    assert!(body["error"]["message"].is_string(), "no message in {body}");
    body["error"]["code"]
        .as_str()
        .expect("error code")
        .to_string()
}
