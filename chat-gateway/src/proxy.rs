//! Forwards `/api/auth/*` and `/api/users[/*]` to auth-service and `/api/rooms[/*]` and
//! `/api/dms[/*]` to history-service, so browsers talk to one origin. An upstream that is down
//! or slow is a 502/504 with the JSON error body, never a hang.
//!
//! Only paths under the route's own prefix are forwarded: the path is checked segment by
//! segment before any URL is built (see [`Upstream::url`]), because URL libraries resolve
//! `..` and `%2e%2e` and would otherwise carry a request to any path of the upstream.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use reqwest::Url;

use crate::server::{ServerState, error_response};

#[derive(Clone)]
pub struct Upstreams {
    http: reqwest::Client,
    auth: Upstream,
    users: Upstream,
    rooms: Upstream,
    dms: Upstream,
    max_body: usize,
    /// Longest wait for a request body, after its headers.
    body_timeout: Duration,
}

/// One upstream service and the path prefix forwarded to it.
#[derive(Clone)]
struct Upstream {
    /// Base URL without a trailing slash.
    base: String,
    /// The route's prefix (`/api/auth`), without a trailing slash: request paths must be it
    /// or start with it followed by `/`.
    prefix: &'static str,
    /// The prefix as the path of a URL on `base`: forwarded URLs must stay under it.
    allowed: String,
}

impl Upstream {
    fn new(base: &str, prefix: &'static str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        let allowed = Url::parse(&format!("{base}{prefix}"))?.path().to_string();
        Ok(Self {
            base,
            prefix,
            allowed,
        })
    }

    /// The upstream URL of a request, or `None` when its path could reach anything outside
    /// the prefix. Every segment after the prefix is percent-decoded and refused when it is
    /// `.` or `..`, holds `/`, `\` or a control character, or is empty (a trailing slash
    /// excepted). The URL built from what passes must still have a path under the prefix
    /// after the URL library's normalisation; the query is passed on as sent.
    fn url(&self, uri: &Uri) -> Option<Url> {
        let path = uri.path();
        let rest = path.strip_prefix(self.prefix)?;
        if !rest.is_empty() {
            let rest = rest.strip_prefix('/')?;
            let last = rest.split('/').count() - 1;
            if !rest
                .split('/')
                .enumerate()
                .all(|(at, segment)| segment_allowed(segment, at == last))
            {
                return None;
            }
        }
        let mut url = Url::parse(&format!("{}{path}", self.base)).ok()?;
        url.set_query(uri.query());
        let under = url
            .path()
            .strip_prefix(self.allowed.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        under.then_some(url)
    }
}

/// Whether one raw path segment may be forwarded (see [`Upstream::url`]).
fn segment_allowed(raw: &str, last: bool) -> bool {
    if raw.is_empty() {
        return last;
    }
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    decoded != b"."
        && decoded != b".."
        && !decoded
            .iter()
            .any(|&b| b == b'/' || b == b'\\' || b.is_ascii_control())
}

impl Upstreams {
    pub fn new(
        auth: &str,
        history: &str,
        max_body: usize,
        body_timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(15))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            auth: Upstream::new(auth, "/api/auth")?,
            users: Upstream::new(auth, "/api/users")?,
            rooms: Upstream::new(history, "/api/rooms")?,
            dms: Upstream::new(history, "/api/dms")?,
            max_body,
            body_timeout,
        })
    }
}

/// Headers that describe one hop, not the message.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "proxy-connection"
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

/// Headers through which a client could claim to be a proxy's report of where a request came
/// from. Upstreams learn that only from the `X-Forwarded-For` this gateway writes.
fn client_claims_forwarding(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-forwarded-port"
            | "x-real-ip"
    )
}

/// The headers a message names in its own `Connection` header: meant for this hop only
/// (RFC 9110 7.6.1), so they are not passed on.
fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|option| HeaderName::from_bytes(option.trim().as_bytes()).ok())
        .collect()
}

