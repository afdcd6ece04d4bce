//! Builds the gateway from settings and runs it until SIGINT/SIGTERM.
//!
//! Shutdown order: stop accepting, close every WebSocket with 1001, wait for the connections
//! (their sends finish their confirms), then close the broker connection after the last
//! outstanding confirm.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::Accounts;
use crate::broker::{self, Broker};
use crate::connection::Hub;
use crate::history::HistoryClient;
use crate::membership::Membership;
use crate::metrics::GatewayMetrics;
use crate::proxy::Upstreams;
use crate::read_markers::ReadMarkers;
use crate::receipts::Receipts;
use crate::recovery::{Gaps, Recovery};
use crate::rooms::Rooms;
use crate::server::{ServerState, metrics_router, router};
use crate::settings::Settings;

pub struct Application {
    port: u16,
    listener: TcpListener,
    /// `/metrics`, apart from the public port.
    metrics_port: u16,
    metrics_listener: TcpListener,
    metrics_router: axum::Router,
    /// SO_SNDBUF for accepted sockets (0: kernel default).
    send_buffer: usize,
    /// Longest wait for a request's headers (the WebSocket handshake included).
    handshake_timeout: Duration,
    router: axum::Router,
    hub: Arc<Hub>,
    tracker: TaskTracker,
    broker_task: JoinHandle<()>,
    /// Reads rooms back after a lost broker connection; stops with the broker task.
    recovery_task: JoinHandle<()>,
    broker_shutdown: CancellationToken,
    /// Writes the read markers still pending once the connections are closed.
    markers_task: JoinHandle<()>,
    markers_shutdown: CancellationToken,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let verifier = settings.auth.verifier().await?;
        let db = settings
            .mongodb
            .client("chat-gateway")
            .await?
            .database(&settings.mongodb.database);
        let receipts = Receipts::open(&db).await?;
        let metrics = Arc::new(GatewayMetrics::new());
        let (rooms, commands) = Rooms::new(
            metrics.clone(),
            Duration::from_millis(settings.history.memory_grace_ms),
        );
        let rooms = Arc::new(rooms);
        let broker = Broker::new(&settings.amqp);
        let broker_shutdown = CancellationToken::new();
        let accounts = Arc::new(Accounts::new(verifier.revocations().clone()));
        let history = HistoryClient::new(&settings.history, metrics.clone())?;
        let membership = Arc::new(Membership::new(
            history.clone(),
            Duration::from_secs(settings.rooms.decision_ttl_s),
            settings.rooms.decision_cache_size,
            metrics.clone(),
        ));
        let read_markers = Arc::new(ReadMarkers::new(
            history.clone(),
            accounts.clone(),
            settings.rooms.read_markers_pending,
            metrics.clone(),
        ));
        let markers_shutdown = CancellationToken::new();
        let markers_task = tokio::spawn(read_markers.clone().run(
            Duration::from_millis(settings.rooms.read_flush_ms.max(1)),
            markers_shutdown.clone(),
        ));
        let gaps = Arc::new(Gaps::new(Duration::from_millis(
            settings.history.late_window_ms,
        )));
        let recovery_task = tokio::spawn(
            Recovery {
                rooms: rooms.clone(),
                history: history.clone(),
                metrics: metrics.clone(),
                gaps: gaps.clone(),
                grace: Duration::from_millis(settings.history.memory_grace_ms),
            }
            .run(broker_shutdown.clone()),
        );
        let broker_task = tokio::spawn(broker::run(
            settings.amqp.clone(),
            broker::Inbound {
                broker: broker.clone(),
                rooms: rooms.clone(),
                accounts: accounts.clone(),
                membership: membership.clone(),
                gaps,
            },
            commands,
            broker_shutdown.clone(),
        ));
        let hub = Arc::new(Hub {
            rooms,
            accounts,
            broker,
            history,
            membership,
            read_markers,
            receipts: receipts.clone(),
            republish_within: Duration::from_millis(settings.receipts.republish_within_ms),
            limits: settings.limits.clone(),
            ids: std::sync::Mutex::new(ulid::Generator::new()),
            next_conn: std::sync::atomic::AtomicU64::new(1),
            verifier: verifier.clone(),
            metrics: metrics.clone(),
            connections: std::sync::Mutex::new(std::collections::HashMap::new()),
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(receipts.sweep_periodically(
            Duration::from_secs(u64::from(settings.receipts.retention_hours) * 3600),
            broker_shutdown.clone(),
        ));
        let tracker = TaskTracker::new();
        let state = ServerState {
            hub: hub.clone(),
            allowed_origins: settings.security.allowed_origins.clone().into(),
            verifier,
            upstreams: Upstreams::new(
                &settings.auth.url,
                &settings.history.url,
                settings.http.max_body_bytes,
                Duration::from_millis(settings.limits.body_timeout_ms),
            )?,
            tracker: tracker.clone(),
        };
        let listener = TcpListener::bind(settings.http.address())
            .await
            .with_context(|| format!("binding {}", settings.http.address()))?;
        let port = listener.local_addr()?.port();
        let metrics_listener = TcpListener::bind(settings.metrics.address())
            .await
            .with_context(|| format!("binding {}", settings.metrics.address()))?;
        let metrics_port = metrics_listener.local_addr()?.port();
        tracing::info!(port, metrics_port, instance = %settings.amqp.instance_id, "chat-gateway listening");
        Ok(Self {
            port,
            listener,
            metrics_port,
            metrics_listener,
            metrics_router: metrics_router(metrics),
            send_buffer: settings.limits.socket_send_buffer_bytes,
            handshake_timeout: Duration::from_millis(settings.limits.handshake_timeout_ms),
            router: router(state, &settings.web.dir),
            hub,
            tracker,
            broker_task,
            recovery_task,
            broker_shutdown,
            markers_task,
            markers_shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the metrics listener.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `stop` resolves, then shuts down in order.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let hub = self.hub.clone();
        let closing = CancellationToken::new();
        let server = tokio::spawn(serve(
            self.listener,
            self.router,
            self.send_buffer,
            self.handshake_timeout,
            closing.clone(),
        ));
        let metrics_server = tokio::spawn(serve(
            self.metrics_listener,
            self.metrics_router,
            0,
            self.handshake_timeout,
            closing.clone(),
        ));
        stop.await;
        tracing::info!("shutting down: closing connections");
        closing.cancel();
        hub.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections did not close within 10 s");
        }
        self.markers_shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.markers_task).await;
        self.broker_shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.broker_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.recovery_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), metrics_server).await;
        Ok(())
    }
}

/// Accepts connections until `closing`, serving HTTP/1.1 with upgrades; open connections
/// finish their current request on shutdown.
///
/// hyper's HTTP/1 server reads with its header timer from the first poll of a connection,
/// right after accept, so a client must send its request headers within `handshake_timeout`
/// even when it sends nothing at all; the timer starts again after every response, which
/// bounds a keep-alive connection waiting for its next request. (hyper-util's protocol
/// detection reads the first bytes with no timer at all, so it is not used: the gateway
/// speaks HTTP/1.1 only.) An upgraded WebSocket leaves hyper and its timers.
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    send_buffer: usize,
    handshake_timeout: Duration,
    closing: CancellationToken,
) {
    use hyper::server::conn::http1;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout);
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = closing.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if send_buffer > 0 {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(send_buffer);
        }
        let service = router.clone().map_request(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let closing = closing.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(Duration::from_secs(5), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections did not finish within 5 s");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
