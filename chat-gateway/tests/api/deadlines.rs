//! Connections that send too little, too slowly: every one ends within its deadline.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Cluster, EchoUpstream, TestGateway};

/// Reads until the gateway closes the socket (end of file or reset); what arrived, or `None`
/// when it was still open at `deadline`.
async fn closed_by(socket: &mut TcpStream, deadline: tokio::time::Instant) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn a_thousand_silent_sockets_are_all_closed_after_the_handshake_timeout() {
    let cluster = Cluster::new().await;
    let gateway = impatient_gateway(&cluster).await;
    let mut sockets = Vec::new();
    for _ in 0..1000 {
        sockets.push(
            TcpStream::connect(&gateway.address)
                .await
                .expect("connected"),
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let open = futures_util::future::join_all(
        sockets
            .iter_mut()
            .map(|socket| async move { closed_by(socket, deadline).await.is_none() }),
    )
    .await
    .into_iter()
    .filter(|open| *open)
    .count();
    assert_eq!(open, 0, "sockets still open 5 s after connecting");
}

/// Connects, sends `bytes` and then nothing; what arrived until the gateway closed the
/// socket, or `None` when it was still open 5 s later.
async fn send_then_fall_silent(address: &str, bytes: &[u8]) -> Option<String> {
    let mut socket = TcpStream::connect(address).await.expect("connected");
    socket.write_all(bytes).await.expect("sent");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    closed_by(&mut socket, deadline)
        .await
        .map(|received| String::from_utf8_lossy(&received).to_string())
}

/// A gateway that waits half a second for request headers.
async fn impatient_gateway(cluster: &Cluster) -> TestGateway {
    cluster
        .gateway_with(|s| s.limits.handshake_timeout_ms = 500)
        .await
}

#[tokio::test]
async fn a_socket_that_sends_only_an_http2_preface_line_is_closed() {
    let cluster = Cluster::new().await;
    let gateway = impatient_gateway(&cluster).await;
    let received = send_then_fall_silent(&gateway.address, b"PRI * HTTP/2.0\r\n").await;
    assert!(received.is_some(), "still open after 5 s");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_handshake_timeout() {
    let cluster = Cluster::new().await;
    let gateway = impatient_gateway(&cluster).await;
    let received = send_then_fall_silent(
        &gateway.address,
        b"GET /health/live HTTP/1.1\r\nHost: chat\r\n\r\n",
    )
    .await
    .expect("closed within 5 s of its last request");
    assert!(received.starts_with("HTTP/1.1 200 "), "{received}");
}

#[tokio::test]
async fn a_forwarded_request_whose_body_trickles_is_answered_408_and_closed() {
    let cluster = Cluster::new().await;
    let upstream = EchoUpstream::start().await;
    let url = upstream.url.clone();
    let gateway = cluster
        .gateway_with(|s| {
            s.auth.url = url;
            s.limits.body_timeout_ms = 500;
        })
        .await;
    let received = send_then_fall_silent(
        &gateway.address,
        b"POST /api/auth/login HTTP/1.1\r\nHost: chat\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{",
    )
    .await
    .expect("closed within 5 s");
    assert!(received.starts_with("HTTP/1.1 408 "), "{received}");
    assert!(
        received.contains(r#""code":"request_timeout""#),
        "{received}"
    );
    assert!(upstream.request_lines().is_empty(), "forwarded anyway");
}

#[tokio::test]
async fn an_upgraded_websocket_is_not_closed_by_the_http_deadlines() {
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|s| {
            s.limits.handshake_timeout_ms = 300;
            s.limits.body_timeout_ms = 300;
        })
        .await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    alice.send_json(serde_json::json!({"type": "ping"})).await;
    alice.next_of("pong").await;
}
