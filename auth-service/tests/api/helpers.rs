//! Starts auth-service in-process on a free port with its own database, like production
//! start-up does (`Application::build`), against the real MongoDB-wire server.

use auth_service::settings::Settings;
use auth_service::startup::Application;
use mongodb::Database;
use serde_json::{Value, json};

pub struct TestApp {
    pub address: String,
    pub db: Database,
    pub http: reqwest::Client,
}

pub async fn spawn_app() -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        common::telemetry::init("auth-service");
    }
    let mut settings = Settings::load().expect("settings load");
    settings.http.port = 0;
    settings.mongodb.database =
        format!("auth_test_{}", ulid::Ulid::new().to_string().to_lowercase());
    settings.password.bcrypt_cost = 4;
    let client = settings
        .mongodb
        .client("auth-tests")
        .await
        .expect("mongo client");
    let db = client.database(&settings.mongodb.database);
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        db,
        http: reqwest::Client::new(),
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

    pub async fn user_count(&self) -> u64 {
        self.db
            .collection::<mongodb::bson::Document>("users")
            .count_documents(mongodb::bson::doc! {})
            .await
            .expect("count users")
    }
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
