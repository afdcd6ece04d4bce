//! A gateway whose MongoDB stops answering: MongoDB holds only send receipts, so the gateway
//! stays ready and keeps serving everything else while it refuses sends.

use std::time::{Duration, Instant};

use chat_gateway::settings::Settings;
use common::testing::BrokerProxy;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::helpers::Cluster;

#[tokio::test]
async fn a_gateway_whose_database_stops_answering_stays_ready_delivers_and_refuses_only_sends() {
    let database = BrokerProxy::to_uri(
        Settings::load()
            .expect("settings load")
            .mongodb
            .uri
            .expose_secret(),
    )
    .await;
    let dir = std::env::temp_dir().join(format!("gateway-web-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).expect("web dir");
    std::fs::write(dir.join("index.html"), "<!doctype html><title>chat</title>").expect("index");
    let cluster = Cluster::new().await;
    let web_dir = dir.to_string_lossy().to_string();
    let uri = database.uri().to_string();
    let gateway = cluster
        .gateway_with(move |settings| {
            settings.mongodb.uri = uri.into();
            settings.web.dir = web_dir;
        })
        .await;
    let other = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    alice.join("lobby").await;
    let mut bob = other.connect("u-bob", "bob").await;
    bob.join("lobby").await;

    // From now on MongoDB's answers never reach the gateway.
    database.hold();
    let http = reqwest::Client::new();

    // Readiness does not wait for the database (a probe times out after 2 s in
    // deploy/k8s; 5 s is a generous bound for a loaded machine).
    let started = Instant::now();
    let ready = http
        .get(format!("http://{}/health/ready", gateway.address))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("readiness answers while MongoDB is silent");
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "ready");
    assert!(started.elapsed() < Duration::from_secs(5));

    // The web client and the forwarded APIs are served.
    let index = http
        .get(format!("http://{}/", gateway.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(index.status(), 200);
    let forwarded = http
        .get(format!("http://{}/api/auth/anything", gateway.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(forwarded.status(), 200);

    // Live delivery from another gateway reaches alice.
    bob.send_message("lobby", "from-bob", "hello").await;
    let delivered = alice.next_of("message").await;
    assert_eq!(delivered["body"], "hello");

    // A send through this gateway cannot record its receipt: refused, not lost silently.
    alice.send_message("lobby", "from-alice", "hi").await;
    // The receipt write gives up after 10 s (receipts::RESERVE_TIMEOUT); 30 s bounds it.
    let refused = alice
        .collect("error", 1, Duration::from_secs(30))
        .await
        .pop()
        .expect("the send is answered with an error");
    assert_eq!(refused["code"], "unavailable", "{refused}");
    assert_eq!(refused["client_id"], "from-alice", "{refused}");

    // Still ready after the refused send.
    let ready = http
        .get(format!("http://{}/health/ready", gateway.address))
        .send()
        .await
        .expect("sent");
    assert_eq!(ready.status(), 200);
    let _ = std::fs::remove_dir_all(dir);
}
