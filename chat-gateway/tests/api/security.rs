use std::time::Duration;

use common::testing;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Client, Cluster, TestGateway};

/// Reads until the server closes; returns the close code (0 when closed without a frame).
async fn close_code(client: &mut Client, within: Duration) -> u16 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, client.socket.next())
            .await
            .expect("closed in time");
        match frame {
            Some(Ok(Message::Close(frame))) => {
                return frame.map(|f| u16::from(f.code)).unwrap_or(0);
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return 0,
        }
    }
}

fn token_expiring_in(user: &str, secs: u64) -> String {
    let mut claims = testing::claims(&format!("u-{user}"), user);
    claims.exp = claims.iat + secs;
    testing::sign(&claims, testing::TEST_KID)
}

#[tokio::test]
async fn a_connection_is_closed_with_4001_when_its_token_expires() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway
        .connect_with_token(&token_expiring_in("alice", 2))
        .await
        .expect("accepted");
    alice.join("lobby").await;
    assert_eq!(close_code(&mut alice, Duration::from_secs(10)).await, 4001);
}

#[tokio::test]
async fn a_fresh_token_sent_in_band_keeps_the_connection_open() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway
        .connect_with_token(&token_expiring_in("alice", 2))
        .await
        .expect("accepted");
    let fresh = testing::token("u-alice", "alice");
    alice
        .send_json(json!({"type": "auth", "token": fresh}))
        .await;
    let accepted = alice.next_of("authenticated").await;
    assert!(accepted["expires_at"].as_u64().is_some_and(|t| t > 0));
    tokio::time::sleep(Duration::from_secs(3)).await;
    alice.send_json(json!({"type": "ping"})).await;
    alice.next_of("pong").await;
}

#[tokio::test]
async fn an_in_band_token_of_another_user_or_a_bad_one_is_refused() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    let mut expired = testing::claims("u-alice", "alice");
    expired.exp = expired.iat - 3600;
    for token in [
        testing::token("u-mallory", "mallory"),
        testing::sign(&expired, testing::TEST_KID),
        "garbage".to_string(),
    ] {
        alice
            .send_json(json!({"type": "auth", "token": token}))
            .await;
        assert_eq!(alice.next_of("error").await["code"], "unauthorized");
    }
    alice.send_json(json!({"type": "ping"})).await;
    alice.next_of("pong").await;
}

/// A gateway with these per-connection rate limits (the helper's default lifts them).
async fn rate_limited_gateway(
    cluster: &Cluster,
    per_second: u32,
    burst: u32,
    close_after: u32,
) -> TestGateway {
    cluster
        .gateway_with(|s| {
            s.limits.messages_per_second = per_second;
            s.limits.message_burst = burst;
            s.limits.rate_limited_close_after = close_after;
        })
        .await
}

#[tokio::test]
async fn frames_over_the_rate_limit_are_refused_and_persistent_abuse_closes_with_1008() {
    let cluster = Cluster::new().await;
    let gateway = rate_limited_gateway(&cluster, 2, 5, 10).await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    for _ in 0..8 {
        alice.send_json(json!({"type": "ping"})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..8 {
        let frame = alice.next_json().await;
        match frame["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") if frame["code"] == "rate_limited" => limited += 1,
            _ => panic!("unexpected {frame}"),
        }
    }
    assert!(
        (5..=6).contains(&pongs),
        "burst of 5 (plus refill): {pongs}"
    );
    assert_eq!(pongs + limited, 8);
    for _ in 0..20 {
        alice.send_json(json!({"type": "ping"})).await;
    }
    assert_eq!(close_code(&mut alice, Duration::from_secs(5)).await, 1008);
}

#[tokio::test]
async fn a_flood_gets_rate_limited_errors_before_the_1008_close() {
    use futures_util::SinkExt;
    let cluster = Cluster::new().await;
    // The default limits: 20 frames a second, bursts of 40, closed after 20 refusals.
    let gateway = rate_limited_gateway(&cluster, 20, 40, 20).await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    // As fast as possible: one write of 200 frames. The gateway may close before it has read
    // them all, so a failed send is no error here.
    for _ in 0..200 {
        let ping = Message::Text(json!({"type": "ping"}).to_string().into());
        if alice.socket.feed(ping).await.is_err() {
            break;
        }
    }
    let _ = alice.socket.flush().await;
    let mut limited = 0;
    let close = loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), alice.socket.next())
            .await
            .expect("closed within 5 s");
        match frame {
            Some(Ok(Message::Text(text))) => {
                let frame: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                if frame["type"] == "error" {
                    assert_eq!(frame["code"], "rate_limited", "{frame}");
                    limited += 1;
                }
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("connection failed before its close frame: {error}"),
            None => break None,
        }
    };
    assert_eq!(close, Some(1008));
    assert!(limited >= 1, "no rate_limited frame before the close");
}

