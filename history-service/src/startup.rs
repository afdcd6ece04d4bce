//! Builds the application: MongoDB, the queue consumer task, the JWKS verifier and the HTTP
//! server bound to its listener (port 0 picks a free port).

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use mongodb::Database;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use common::metrics::actix::HttpMetrics;
use common::token::JwksVerifier;

use crate::consumer::{self, ConsumerStatus};
use crate::message_store::MessageStore;
use crate::metrics::ConsumerMetrics;
use crate::routes;
use crate::settings::{PageSettings, Settings};

pub struct AppState {
    pub db: Database,
    pub store: MessageStore,
    pub verifier: JwksVerifier,
    pub consumer: ConsumerStatus,
    pub pages: PageSettings,
}

pub struct Application {
    port: u16,
    server: Server,
    consumer: JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let client = settings.mongodb.client("history-service").await?;
        let db = client.database(&settings.mongodb.database);
        let store = MessageStore::open(&db).await?;
        let verifier = settings.auth.verifier().await?;

        let status = ConsumerStatus::default();
        let shutdown = CancellationToken::new();
        let registry = prometheus::Registry::new();
        let http_metrics = web::Data::new(HttpMetrics::new(registry.clone()));
        let consumer = tokio::spawn(consumer::run(
            settings.amqp.clone(),
            store.clone(),
            status.clone(),
            ConsumerMetrics::new(&registry),
            verifier.revocations().clone(),
            shutdown.clone(),
        ));

        let listener = TcpListener::bind(settings.http.address())
            .with_context(|| format!("binding {}", settings.http.address()))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            db,
            store,
            verifier,
            consumer: status,
            pages: settings.history.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(http_metrics.clone())
                .app_data(web::QueryConfig::default().error_handler(|err, _req| {
                    routes::ApiError::Validation(err.to_string()).into()
                }))
                .wrap(actix_web::middleware::from_fn(
                    common::metrics::actix::observe,
                ))
                .wrap(actix_web::middleware::Logger::new("%r %s %Dms").log_target("http"))
                .route("/metrics", web::get().to(common::metrics::actix::endpoint))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .listen(listener)?
        .shutdown_timeout(10)
        .run();
        tracing::info!(port, "history-service listening");
        Ok(Self {
            port,
            server,
            consumer,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM; then stops the consumer after its in-flight batch.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await;
        self.shutdown.cancel();
        if tokio::time::timeout(Duration::from_secs(20), self.consumer)
            .await
            .is_err()
        {
            tracing::warn!("the consumer did not stop within 20 s");
        }
        Ok(served?)
    }
}
