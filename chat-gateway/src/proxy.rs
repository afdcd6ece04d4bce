//! Forwards `/api/auth/*` to auth-service and `/api/rooms/*` to history-service, so browsers
//! talk to one origin. An upstream that is down or slow is a 502/504 with the JSON error body,
//! never a hang.

use std::time::Duration;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;

use crate::server::{ServerState, error_response};

#[derive(Clone)]
pub struct Upstreams {
    http: reqwest::Client,
    auth: String,
    history: String,
    max_body: usize,
}

impl Upstreams {
    pub fn new(auth: &str, history: &str, max_body: usize) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(15))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            auth: auth.trim_end_matches('/').to_string(),
            history: history.trim_end_matches('/').to_string(),
            max_body,
        })
    }
}

/// Headers that describe one hop, not the message.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

pub async fn to_auth(State(state): State<ServerState>, request: Request) -> Response {
    let base = state.upstreams.auth.clone();
    forward(&state.upstreams, &base, request).await
}

pub async fn to_history(State(state): State<ServerState>, request: Request) -> Response {
    let base = state.upstreams.history.clone();
    forward(&state.upstreams, &base, request).await
}

async fn forward(upstreams: &Upstreams, base: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let body = match axum::body::to_bytes(body, upstreams.max_body).await {
        Ok(body) => body,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body too large",
            );
        }
    };
    let mut upstream = upstreams
        .http
        .request(parts.method.clone(), format!("{base}{path}"))
        .body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) && name != "x-forwarded-for" {
            upstream = upstream.header(name, value);
        }
    }
    // The client's address, appended to what earlier proxies reported: upstreams that trust
    // this gateway read the last entry (auth-service's per-address limits).
    if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        let earlier = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!("{v}, "))
            .unwrap_or_default();
        upstream = upstream.header("x-forwarded-for", format!("{earlier}{}", peer.ip()));
    }
    let response = match upstream.send().await {
        Ok(response) => response,
        Err(error) if error.is_timeout() => {
            tracing::warn!(%error, "upstream timed out");
            return error_response(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream service did not answer in time",
            );
        }
        Err(error) => {
            tracing::warn!(%error, "upstream unavailable");
            return error_response(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream service is unavailable",
            );
        }
    };
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(%error, "upstream response failed");
            return error_response(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream response was cut off",
            );
        }
    };
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    for (name, value) in &headers {
        if !hop_by_hop(name) {
            out.headers_mut().append(name, value.clone());
        }
    }
    out.headers_mut().remove(header::CONTENT_LENGTH);
    out
}
