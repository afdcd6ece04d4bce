use std::time::Duration;

use actix_web::{HttpResponse, web};
use mongodb::bson::doc;

use crate::startup::AppState;

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready when MongoDB answers a ping.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let ping = tokio::time::timeout(
        Duration::from_secs(2),
        state.db.run_command(doc! {"ping": 1}),
    )
    .await;
    match ping {
        Ok(Ok(_)) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        _ => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "unavailable", "mongodb": "unreachable"})),
    }
}
