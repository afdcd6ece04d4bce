//! Builds the application from settings: database, indexes, keys, and the HTTP server bound
//! to its listener (port 0 picks a free port, which tests use).

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use mongodb::Database;

use crate::error::ApiError;
use crate::password::{self, Password};
use crate::routes;
use crate::settings::Settings;
use crate::tokens::TokenIssuer;
use crate::user_store::UserStore;

/// What handlers share.
pub struct AppState {
    pub db: Database,
    pub users: UserStore,
    pub tokens: TokenIssuer,
    pub bcrypt_cost: u32,
    /// Hash of a random password at the configured cost, verified for unknown users so that
    /// their login takes as long as a wrong password does.
    pub dummy_hash: String,
}

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let tokens = TokenIssuer::from_settings(&settings.jwt, settings.profile)?;
        let client = settings.mongodb.client("auth-service").await?;
        let db = client.database(&settings.mongodb.database);
        let users = UserStore::open(&db).await?;
        let dummy = Password::parse(ulid::Ulid::new().to_string())
            .map_err(|e| anyhow::anyhow!("dummy password: {e}"))?;
        let dummy_hash = password::hash(dummy, settings.password.bcrypt_cost).await?;

        let listener = TcpListener::bind(settings.http.address())
            .with_context(|| format!("binding {}", settings.http.address()))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            db,
            users,
            tokens,
            bcrypt_cost: settings.password.bcrypt_cost,
            dummy_hash,
        });
        let max_body = settings.http.max_body_bytes;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_body)
                        .error_handler(|err, _req| ApiError::from_json_error(&err).into()),
                )
                .wrap(actix_web::middleware::Logger::new("%r %s %Dms").log_target("http"))
                .configure(routes::configure)
                .default_service(web::to(|| async {
                    Err::<actix_web::HttpResponse, _>(ApiError::NotFound)
                }))
        })
        .listen(listener)?
        .shutdown_timeout(10)
        .run();
        tracing::info!(port, "auth-service listening");
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT/SIGTERM, then finishes in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