#[tokio::test]
async fn the_public_port_does_not_serve_metrics() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let response = reqwest::get(format!("http://{}/metrics", gateway.address))
        .await
        .expect("sent");
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_user_may_hold_only_the_configured_number_of_connections() {
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|s| s.limits.max_connections_per_user = 2)
        .await;
    let token = testing::token("u-alice", "alice");
    let first = gateway.connect_with_token(&token).await.expect("first");
    let _second = gateway.connect_with_token(&token).await.expect("second");
    assert_eq!(gateway.connect_with_token(&token).await.err(), Some(429));
    // Another user is not affected, and a closed connection frees its slot.
    let _bob = gateway.connect("u-bob", "bob").await;
    drop(first);
    let mut freed = false;
    for _ in 0..50 {
        if gateway.connect_with_token(&token).await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the closed connection's slot was not released");
}

#[tokio::test]
async fn a_joined_room_limit_applies_per_connection() {
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|s| s.limits.max_rooms_per_connection = 2)
        .await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    alice.join("one").await;
    alice.join("two").await;
    alice
        .send_json(json!({"type": "join", "room": "three"}))
        .await;
    assert_eq!(alice.next_of("error").await["code"], "too_many_rooms");
}

async fn upgrade_with_origin(address: &str, origin: &str) -> u16 {
    reqwest::Client::new()
        .get(format!(
            "http://{address}/ws?token={}",
            testing::token("u", "alice")
        ))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Origin", origin)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

#[tokio::test]
async fn browsers_may_connect_only_from_the_gateways_own_origin_or_an_allowed_one() {
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|s| s.security.allowed_origins = vec!["https://chat.example".to_string()])
        .await;
    assert_eq!(
        upgrade_with_origin(&gateway.address, "https://evil.example").await,
        403
    );
    assert_eq!(
        upgrade_with_origin(&gateway.address, &format!("http://{}", gateway.address)).await,
        101
    );
    assert_eq!(
        upgrade_with_origin(&gateway.address, "https://chat.example").await,
        101
    );
}

#[tokio::test]
async fn same_origin_means_an_http_or_https_origin_and_allowed_origins_match_exactly() {
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|s| s.security.allowed_origins = vec!["https://chat.example".to_string()])
        .await;
    let address = &gateway.address;
    for refused in [
        format!("evil://{address}"),
        format!("file://{address}"),
        "file://".to_string(),
        "null".to_string(),
        format!("http://{address}.evil.example"),
        format!("http://user@{address}"),
        "http://chat.example".to_string(),
        "https://chat.example:8443".to_string(),
        "https://chat.example.evil.example".to_string(),
    ] {
        assert_eq!(
            upgrade_with_origin(address, &refused).await,
            403,
            "{refused}"
        );
    }
    for accepted in [
        format!("http://{address}"),
        format!("https://{address}"),
        "https://chat.example".to_string(),
        "https://chat.example:443".to_string(),
    ] {
        assert_eq!(
            upgrade_with_origin(address, &accepted).await,
            101,
            "{accepted}"
        );
    }
}

