//! Builds the application: MongoDB, the queue consumer task, the room event publisher, the
//! JWKS verifier, the HTTP
//! server bound to its listener and the metrics server bound to its own (port 0 picks a free
//! port for either).

use std::net::TcpListener;
use std::sync::Arc;
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
use crate::doc_locks::DocLocks;
use crate::message_store::MessageStore;
use crate::metrics::ConsumerMetrics;
use crate::reads::{self, ReadLimiter};
use crate::rooms::cache::{Caches, InboxCache, MemberCache, RoomCache};
use crate::rooms::events::RoomEvents;
use crate::rooms::lookups::{self, JoinLookups};
use crate::rooms::rate_limit::CreationLimit;
use crate::rooms::store::RoomStore;
use crate::rooms::users::UserDirectory;
use crate::rooms::{self, Rooms};
use crate::routes;
use crate::settings::{Limits, PageSettings, Settings};

pub struct AppState {
    pub db: Database,
    pub store: MessageStore,
    pub verifier: JwksVerifier,
    pub consumer: ConsumerStatus,
    pub pages: PageSettings,
    /// Admits history reads (load shedding).
    pub reads: ReadLimiter,
    /// Turns for readiness pings, so that they fit in the pool's headroom.
    pub ready_pings: tokio::sync::Semaphore,
    pub rooms: Rooms,
    /// The rules of message changes (edit window).
    pub rules: crate::changes::Rules,
}

/// Most aging room documents read again at once, and the pause after each such read.
const REFRESH_BATCH: usize = 500;
const REFRESH_PAUSE: Duration = Duration::from_millis(200);

pub struct Application {
    port: u16,
    metrics_port: u16,
    server: Server,
    metrics_server: Server,
    consumer: JoinHandle<()>,
    publisher: JoinHandle<()>,
    /// Reads for joins ([`crate::rooms::lookups`]); stops with `shutdown`.
    join_reader: JoinHandle<()>,
    /// Reads again the room documents room lists keep serving ([`RoomCache`]); stops with
    /// `shutdown`.
    refresher: JoinHandle<()>,
    /// Finishes its write sequences at shutdown.
    room_store: RoomStore,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let mut options = settings.mongodb.options("history-service").await?;
        // Room for every read slot and the headroom the writes and readiness rely on.
        options.max_pool_size = Some(
            settings
                .history
                .max_concurrent_reads
                .saturating_add(reads::POOL_HEADROOM),
        );
        let client = mongodb::Client::with_options(options)?;
        let db = client.database(&settings.mongodb.database);
        // Room documents read by room lists; both stores forget a room when they write it.
        let list_ttl = Duration::from_millis(settings.rooms.list_cache_ttl_ms);
        let caches = Caches {
            rooms: Arc::new(RoomCache::new(list_ttl, settings.rooms.list_cache_rooms)),
            inboxes: Arc::new(InboxCache::new(list_ttl, settings.rooms.list_cache_rooms)),
            members: Arc::new(MemberCache::new(
                Duration::from_millis(settings.rooms.join_cache_ttl_ms),
                settings.rooms.join_cache_members,
            )),
        };
        // Writes to one room document, by the consumer or the routes, one at a time.
        let room_locks = Arc::new(DocLocks::default());
        let store = MessageStore::open(&db)
            .await?
            .with_rooms(caches.rooms.clone(), room_locks.clone());
        let verifier = settings.auth.verifier().await?;

        // Rooms have a pool of their own, sized so that every admitted join or operation (at
        // most four reads at once) and the join reader find their connections, apart from the
        // reads' pool and the consumer's headroom.
        let rooms_settings = &settings.rooms;
        let mut rooms_options = settings.mongodb.options("history-service-rooms").await?;
        rooms_options.max_pool_size = Some(
            rooms_settings
                .joins
                .max_concurrent
                .saturating_add(rooms_settings.ops.max_concurrent)
                .saturating_mul(4)
                .saturating_add(lookups::CONNECTIONS),
        );
        let rooms_db =
            mongodb::Client::with_options(rooms_options)?.database(&settings.mongodb.database);
        let room_store = RoomStore::open(&rooms_db, caches.clone(), room_locks).await?;

        // Both listeners before the consumer starts, so that a port in use fails the start.
        let listener = common::net::listen(&settings.http.address())?;
        let port = listener.local_addr()?.port();
        let metrics_listener = TcpListener::bind(settings.metrics.address())
            .with_context(|| format!("binding {} for metrics", settings.metrics.address()))?;
        let metrics_port = metrics_listener.local_addr()?.port();

