//! Builds the application from settings: database, indexes, keys, limits, the account-event
//! publisher, the public HTTP server bound to its listener and the metrics server bound to its
//! own (port 0 picks a free port, which tests use).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, Service};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use mongodb::Database;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client_ip::ClientIpPolicy;
use common::metrics::actix::HttpMetrics;

use crate::account_events::{self, AccountEvents};
use crate::error::ApiError;
use crate::password::Passwords;
use crate::rate_limit::AbuseLimits;
use crate::refresh_tokens::RefreshTokenStore;
use crate::routes::{self, Admins};
use crate::settings::Settings;
use crate::tokens::TokenIssuer;
use crate::user_store::UserStore;
use common::settings::MetricsSettings;

/// What handlers share.
pub struct AppState {
    pub db: Database,
    pub users: UserStore,
    pub tokens: TokenIssuer,
    pub refresh_tokens: RefreshTokenStore,
    pub passwords: Arc<Passwords>,
    pub limits: AbuseLimits,
    /// Account changes out to the other services.
    pub events: AccountEvents,
    pub admins: Admins,
}

pub struct Application {
    port: u16,
    server: Server,
    metrics_port: u16,
    /// Serves `GET /metrics` only, on [`common::settings::MetricsSettings`]' address.
    metrics_server: Server,
    state: web::Data<AppState>,
    /// The account-event publisher, stopped through `shutdown` once the server has stopped.
    publisher: JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Application {
    /// How often idle rate-limit keys are forgotten.
    const PRUNE_LIMITS_EVERY: Duration = Duration::from_secs(60);
    /// How often expired refresh tokens are deleted.
    const PURGE_TOKENS_EVERY: Duration = Duration::from_secs(3600);

    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let tokens = TokenIssuer::from_settings(&settings.jwt, settings.profile)?;
        let limits = AbuseLimits::from_settings(&settings.limits)?;
        let admins = Admins::from_settings(&settings.admin.usernames)?;
        let client = settings.mongodb.client("auth-service").await?;
        let db = client.database(&settings.mongodb.database);
        let users = UserStore::open(&db).await?;
        let refresh_tokens =
            RefreshTokenStore::open(&db, Duration::from_secs(settings.jwt.refresh_ttl_secs))
                .await?;
        let passwords = Arc::new(
            Passwords::new(
                settings.password.bcrypt_cost,
                settings.password.max_concurrent_hashes,
            )
            .await?,
        );

        let registry = prometheus::Registry::new();
        let http_metrics = web::Data::new(HttpMetrics::new(registry.clone()));
        let (events, outbox) = AccountEvents::new(settings.amqp.outbox_capacity, &registry)?;
        let event_metrics = events.metrics().clone();

        let http = &settings.http;
        let listener = common::net::listen(&http.listen.address())?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            db,
            users,
            tokens,
            refresh_tokens,
            passwords,
            limits,
            events,
            admins,
        });
        let app_state = state.clone();
        let (metrics_port, metrics_server) =
            metrics_server(&settings.metrics, http_metrics.clone())?;
        let max_body = http.listen.max_body_bytes;
        let request_timeout = http.request_timeout();
        let client_ip = ClientIpPolicy {
            trust_forwarded_for: http.trust_forwarded_for,
        };
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(http_metrics.clone())
                .app_data(client_ip)
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_body)
                        .error_handler(|err, _req| ApiError::from_json_error(&err).into()),
                )
                // Bounds the whole request, body upload included: actix's own timeout only
                // covers the headers.
                .wrap_fn(move |request, service| {
                    let call = service.call(request);
                    async move {
                        match tokio::time::timeout(request_timeout, call).await {
                            Ok(result) => result,
                            Err(_) => Err(ApiError::RequestTimeout.into()),
                        }
                    }
                })
                .wrap(actix_web::middleware::from_fn(
                    common::metrics::actix::observe,
                ))
                .wrap(actix_web::middleware::Logger::new("%r %s %Dms").log_target("http"))
                .configure(routes::configure)
                .default_service(web::to(|| async {
                    Err::<actix_web::HttpResponse, _>(ApiError::NotFound)
                }))
        })
        .client_request_timeout(http.client_request_timeout())
        .keep_alive(http.keep_alive())
        .listen(listener)?
        .shutdown_timeout(10)
        .run();
        // Last, so a failed build leaves no task behind.
        let shutdown = CancellationToken::new();
        let publisher = tokio::spawn(account_events::run(
            settings.amqp.clone(),
            outbox,
            event_metrics,
            shutdown.clone(),
        ));
        tracing::info!(port, metrics_port, "auth-service listening");
        Ok(Self {
            port,
            server,
            metrics_port,
            metrics_server,
            state,
            publisher,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the metrics listener.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// The password checker, whose verification count tests and metrics read.
    pub fn passwords(&self) -> Arc<Passwords> {
        self.state.passwords.clone()
    }

    /// Serves until SIGINT/SIGTERM, then finishes in-flight requests. Housekeeping (forgetting
    /// idle rate-limit keys, deleting expired refresh tokens) runs alongside and stops with
    /// the server; then the account-event publisher gets to publish what is queued.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            server,
            metrics_server,
            state,
            publisher,
            shutdown,
            ..
        } = self;
        let served = tokio::select! {
            result = server => result,
            // It ignores signals, so it ends only if it fails; when the public server ends
            // first, dropping this one closes its listener.
            result = metrics_server => result,
            () = housekeeping(state) => Ok(()),
        };
        shutdown.cancel();
        let patience = account_events::DRAIN_LIMIT + Duration::from_secs(5);
        if tokio::time::timeout(patience, publisher).await.is_err() {
            tracing::warn!("the account event publisher did not stop within {patience:?}");
        }
        served
    }
}

/// The metrics listener: `GET /metrics` and a JSON 404 for everything else. It reacts to no
/// signal of its own; it stops with the application.
fn metrics_server(
    settings: &MetricsSettings,
    metrics: web::Data<HttpMetrics>,
) -> anyhow::Result<(u16, Server)> {
    let listener = TcpListener::bind(settings.address())
        .with_context(|| format!("binding the metrics listener {}", settings.address()))?;
    let port = listener.local_addr()?.port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(metrics.clone())
            .route("/metrics", web::get().to(common::metrics::actix::endpoint))
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::NotFound)
            }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .shutdown_timeout(1)
    .run();
    Ok((port, server))
}

async fn housekeeping(state: web::Data<AppState>) {
    let mut prune = tokio::time::interval(Application::PRUNE_LIMITS_EVERY);
    let mut purge = tokio::time::interval(Application::PURGE_TOKENS_EVERY);
    loop {
        tokio::select! {
            _ = prune.tick() => state.limits.retain_recent(),
            _ = purge.tick() => match state.refresh_tokens.purge_expired().await {
                Ok(deleted) => tracing::debug!(deleted, "expired refresh tokens purged"),
                Err(error) => tracing::warn!(?error, "purging refresh tokens failed"),
            },
        }
    }
}
