//! HTTP side of the gateway: the WebSocket upgrade (token verified first), health, the
//! forwarding of `/api/auth/*`, `/api/users*` (auth-service), `/api/rooms*` and `/api/dms*`
//! (history-service), and the web client's static files.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use common::error::ErrorBody;
use common::token::{JwksVerifier, TokenError, bearer_token};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::task::TaskTracker;
use tower_http::services::{ServeDir, ServeFile};

use crate::connection::{self, Hub, Session, SessionToken};
use crate::metrics::GatewayMetrics;
use crate::proxy::Upstreams;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct ServerState {
    pub hub: Arc<Hub>,
    /// Origins besides the gateway's own that may open `/ws` and call `/api/*`.
    pub allowed_origins: Arc<[String]>,
    pub verifier: JwksVerifier,
    pub upstreams: Upstreams,
    /// Connections in flight, awaited at shutdown.
    pub tracker: TaskTracker,
}

pub fn router(state: ServerState, web_dir: &str) -> Router {
    let cors = cors_layer(&state.allowed_origins);
    let web_dir = web_dir.trim_end_matches('/');
    let index = format!("{web_dir}/index.html");
    // The client's build writes a brotli (`.br`) and a gzip (`.gz`) copy beside each text file
    // (web/vite.config.ts): a request whose Accept-Encoding allows one is answered with it, the
    // others with the file itself; `response_headers` adds `Vary: Accept-Encoding`.
    // Hashed build assets are never answered with the SPA page: a missing one is a 404.
    let assets = ServeDir::new(format!("{web_dir}/assets"))
        .precompressed_br()
        .precompressed_gzip();
    let static_files = ServeDir::new(web_dir)
        .precompressed_br()
        .precompressed_gzip()
        .fallback(
            ServeFile::new(index)
                .precompressed_br()
                .precompressed_gzip(),
        );
    Router::new()
        .route("/ws", get(upgrade))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        // Served on the metrics listener only (see [`metrics_router`]).
        .route("/metrics", any(api_not_found))
        .merge(
            Router::new()
                .route("/api/auth/{*rest}", any(crate::proxy::to_auth))
                .route("/api/users", any(crate::proxy::to_users))
                .route("/api/users/{*rest}", any(crate::proxy::to_users))
                .route("/api/rooms", any(crate::proxy::to_rooms))
                .route("/api/rooms/{*rest}", any(crate::proxy::to_rooms))
                .route("/api/dms", any(crate::proxy::to_dms))
                .route("/api/dms/{*rest}", any(crate::proxy::to_dms))
                .route("/api/{*rest}", any(api_not_found))
                .layer(cors),
        )
        .nest_service("/assets", assets)
        .fallback_service(static_files)
        .layer(axum::middleware::from_fn(response_headers))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe_http,
        ))
        .with_state(state)
}

pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = (status, axum::Json(ErrorBody::new(code, message))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

async fn api_not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "not found")
}

/// Cross-origin access to `/api/*` for the configured origins only (none by default).
fn cors_layer(allowed: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = allowed
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(600))
}

/// Policy for the web client's pages: its own scripts, styles and connections only, and it
/// may not be framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; \
     form-action 'self'; frame-ancestors 'none'";

/// `nosniff` everywhere; on the web client's files also the page security headers, cache
/// control (hashed build assets are immutable, everything else is revalidated) and
/// `Vary: Accept-Encoding` (the same address is answered compressed or not), so that a
/// shared cache keeps one copy per encoding.
async fn response_headers(request: Request, next: axum::middleware::Next) -> Response {
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if path.starts_with("/api/") || path == "/ws" || path.starts_with("/health/") {
        return response;
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    let value = if path.starts_with("/assets/") && response.status().is_success() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    response
}

/// `GET /metrics` for Prometheus, on a listener of its own (`[metrics]` settings) so that the
/// public port does not expose the gateway's counters.
pub fn metrics_router(metrics: Arc<GatewayMetrics>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .fallback(api_not_found)
        .with_state(metrics)
}

async fn render_metrics(State(metrics): State<Arc<GatewayMetrics>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        common::metrics::render(&metrics.registry),
    )
        .into_response()
}

