//! The forwarding of `/api/auth/*`, `/api/users*`, `/api/rooms*` and `/api/dms*`, seen on the
//! wire.

use crate::helpers::{Cluster, EchoUpstream, raw_request};

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: chat\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn paths_that_climb_out_of_the_forwarded_prefix_are_refused_before_any_upstream_call() {
    let cluster = Cluster::new().await;
    let upstream = EchoUpstream::start().await;
    let url = upstream.url.clone();
    let gateway = cluster
        .gateway_with(|s| {
            s.auth.url = url.clone();
            s.history.url = url;
        })
        .await;
    for path in [
        "/api/auth/%2e%2e/%2e%2e/metrics",
        "/api/auth/%2E%2E/%2E%2E/metrics",
        "/api/rooms/../../metrics",
        "/api/auth/../../health/ready",
        "/api/auth/.%2e/.%2e/metrics",
        "/api/auth/%2e./%2e./metrics",
        "/api/auth/..\\..\\metrics",
        "/api/auth/..%5c..%5cmetrics",
        "/api/auth/%2e%2e%2f%2e%2e%2fmetrics",
        "/api/auth/%2e%2e/x/../admin?q=1",
        "/api/rooms/lobby/%2e/messages",
        "/api/rooms/lobby/./messages",
        "/api/rooms//lobby/messages",
        "/api/rooms/lobby%00/messages",
        "/api/rooms/lobby%0d%0aX-Injected:%201/messages",
        "/api/dms/%2e%2e/%2e%2e/metrics",
        "/api/dms//x",
        "/api/users/%2e%2e/%2e%2e/metrics",
        "/api/users/by-name/a%2fb",
    ] {
        let response = raw_request(&gateway.address, &get(path)).await;
        assert_eq!(response.status, 400, "{path}: {}", response.head);
        let body: serde_json::Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|_| panic!("{path}: JSON error body, got {:?}", response.body));
        assert_eq!(body["error"]["code"], "bad_path", "{path}");
    }
    assert_eq!(
        upstream.request_lines(),
        Vec::<String>::new(),
        "refused paths reached the upstream"
    );

    // Ordinary paths arrive exactly as sent, query string included.
    for path in [
        "/api/auth/login?x=1&next=%2Fhome",
        "/api/rooms/lobby/messages?limit=5&before=01J0",
        "/api/rooms/caf%C3%A9/messages",
        "/api/auth/trailing/",
        "/api/rooms",
        "/api/rooms?cursor=abc",
        "/api/rooms/directory?q=gen",
        "/api/dms",
        "/api/users?q=al",
        "/api/users/by-name/alice",
    ] {
        let response = raw_request(&gateway.address, &get(path)).await;
        assert_eq!(response.status, 200, "{path}: {}", response.head);
        assert!(
            response
                .body
                .starts_with(&format!("GET {path} HTTP/1.1\r\n")),
            "{path} arrived as {:?}",
            response.body.lines().next()
        );
    }
}

#[tokio::test]
async fn hop_by_hop_and_client_supplied_forwarding_headers_do_not_cross_the_proxy() {
    let cluster = Cluster::new().await;
    let upstream = EchoUpstream::start().await;
    let url = upstream.url.clone();
    let gateway = cluster.gateway_with(|s| s.auth.url = url).await;
    let response = raw_request(
        &gateway.address,
        "GET /api/auth/headers HTTP/1.1\r\nHost: chat\r\n\
         Connection: close, X-Secret\r\nX-Secret: for the gateway only\r\n\
         Forwarded: for=198.51.100.7;host=evil.example\r\nX-Real-IP: 198.51.100.7\r\n\
         X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Port: 443\r\nX-Kept: end to end\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.head);
    let received = response.body.to_ascii_lowercase();
    let names: Vec<&str> = received
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(name, _)| name))
        .collect();
    for dropped in [
        "x-secret",
        "forwarded",
        "x-real-ip",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
    ] {
        assert!(
            !names.contains(&dropped),
            "{dropped} reached the upstream:\n{received}"
        );
    }
    assert!(received.contains("x-kept: end to end"), "{received}");
    assert!(
        received.contains("x-forwarded-for: 127.0.0.1"),
        "{received}"
    );

    // The other way: what the upstream names in its `Connection` stays with the gateway.
    let head = response.head.to_ascii_lowercase();
    assert!(!head.contains("x-hop"), "{head}");
    assert!(head.contains("x-echo: yes"), "{head}");
}
