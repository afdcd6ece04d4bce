use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::Cluster;

#[tokio::test]
async fn bad_frames_get_an_error_event_and_the_connection_stays_usable() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    alice.join("lobby").await;

    let cases = [
        ("{not json".to_string(), "malformed_json"),
        (json!({"type": "dance"}).to_string(), "unknown_type"),
        (
            json!({"type": "join", "room": "no.dots"}).to_string(),
            "invalid_room",
        ),
        (
            json!({"type": "join", "room": "x".repeat(65)}).to_string(),
            "invalid_room",
        ),
        (
            json!({"type": "join", "room": {"$gt": ""}}).to_string(),
            "invalid_frame",
        ),
        (
            json!({"type": "send", "room": "lobby", "client_id": "c1", "body": ""}).to_string(),
            "invalid_body",
        ),
        (
            json!({"type": "send", "room": "lobby", "client_id": "c2", "body": "x".repeat(4001)})
                .to_string(),
            "invalid_body",
        ),
        (
            json!({"type": "send", "room": "elsewhere", "client_id": "c3", "body": "hi"})
                .to_string(),
            "not_joined",
        ),
        (
            json!({"type": "leave", "room": "elsewhere"}).to_string(),
            "not_joined",
        ),
        (
            json!({"type": "join", "room": "lobby"}).to_string(),
            "already_joined",
        ),
    ];
    for (frame, code) in cases {
        alice.send_text(frame.clone()).await;
        let error = alice.next_of("error").await;
        assert_eq!(error["code"], code, "for {frame}");
        assert!(error["message"].is_string());
    }

    alice.send_json(json!({"type": "ping"})).await;
    alice.next_of("pong").await;
    alice.send_message("lobby", "ok-1", "still here").await;
    let ack = alice.next_of("ack").await;
    assert_eq!(ack["client_id"], "ok-1");
    let message = alice.next_of("message").await;
    assert_eq!(message["body"], "still here");
    // Nothing refused above was delivered: the first message after them is this one.
    assert_eq!(message["client_id"], "ok-1");
}

#[tokio::test]
async fn a_refused_send_names_its_client_id() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    alice.send_message("lobby", "c-77", "not joined yet").await;
    let error = alice.next_of("error").await;
    assert_eq!(error["code"], "not_joined");
    assert_eq!(error["client_id"], "c-77");
}

#[tokio::test]
async fn a_message_over_the_size_limit_closes_with_1009() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    alice.send_text("x".repeat(20_000)).await;
    let code = loop {
        match alice.socket.next_frame().await {
            Some(Message::Close(Some(frame))) => break u16::from(frame.code),
            Some(_) => continue,
            None => panic!("closed without a close frame"),
        }
    };
    assert_eq!(code, 1009);
}

trait NextFrame {
    async fn next_frame(&mut self) -> Option<Message>;
}

impl NextFrame
    for tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
{
    async fn next_frame(&mut self) -> Option<Message> {
        use futures_util::StreamExt;
        tokio::time::timeout(std::time::Duration::from_secs(5), self.next())
            .await
            .expect("a frame within 5 s")
            .map(|r| r.unwrap_or_else(|e| panic!("read failed: {e:?}")))
    }
}

#[tokio::test]
async fn binary_frames_are_refused_with_an_error_event() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    use futures_util::SinkExt;
    alice
        .socket
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("sent");
    let error = alice.next_of("error").await;
    assert_eq!(error["code"], "unsupported_frame");
}

#[tokio::test]
async fn shutdown_closes_connections_with_1001() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    alice.join("lobby").await;
    gateway.stop.cancel();
    let code = loop {
        match alice.socket.next_frame().await {
            Some(Message::Close(Some(frame))) => break u16::from(frame.code),
            Some(_) => continue,
            None => panic!("closed without a close frame"),
        }
    };
    assert_eq!(code, 1001);
}