pub async fn to_auth(State(state): State<ServerState>, request: Request) -> Response {
    forward(&state.upstreams, &state.upstreams.auth, request).await
}

pub async fn to_users(State(state): State<ServerState>, request: Request) -> Response {
    forward(&state.upstreams, &state.upstreams.users, request).await
}

pub async fn to_rooms(State(state): State<ServerState>, request: Request) -> Response {
    forward(&state.upstreams, &state.upstreams.rooms, request).await
}

pub async fn to_dms(State(state): State<ServerState>, request: Request) -> Response {
    forward(&state.upstreams, &state.upstreams.dms, request).await
}

async fn forward(upstreams: &Upstreams, target: &Upstream, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(url) = target.url(&parts.uri) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_path",
            "the path has an empty, `.` or `..` segment or an encoded separator",
        );
    };
    let body = match tokio::time::timeout(
        upstreams.body_timeout,
        axum::body::to_bytes(body, upstreams.max_body),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body too large",
            );
        }
        Err(_) => {
            // The rest of the body may still be on its way: the connection cannot carry
            // another request.
            let mut response = error_response(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    let mut upstream = upstreams.http.request(parts.method.clone(), url).body(body);
    let named = connection_options(&parts.headers);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) && !named.contains(name) && !client_claims_forwarding(name) {
            upstream = upstream.header(name, value);
        }
    }
    // The client's address, appended to what earlier proxies reported: upstreams that trust
    // this gateway read the last entry (auth-service's per-address limits).
    if let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        let earlier = parts
            .headers
            .get("x-forwarded-for")
            .filter(|_| !named.iter().any(|n| n == "x-forwarded-for"))
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
    let named = connection_options(&headers);
    for (name, value) in &headers {
        if !hop_by_hop(name) && !named.contains(name) {
            out.headers_mut().append(name, value.clone());
        }
    }
    out.headers_mut().remove(header::CONTENT_LENGTH);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(path: &str) -> Option<String> {
        forwarded_to("/api/auth", path)
    }

    fn forwarded_to(prefix: &'static str, path: &str) -> Option<String> {
        let upstream = Upstream::new("http://upstream:8081/", prefix).expect("upstream");
        upstream
            .url(&path.parse().expect("uri"))
            .map(|url| url.to_string())
    }

    #[test]
    fn segments_that_could_leave_the_prefix_are_refused() {
        for path in [
            "/api/auth/..",
            "/api/auth/%2e%2e/x",
            "/api/auth/.%2E/x",
            "/api/auth/x/%2e",
            "/api/auth/a%2fb",
            "/api/auth/a%5Cb",
            "/api/auth/a%00b",
            "/api/auth/a%7fb",
            "/api/auth//x",
            "/api/rooms/x",
            "/api/authx",
            "/api/auth%2f..",
        ] {
            assert_eq!(forwarded(path), None, "{path}");
        }
    }

    #[test]
    fn ordinary_paths_and_queries_are_forwarded_unchanged() {
        assert_eq!(
            forwarded("/api/auth/login?next=%2F..%2F&x=1").as_deref(),
            Some("http://upstream:8081/api/auth/login?next=%2F..%2F&x=1")
        );
        assert_eq!(
            forwarded("/api/auth/a..b/.x/").as_deref(),
            Some("http://upstream:8081/api/auth/a..b/.x/")
        );
    }

    #[test]
    fn a_prefix_is_forwarded_with_or_without_a_path_after_it() {
        assert_eq!(
            forwarded_to("/api/rooms", "/api/rooms?q=x").as_deref(),
            Some("http://upstream:8081/api/rooms?q=x")
        );
        assert_eq!(
            forwarded_to("/api/users", "/api/users/by-name/bob").as_deref(),
            Some("http://upstream:8081/api/users/by-name/bob")
        );
        for path in [
            "/api/dms/..",
            "/api/dms/%2e%2e/x",
            "/api/dmsx",
            "/api/dms//x",
        ] {
            assert_eq!(forwarded_to("/api/dms", path), None, "{path}");
        }
    }
}