/// Records every routed request's latency by method, route template and status.
async fn observe_http(
    State(state): State<ServerState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "static".to_string());
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state
        .hub
        .metrics
        .http
        .with_label_values(&[method.as_str(), route.as_str(), response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn live() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Ready when the broker connection is up and token keys are loaded. MongoDB is not asked:
/// it holds only send receipts, so while it is away sends are refused `unavailable` (the
/// receipt cannot be written) but reads, the web client and live delivery go on, and a
/// database blip does not take every gateway out of its Service at once.
async fn ready(State(state): State<ServerState>) -> Response {
    let broker = state.hub.broker.is_connected();
    let keys = state.verifier.has_keys() || state.verifier.refresh().await.is_ok();
    let ready = broker && keys;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "broker": broker,
        "token_keys": keys,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Browsers send `Origin` on WebSocket handshakes: only the gateway's own origin and the
/// configured ones may connect (cross-site WebSocket hijacking). Clients that send no
/// `Origin` (not browsers) are not restricted by it.
///
/// The gateway's own origin is `http` or `https` with the request's `Host` as host and port
/// (TLS may end in front of the gateway, so either scheme); a configured origin must match in
/// scheme, host and port. Anything else is refused, `null` and opaque origins (`file:`, a
/// custom scheme) included.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(origin) = web_origin(origin) else {
        return false;
    };
    let same_origin = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|host| web_origin(&format!("{}://{host}", origin.scheme())))
        .is_some_and(|own| own == origin);
    same_origin
        || allowed
            .iter()
            .filter_map(|a| web_origin(a))
            .any(|a| a == origin)
}

/// An `http` or `https` origin (scheme, host, port: a default port is the same as none),
/// or `None` for anything that is not exactly an origin of a web page.
fn web_origin(text: &str) -> Option<reqwest::Url> {
    let url = reqwest::Url::parse(text).ok()?;
    let bare = matches!(url.scheme(), "http" | "https")
        && url.has_host()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    bare.then_some(url)
}

#[derive(Deserialize)]
struct UpgradeQuery {
    token: Option<String>,
}

fn header_contains(headers: &HeaderMap, name: header::HeaderName, needle: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(needle))
}

/// `GET /ws`: verifies the token (header or `token` query parameter) before anything else,
/// then performs the WebSocket handshake and hands the socket to [`connection::serve`].
async fn upgrade(
    State(state): State<ServerState>,
    Query(query): Query<UpgradeQuery>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    if !origin_allowed(headers, &state.allowed_origins) {
        return error_response(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin may not open a connection",
        );
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_string)
        .or(query.token.filter(|t| !t.is_empty()));
    let Some(token) = token else {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an access token is required",
        );
    };
    let user = match state.verifier.verify(&token).await {
        Ok(user) => user,
        Err(error @ TokenError::KeysUnavailable(_)) => {
            tracing::warn!(%error, "upgrade refused: token keys unavailable");
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "tokens cannot be verified right now; retry shortly",
            );
        }
        Err(error) => {
            tracing::debug!(%error, "upgrade refused");
            return error_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the access token is invalid or expired",
            );
        }
    };

    let is_websocket = request.method() == Method::GET
        && header_contains(headers, header::CONNECTION, "upgrade")
        && header_contains(headers, header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_websocket)
    else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_upgrade",
            "expected a WebSocket upgrade request (version 13)",
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut request);

    let limits = &state.hub.limits;
    let config = WebSocketConfig::default()
        .read_buffer_size(limits.read_buffer_bytes)
        .write_buffer_size(0)
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes));
    let hub = state.hub.clone();
    let Some(slot) = hub.claim_slot(&user.user.id) else {
        return error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            "too many open connections for this user",
        );
    };
    let session = Session {
        user: user.user,
        token: SessionToken::new(token),
        expires_at: user.expires_at,
        issued_at: user.issued_at,
        slot,
    };
    state.tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                connection::serve(socket, session, hub).await;
            }
            Err(error) => tracing::debug!(%error, "upgrade failed"),
        }
    });

    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}