        let status = ConsumerStatus::default();
        let shutdown = CancellationToken::new();
        let registry = prometheus::Registry::new();
        let http_metrics = web::Data::new(HttpMetrics::new(registry.clone()));
        let read_limiter = ReadLimiter::new(&Limits::from(&settings.history), "reads", &registry)?;
        // Names this process in its member events, so that its consumer skips its own.
        let instance = ulid::Ulid::new().to_string();
        let (events, outbox) =
            RoomEvents::new(settings.rooms.outbox_capacity, &instance, &registry)?;
        let (lookups, join_reader) = JoinLookups::new(
            room_store.clone(),
            settings.rooms.join_queue,
            settings.rooms.join_batch,
            Duration::from_millis(settings.rooms.joins.timeout_ms),
            &registry,
            shutdown.clone(),
        )?;
        let join_reader = tokio::spawn(join_reader);
        let refresher = tokio::spawn({
            let (store, shutdown) = (room_store.clone(), shutdown.clone());
            let timeout = Duration::from_millis(settings.rooms.ops.timeout_ms);
            async move {
                store
                    .refresh_cached(REFRESH_BATCH, REFRESH_PAUSE, timeout, shutdown)
                    .await;
            }
        });
        let closing_store = room_store.clone();
        let rooms = Rooms {
            store: room_store,
            lookups,
            events: events.clone(),
            users: UserDirectory::new(
                &settings.auth.url,
                Duration::from_millis(settings.rooms.users_timeout_ms),
            )?,
            creation: CreationLimit::per_hour(settings.rooms.create_per_hour),
            joins: ReadLimiter::new(&settings.rooms.joins, "joins", &registry)?,
            ops: ReadLimiter::new(&settings.rooms.ops, "room_ops", &registry)?,
            settings: settings.rooms.clone(),
        };
        let rules = crate::changes::Rules {
            edit_window: settings.messages.edit_window(),
        };
        let consumer = tokio::spawn(consumer::run(
            settings.amqp.clone(),
            consumer::Sinks {
                store: store.clone(),
                events: events.clone(),
                rules,
                caches,
                instance,
            },
            status.clone(),
            ConsumerMetrics::new(&registry),
            verifier.revocations().clone(),
            shutdown.clone(),
        ));
        let publisher = tokio::spawn(common::outbox::run(
            "room-events",
            settings.amqp.connection.clone(),
            Duration::from_millis(settings.rooms.confirm_timeout_ms),
            outbox,
            events.metrics().clone(),
            shutdown.clone(),
        ));

        let state = web::Data::new(AppState {
            db,
            store,
            verifier,
            consumer: status,
            pages: settings.history.clone(),
            reads: read_limiter,
            ready_pings: tokio::sync::Semaphore::new(reads::READY_PINGS),
            rooms,
            rules,
        });
        let max_body = settings.http.max_body_bytes;
        let metrics_data = http_metrics.clone();
        let server =
            HttpServer::new(move || {
                App::new()
                    .app_data(state.clone())
                    .app_data(http_metrics.clone())
                    .app_data(web::QueryConfig::default().error_handler(|err, _req| {
                        routes::ApiError::Validation(err.to_string()).into()
                    }))
                    .app_data(web::JsonConfig::default().limit(max_body).error_handler(
                        |err, _req| routes::ApiError::Validation(err.to_string()).into(),
                    ))
                    .wrap(actix_web::middleware::from_fn(
                        common::metrics::actix::observe,
                    ))
                    .wrap(actix_web::middleware::Logger::new("%r %s %Dms").log_target("http"))
                    .configure(routes::configure)
                    .configure(rooms::routes::configure)
                    .default_service(web::to(routes::not_found))
            })
            .listen(listener)?
            .shutdown_timeout(10)
            .run();
        tracing::info!(port, "history-service listening");

        // Stopped with the public server (`run_until_stopped`), not by signals of its own.
        let metrics_server = HttpServer::new(move || {
            App::new()
                .app_data(metrics_data.clone())
                .route("/metrics", web::get().to(common::metrics::actix::endpoint))
                .default_service(web::to(routes::not_found))
        })
        .workers(1)
        .disable_signals()
        .listen(metrics_listener)?
        .shutdown_timeout(1)
        .run();
        tracing::info!(port = metrics_port, "history-service metrics listening");
        Ok(Self {
            port,
            metrics_port,
            server,
            metrics_server,
            consumer,
            publisher,
            join_reader,
            refresher,
            room_store: closing_store,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the metrics listener (`GET /metrics`).
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// Serves until SIGINT/SIGTERM; then stops the metrics server, and the consumer after its
    /// in-flight batch.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let metrics = self.metrics_server.handle();
        let (served, metrics_served) = tokio::join!(
            async {
                let served = self.server.await;
                metrics.stop(true).await;
                served
            },
            self.metrics_server
        );
        if let Err(error) = metrics_served {
            tracing::warn!(%error, "the metrics server failed");
        }
        self.shutdown.cancel();
        for (task, name) in [
            (self.join_reader, "join reader"),
            (self.refresher, "room refresher"),
        ] {
            if let Err(error) = task.await {
                tracing::warn!(%error, "the {name} failed");
            }
        }
        if !self.room_store.close(Duration::from_secs(10)).await {
            tracing::warn!("room writes did not finish within 10 s");
        }
        if tokio::time::timeout(Duration::from_secs(20), self.consumer)
            .await
            .is_err()
        {
            tracing::warn!("the consumer did not stop within 20 s");
        }
        let patience = common::outbox::DRAIN_LIMIT + Duration::from_secs(5);
        if tokio::time::timeout(patience, self.publisher)
            .await
            .is_err()
        {
            tracing::warn!("the room event publisher did not stop within {patience:?}");
        }
        Ok(served?)
    }
}