#[tokio::test]
async fn cross_origin_api_calls_get_cors_headers_only_for_allowed_origins() {
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|s| s.security.allowed_origins = vec!["https://chat.example".to_string()])
        .await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("http://{}/api/auth/login", gateway.address),
        )
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .send()
    };
    let allowed = preflight("https://chat.example").await.expect("sent");
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("https://chat.example")
    );
    let refused = preflight("https://evil.example").await.expect("sent");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn pages_carry_security_headers() {
    let cluster = Cluster::new().await;
    let gateway = cluster.gateway().await;
    let response = reqwest::get(format!("http://{}/", gateway.address))
        .await
        .expect("sent");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
    assert!(header("content-security-policy").contains("script-src 'self'"));
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("x-frame-options"), "DENY");
    let api = reqwest::get(format!("http://{}/api/nothing", gateway.address))
        .await
        .expect("sent");
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn a_connection_silent_for_the_idle_timeout_is_closed_with_4000() {
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|s| {
            s.limits.idle_timeout_secs = 1;
            // No server pings (their pongs would count as activity).
            s.limits.ping_interval_secs = 3600;
        })
        .await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    assert_eq!(close_code(&mut alice, Duration::from_secs(10)).await, 4000);
}

/// Reads until `until`, counting the server's pings; the close code if it closed first.
async fn pings_until(client: &mut Client, until: tokio::time::Instant) -> (usize, Option<u16>) {
    let mut pings = 0;
    loop {
        match tokio::time::timeout_at(until, client.socket.next()).await {
            Err(_) => return (pings, None),
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (pings, Some(frame.map(|f| u16::from(f.code)).unwrap_or(0)));
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return (pings, Some(0)),
        }
    }
}

/// A gateway that pings every second and closes connections silent for two.
async fn gateway_pinging_every_second(cluster: &Cluster) -> TestGateway {
    cluster
        .gateway_with(|s| {
            s.limits.idle_timeout_secs = 2;
            s.limits.ping_interval_secs = 1;
        })
        .await
}

#[tokio::test]
async fn a_client_answering_pings_stays_open_past_the_idle_timeout() {
    let cluster = Cluster::new().await;
    let gateway = gateway_pinging_every_second(&cluster).await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    // Reading answers each ping with a pong.
    let until = tokio::time::Instant::now() + Duration::from_millis(4500);
    let (pings, closed) = pings_until(&mut alice, until).await;
    assert_eq!(closed, None, "closed after {pings} pings");
    assert!(pings >= 3, "{pings} pings in 4.5 s at one per second");
}

#[tokio::test]
async fn pings_alone_do_not_keep_a_silent_client_open() {
    let cluster = Cluster::new().await;
    let gateway = gateway_pinging_every_second(&cluster).await;
    let mut alice = gateway.connect("u-alice", "alice").await;
    // Not reading: no pong goes back, and the pings wait in the socket.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let (pings, closed) = pings_until(&mut alice, until).await;
    assert!(pings >= 1, "no ping before the close");
    assert_eq!(closed, Some(4000));
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|s| s.limits.handshake_timeout_ms = 500)
        .await;
    let mut socket = tokio::net::TcpStream::connect(&gateway.address)
        .await
        .expect("connected");
    socket
        .write_all(b"GET /ws HTTP/1.1\r\nHost: chat\r\n")
        .await
        .expect("partial request sent");
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the half-open handshake was kept for 5 s"),
        }
    }
}

#[tokio::test]
async fn a_client_that_sends_but_never_reads_is_closed_after_the_reply_wait() {
    use futures_util::SinkExt;
    let cluster = Cluster::new().await;
    let gateway = cluster
        .gateway_with(|settings| {
            settings.limits.outbound_queue = 4;
            settings.limits.socket_send_buffer_bytes = 4096;
            settings.limits.reply_wait_ms = 300;
        })
        .await;
    let client = gateway
        .connect_with_small_receive_buffer("u-mute", "mute")
        .await;
    let (mut sink, mut stream) = client.socket.split();
    // Pongs fill the socket buffers and then the outbound queue; nothing is read meanwhile.
    // The sending stops by itself once the gateway stops reading (or closes).
    let sender = tokio::spawn(async move {
        for _ in 0..50_000 {
            if sink
                .feed(Message::Text(r#"{"type":"ping"}"#.into()))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = sink.flush().await;
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let close = loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => break None,
            Err(_) => panic!("the connection was still open after 10 s"),
        }
    };
    sender.abort();
    assert_eq!(close, Some(4008));
}
